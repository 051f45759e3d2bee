"""Deterministic stratified train/valid/test split."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from trustflow.config import SplitConfig
from trustflow.errors import DataValidationError


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def _sizes(rows: int, cfg: SplitConfig) -> tuple[int, ...]:
    """(train, valid, test) rows as scikit-learn's ``train_test_split`` sizes them; no valid
    split when ``valid_size`` is 0."""
    test = math.ceil(cfg.test_size * rows)
    rest = rows - test
    if cfg.valid_size == 0:
        return rest, test
    valid = math.ceil(cfg.valid_size / (1 - cfg.test_size) * rest)
    return rest - valid, valid, test


def split_problem(labels: pd.Series, cfg: SplitConfig, stratify: bool = True) -> str | None:
    """Why these labels cannot be split as configured, or None. Stratified (a class target),
    every split needs a row of every class; otherwise (a number) a row."""
    if not stratify:
        if min(_sizes(len(labels), cfg)) >= 1:
            return None
        need = next(n for n in range(1, 1_000_000) if min(_sizes(n, cfg)) >= 1)
        return (
            f"{len(labels)} rows are too few for the split (split.test_size {cfg.test_size:g}, "
            f"split.valid_size {cfg.valid_size:g}): each split needs a row, which takes at "
            f"least {need} rows"
        )
    counts = labels.value_counts()
    classes = len(counts)
    splits = len(_sizes(1, cfg))
    if counts.min() < splits:
        return (
            f"class '{counts.idxmin()}' of the target has {counts.min()} row(s); each class "
            f"needs at least {splits}, one in each split"
        )
    if min(_sizes(len(labels), cfg)) >= classes:
        return None
    need = next(n for n in range(classes, 1_000_000) if min(_sizes(n, cfg)) >= classes)
    return (
        f"{len(labels)} rows are too few for the split (split.test_size {cfg.test_size:g}, "
        f"split.valid_size {cfg.valid_size:g}): each split needs a row of each of the "
        f"{classes} classes, which takes at least {need} rows"
    )


def split_frame(
    frame: pd.DataFrame, target: str, cfg: SplitConfig, stratify: bool = True
) -> Splits:
    """Stratified on a class target (``stratify``); the same seed always gives the same rows."""
    problem = split_problem(frame[target], cfg, stratify)
    if problem:
        raise DataValidationError(problem)
    rest, test = train_test_split(
        frame,
        test_size=cfg.test_size,
        stratify=frame[target] if stratify else None,
        random_state=cfg.seed,
    )
    if cfg.valid_size == 0:
        return Splits(rest.reset_index(drop=True), rest.iloc[:0], test.reset_index(drop=True))
    train, valid = train_test_split(
        rest,
        test_size=cfg.valid_size / (1 - cfg.test_size),
        stratify=rest[target] if stratify else None,
        random_state=cfg.seed,
    )
    return Splits(
        train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True)
    )
