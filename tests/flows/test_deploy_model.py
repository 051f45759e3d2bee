"""`trustflow deploy` (flow deploy-model) on a model registered by a real pipeline run: the build
context, Kubernetes manifests checked against the Kubernetes schemas, a Triton repository checked
against the ONNX graph, and (marked `docker`) an image built, started and called through a real
Docker Engine. Plus every refusal, each leaving nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import onnx
import pandas as pd
import pytest
import yaml

from flows.cli import main
from tasks.docker_engine import VERIFY_LABEL
from tests.conftest import FAST_CANDIDATES, SMALL_SAMPLE_FAIRNESS, write_csv
from tests.docker_engine import BASE_IMAGE, docker_client
from tests.e2e.processes import clean_env, free_port, wait_until_up
from tests.flows.helpers import champion, client_for
from trustflow.deploy.bundle import pinned_requirements
from trustflow.deploy.triton import TRITON_TYPES
from trustflow.workspace import Workspace

MODEL = "models:/adult-income@champion"


@pytest.fixture(scope="module")
def ws(tmp_path_factory, adult_sample: pd.DataFrame) -> Workspace:
    """v1: the champion. v2: registered with a failed parity gate (never deployable)."""
    root = tmp_path_factory.mktemp("deploy-ws")
    source = write_csv(adult_sample, root / "adult.csv")

    def run(*overrides: str) -> int:
        sets = [f"data.source=csv:{source}", FAST_CANDIDATES, SMALL_SAMPLE_FAIRNESS, *overrides]
        return main(
            ["run", "--json", "--workspace", str(root), *(a for o in sets for a in ("--set", o))]
        )

    assert run() == 0
    assert run("train.seed=7", "onnx.max_abs_diff=1e-30") == 1  # a new model that fails parity
    assert champion(root) == "1"
    return Workspace(root=root)


def deploy(capsys, ws: Workspace, *args: str) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()  # drop what earlier steps printed
    code = main(["deploy", "--json", "--workspace", str(ws.root), *args])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, f"stdout must hold exactly one JSON line, got: {out!r}"
    return code, json.loads(lines[0]), err


def test_the_bundle_is_a_complete_build_context(ws, capsys, tmp_path) -> None:
    out = tmp_path / "bundle"
    code, summary, err = deploy(
        capsys, ws, "--model", MODEL, "--target", "bundle", "--out", str(out)
    )
    assert code == 0, err
    model = summary["model"]
    assert (model["name"], model["version"], model["alias"]) == ("adult-income", "1", "champion")
    graph = (out / "model" / "model.onnx").read_bytes()
    assert hashlib.sha256(graph).hexdigest() == model["onnx_sha256"]
    version = client_for(ws.root).get_model_version("adult-income", "1")
    assert model["data_md5"] == version.tags["trustflow.data.md5"]

    # Pinned to what runs here, and every pin vendored as a wheel (the build needs no index).
    requirements = (out / "requirements.txt").read_text().split()
    assert requirements == pinned_requirements()
    assert all(re.fullmatch(r"[a-z0-9_.-]+==[\w.+]+", line) for line in requirements)
    from importlib.metadata import version as installed

    assert f"onnxruntime=={installed('onnxruntime')}" in requirements
    assert not any(line.startswith("tenseal==") for line in requirements)  # not encrypted
    wheels = {
        p.name.split("-")[0].lower().replace("_", "-") for p in (out / "wheels").glob("*.whl")
    }
    assert wheels == {line.split("==")[0].replace("_", "-") for line in requirements}
    assert summary["deployment"]["bundle"]["wheels"] == len(requirements)

    dockerfile = (out / "Dockerfile").read_text()
    for arg, value in [
        ("MODEL_NAME", "adult-income"),
        ("MODEL_VERSION", "1"),
        ("DATA_MD5", model["data_md5"]),
        ("ONNX_SHA256", model["onnx_sha256"]),
        ("PYTHON_VERSION", f"{sys.version_info.major}.{sys.version_info.minor}"),
        ("ENCRYPTED", "0"),
    ]:
        assert f'ARG {arg}="{value}"' in dockerfile
    final_stage = dockerfile.split("\nFROM ${BASE_IMAGE}\n")[1]
    assert "USER 10001:10001" in final_stage and "/healthz" in final_stage
    assert "pip install" not in final_stage and "COPY --from=build /opt/venv" in final_stage
    assert (out / "app" / "trustflow" / "serving" / "__main__.py").is_file()
    assert not (out / "app" / "trustflow" / "datasets").exists()  # the image needs no data

    # The bundle's server runs on its own files: the entry point the image starts.
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-I", "-m", "trustflow.serving", "--port", str(port)],
        cwd=out,
        env={"PYTHONPATH": str(out / "app"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/readyz", server)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready["model"]["version"] == hashlib.sha256(graph).hexdigest()[:12]
    finally:
        server.terminate()
        server.wait(timeout=30)

    # Recorded in MLflow: a run in deploy-model, and a tag on the version.
    client = client_for(ws.root)
    run = client.get_run(summary["mlflow_run_id"])
    assert (
        run.data.params["target"] == "bundle"
        and run.data.params["model"] == "models:/adult-income/1"
    )
    assert client.get_model_version("adult-income", "1").tags["trustflow.deployed.bundle"] == str(
        out
    )


def _resource(resources: list[dict], kind: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


def test_kubernetes_manifests_are_valid_and_locked_down(ws, capsys, tmp_path, monkeypatch) -> None:
    import kubernetes_validate

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))  # never apply from tests
    out = tmp_path / "k8s"
    code, summary, err = deploy(capsys, ws, "--target", "kubernetes", "--out", str(out))
    assert code == 0, err
    made = summary["deployment"]["kubernetes"]
    assert made["applied_to"] is None and made["image"] == "adult-income:1"
    resources = list(yaml.safe_load_all((out / "manifests.yaml").read_text()))
    assert sorted(r["kind"] for r in resources) == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    for resource in resources:  # raises ValidationError on any schema violation
        kubernetes_validate.validate(resource, "1.32.0", strict=True)

    deployment = _resource(resources, "Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "adult-income:1"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # Everything points at this model's pods, and only at them.
    pod_labels = pod["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/instance"] == "adult-income"
    assert pod_labels["app.kubernetes.io/version"] == "1"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert "app.kubernetes.io/version" not in selector  # a selector may not change per version
    for matched in (
        selector,
        _resource(resources, "Service")["spec"]["selector"],
        _resource(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert matched.items() <= pod_labels.items() and "app.kubernetes.io/instance" in matched
    target = _resource(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"] == "adult-income-model"
    annotations = deployment["metadata"]["annotations"]
    assert annotations["ai.trustflow/model"] == "models:/adult-income/1"


def test_the_overlay_builds_to_the_same_manifests_with_kubectl(ws, capsys, tmp_path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the overlay is checked by our renderer only")
    out = tmp_path / "k8s"
    code, _, err = deploy(capsys, ws, "--target", "kubernetes", "--no-apply", "--out", str(out))
    assert code == 0, err
    built = subprocess.run(["kubectl", "kustomize", str(out)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr

    def by_kind(docs: list[dict]) -> list[dict]:
        return sorted(docs, key=lambda r: (r["kind"], r["metadata"]["name"]))

    ours = list(yaml.safe_load_all((out / "manifests.yaml").read_text()))
    assert by_kind(list(yaml.safe_load_all(built.stdout))) == by_kind(ours)


def _pbtxt(text: str) -> dict[str, list[Any]]:
    """A small reader for the subset of protobuf text format config.pbtxt uses: every field
    becomes a list of values (scalars, lists, or nested dicts)."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,]+', re.sub(r"#.*", "", text))
    position = 0

    def value() -> Any:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "{":
            return message("}")
        if token == "[":
            items = []
            while tokens[position] != "]":
                items.append(value())
                if tokens[position] == ",":
                    position += 1
            position += 1
            return items
        return json.loads(token) if token.startswith('"') or token.lstrip("-").isdigit() else token

    def message(end: str | None) -> dict[str, list[Any]]:
        nonlocal position
        fields: dict[str, list[Any]] = {}
        while position < len(tokens) and tokens[position] != end:
            name = tokens[position]
            position += 1
            if tokens[position] == ":":
                position += 1
            fields.setdefault(name, []).append(value())
        position += 1
        return fields

    return message(None)


