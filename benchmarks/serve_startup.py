"""`trustflow serve --model models:/NAME@ALIAS`: seconds from start to ready, and the server's
resident memory once ready, as the median of several starts.

    python benchmarks/serve_startup.py [--workspace WS] [--rounds 5] [--pythonpath DIR:DIR]

``--pythonpath`` runs another checkout's code with this environment (e.g. a worktree of an
older commit: ``--pythonpath ../old/src:../old``), so two versions are measured on one machine
in one sitting, and the ratio is printed when both are given via ``--compare``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import BIN, free_port, start, wait_ready, workspace_with_champion


def measure(workspace: Path, rounds: int, pythonpath: str | None) -> dict[str, float]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    seconds, rss = [], []
    for _ in range(rounds):
        port = free_port()
        command = [str(BIN / "trustflow"), "serve", "--model", "models:/adult-income@champion",
                   "--workspace", str(workspace), "--port", str(port)]  # fmt: skip
        server = start(command, env, workspace)
        try:
            seconds.append(wait_ready(f"http://127.0.0.1:{port}/readyz", server))
            rss.append(psutil.Process(server.pid).memory_info().rss / 2**20)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {"ready_s": statistics.median(seconds), "rss_mib": statistics.median(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", help="PYTHONPATH of a baseline checkout, measured first")
    args = parser.parse_args()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    workspace = workspace_with_champion(args.workspace, env)
    runs = {}
    if args.compare:
        runs["baseline"] = measure(workspace, args.rounds, args.compare)
    runs["this checkout"] = measure(workspace, args.rounds, None)
    for name, result in runs.items():
        print(f"{name:<14} ready {result['ready_s']:.2f} s   RSS {result['rss_mib']:.0f} MiB")
    if args.compare:
        base, now = runs["baseline"], runs["this checkout"]
        print(f"ratio (this / baseline): ready {now['ready_s'] / base['ready_s']:.2f}, "
              f"RSS {now['rss_mib'] / base['rss_mib']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
