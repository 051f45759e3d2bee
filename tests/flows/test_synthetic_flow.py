"""train-tabular with ``privacy.mode: synthetic``: SmartNoise's MST (in .venv-synth, `make synth`)
makes a DP copy of the training split of 3,000 Adult rows, and every candidate trains on it.
The runs share one workspace and go in order: the copy spends ε and is recorded, compared and
trained on; a rerun reuses it for free."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST_CANDIDATES, write_csv
from tests.flows.helpers import client_for, fails_in_one_line, run_cli, versions
from trustflow.io import file_digest

SYNTHETIC = (
    FAST_CANDIDATES, "privacy.mode=synthetic", "privacy.budget=1.5",
    # A copy made with ε = 1 from 2,000 rows can move a model across the fairness limit, and
    # the small groups of the test split are not what these tests are about.
    "fairness.max_equalized_odds_difference=null", "fairness.unmeasured=allow",
)  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    return write_csv(adult_sample, tmp_path_factory.mktemp("src") / "adult.csv")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def runs() -> dict:
    return {}


def _args(source: Path, *settings: str) -> list[str]:
    every = [f"data.source=csv:{source}", *settings]
    return [arg for setting in every for arg in ("--set", setting)]


def test_the_candidates_train_on_a_recorded_dp_copy_compared_with_the_real_rows(
    capsys, ws, source, runs, tmp_path
) -> None:
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *_args(source, *SYNTHETIC))
    assert code == 0, err
    runs["first"] = summary
    privacy = summary["privacy"]
    assert privacy["mode"] == "synthetic" and privacy["epsilon_spent"] == 1.0
    assert privacy["budget_remaining"] == 0.5 and not privacy["reused"]
    assert privacy["statement"].startswith("The models trained only on a differentially private")
    report = privacy["synthetic_report"]
    assert set(report["one_way_tvd"]) == set(pd.read_csv(source).columns)
    # A copy that kept no structure would be far off; MST at ε = 1 keeps the marginals close.
    assert max(report["one_way_tvd"].values()) < 0.25, report
    assert set(report["two_way_tvd"]) == {"sex x income", "race x income"}
    [entry] = json.loads((ws / ".trustflow" / "privacy-ledger.json").read_text())["entries"]
    copy = Path(entry["synthetic"]["file"])
    assert entry["release_id"] == privacy["release_id"] and entry["epsilon"] == 1.0
    assert (
        copy.parent == ws / ".trustflow" / "synthetic"
        and file_digest(copy) == entry["synthetic"]["md5"]
    )
    assert entry["synthetic"]["rows"] == len(pd.read_parquet(copy)) > 1000
    run = client_for(ws).get_run(summary["mlflow"]["run_id"])
    assert run.data.metrics["privacy.synthetic.tvd_max"] == max(report["one_way_tvd"].values())
    card = Path(summary["model_card"].removeprefix("file://")).read_text()
    assert "synthetic copy" in card
    # The same candidates on the real rows (another workspace, same seed) score otherwise: the
    # models above did not train on the real training split.
    real = tmp_path / "real"
    settings = [s for s in SYNTHETIC if not s.startswith("privacy.")]
    code, plain, err = run_cli(capsys, "--workspace", str(real), *_args(source, *settings))
    assert code == 0, err
    assert plain["candidates"]["hgb"] != summary["candidates"]["hgb"]


def test_a_rerun_reuses_the_recorded_copy_and_spends_nothing(capsys, ws, source, runs) -> None:
    code, summary, err = run_cli(capsys, "--workspace", str(ws), *_args(source, *SYNTHETIC))
    assert code == 0, err
    privacy = summary["privacy"]
    assert privacy["reused"] and privacy["epsilon_spent"] == 0.0
    assert privacy["release_id"] == runs["first"]["privacy"]["release_id"]
    assert summary["candidates"] == runs["first"]["candidates"]
    assert versions(ws) == ["1"]


def test_without_its_environment_the_run_stops_before_reading_data(capsys, source, tmp_path):
    error = fails_in_one_line(
        capsys, tmp_path, *_args(source, *SYNTHETIC, "privacy.synthetic.python=/nowhere/python")
    )
    assert error.startswith("privacy.mode: synthetic runs SmartNoise in its own environment")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("synthesizer", ["mst", "aim"])
def test_columns_the_model_holds_independent_come_out_independent(synthesizer, tmp_path) -> None:
    """smartnoise-synth's own sample() draws with Private-PGM's method="round", which in mbi
    1.1.0 ties every column to the row order: here, of five independent columns, two came out
    with a dependence (TVD of their joint from the product of their marginals) of 0.70 (MST).
    The worker samples from the model's conditionals instead (0.04)."""
    import itertools

    import numpy as np

    from trustflow.config import DatasetSchema, SyntheticConfig
    from trustflow.privacy.synthetic import synthesize

    rng = np.random.default_rng(0)
    letters, names = ("p", "q", "r", "s"), ("a", "b", "c", "d", "y")
    frame = pd.DataFrame({c: rng.choice(letters, 4000) for c in names})
    schema = DatasetSchema.model_validate(
        {
            "name": "independent",
            "columns": {c: {"kind": "categorical", "categories": letters} for c in names},
            "target": {"column": "y", "task": "multiclass"},
        }
    )
    frame.to_parquet(tmp_path / "rows.parquet", index=False)
    out = tmp_path / "copy.parquet"
    cfg = SyntheticConfig(synthesizer=synthesizer, epsilon=8)
    synthesize(tmp_path / "rows.parquet", schema, cfg, 4000, out)
    copy = pd.read_parquet(out)

    def dependence(x: str, y: str) -> float:
        joint = pd.crosstab(copy[x], copy[y], normalize=True).to_numpy()
        product = np.outer(*(copy[c].value_counts(normalize=True).sort_index() for c in (x, y)))
        return float(0.5 * np.abs(joint - product).sum())

    assert max(dependence(x, y) for x, y in itertools.combinations(names, 2)) < 0.15


def test_a_synthesizer_past_its_time_budget_is_stopped_and_spends_nothing(
    capsys, source, tmp_path
) -> None:
    budget = ("privacy.synthetic.synthesizer=aim", "privacy.synthetic.max_seconds=1")
    error = fails_in_one_line(capsys, tmp_path, *_args(source, *SYNTHETIC, *budget))
    assert error.startswith("the AIM synthesizer did not finish within privacy.synthetic.")
    assert "nothing was recorded or spent" in error
    ledger = tmp_path / ".trustflow" / "privacy-ledger.json"
    assert not ledger.exists() or json.loads(ledger.read_text())["entries"] == []
    assert not list((tmp_path / ".trustflow" / "synthetic").glob("*"))
