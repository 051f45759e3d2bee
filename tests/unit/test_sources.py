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
        ("bundled:wine", r"no bundled data set named 'wine' \(bundled: adult, iris, diabetes\)"),
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


def _lines(frame: pd.DataFrame, rows: int = 20) -> list[str]:
    return frame.head(rows).to_csv(index=False).splitlines()


# case -> (how to change the file's lines, what the message must say)
MALFORMED_CSV = {
    "cut mid-line": (lambda ls: "\n".join(ls)[:-25], "appears truncated at line 21"),
    "a field too many": (
        lambda ls: "\n".join([*ls[:5], ls[5] + ",", *ls[6:]]) + "\n",
        "line 6 has 16 fields, the header has 15 (a trailing comma?)",
    ),
    "a field too few": (
        lambda ls: "\n".join([*ls[:3], ls[3].rsplit(",", 1)[0], *ls[4:]]) + "\n",
        "line 4 has 14 fields, the header has 15",
    ),
    "duplicated header name": (
        lambda ls: "\n".join([ls[0].replace("race", "sex"), *ls[1:]]) + "\n",
        "column 'sex' appears twice in the header (fields 9 and 10)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED_CSV))
def test_malformed_csv_lines_are_refused_by_line(case, adult_sample, tmp_path: Path) -> None:
    change, expected = MALFORMED_CSV[case]
    path = tmp_path / "bad.csv"
    path.write_text(change(_lines(adult_sample)), encoding="utf-8")
    with pytest.raises(DataSourceError) as caught:
        load_source(f"csv:{path}")
    assert str(caught.value).startswith(str(path)) and expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_last_line_without_a_line_end_is_fine_when_whole(adult_sample, tmp_path: Path) -> None:
    path = tmp_path / "whole.csv"
    path.write_text("\n".join(_lines(adult_sample)), encoding="utf-8")
    assert len(load_source(f"csv:{path}").frame) == 20


def test_a_byte_the_encoding_cannot_read_is_named_by_line_and_column(
    adult_sample, tmp_path: Path
) -> None:
    lines = _lines(adult_sample)
    lines[7] = lines[7].replace(",Male,", ",M\u00e4le,").replace(",Female,", ",F\u00e9male,")
    path = tmp_path / "latin.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataSourceError) as caught:
        load_source(f"csv:{path}")
    message = str(caught.value)
    assert message.startswith(f"{path}: byte 0x") and "at line 8, column 'sex'" in message
    assert "set data.encoding" in message
    frame = load_source(f"csv:{path}", encoding="latin-1").frame  # data.encoding reads it
    assert frame.loc[6, "sex"] in ("M\u00e4le", "F\u00e9male")


def test_a_folder_is_not_called_missing(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=f"data path {tmp_path} is a folder"):
        load_source(f"csv:{tmp_path}")
