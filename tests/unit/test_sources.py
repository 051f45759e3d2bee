import socket
from pathlib import Path

import pandas as pd
import pytest

from trustflow.config import TabularConfig
from trustflow.data.sources import ADULT_COLUMNS, load_source
from trustflow.data.validate import validate_frame
from trustflow.errors import DataSourceError

SCHEMA = TabularConfig().data.dataset


def test_bundled_adult_is_the_whole_uci_set(adult_raw: pd.DataFrame) -> None:
    assert adult_raw.shape == (48_842, 15)
    assert list(adult_raw.columns) == ADULT_COLUMNS
    # adult.test writes labels with a trailing dot; the loader makes both files agree.
    assert set(adult_raw["income"]) == {"<=50K", ">50K"}
    assert (adult_raw["income"] == ">50K").sum() == 11_687


def test_csv_and_parquet_sources_agree(adult_sample: pd.DataFrame, tmp_path: Path) -> None:
    adult_sample.to_csv(tmp_path / "a.csv", index=False)
    adult_sample.to_parquet(tmp_path / "a.parquet", index=False)
    from_csv, _ = validate_frame(
        load_source(f"csv:{tmp_path / 'a.csv'}").frame, SCHEMA, "drop", "a"
    )
    from_pq, _ = validate_frame(
        load_source(f"parquet:{tmp_path / 'a.parquet'}").frame, SCHEMA, "drop", "a"
    )
    pd.testing.assert_frame_equal(from_csv, from_pq)


def test_parquet_with_native_numbers_validates(adult_sample: pd.DataFrame, tmp_path: Path) -> None:
    typed = adult_sample.astype({"age": "int64", "hours_per_week": "float64"})
    typed.to_parquet(tmp_path / "typed.parquet", index=False)
    frame, report = validate_frame(
        load_source(f"parquet:{tmp_path / 'typed.parquet'}").frame, SCHEMA, "drop", "typed"
    )
    assert frame["age"].dtype == "float64" and report.rows_in == 3000


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adult", "must be bundled:<name>"),
        ("ftp:somewhere", "unknown scheme 'ftp'"),
        ("bundled:iris", "no bundled data set named 'iris'"),
        ("csv:/nonexistent/data.csv", "/nonexistent/data.csv does not exist"),
        ("parquet:/nonexistent/x.parquet", "/nonexistent/x.parquet does not exist"),
    ],
)
def test_bad_source_specs_are_named(spec: str, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        load_source(spec)


def test_corrupt_parquet_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataSourceError, match=r"bad\.parquet is not a readable Parquet file"):
        load_source(f"parquet:{bad}")


def test_openml_failure_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    # OpenML that does not answer, whatever network this machine has (tests never download):
    # scikit-learn's own fetch, pointed at a port on 127.0.0.1 that nothing listens on.
    from sklearn.datasets import _openml

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(
        _openml, "_SEARCH_NAME", closed + "/api/v1/json/data/list/data_name/{}/limit/2"
    )
    with pytest.raises(DataSourceError, match="openml:adult could not be fetched"):
        load_source("openml:adult", cache_dir=tmp_path)
