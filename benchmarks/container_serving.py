"""The inference server in its container vs the same server run directly, same client.

Builds the champion's image with ``trustflow deploy --target docker`` (its summary gives the
image size over the base and the verification container's start-to-ready time), then runs:
the bundle's own server (``python -m trustflow.serving`` on the bundle's files, this machine's
Python) and the image (``docker run --network host``), each with one process, and drives both
with the same client as benchmarks/serving.py, alternating rounds. Prints requests/s, p50, p99
and the ratio container/direct. Issue targets: image <= 400 MB over the base; ready <= 5 s after
start; container throughput within 10 % of direct.

    .venv/bin/python benchmarks/container_serving.py --base-image trustflow-base:bookworm
        [--workspace DIR] [--seconds 8] [--rounds 2] [--concurrency 16]

Needs a Docker Engine (see tests/docker_engine.py) and the base image
(infra/docker/base-image.sh makes one from Debian packages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import docker
import uvloop
from serving import (  # benchmarks/serving.py
    BIN,
    drive,
    free_port,
    request_bodies,
    start,
    wait_ready,
    workspace_with_champion,
)


def ready_after_start(client, image: str, port: int) -> tuple[object, float]:
    started = time.perf_counter()
    container = client.containers.run(
        image, detach=True, network_mode="host", read_only=True, cap_drop=["ALL"],
        environment={"PORT": str(port)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/readyz"
    import urllib.request

    while time.perf_counter() - started < 60:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return container, time.perf_counter() - started
        except OSError:
            time.sleep(0.02)
    container.remove(force=True)
    raise SystemExit(f"{image} not ready after 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, help="a workspace with a champion")
    parser.add_argument("--base-image", default="trustflow-base:bookworm")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    workspace = workspace_with_champion(args.workspace, env)
    print("building the image (trustflow deploy --target docker) ...", flush=True)
    done = subprocess.run(
        [BIN / "trustflow", "deploy", "--json", "--target", "docker", "--workspace",
         str(workspace), "--base-image", args.base_image, "--port", str(free_port())],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"trustflow deploy failed:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    image, bundle = summary["deployment"]["docker"], Path(summary["deployment"]["bundle"]["path"])

    bodies = request_bodies(workspace)
    client = docker.from_env()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    ready: dict[str, list[float]] = {"direct": [], "container": []}
    for _ in range(args.rounds):
        # Direct: the bundle's server and model, on this machine's Python.
        port = free_port()
        direct_env = {**env, "PYTHONPATH": str(bundle / "app"), "PORT": str(port)}
        started = time.perf_counter()
        process = start([sys.executable, "-m", "trustflow.serving"], direct_env, bundle)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", process)
            ready["direct"].append(time.perf_counter() - started)
            for scenario, body in bodies.items():
                row = uvloop.run(drive(port, body, args.seconds, args.concurrency))
                results.setdefault(("direct", scenario), []).append(row)
        finally:
            process.terminate()
            process.wait(timeout=30)
        port = free_port()
        container, seconds = ready_after_start(client, image["image"], port)
        ready["container"].append(seconds)
        try:
            for scenario, body in bodies.items():
                row = uvloop.run(drive(port, body, args.seconds, args.concurrency))
                results.setdefault(("container", scenario), []).append(row)
        finally:
            container.remove(force=True)

    print(
        f"\nimage {image['image']}: {image['size_bytes'] / 1e6:.0f} MB, "
        f"{image['size_over_base_bytes'] / 1e6:.0f} MB over {image['base_image']} "
        f"({image['base_size_bytes'] / 1e6:.0f} MB); build {image['build_seconds']:.0f} s"
    )
    for name, values in ready.items():
        print(f"{name:<10} start to /readyz: median {statistics.median(values):.2f} s "
              f"over {len(values)} starts")  # fmt: skip
    print(
        f"concurrency {args.concurrency}, {args.seconds:.0f} s per scenario, {args.rounds} "
        f"alternating rounds, 1 process each, {os.cpu_count()} CPUs (client on the same machine)"
    )
    print(f"{'server':<10} {'request':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    medians = {}
    for (name, scenario), rows in results.items():
        median = {k: statistics.median(r[k] for r in rows) for k in ("rps", "p50_ms", "p99_ms")}
        medians[name, scenario] = median
        print(f"{name:<10} {scenario:<9} {median['rps']:>9.1f} {median['p50_ms']:>8.2f} "
              f"{median['p99_ms']:>8.2f}")  # fmt: skip
    for scenario in bodies:
        ratio = medians["container", scenario]["rps"] / medians["direct", scenario]["rps"]
        print(f"{scenario:<9} throughput container/direct = {ratio:.3f}")


if __name__ == "__main__":
    main()
