"""`trustflow serve` vs `mlflow models serve` on the same registered champion, driven by a load
generator we did not write: wrk (Debian's `wrk` package; `apt-get install wrk`).

Three servers run side by side on 127.0.0.1, one worker each, as a user would start them:
trustflow, MLflow (``--env-manager local``), and MLflow again with ``OMP_NUM_THREADS=1`` (its
scikit-learn model otherwise starts a thread per core, which fight the load generator on a small
box). For each scenario (one-row requests at concurrency 1, 16 and 64; 256-row batches at 16)
the servers take turns, each for ``--seconds`` after a short warm-up, with the same
``dataframe_split`` body. Per server and scenario: requests/s, p50 and p99 as wrk measures them,
and the server's CPU time per request (user + system of its whole process tree, from
/proc via psutil).

The load generator shares the machine's cores with the server, so requests/s and latency
depend on how much CPU wrk itself takes; CPU per request is the steadier figure. Targets (issue
15): one-row CPU per request at least 20x below MLflow's, and our p99 <= 10 ms at c=16.

    .venv/bin/python benchmarks/serving.py [--workspace DIR] [--seconds 10]

Without --workspace it trains the default pipeline into a temporary workspace first (~1.5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import psutil

BIN = Path(sys.executable).parent
MODEL = "models:/adult-income@champion"
SCENARIOS = (("1 row", 1, 1), ("1 row", 1, 16), ("1 row", 1, 64), ("256 rows", 256, 16))
# wrk runs this in each of its threads: POST the body file, and at the end print one JSON line.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("WRK_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
    .. '"p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (MLflow's CLI runs uvicorn as a
    child)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def wrk(url: str, body: Path, script: Path, seconds: float, connections: int) -> dict[str, float]:
    threads = min(2, connections)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s",
         "-s", str(script), url],
        env={**os.environ, "WRK_BODY": str(body)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace with a champion")
    parser.add_argument("--seconds", type=float, default=10.0, help="per server and scenario")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow execs `uvicorn`
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    workspace = workspace_with_champion(args.workspace, env)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace.resolve() / 'mlflow.db'}"
    scratch = Path(tempfile.mkdtemp(prefix="trustflow-wrk-"))
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT)
    rows = pd.read_parquet(workspace / "data" / "adult.parquet").drop(columns=["income"])
    bodies = {}
    for size in {rows_ for _, rows_, _ in SCENARIOS}:
        bodies[size] = scratch / f"{size}.json"
        split = json.loads(rows.head(size).to_json(orient="split"))
        bodies[size].write_text(json.dumps({"dataframe_split": split}))

    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    logs = []
    try:
        for name, command, extra_env, probe in [
            ("trustflow", ["trustflow", "serve", "--model", MODEL, "--workspace", str(workspace)],
             {}, "/readyz"),
            ("mlflow", ["mlflow", "models", "serve", "-m", MODEL, "--env-manager", "local",
                        "-w", "1", "-h", "127.0.0.1"], {}, "/ping"),
            ("mlflow omp=1", ["mlflow", "models", "serve", "-m", MODEL, "--env-manager", "local",
                              "-w", "1", "-h", "127.0.0.1"], {"OMP_NUM_THREADS": "1"}, "/ping"),
        ]:  # fmt: skip
            port = free_port()
            log = (scratch / f"{name}.log").open("wb")
            logs.append(log)
            flag = "--port" if name == "trustflow" else "-p"
            process = subprocess.Popen(
                [str(BIN / command[0]), *command[1:], flag, str(port)],
                env={**env, **extra_env}, cwd=workspace, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
            servers[name] = (process, f"http://127.0.0.1:{port}")
            wait_ready(servers[name][1] + probe, process)
        model = json.loads(
            urllib.request.urlopen(servers["trustflow"][1] + "/readyz", timeout=5).read()
        )["model"]
        print(f"serving {model['name']} v{model['version']}; {os.cpu_count()} CPUs shared with wrk")

        results: dict[tuple[str, str, int], dict[str, float]] = {}
        for scenario, size, connections in SCENARIOS:
            for name, (process, url) in servers.items():  # the servers take turns
                wrk(url + "/invocations", bodies[size], script, 2, min(connections, 4))  # warm
                before = cpu_seconds(process.pid)
                run = wrk(url + "/invocations", bodies[size], script, args.seconds, connections)
                run["cpu_s"] = cpu_seconds(process.pid) - before
                if run["non_2xx"] or run["socket_errors"]:
                    raise SystemExit(f"{name} {scenario} c={connections}: failed requests {run}")
                results[name, scenario, connections] = run
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, 15)
            process.wait(timeout=60)
        for log in logs:
            log.close()

    print(
        f"\n{'server':<13} {'request':<9} {'c':>3} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU ms/req':>10}"
    )
    for (name, scenario, connections), run in results.items():
        print(
            f"{name:<13} {scenario:<9} {connections:>3} "
            f"{run['requests'] / (run['duration_us'] / 1e6):>8.0f} {run['p50_us'] / 1e3:>7.2f} "
            f"{run['p99_us'] / 1e3:>7.2f} {run['cpu_s'] * 1e3 / run['requests']:>10.3f}"
        )
    print()
    for scenario, _, connections in SCENARIOS:
        ours = results["trustflow", scenario, connections]
        for other in ("mlflow", "mlflow omp=1"):
            theirs = results[other, scenario, connections]
            cpu = (theirs["cpu_s"] / theirs["requests"]) / (ours["cpu_s"] / ours["requests"])
            rps = (ours["requests"] / ours["duration_us"]) / (
                theirs["requests"] / theirs["duration_us"]
            )
            print(
                f"{scenario:<9} c={connections:<3} vs {other:<13} requests/s {rps:>5.1f}x, "
                f"CPU per request {cpu:>5.1f}x lower"
            )


if __name__ == "__main__":
    main()