def test_the_triton_config_matches_the_onnx_graph(ws, capsys, tmp_path) -> None:
    out = tmp_path / "triton"
    code, summary, err = deploy(capsys, ws, "--target", "triton", "--out", str(out))
    assert code == 0, err
    graph_bytes = (out / "adult-income" / "1" / "model.onnx").read_bytes()
    assert hashlib.sha256(graph_bytes).hexdigest() == summary["model"]["onnx_sha256"]
    config = _pbtxt((out / "adult-income" / "config.pbtxt").read_text())
    assert config["name"] == ["adult-income"] and config["backend"] == ["onnxruntime"]
    assert config["max_batch_size"][0] > 0

    graph = onnx.load_model_from_string(graph_bytes).graph
    for declared, values in (
        (config["input"][0], graph.input),
        (config["output"][0], graph.output),
    ):
        assert [t["name"][0] for t in declared] == [v.name for v in values]
        for tensor, info in zip(declared, values, strict=True):
            shape = [d.dim_value or -1 for d in info.type.tensor_type.shape.dim]
            assert shape[0] == -1  # the batch axis Triton adds
            assert tensor["data_type"] == [TRITON_TYPES[info.type.tensor_type.elem_type]]
            if len(shape) == 1:  # [batch] -> declared [1], reshaped to []
                assert tensor["dims"] == [[1]] and tensor["reshape"] == [{"shape": [[]]}]
            else:
                assert tensor["dims"] == [shape[1:]]
    kinds = {t["data_type"][0] for t in config["input"][0]}
    assert kinds == {"TYPE_FP64", "TYPE_STRING"}  # Adult: numbers and categories


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "models:/adult-income@nope"],
            "models:/adult-income@nope: not in the registry",
        ),
        (
            ["--model", "models:/adult-income/2"],
            "adult-income v2 cannot be served: ONNX parity failed",
        ),
        (["--model", "adult-income"], "expected models:/NAME@ALIAS"),
    ],
    ids=["missing-alias", "failed-gate", "not-a-model-uri"],
)
def test_a_model_that_cannot_be_deployed_is_one_line_and_writes_nothing(
    ws, capsys, tmp_path, args, message
) -> None:
    out = tmp_path / "out"
    code, summary, err = deploy(capsys, ws, *args, "--target", "bundle", "--out", str(out))
    assert code == 1 and message in summary["error"], summary
    assert "Traceback" not in err
    assert not out.exists()


