"""Deterministic stratified train/valid/test split."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

from trustflow.config import SplitConfig


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def split_frame(frame: pd.DataFrame, target: str, cfg: SplitConfig) -> Splits:
    """Stratified on the target; the same seed always gives the same rows."""
    rest, test = train_test_split(
        frame, test_size=cfg.test_size, stratify=frame[target], random_state=cfg.seed
    )
    if cfg.valid_size == 0:
        return Splits(rest.reset_index(drop=True), rest.iloc[:0], test.reset_index(drop=True))
    train, valid = train_test_split(
        rest,
        test_size=cfg.valid_size / (1 - cfg.test_size),
        stratify=rest[target],
        random_state=cfg.seed,
    )
    return Splits(
        train.reset_index(drop=True), valid.reset_index(drop=True), test.reset_index(drop=True)
    )
