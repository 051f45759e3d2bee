"""Data sources behind one interface: ``load_source(spec) -> LoadedSource``.

Specs: ``bundled:adult`` (default, shipped with the package), ``csv:<path>``, ``parquet:<path>``,
``openml:<name-or-id>`` (needs internet; cached under the given directory). Sources return the
rows as they are; the schema check in :mod:`trustflow.data.validate` decides whether they are fit
for use, so every source gets the same errors.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from trustflow.errors import DataSourceError

# Column order of adult.data / adult.test (see adult.names), in snake_case.
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
    "native_country", "income",
]  # fmt: skip


@dataclass(frozen=True)
class LoadedSource:
    frame: pd.DataFrame
    origin: str  # a human-readable location, quoted in error messages and lineage


def load_source(spec: str, cache_dir: Path | None = None, encoding: str = "utf-8") -> LoadedSource:
    """``encoding`` applies to CSV files only."""
    scheme, sep, location = spec.partition(":")
    if not sep:
        raise DataSourceError(
            f"data source '{spec}' must be bundled:<name>, csv:<path>, parquet:<path> "
            "or openml:<name-or-id>"
        )
    if scheme not in ("bundled", "csv", "parquet", "openml"):
        raise DataSourceError(f"data source '{spec}': unknown scheme '{scheme}'")
    if not location.strip():
        what = {"bundled": "name", "openml": "name or id"}.get(scheme, "path")
        raise DataSourceError(f"data source '{spec}': the {what} is missing ({scheme}:<{what}>)")
    if scheme == "openml":
        return _openml(location, cache_dir)
    if scheme == "csv":
        return _csv(location, encoding)
    return _bundled(location) if scheme == "bundled" else _parquet(location)


def source_digest(spec: str) -> str | None:
    """md5 of a source's bytes, without parsing a row (the privacy ledger checks it before
    ingest); None for a remote source, which is only known once fetched."""
    import hashlib

    scheme, _, location = spec.partition(":")
    if scheme == "bundled" and location == "adult":
        root = resources.files("trustflow.datasets").joinpath("adult")
        paths = [root.joinpath(name) for name in ("adult.data", "adult.test")]
    elif scheme == "bundled":
        paths = [_bundled_csv(location)]
    elif scheme in ("csv", "parquet"):
        paths = [_existing(location)]
    else:
        return None
    digest = hashlib.md5(usedforsecurity=False)
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


BUNDLED = ("adult", "iris", "diabetes")


def _bundled_csv(name: str) -> Path:
    """A bundled data set other than Adult: ``datasets/<name>/<name>.csv``, with a header."""
    if name not in BUNDLED:
        raise DataSourceError(f"no bundled data set named '{name}' (bundled: {', '.join(BUNDLED)})")
    return Path(str(resources.files("trustflow.datasets").joinpath(name, f"{name}.csv")))


def _bundled(name: str) -> LoadedSource:
    if name != "adult":
        loaded = _csv(str(_bundled_csv(name)))
        return LoadedSource(loaded.frame, f"bundled:{name}")
    root = resources.files("trustflow.datasets").joinpath("adult")
    parts = []
    for filename in ("adult.data", "adult.test"):
        with resources.as_file(root.joinpath(filename)) as path:
            # adult.test starts with a comment line; its labels end with a dot (">50K.").
            frame = pd.read_csv(
                path,
                header=None,
                names=ADULT_COLUMNS,
                dtype=str,
                keep_default_na=False,
                skipinitialspace=True,
                comment="|",
                skip_blank_lines=True,
            )
        frame["income"] = frame["income"].str.rstrip(".")
        parts.append(frame)
    return LoadedSource(pd.concat(parts, ignore_index=True), "bundled:adult")


def _existing(path_text: str) -> Path:
    path = Path(path_text).expanduser()
    if path.is_dir():
        raise DataSourceError(f"data path {path} is a folder; give a file inside it")
    if not path.is_file():
        raise DataSourceError(f"data file {path} does not exist")
    return path


def _decoded(path: Path, encoding: str) -> str:
    """The file's text; a byte the encoding cannot read is named by line and column."""
    raw = path.read_bytes()
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataSourceError(f"data.encoding '{encoding}' is not a known encoding") from None
    try:
        return raw.decode(encoding).removeprefix("\ufeff")  # a byte-order mark is not data
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        before = raw[line_start : exc.start].decode(encoding, errors="replace")
        field = len(next(csv.reader([before], skipinitialspace=True), [""]))
        header_line = raw.split(b"\n", 1)[0].decode(encoding, errors="replace").strip()
        header = next(csv.reader([header_line], skipinitialspace=True), [])
        column = f"column '{header[field - 1]}'" if field <= len(header) else f"field {field}"
        raise DataSourceError(
            f"{path}: byte 0x{raw[exc.start]:02x} at line {line}, {column} is not valid "
            f"{encoding}; set data.encoding to the file's encoding (e.g. latin-1)"
        ) from None


def _csv(path_text: str, encoding: str = "utf-8") -> LoadedSource:
    """Every value as text (the schema check converts types and can name a bad value), and
    every line checked against the header: a row with a field too many or too few would
    otherwise shift or pad its columns silently."""
    path = _existing(path_text)
    text = _decoded(path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    try:
        for fields in reader:
            if not fields:  # a blank line
                continue
            if header is None:
                header = [name.strip() for name in fields]
                _check_header(path, header)
                continue
            if len(fields) != len(header):
                _refuse_row(path, reader.line_num, fields, len(header), text)
            rows.append(fields)
    except csv.Error as exc:
        raise DataSourceError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from None
    if header is None:
        return LoadedSource(pd.DataFrame(), str(path))
    return LoadedSource(pd.DataFrame(rows, columns=header, dtype=str), str(path))


def _check_header(path: Path, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if not name:
            raise DataSourceError(f"{path}: header field {position} has no column name")
        if name in seen:
            raise DataSourceError(
                f"{path}: column '{name}' appears twice in the header "
                f"(fields {seen[name]} and {position})"
            )
        seen[name] = position


def _refuse_row(path: Path, line: int, fields: list[str], expected: int, text: str) -> None:
    last = line == text.count("\n") + 1 and not text.endswith("\n")
    if last and len(fields) < expected:
        raise DataSourceError(
            f"{path} appears truncated at line {line}: its last line has {len(fields)} of "
            f"{expected} fields and no line end"
        )
    hint = " (a trailing comma?)" if len(fields) == expected + 1 and not fields[-1] else ""
    raise DataSourceError(
        f"{path}: line {line} has {len(fields)} fields, the header has {expected}{hint}"
    )


def _parquet(path_text: str) -> LoadedSource:
    path = _existing(path_text)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataSourceError(f"{path} is not a readable Parquet file: {exc}") from exc
    return LoadedSource(frame, str(path))


def _openml(name_or_id: str, cache_dir: Path | None) -> LoadedSource:
    from sklearn.datasets import fetch_openml

    by_id = name_or_id.isdigit()
    try:
        bunch = fetch_openml(
            name=None if by_id else name_or_id,
            data_id=int(name_or_id) if by_id else None,
            as_frame=True,
            data_home=str(cache_dir) if cache_dir else None,
            parser="auto",
        )
    except Exception as exc:  # network, HTTP and OpenML errors all mean "could not fetch"
        raise DataSourceError(f"openml:{name_or_id} could not be fetched: {exc}") from exc
    return LoadedSource(bunch.frame, f"openml:{name_or_id}")
