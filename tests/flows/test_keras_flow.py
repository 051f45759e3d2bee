"""Keras in the real flows: the tabular candidate trained, exported through Keras' ONNX exporter
with parity, tracked (MLflow epoch histories, TensorBoard events), registered with its framework,
and on new data fine-tuned from the Keras champion; the digits CNN in Keras against the Lightning
one, and transfer learning from a registered Keras version to a new task."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from tests.conftest import write_csv
from tests.flows.helpers import client_for, run_cli
from trustflow.data.digits import digits_frame

KERAS_ONLY = (
    "train.candidates=[{name: keras, kind: keras_mlp, params: {hidden: [32], max_epochs: 6}}]"
)
NO_FAIRNESS_LIMIT = "fairness.max_equalized_odds_difference=null"  # small samples are noisy


@pytest.fixture(scope="module")
def keras_ws(tmp_path_factory, adult_raw: pd.DataFrame) -> Path:
    """Two data versions, the Keras network alone: v1 cold, then retrained on new data."""
    root = tmp_path_factory.mktemp("keras")
    for version, seed in enumerate((0, 1), start=1):
        source = write_csv(adult_raw.sample(4000, random_state=seed), root / f"v{version}.csv")
        code = main(["run", "--json", "--workspace", str(root / "ws"),
                     "--set", f"data.source=csv:{source}", "--set", KERAS_ONLY,
                     "--set", NO_FAIRNESS_LIMIT])  # fmt: skip
        assert code == 0
    return root / "ws"


def test_the_keras_network_is_registered_with_its_framework_and_onnx_parity(keras_ws) -> None:
    client = client_for(keras_ws)
    first = client.get_model_version("adult-income", "1")
    assert first.tags["trustflow.candidate.kind"] == "keras_mlp"
    assert first.tags["trustflow.candidate.framework"] == "keras"
    assert first.tags["trustflow.onnx.parity_passed"] == "true"
    assert client.get_model_version_by_alias("adult-income", "champion").version == 2


def test_its_epochs_go_to_mlflow_and_tensorboard_and_new_data_fine_tunes_it(keras_ws) -> None:
    client = client_for(keras_ws)
    experiment = client.get_experiment_by_name("adult-income").experiment_id
    cold, warm = client.search_runs(
        [experiment], "tags.mlflow.runName = 'keras'", order_by=["start_time"]
    )
    epochs = int(cold.data.metrics["epochs_run"])
    history = client.get_metric_history(cold.info.run_id, "epoch.val_loss")
    assert [m.step for m in history] == list(range(1, epochs + 1))
    assert min(m.value for m in history) == pytest.approx(cold.data.metrics["best_val_loss"])
    assert cold.data.tags["trustflow.warm_start.source"] == "none"
    assert warm.data.tags["trustflow.warm_start.source"] == "models:/adult-income/1"
    first_epoch = {
        run.info.run_id: client.get_metric_history(run.info.run_id, "epoch.val_loss")[0].value
        for run in (cold, warm)
    }
    assert first_epoch[warm.info.run_id] < first_epoch[cold.info.run_id]

    events = sorted((keras_ws / "tensorboard" / "keras").glob("*/events.out.tfevents.*"))
    assert len(events) == 2  # one per training
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(scalars)


def test_digits_in_keras_competes_with_lightning_and_transfers_to_a_new_task(
    tmp_path, capsys
) -> None:
    """`trustflow run digits --set model.framework=keras`: the same model name, the same gates,
    the framework recorded on the version. Then digits 5-9 on 10 % of their labels, starting
    from that Keras version (transfer.source), which the new version records."""
    ws = tmp_path / "ws"
    short = "train.params.max_epochs=4"  # plumbing, not accuracy (benchmarks/neural.py has that)
    code, lightning, err = run_cli(capsys, "digits", "--workspace", str(ws), "--set", short)
    assert code == 0, err
    assert lightning["training"]["framework"] == "lightning"
    code, keras, err = run_cli(
        capsys, "digits", "--workspace", str(ws), "--set", short,
        "--set", "model.framework=keras", "--set", "trainer.warm_start=false",
    )  # fmt: skip
    assert code == 0, err
    assert keras["training"]["framework"] == "keras"
    assert keras["onnx"]["passed"] and keras["model"]["version"] == "2"
    client = client_for(ws)
    frameworks = {
        v: client.get_model_version("digits-cnn", v).tags["trustflow.candidate.framework"]
        for v in ("1", "2")
    }
    assert frameworks == {"1": "lightning", "2": "keras"}
    # The better accuracy holds the alias, whichever framework trained it.
    better = "2" if keras["metrics"]["accuracy"] > lightning["metrics"]["accuracy"] else "1"
    assert keras["model"]["promoted"] == (better == "2")
    assert str(client.get_model_version_by_alias("digits-cnn", "champion").version) == better

    # Transfer learning: a Lightning version is refused as a source, in one line, before training.
    target = ("digits", "--workspace", str(ws), "--set", short, "--set", "model.framework=keras",
              "--set", "data.classes=[5, 6, 7, 8, 9]", "--set", "data.label_fraction=0.1",
              "--set", "registry.model_name=digits-5to9")  # fmt: skip
    code, refused, err = run_cli(capsys, *target, "--set", "transfer.source=models:/digits-cnn/1")
    assert code == 1 and refused["error_type"] == "ConfigError"
    assert refused["error"] == (
        "transfer.source = models:/digits-cnn/1 (models:/digits-cnn/1) is a lightning model; "
        "transfer needs a Keras network"
    )
    assert "Traceback" not in err
    assert not client.search_model_versions("name='digits-5to9'")
    # The Keras version is taken: its backbone, frozen first, starts the new task's network.
    alias = "transfer.source=models:/digits-cnn@keras"
    client.set_registered_model_alias("digits-cnn", "keras", "2")
    code, tuned, err = run_cli(capsys, *target, "--set", alias, "--set", "transfer.freeze_epochs=2")
    assert code == 0, err
    assert tuned["training"]["transfer"] == {
        "source": "models:/digits-cnn/2",
        "frozen": ["conv_0", "conv_1", "dense"],
        "frozen_epochs": 2,
    }
    assert tuned["dataset"]["rows"] == sum(1 for d in digits_frame()["digit"] if d >= 5)
    version = client.get_model_version("digits-5to9", "1")
    assert version.tags["trustflow.transfer.source"] == "models:/digits-cnn/2"
    assert version.tags["trustflow.transfer.frozen"] == "conv_0,conv_1,dense"
