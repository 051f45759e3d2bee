"""What one Prefect task costs on this machine: no-op tasks in a flow, with Prefect's local
engine (its temporary server) and with a real Prefect server on 127.0.0.1, against plain calls.

Each mode runs in its own process (Prefect reads its settings at import): flows with zero, N
and 2N no-op tasks called in sequence, in turn, five times each. A flow's own cost is not a
constant that an empty flow measures (its end waits on background flushing for up to about a
second, which task work overlaps), so the per-task cost is taken between two flows that both
do work: (fastest with 2N - fastest with N) / N. The per-flow cost is the fastest empty run.

    .venv/bin/python benchmarks/prefect_overhead.py [--tasks 100]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def _measure(tasks: int) -> dict[str, float]:
    """Runs inside a child process: per-task milliseconds for this process's Prefect setup."""
    from prefect import flow, task

    @task(persist_result=False)
    def noop(i: int) -> int:
        return i

    @flow(persist_result=False)
    def many(n: int) -> int:
        return sum(noop(i) for i in range(n))

    many(0)  # start the engine (and, locally, the temporary server) outside the timing
    times: dict[int, list[float]] = {0: [], tasks: [], 2 * tasks: []}
    for _ in range(5):
        for n in times:
            started = time.perf_counter()
            many(n)
            times[n].append(time.perf_counter() - started)
    per_task = (min(times[2 * tasks]) - min(times[tasks])) / tasks
    return {"flow_s": min(times[0]), "per_task_ms": per_task * 1000}


def _child(mode: str, tasks: int, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--tasks", str(tasks)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _plain_call_us(tasks: int) -> float:
    def noop(i: int) -> int:
        return i

    started = time.perf_counter()
    for _ in range(1000):
        sum(noop(i) for i in range(tasks))
    return (time.perf_counter() - started) / (1000 * tasks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--child", choices=("local", "server"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.tasks)))
        return

    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    with tempfile.TemporaryDirectory() as home:
        local = _child("local", args.tasks, {**base, "PREFECT_HOME": f"{home}/local"})
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server_env = {**base, "PREFECT_HOME": f"{home}/server"}
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}/api"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            remote = _child("server", args.tasks, {**server_env, "PREFECT_API_URL": api})
        finally:
            server.terminate()
            server.wait(timeout=30)
    plain = _plain_call_us(args.tasks)
    print(f"{args.tasks} no-op tasks per flow, fastest of 5 rounds")
    print(f"plain Python call:             {plain:10.3f} µs per call")
    for name, result in (
        ("local engine (temp server)", local),
        ("Prefect server (SQLite)", remote),
    ):
        print(f"{name:<30} {result['per_task_ms']:8.2f} ms per task "
              f"({result['per_task_ms'] * 1000 / plain:,.0f}x a plain call); "
              f"empty flow {result['flow_s']:.2f} s")  # fmt: skip
    ratio = remote["per_task_ms"] / local["per_task_ms"]
    print(f"server / local engine per task: {ratio:.2f}")


if __name__ == "__main__":
    main()
