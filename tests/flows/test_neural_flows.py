"""The network candidates in the real flows: the tabular MLP with its TensorBoard events and
MLflow epoch history, warm-started from a network champion on new data; `trustflow run digits`
registering a parity-checked CNN that the inference server serves; CUDA asked for without one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from flows.cli import main
from tests.conftest import write_csv
from tests.e2e.processes import pointed_at
from tests.flows.helpers import champion, client_for, run_cli, versions
from trustflow.data.digits import PIXELS, digits_frame
from trustflow.serving.app import ModelRelease
from trustflow.serving.scorer import Scorer

MLP_ONLY = "train.candidates=[{name: mlp, kind: mlp, params: {hidden: [32], max_epochs: 8}}]"
NO_FAIRNESS_LIMIT = "fairness.max_equalized_odds_difference=null"  # small samples are noisy


@pytest.fixture(scope="module")
def networks(tmp_path_factory, adult_raw: pd.DataFrame) -> Path:
    """Two data versions, the MLP alone: v1 cold, then retrained on new data."""
    root = tmp_path_factory.mktemp("mlp")
    for version, seed in enumerate((0, 1), start=1):
        source = write_csv(adult_raw.sample(4000, random_state=seed), root / f"v{version}.csv")
        code = main(["run", "--json", "--workspace", str(root / "ws"),
                     "--set", f"data.source=csv:{source}", "--set", MLP_ONLY,
                     "--set", NO_FAIRNESS_LIMIT])  # fmt: skip
        assert code == 0
    return root / "ws"


def _mlp_runs(ws: Path) -> list:
    client = client_for(ws)
    experiment = client.get_experiment_by_name("adult-income").experiment_id
    runs = client.search_runs([experiment], "tags.mlflow.runName = 'mlp'", order_by=["start_time"])
    return list(runs)


def test_the_mlp_logs_every_epoch_to_mlflow_and_tensorboard(networks) -> None:
    ws = networks
    client = client_for(ws)
    first = _mlp_runs(ws)[0]
    epochs = int(first.data.metrics["epochs_run"])
    history = client.get_metric_history(first.info.run_id, "epoch.val_loss")
    assert [m.step for m in history] == list(range(1, epochs + 1))
    assert min(m.value for m in history) == pytest.approx(first.data.metrics["best_val_loss"])
    assert first.data.tags["trustflow.device"] in ("cpu", "cuda")
    assert first.data.tags["trustflow.warm_start.source"] == "none"

    events = sorted((ws / "tensorboard" / "mlp").glob("*/events.out.tfevents.*"))
    assert len(events) == 2  # one per training
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(scalars)


def test_retraining_on_new_data_fine_tunes_the_network_champion(networks) -> None:
    ws = networks
    cold, warm = _mlp_runs(ws)
    assert warm.data.tags["trustflow.warm_start.source"] == "models:/adult-income/1"
    assert warm.data.tags["trustflow.warm_start.reason"] == "same architecture"
    client = client_for(ws)
    version = client.get_model_version("adult-income", "1")
    assert version.tags["trustflow.candidate.kind"] == "mlp"
    first_epoch = {
        run.info.run_id: client.get_metric_history(run.info.run_id, "epoch.val_loss")[0].value
        for run in (cold, warm)
    }
    # Started from trained weights, the first epoch is already far below a cold first epoch.
    assert first_epoch[warm.info.run_id] < first_epoch[cold.info.run_id]


def test_with_warm_start_off_new_data_trains_from_scratch(networks, capsys, adult_raw) -> None:
    ws = networks
    source = write_csv(adult_raw.sample(4000, random_state=2), ws.parent / "v3.csv")
    code, summary, _ = run_cli(
        capsys, "--workspace", str(ws), "--set", f"data.source=csv:{source}", "--set", MLP_ONLY,
        "--set", NO_FAIRNESS_LIMIT, "--set", "trainer.warm_start=false",
    )  # fmt: skip
    assert code == 0, summary
    latest = _mlp_runs(ws)[-1]
    assert latest.data.tags["trustflow.warm_start.source"] == "none"
    assert latest.data.tags["trustflow.warm_start.reason"] == "no warm-start source"


def test_asking_for_cuda_without_a_gpu_is_a_config_error(networks, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot happen here")
    ws = networks
    before = champion(ws)
    code, summary, err = run_cli(
        capsys, "--workspace", str(ws), "--set", MLP_ONLY, "--set", "trainer.accelerator=cuda"
    )
    assert code == 1 and summary["error_type"] == "ConfigError"
    assert summary["error"].startswith("trainer.accelerator = cuda, but no CUDA device")
    assert "Traceback" not in err and champion(ws) == before


def test_run_digits_registers_a_parity_checked_cnn_that_is_served(tmp_path, capsys) -> None:
    ws = tmp_path / "ws"
    capsys.readouterr()
    code = main(["run", "digits", "--json", "--workspace", str(ws)])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["metrics"]["accuracy"] >= 0.97
    assert summary["onnx"]["passed"] and summary["onnx"]["rtol"] == 1e-3
    assert summary["model"] == {
        "name": "digits-cnn", "version": "1", "alias": "champion", "promoted": True,
        "reason": "first champion",
    }  # fmt: skip
    assert summary["training"]["epochs"] >= summary["training"]["best_epoch"] >= 1
    assert (ws / "data" / "digits.parquet.dvc").is_file()
    assert list((ws / "tensorboard" / "digits-cnn").glob("*/events.out.tfevents.*"))

    version = client_for(ws).get_model_version("digits-cnn", "1")
    assert version.tags["trustflow.onnx.parity_passed"] == "true"
    assert float(version.tags["trustflow.metric.accuracy"]) == pytest.approx(
        summary["metrics"]["accuracy"], abs=1e-6
    )
    with pointed_at(f"sqlite:///{ws / 'mlflow.db'}"):
        graph = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri="models:/digits-cnn/1/model.onnx", dst_path=str(tmp_path)
            )
        ).read_bytes()
    scorer = Scorer(ModelRelease("digits-cnn", "1", "models:/digits-cnn/1", graph))
    assert list(scorer.columns) == PIXELS and scorer.classes == [str(d) for d in range(10)]
    rows = digits_frame().head(50)
    labels = scorer.predict({p: rows[p].tolist() for p in PIXELS}, len(rows)).labels
    assert np.mean(labels == rows["digit"].to_numpy()) >= 0.9

    # Unchanged data and config: every stage from the content cache, the same version.
    code = main(["run", "digits", "--json", "--workspace", str(ws)])
    again = json.loads(capsys.readouterr()[0].strip().splitlines()[-1])
    assert code == 0 and again["model"]["version"] == "1"
    assert {"train", "evaluate", "export"} <= set(again["cached_stages"])


def test_retraining_the_same_network_without_the_cache_registers_no_new_version(
    capsys, tmp_path: Path, adult_raw: pd.DataFrame
) -> None:
    """Content addressing holds for networks: the saved file carries no wall-clock time."""
    source = write_csv(adult_raw.sample(3000, random_state=5), tmp_path / "adult.csv")
    ws = tmp_path / "ws"
    args = ("--workspace", str(ws), "--set", f"data.source=csv:{source}",
            "--set", MLP_ONLY, "--set", NO_FAIRNESS_LIMIT)  # fmt: skip
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    shutil.rmtree(ws / ".trustflow" / "prefect-results")  # Prefect's cache is gone
    code, again, err = run_cli(capsys, *args)
    assert code == 0, err
    assert not again["cache"]["train"]  # trained again, from scratch
    assert again["model"]["version"] == "1" and not again["model"]["new_version"]
    assert versions(ws) == ["1"]
    # The times still reach MLflow, as metrics of the candidate's run.
    retrained = _mlp_runs(ws)[-1]
    times = client_for(ws).get_metric_history(retrained.info.run_id, "epoch.epoch_seconds")
    assert len(times) == int(retrained.data.metrics["epochs_run"]) and times[0].value > 0