def test_an_out_directory_of_someone_elses_is_left_alone(ws, capsys, tmp_path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, summary, _ = deploy(capsys, ws, "--target", "triton", "--out", str(out))
    assert code == 1 and "is not an earlier trustflow output" in summary["error"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mine.")]  # no staging left


def test_no_docker_daemon_is_one_line_before_anything_is_written(
    ws, capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-daemon.sock'}")
    out = tmp_path / "bundle"
    code, summary, err = deploy(capsys, ws, "--target", "docker", "--out", str(out))
    assert code == 1 and summary["error"].startswith("no Docker daemon reachable"), summary
    assert "Traceback" not in err and not out.exists()


# Docker Engine: real builds and containers.


@pytest.fixture(scope="module")
def engine():
    return docker_client()


def _leftover_containers(engine) -> list[str]:
    return [c.name for c in engine.containers.list(all=True, filters={"label": VERIFY_LABEL})]


@pytest.mark.docker
def test_deploy_docker_builds_runs_and_verifies_the_champion(ws, capsys, tmp_path, engine) -> None:
    port = free_port()
    code, summary, err = deploy(
        capsys,
        ws,
        "--target",
        "docker",
        "--base-image",
        BASE_IMAGE,
        "--port",
        str(port),
        "--out",
        str(tmp_path / "bundle"),
    )
    assert code == 0, err
    image = summary["deployment"]["docker"]
    assert image["tags"] == ["adult-income:1", "adult-income:champion"]
    assert image["verified_rows"] >= 1 and image["max_abs_diff"] <= 1e-6
    assert 0 < image["size_over_base_bytes"] < image["size_bytes"]
    assert image["ready_seconds"] > 0 and image["base_image"] == BASE_IMAGE
    assert _leftover_containers(engine) == []  # the verification container is gone
    assert engine.images.list(filters={"dangling": True, "label": "ai.trustflow.stage=build"}) == []

    built = engine.images.get("adult-income:champion")
    assert built.id == image["image_id"] == engine.images.get("adult-income:1").id
    labels = built.labels
    assert labels["ai.trustflow.model.version"] == "1"
    assert labels["ai.trustflow.data.md5"] == summary["model"]["data_md5"]
    assert labels["ai.trustflow.model.onnx-sha256"] == summary["model"]["onnx_sha256"]
    assert built.attrs["Config"]["User"] == "10001:10001"
    assert "/healthz" in " ".join(built.attrs["Config"]["Healthcheck"]["Test"])
    # No compilers and no pip in the final image.
    found = (
        engine.containers.run(
            built.id,
            entrypoint=["sh", "-c", "command -v gcc cc pip pip3 || echo none"],
            network_mode="host",
            remove=True,
        )
        .decode()
        .split()
    )
    assert found == ["none"]

    # Run as users would (docker run), it turns healthy and answers a prediction.
    port = free_port()
    container = engine.containers.run(
        "adult-income:1",
        detach=True,
        network_mode="host",
        read_only=True,
        environment={"PORT": str(port)},
        cap_drop=["ALL"],
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                break
            time.sleep(0.5)
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_a_busy_port_and_a_failed_build_are_one_line_with_nothing_left(
    ws, capsys, tmp_path, engine
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, summary, _ = deploy(
            capsys,
            ws,
            "--target",
            "docker",
            "--base-image",
            BASE_IMAGE,
            "--port",
            str(port),
            "--out",
            str(tmp_path / "a"),
        )
    assert code == 1
    assert summary["error"] == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port"
    )
    assert not (tmp_path / "a").exists()  # checked before the bundle is written
    # A base image that cannot be had (no registry is reachable here).
    code, summary, err = deploy(
        capsys,
        ws,
        "--target",
        "docker",
        "--base-image",
        "trustflow-missing-base:0",
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 1 and summary["error"].startswith(
        "base image trustflow-missing-base:0 is not on this engine and cannot be pulled"
    ), summary
    assert not (tmp_path / "b").exists()  # checked before the bundle is written
    # A build step that fails: a base image whose user cannot write /opt (the model image
    # itself runs as 10001), so `python3 -m venv /opt/venv` is refused.
    code, summary, err = deploy(
        capsys,
        ws,
        "--target",
        "docker",
        "--base-image",
        "adult-income:1",
        "--out",
        str(tmp_path / "c"),
    )
    assert code == 1 and summary["error"].startswith("docker build of adult-income:1 failed"), (
        summary
    )
    assert "returned a non-zero code" in summary["error"] and "Traceback" not in err
    assert _leftover_containers(engine) == []
    assert engine.containers.list(all=True, filters={"ancestor": "adult-income:1"}) == []


def _deploy_process(ws: Workspace, out: Path) -> subprocess.Popen[str]:
    """`trustflow deploy --target docker` as a user starts it: its own process, its own group."""
    command = [str(Path(sys.executable).with_name("trustflow")), "deploy", "--json",
               "--workspace", str(ws.root), "--target", "docker", "--base-image", BASE_IMAGE,
               "--port", str(free_port()), "--out", str(out)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), start_new_session=True)  # fmt: skip


def _once_verifying(process: subprocess.Popen[str], engine) -> list[str]:
    """Wait until the deploy's verification container exists; its name."""
    deadline = time.monotonic() + 600
    while not (found := _leftover_containers(engine)):
        if process.poll() is not None:
            raise AssertionError(f"the deploy ended (exit {process.returncode}) first: "
                                 f"{process.communicate()[1][-2000:]}")  # fmt: skip
        assert time.monotonic() < deadline, "no verification container within 600 s"
        time.sleep(0.05)
    return found


@pytest.mark.docker
def test_an_interrupted_or_killed_deploy_leaves_no_container_running(
    ws, capsys, tmp_path, engine
) -> None:
    # Ctrl-C while the image is being verified: the deploy removes its container and exits 130.
    process = _deploy_process(ws, tmp_path / "a")
    _once_verifying(process, engine)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert json.loads(out)["state"] == "CANCELLED"
    assert _leftover_containers(engine) == []

    # kill -9 runs nothing of ours: the container keeps running, holding its port, until the
    # next deploy on this host removes it (its deploy is gone) and says so.
    process = _deploy_process(ws, tmp_path / "b")
    left = _once_verifying(process, engine)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert _leftover_containers(engine) == left
    docker = ("--target", "docker", "--base-image", BASE_IMAGE, "--port", str(free_port()))
    code, summary, err = deploy(capsys, ws, *docker, "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert summary["deployment"]["docker"]["removed_orphans"] == left
    assert _leftover_containers(engine) == []
