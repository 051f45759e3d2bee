"""The data stages of train-tabular as plain commands for ``dvc repro`` (see dvc.yaml).

They call the same core functions as the Prefect flow, with parameters from the same config
file, so ``dvc repro`` writes byte-identical data (the same md5) as ``trustflow run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from trustflow.config import load_config
from trustflow.data.sources import load_source
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.errors import TrustflowError
from trustflow.io import write_frame
from trustflow.refs import DataRef


def prepare(config_path: str, out: Path) -> DataRef:
    """Ingest and validate: the versioned data set of the flow."""
    data = load_config(config_path).data
    loaded = load_source(data.source, cache_dir=out.parent / ".openml")
    frame, _ = validate_frame(loaded.frame, data.dataset, data.missing, loaded.origin)
    return write_frame(frame, out)


def split(config_path: str, data: Path, out: Path) -> list[DataRef]:
    config = load_config(config_path)
    parts = split_frame(pd.read_parquet(data), config.data.dataset.target.column, config.split)
    return [
        write_frame(getattr(parts, name), out / f"{name}.parquet")
        for name in ("train", "valid", "test")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.dvc_stages", description=__doc__)
    parser.add_argument("stage", choices=["prepare", "split"])
    parser.add_argument("--config", default="configs/tabular.yaml")
    parser.add_argument("--data", type=Path, default=Path("pipeline/adult.parquet"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.stage == "prepare":
            ref = prepare(args.config, args.out)
            print(f"{ref.path}: {ref.rows} rows, md5 {ref.md5}")
        else:
            for ref in split(args.config, args.data, args.out):
                print(f"{ref.path}: {ref.rows} rows")
    except TrustflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
