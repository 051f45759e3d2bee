"""Data sources behind one interface: ``load_source(spec) -> LoadedSource``.

Specs: ``bundled:adult`` (default, shipped with the package), ``csv:<path>``, ``parquet:<path>``,
``openml:<name-or-id>`` (needs internet; cached under the given directory). Sources return the
rows as they are; the schema check in :mod:`trustflow.data.validate` decides whether they are fit
for use, so every source gets the same errors.
"""

from __future__ import annotations

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


def load_source(spec: str, cache_dir: Path | None = None) -> LoadedSource:
    scheme, sep, location = spec.partition(":")
    if not sep or not location:
        raise DataSourceError(
            f"data source '{spec}' must be bundled:<name>, csv:<path>, parquet:<path> "
            "or openml:<name-or-id>"
        )
    loaders = {"bundled": _bundled, "csv": _csv, "parquet": _parquet}
    if scheme == "openml":
        return _openml(location, cache_dir)
    if scheme not in loaders:
        raise DataSourceError(f"data source '{spec}': unknown scheme '{scheme}'")
    return loaders[scheme](location)


def source_digest(spec: str) -> str | None:
    """md5 of a source's bytes, without parsing a row (the privacy ledger checks it before
    ingest); None for a remote source, which is only known once fetched."""
    import hashlib

    scheme, _, location = spec.partition(":")
    if scheme == "bundled" and location == "adult":
        root = resources.files("trustflow.datasets").joinpath("adult")
        paths = [root.joinpath(name) for name in ("adult.data", "adult.test")]
    elif scheme in ("csv", "parquet"):
        paths = [_existing(location)]
    else:
        return None
    digest = hashlib.md5(usedforsecurity=False)
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _bundled(name: str) -> LoadedSource:
    if name != "adult":
        raise DataSourceError(f"no bundled data set named '{name}' (bundled: adult)")
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
    if not path.is_file():
        raise DataSourceError(f"data file {path} does not exist")
    return path


def _csv(path_text: str) -> LoadedSource:
    path = _existing(path_text)
    try:
        # Everything as text: the schema check converts types and can name the bad value.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"{path} is not a readable CSV file: {exc}") from exc
    return LoadedSource(frame, str(path))


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
