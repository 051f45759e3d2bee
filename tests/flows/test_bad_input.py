"""Bad input through the CLI: one line naming the problem, exit 1, nothing registered, the
champion and the versioned data untouched, no half-written files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST_CANDIDATES, set_cell, with_header_row, write_csv
from tests.flows.helpers import champion, run_cli, versions
from trustflow.io import file_digest

# case -> (how to break the sample, what the message must name)
CASES = {
    "missing-column": (lambda f: f.drop(columns=["hours_per_week"]), "'hours_per_week'"),
    "extra-column": (lambda f: f.assign(zip_code="1"), "unexpected column(s) ['zip_code']"),
    "wrong-type": (set_cell("age", 9, "abc"), "column 'age' expects numbers, found 'abc' (row 10)"),
    "unknown-category": (set_cell("race", 2, "Martian"), "unknown category 'Martian' (row 3)"),
    "empty": (lambda f: f.iloc[:0], "no data rows"),
    "all-null-column": (lambda f: f.assign(workclass=""), "column 'workclass' has no values"),
    "one-class-target": (
        lambda f: f.assign(income=">50K"),
        "target 'income' has no rows of class(es) ['<=50K']",
    ),
    "duplicated-header": (with_header_row(5), "row 6 repeats the header row"),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, adult_sample: pd.DataFrame) -> Path:
    """A workspace whose champion is v1, trained on the good sample."""
    from flows.tabular import run_pipeline
    from tests.conftest import small_config
    from trustflow.workspace import Workspace

    root = tmp_path_factory.mktemp("ws")
    good = write_csv(adult_sample, tmp_path_factory.mktemp("good") / "adult.csv")
    assert run_pipeline(small_config(good), Workspace(root=root)).is_completed()
    return root


def _state_of(root: Path) -> dict:
    # Every file with its content, except Prefect's record of the failed task's exception
    # (what its UI shows for the failed run): that is the audit trail, not a pipeline output;
    # and the workspace's run lock, which the first CLI run creates (it is empty between runs).
    lock = root / ".trustflow" / "run.lock"
    assert not lock.exists() or lock.read_text() == ""
    files = sorted(
        (str(p.relative_to(root)), file_digest(p))
        for p in root.rglob("*")
        if p.is_file() and "prefect-results" not in p.parts and p != lock
    )
    return {
        "versions": versions(root),
        "champion": champion(root),
        "data_md5": file_digest(root / "data" / "adult.parquet"),
        "files": files,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_cleanly(case, workspace, adult_sample, tmp_path, capsys) -> None:
    break_data, expected = CASES[case]
    bad = write_csv(break_data(adult_sample), tmp_path / f"{case}.csv")
    before = _state_of(workspace)

    code, summary, err = run_cli(
        capsys, "--workspace", str(workspace), "--set", f"data.source=csv:{bad}",
        "--set", FAST_CANDIDATES,
    )  # fmt: skip

    assert code == 1
    assert summary["state"] == "FAILED"
    assert summary["error_type"] == "DataValidationError"
    assert str(bad) in summary["error"] and expected in summary["error"]
    assert err.strip().count("\n") == 0 and "Traceback" not in err  # one line for people
    after = _state_of(workspace)  # nothing registered, moved or left behind
    assert set(after.pop("files")) ^ set(before.pop("files")) == set()
    assert after == before


def _cut(text: str) -> str:
    return text[: text.rindex("\n", 0, len(text) - 1) + 20]  # the last row cut mid-line


def _trailing_comma(text: str) -> str:
    lines = text.split("\n")
    lines[40] += ","
    return "\n".join(lines)


def _one_percent_out_of_bounds(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[::100], "age"] = "-5"
    return frame


def _five_of_each_class(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("income").head(5)


# case -> (how to break the file's text, error type, what the message must name). Each of
# these was accepted once: a model trained on them was registered, and once promoted.
RAW_CASES = {
    "cut-mid-line": (_cut, "DataSourceError", "appears truncated at line 3001"),
    "trailing-comma": (_trailing_comma, "DataSourceError",
                       "line 41 has 16 fields, the header has 15 (a trailing comma?)"),
    "out-of-bounds": ("frame", _one_percent_out_of_bounds, "DataValidationError",
                      "column 'age' has -5 (row 1), outside its bounds [17, 90], and 29 more"),
    "infinite": ("frame", set_cell("capital_gain", 11, "inf"), "DataValidationError",
                 "column 'capital_gain' has 'inf' (row 12)"),
    "too-few-rows": ("frame", _five_of_each_class, "DataValidationError",
                     "10 rows are too few for the split"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_malformed_files_fail_cleanly(case, workspace, adult_sample, tmp_path, capsys) -> None:
    """Nothing registered, and the versioned data (data/adult.parquet) stays what it was."""
    *how, error_type, expected = RAW_CASES[case]
    bad = tmp_path / f"{case}.csv"
    if how[0] == "frame":
        write_csv(how[1](adult_sample), bad)
    else:
        bad.write_text(how[0](adult_sample.to_csv(index=False)), encoding="utf-8")
    before = _state_of(workspace)

    code, summary, err = run_cli(
        capsys, "--workspace", str(workspace), "--set", f"data.source=csv:{bad}",
        "--set", FAST_CANDIDATES,
    )  # fmt: skip

    assert code == 1 and summary["error_type"] == error_type, summary
    assert str(bad) in summary["error"] and expected in summary["error"], summary["error"]
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    after = _state_of(workspace)
    assert set(after.pop("files")) ^ set(before.pop("files")) == set()
    assert after == before


def test_invalid_config_fails_before_anything_runs(workspace, capsys) -> None:
    before = _state_of(workspace)
    code, summary, err = run_cli(capsys, "--workspace", str(workspace), "--set", "split.seed=x")
    assert code == 1 and summary["error_type"] == "ConfigError"
    assert "split.seed" in summary["error"] and "Traceback" not in err
    assert _state_of(workspace) == before


@pytest.mark.parametrize(
    ("candidate", "names"),
    [
        ("{name: svm, kind: svm}", "candidate 'svm': unknown kind 'svm'; known kinds: "),
        ("{name: hgb, kind: hist_gradient_boosting, params: {max_iters: 30}}",
         "candidate 'hgb' (hist_gradient_boosting): unknown param 'max_iters'; allowed: "
         "learning_rate, max_iter,"),
        ("{name: lr, kind: logistic_regression, params: {C: strong}}",
         "candidate 'lr' (logistic_regression): params.C = 'strong': Input should be a valid "
         "number"),
    ],
)  # fmt: skip
def test_a_bad_candidate_fails_before_ingest(candidate, names, workspace, capsys) -> None:
    before = _state_of(workspace)
    code, summary, err = run_cli(
        capsys, "--workspace", str(workspace), "--set", f"train.candidates=[{candidate}]"
    )
    assert code == 1 and summary["error_type"] == "ConfigError"
    assert names in summary["error"]
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert " ingest " not in err
    assert _state_of(workspace) == before


def test_missing_source_file_is_named(workspace, tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere.csv"
    code, summary, _ = run_cli(
        capsys, "--workspace", str(workspace), "--set", f"data.source=csv:{missing}"
    )
    assert code == 1 and summary["error"] == f"data file {missing} does not exist"


def test_model_failing_onnx_parity_is_registered_but_never_promoted(workspace, capsys) -> None:
    before = versions(workspace)
    code, summary, err = run_cli(
        capsys, "--workspace", str(workspace), "--set", FAST_CANDIDATES,
        "--set", "train.seed=7",  # a different model, so a new version is registered
        "--set", "onnx.max_abs_diff=1e-30",
    )  # fmt: skip
    assert code == 1 and summary["error_type"] == "GateFailed"
    assert "not promoted: ONNX parity failed" in summary["error"]
    assert "onnx.max_abs_diff = 1e-30" in summary["error"] and "Traceback" not in err
    after = versions(workspace)
    assert len(after) == len(before) + 1  # registered with its parity result ...
    assert champion(workspace) == "1"  # ... but the alias did not move


def test_an_unreachable_tracking_server_stops_the_run_before_any_work(
    tmp_path, sample_csv, capsys, monkeypatch
) -> None:
    from tests.e2e.processes import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    ws = tmp_path / "ws"
    code, summary, err = run_cli(
        capsys, "--workspace", str(ws), "--set", f"data.source=csv:{sample_csv}",
        "--set", FAST_CANDIDATES,
    )  # fmt: skip
    assert code == 1 and summary["error_type"] == "TrackingUnavailable", summary
    assert summary["error"].startswith(f"MLflow tracking server {uri} did not answer after 5")
    assert "Traceback" not in err
    assert not (ws / "data").exists()  # nothing ingested, trained or registered
