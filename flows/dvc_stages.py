"""The data stages of train-tabular as plain commands for ``dvc repro`` (see dvc.yaml).

Each stage calls the same core function as the flow's task of the same name, with parameters
from the same config file, so ``dvc repro`` writes the same bytes (the same md5) as
``trustflow run``: the validated data set, its three splits and the fitted preprocessor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import joblib
import pandas as pd

from trustflow.config import load_config
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame, split_problem
from trustflow.data.validate import validate_frame
from trustflow.errors import DataValidationError, TrustflowError
from trustflow.io import atomic_path, file_digest, write_frame
from trustflow.models.preprocess import fit_preprocessor

SPLITS = ("train", "valid", "test")


def ingest(config: str, out: Path) -> list[str]:
    """The source as it is now (the flow's staging file)."""
    data = load_config(config).data
    loaded = load_source(data.source, out.parent / ".openml", data.encoding)
    ref = write_frame(loaded.frame, out)
    return [f"{ref.path}: {ref.rows} rows from {loaded.origin}"]


def validate(config: str, data: Path, out: Path) -> list[str]:
    """Schema check and the split's row counts; only a data set that passes is written (the
    flow's data/<name>.parquet)."""
    config_tree = load_config(config)
    cfg = config_tree.data
    clean, _ = validate_frame(pd.read_parquet(data), cfg.dataset, cfg.missing, str(data))
    schema = cfg.dataset
    problem = split_problem(clean[schema.target.column], config_tree.split, schema.classification)
    if problem:
        raise DataValidationError(f"{data}: {problem}")
    ref = write_frame(clean, out)
    return [f"{ref.path}: {ref.rows} rows, md5 {ref.md5}"]


def split(config: str, data: Path, out: Path) -> list[str]:
    cfg = load_config(config)
    schema = cfg.data.dataset
    parts = split_frame(
        pd.read_parquet(data), schema.target.column, cfg.split, schema.classification
    )
    refs = [write_frame(getattr(parts, name), out / f"{name}.parquet") for name in SPLITS]
    return [f"{ref.path}: {ref.rows} rows, md5 {ref.md5}" for ref in refs]


def preprocess(config: str, data: Path, out: Path) -> list[str]:
    """Fit the shared preprocessor on the train split (the flow's preprocess artifact)."""
    fitted = fit_preprocessor(pd.read_parquet(data), load_config(config).data.dataset)
    with atomic_path(out) as tmp:
        joblib.dump(fitted, tmp)
    return [f"{out}: sha256 {file_digest(out, 'sha256')}"]


# The stages that read the previous stage's output (--data).
FROM_DATA: dict[str, Callable[[str, Path, Path], list[str]]] = {
    "validate": validate,
    "split": split,
    "preprocess": preprocess,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.dvc_stages", description=__doc__)
    parser.add_argument("stage", choices=["ingest", *FROM_DATA])
    parser.add_argument("--config", default="configs/tabular.yaml")
    parser.add_argument("--data", type=Path, help="the stage's input (all but ingest)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.stage == "ingest":
            lines = ingest(args.config, args.out)
        elif args.data is None:
            parser.error(f"stage {args.stage} needs --data")
        else:
            lines = FROM_DATA[args.stage](args.config, args.data, args.out)
    except TrustflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
