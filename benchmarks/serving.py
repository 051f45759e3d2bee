"""`trustflow serve` vs `mlflow models serve` for the same registered champion, same client.

Both servers run as they would for a user (uvicorn, the same number of workers, MLflow with
``--env-manager local``) on 127.0.0.1. One asyncio client drives each with a fixed number of
keep-alive connections for a fixed time, first with one-row requests, then with 256-row batches
(the same ``dataframe_split`` bodies for both), and prints requests/s, p50 and p99 and the
ratios. Issue targets on the 2-core machine: single-row throughput >= 5x MLflow's, our p99 <= 10
ms at concurrency 16.

    .venv/bin/python benchmarks/serving.py [--workspace DIR] [--seconds 10] [--concurrency 16]

Without --workspace it trains the default pipeline into a temporary workspace first (~30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import uvloop  # the client's event loop: the less it costs, the less it skews latencies

BIN = Path(sys.executable).parent
MODEL = "models:/adult-income@champion"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            stderr = ""
            if process.stderr is not None:
                process.stderr.seek(0)
                stderr = process.stderr.read().decode()[-2000:]
            raise SystemExit(
                f"server exited with {process.returncode} before {url} answered:\n{stderr}"
            )
        try:  # every worker must be ready: 20 answers in a row, whichever worker gives them
            for _ in range(20):  # urlopen raises on a 503 from a worker still loading
                urllib.request.urlopen(url, timeout=1).close()
            return time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} not ready after {timeout} s")


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def connection(
    port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def drive(port: int, body: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    request = request_bytes(port, body)
    warm: list[float] = []
    await asyncio.gather(  # warm-up: connections, caches, the first requests' imports
        *(connection(port, request, time.perf_counter() + 1.0, warm, []) for _ in range(2))
    )
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(connection(port, request, stop_at, latencies, errors) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"port {port}: {len(errors)} failed requests, e.g. HTTP {errors[0]}")
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
    }


def start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    # stderr to a file, not a pipe: a server that logs a lot must not block on a full pipe.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the server runs; read on failure)
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)


def workspace_with_champion(given: Path | None, env: dict[str, str]) -> Path:
    """``given``, or a new workspace where the default pipeline has registered a champion."""
    if given is not None:
        return given
    workspace = Path(tempfile.mkdtemp(prefix="trustflow-bench-"))
    print(f"training the default pipeline in {workspace} ...", flush=True)
    subprocess.run(
        [BIN / "trustflow", "run", "--json", "--workspace", str(workspace)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return workspace


def request_bodies(workspace: Path) -> dict[str, bytes]:
    """The same scoring bodies for every server: 1 row and 256 rows of the workspace's data."""
    rows = pd.read_parquet(workspace / "data" / "adult.parquet").drop(columns=["income"])
    return {
        f"{n} row{'s' if n > 1 else ''}": json.dumps(
            {"dataframe_split": rows.head(n).to_dict(orient="split")}
        ).encode()
        for n in (1, 256)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace with a champion")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="for both servers")
    args = parser.parse_args()

    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow execs `uvicorn`
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    workspace = workspace_with_champion(args.workspace, env)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace.resolve() / 'mlflow.db'}"

    bodies = request_bodies(workspace)
    ours_port, mlflow_port = free_port(), free_port()
    servers = {
        "trustflow": (
            [
                *(BIN / "trustflow", "serve", "--model", MODEL, "--port", str(ours_port)),
                *("--workers", str(args.workers), "--workspace", str(workspace)),
            ],
            ours_port,
            "/readyz",
        ),
        "mlflow": (
            [
                *(BIN / "mlflow", "models", "serve", "-m", MODEL, "--env-manager", "local"),
                *("-h", "127.0.0.1", "-p", str(mlflow_port), "-w", str(args.workers)),
            ],
            mlflow_port,
            "/ping",
        ),
    }
    results: dict[tuple[str, str], dict[str, float]] = {}
    for name, (command, port, probe) in servers.items():
        process = start([str(part) for part in command], env, workspace)
        try:
            ready = wait_ready(f"http://127.0.0.1:{port}{probe}", process)
            print(f"{name}: ready {ready:.1f} s after start", flush=True)
            for scenario, body in bodies.items():
                results[name, scenario] = uvloop.run(
                    drive(port, body, args.seconds, args.concurrency)
                )
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(
        f"\nconcurrency {args.concurrency}, {args.seconds:.0f} s per scenario, "
        f"{args.workers} worker(s) each, {os.cpu_count()} CPUs (client on the same machine)"
    )
    print(f"{'server':<10} {'request':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for (name, scenario), row in results.items():
        print(
            f"{name:<10} {scenario:<9} {row['rps']:>9.1f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f}"
        )
    for scenario in bodies:
        ours, theirs = results["trustflow", scenario], results["mlflow", scenario]
        print(
            f"{scenario:<9} throughput trustflow/mlflow = {ours['rps'] / theirs['rps']:.1f}x, "
            f"p99 mlflow/trustflow = {theirs['p99_ms'] / ours['p99_ms']:.1f}x"
        )


if __name__ == "__main__":
    main()
