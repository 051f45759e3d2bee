"""The synthetic-data core: the worker's public domain, the marginal comparison, and the checks
before the synthesizer runs (its environment, δ below 1/n)."""

from __future__ import annotations

import pandas as pd
import pytest

from trustflow.config import SyntheticConfig, TabularConfig
from trustflow.data.validate import validate_frame
from trustflow.errors import ConfigError
from trustflow.privacy.synthetic import marginal_report, synth_python, synthesize, worker_columns

SCHEMA = TabularConfig().data.dataset


def test_the_worker_gets_the_schemas_public_domain_never_the_rows() -> None:
    columns = {c["name"]: c for c in worker_columns(SCHEMA, bins=8)}
    assert set(columns) == set(SCHEMA.columns)
    assert columns["age"] == {
        "name": "age", "kind": "numeric", "lower": SCHEMA.columns["age"].bounds[0],
        "upper": SCHEMA.columns["age"].bounds[1], "bins": 8,
    }  # fmt: skip
    assert columns["race"]["categories"] == SCHEMA.columns["race"].categories


def test_marginals_are_zero_for_the_same_rows_and_grow_as_a_copy_drifts(adult_sample) -> None:
    real, _ = validate_frame(adult_sample, SCHEMA, "drop", "sample")
    same = marginal_report(real, real.copy(), SCHEMA, 16)
    assert set(same["one_way_tvd"].values()) == {0.0}
    assert set(same["two_way_tvd"]) == {"sex x income", "race x income"}
    drifted = real.copy()
    drifted["sex"] = "Male"  # every row
    report = marginal_report(real, drifted, SCHEMA, 16)
    female = (real["sex"] == "Female").mean()
    assert report["one_way_tvd"]["sex"] == pytest.approx(female, abs=1e-6)
    assert report["two_way_tvd"]["sex x income"] == pytest.approx(female, abs=1e-6)
    assert report["one_way_tvd"]["age"] == 0.0


def test_a_missing_synthesizer_environment_is_named_with_how_to_make_it(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "python"
    with pytest.raises(ConfigError, match=r"nowhere/python does not exist: run `make synth`"):
        synth_python(SyntheticConfig(python=str(missing)))


def test_a_delta_of_one_over_n_is_refused_before_the_synthesizer_runs(tmp_path) -> None:
    frame = pd.DataFrame({"x": range(10)})
    frame.to_parquet(tmp_path / "in.parquet")
    cfg = SyntheticConfig(delta=0.2, python=str(tmp_path / "never-run"))
    with pytest.raises(ConfigError, match=r"delta = 0.2 must be below 1/n = 0.1 for n = 10"):
        synthesize(tmp_path / "in.parquet", SCHEMA, cfg, 10, tmp_path / "out.parquet")
