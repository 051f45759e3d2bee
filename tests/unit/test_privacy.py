"""Differentially private preprocessing and the privacy ledger, on real Adult rows and real files:
OpenDP certifies the split of ε, the transformer is the standard one (it converts to ONNX with
parity), releases are reused at no cost, a budget is never overspent (also by two processes at
once), and a damaged ledger stops the run instead of being reset."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trustflow.config import PrivacyConfig, TabularConfig, load_config
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.errors import ConfigError, PrivacyBudgetExceeded, PrivacyLedgerError
from trustflow.export.onnx import check_parity, convert_pipeline
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.privacy.ledger import PrivacyLedger, release_key, settings_digest
from trustflow.privacy.mechanisms import (
    PrivateRelease,
    privacy_statement,
    private_preprocessor,
    release_statistics,
    rho_for,
)

CONFIG = TabularConfig()
SCHEMA = CONFIG.data.dataset
PURE = PrivacyConfig(mode="preprocessing", epsilon=1.0)
ZCDP = PrivacyConfig(mode="preprocessing", epsilon=1.0, accounting="zcdp", delta=1e-6)


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    raw = load_source("bundled:adult").frame.sample(n=6000, random_state=5)
    frame, _ = validate_frame(raw, SCHEMA, "drop", "sample")
    return split_frame(frame, SCHEMA.target.column, CONFIG.split).train


def test_a_pure_release_splits_epsilon_evenly_and_stays_near_the_truth(train) -> None:
    release = release_statistics(train, SCHEMA, PURE)
    statistics = 1 + 2 * len(SCHEMA.numeric_features) + len(SCHEMA.categorical_features)
    assert release.statistics == statistics == 21
    assert all(share == pytest.approx(1 / 21) for share in release.shares.values())
    assert sum(release.shares.values()) == pytest.approx(1.0)
    assert release.delta == 0 and release.rho is None
    assert abs(release.noisy_rows - len(train)) < 200  # Laplace scale 21 on a count
    age = release.numeric["age"]
    assert 17 <= age.mean <= 90 and abs(age.mean - train["age"].mean()) < 3
    assert 0 < age.variance <= (73 / 2) ** 2
    sex = release.categorical["sex"]
    assert set(sex.counts) == {"Female", "Male"} and sex.kept == ["Female", "Male"]


def test_zcdp_converts_back_to_the_configured_epsilon_at_delta(train) -> None:
    rho = rho_for(1.0, 1e-6)
    assert rho + 2 * math.sqrt(rho * math.log(1e6)) == pytest.approx(1.0)
    release = release_statistics(train, SCHEMA, ZCDP)
    assert release.rho == pytest.approx(rho)
    assert sum(release.shares.values()) == pytest.approx(rho)
    assert "δ = 1e-06" in privacy_statement(release)


def test_column_weights_shift_the_split_and_the_total_stays(train) -> None:
    cfg = PURE.model_copy(update={"column_weights": {"fnlwgt": 0.5, "native_country": 2.0}})
    release = release_statistics(train, SCHEMA, cfg)
    shares = release.shares
    # Weights: rows 1, five numeric columns 2 x 1, fnlwgt 2 x 0.5, seven categorical 1,
    # native_country 2: 21 in all.
    assert shares["fnlwgt.sum"] == shares["fnlwgt.sum_sq_dev"] == pytest.approx(0.5 / 21)
    assert shares["native_country.counts"] == pytest.approx(2 / 21)
    assert shares["age.sum"] == shares["rows"] == pytest.approx(1 / 21)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert "weighted by privacy.column_weights" in privacy_statement(release)
    with pytest.raises(ConfigError, match=r"\['zip'\] are not feature columns"):
        load_config(None, ["privacy.mode=preprocessing", "privacy.column_weights={zip: 2}"])


def test_rare_categories_fold_into_the_all_zeros_code(train) -> None:
    release = release_statistics(train, SCHEMA, PURE.model_copy(update={"min_category_count": 60}))
    kept = release.categorical["native_country"].kept
    assert "United-States" in kept and len(kept) < 10  # rare countries fold
    transformer = private_preprocessor(SCHEMA, release)
    rare = next(c for c in SCHEMA.columns["native_country"].categories if c not in kept)  # type: ignore[union-attr]
    features, _ = features_and_target(train.head(1).assign(native_country=rare), SCHEMA)
    names = list(transformer.get_feature_names_out())
    row = transformer.transform(features)[0]
    country = [i for i, n in enumerate(names) if n.startswith("native_country_")]
    assert len(country) == len(kept) and not row[country].any()


def test_the_private_transformer_is_the_standard_one_with_dp_statistics(train) -> None:
    release = release_statistics(train, SCHEMA, PURE)
    transformer = private_preprocessor(SCHEMA, release)
    exact = fit_preprocessor(train, SCHEMA)
    scaler = transformer.named_transformers_["numeric"].named_steps["scale"]
    assert scaler.mean_.tolist() == [release.numeric[n].mean for n in SCHEMA.numeric_features]
    assert not np.allclose(scaler.mean_, exact.named_transformers_["numeric"]["scale"].mean_)
    features, target = features_and_target(train, SCHEMA)
    candidate = CONFIG.train.candidates[0]  # logistic regression
    model = train_candidate(transformer, features, target, candidate, seed=0)
    graph = convert_pipeline(model, SCHEMA, CONFIG.onnx, "skl2onnx").SerializeToString()
    assert check_parity(model, graph, train, SCHEMA, CONFIG.onnx).parity.passed


def _ledger_args(key: str, cfg: PrivacyConfig) -> dict:
    settings = settings_digest(SCHEMA, cfg)
    return {
        "dataset": "adult", "dataset_md5": "d" * 32, "source_digest": "s" * 32,
        "missing": "drop", "settings": settings, "key": release_key(key, settings),
        "cfg": cfg, "what": "test",
    }  # fmt: skip


def _fake_release(cfg: PrivacyConfig, train: pd.DataFrame) -> PrivateRelease:
    return release_statistics(train.head(200), SCHEMA, cfg)


def test_the_same_release_is_reused_for_free_and_a_new_one_spends(tmp_path, train) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    cfg = PURE.model_copy(update={"budget": 2.0})
    args = _ledger_args("rows", cfg)
    first, reused, spent = ledger.release(**args, measure=lambda: _fake_release(cfg, train))
    assert not reused and spent == 0
    again, reused, spent = ledger.release(**args, measure=lambda: pytest.fail("must not measure"))
    assert reused and again.release_id == first.release_id and spent == 1.0
    assert ledger.spent("d" * 32) == 1.0 and len(ledger.entries()) == 1


def test_an_exhausted_budget_names_dataset_spent_requested_and_budget(tmp_path, train) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.json")
    cfg = PURE.model_copy(update={"budget": 1.5})
    ledger.release(**_ledger_args("a", cfg), measure=lambda: _fake_release(cfg, train))
    before = ledger.path.read_bytes()
    with pytest.raises(PrivacyBudgetExceeded) as refused:
        ledger.release(**_ledger_args("b", cfg),
                       measure=lambda: pytest.fail("must not measure"))  # fmt: skip
    message = str(refused.value)
    assert "data set adult" in message and "spent ε = 1," in message
    assert "requested ε = 1," in message and "budget ε = 1.5" in message
    assert ledger.path.read_bytes() == before  # the ledger is unchanged


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_text("{not json"), "is corrupt"),
        (
            lambda p: p.write_text(json.dumps({"format": 1, "entries": [{"epsilon": 1}]})),
            "is corrupt",
        ),
        (lambda p: p.write_text(json.dumps({"format": 9, "entries": []})), "has format 9"),
        (lambda p: p.mkdir(), "is unreadable"),
    ],
)
def test_a_damaged_ledger_stops_the_release_and_is_never_reset(tmp_path, damage, expected):
    path = tmp_path / "ledger.json"
    damage(path)
    before = path.read_bytes() if path.is_file() else None
    ledger = PrivacyLedger(path)
    with pytest.raises(PrivacyLedgerError, match=expected):
        ledger.release(**_ledger_args("a", PURE), measure=lambda: pytest.fail("no"))
    assert (path.read_bytes() if path.is_file() else None) == before


CONCURRENT = textwrap.dedent(
    """
    import sys, time
    from trustflow.config import PrivacyConfig, TabularConfig
    from trustflow.errors import PrivacyBudgetExceeded
    from trustflow.privacy.ledger import PrivacyLedger, release_key, settings_digest
    from trustflow.privacy.mechanisms import PrivateRelease

    path, label, release_json = sys.argv[1], sys.argv[2], sys.argv[3]
    schema = TabularConfig().data.dataset
    cfg = PrivacyConfig(mode="preprocessing", epsilon=1.0, budget=1.5, release=label)
    settings = settings_digest(schema, cfg)

    def measure():
        time.sleep(1.0)  # a slow release: the other process must wait for the lock
        return PrivateRelease.model_validate_json(open(release_json).read())

    time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # start together
    try:
        PrivacyLedger(__import__("pathlib").Path(path)).release(
            dataset="adult", dataset_md5="d" * 32, source_digest=None, missing="drop",
            settings=settings, key=release_key("rows", settings), cfg=cfg, what=label,
            measure=measure,
        )
    except PrivacyBudgetExceeded as exc:
        print(exc)
        sys.exit(3)
    """
)


def test_two_processes_at_once_cannot_overspend_together(tmp_path, train) -> None:
    import time

    release = tmp_path / "release.json"
    release.write_text(_fake_release(PURE, train).model_dump_json())
    ledger = tmp_path / "ledger.json"
    start = str(time.time() + 2.0)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(ledger), label, str(release), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in ("first", "second")
    ]
    outcomes = sorted(run.wait(timeout=120) for run in runs)
    assert outcomes == [0, 3], [run.stderr.read() for run in runs]  # type: ignore[union-attr]
    entries = PrivacyLedger(ledger).entries()
    assert len(entries) == 1 and sum(e.epsilon for e in entries) == 1.0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["privacy.epsilon=0"], "privacy.epsilon"),
        (["privacy.epsilon=-1"], "privacy.epsilon"),
        (["privacy.delta=1.5"], "privacy.delta"),
        (["privacy.delta=1e-6"], "privacy.delta = 1e-06 needs privacy.accounting: zcdp"),
        (["privacy.accounting=zcdp"], "zcdp needs 0 < privacy.delta < 1"),
        (["privacy.mode=preprocessing", "privacy.epsilon=4"],
         "privacy.epsilon = 4 exceeds privacy.budget = 3"),
        (["privacy.mode=maybe"], "privacy.mode"),
    ],
)  # fmt: skip
def test_bad_privacy_settings_are_config_errors(overrides, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert expected in str(caught.value)


def test_numeric_columns_need_public_bounds_for_dp(tmp_path: Path) -> None:
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "name: toy\ncolumns:\n  x: {kind: numeric}\n"
        "  y: {kind: categorical, categories: ['no', 'yes']}\n"
        "target: {column: y, positive: 'yes'}\n"
    )
    only_lr = "train.candidates=[{name: lr, kind: logistic_regression}]"
    load_config(None, [f"data.dataset={schema}", only_lr])  # fine without DP
    with pytest.raises(ConfigError, match=r"declares none for \['x'\]"):
        load_config(None, [f"data.dataset={schema}", only_lr, "privacy.mode=preprocessing"])
