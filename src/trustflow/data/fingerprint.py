"""Row fingerprints: which rows a model trained on, so that it is only ever compared on rows it
has not seen.

A row's fingerprint is a hash of its content, not of its position, so it holds across data
versions and split seeds: after ``split.seed`` changes, the champion's training rows are found
again in the new test split and left out of the comparison.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One uint64 per row, from its values (columns in name order, compared as text, so a
    column read back as int or float hashes the same)."""
    ordered = frame[sorted(frame.columns)].astype(str)
    return pd.util.hash_pandas_object(ordered, index=False).to_numpy(dtype=np.uint64)


def seen_rows(*frames: pd.DataFrame) -> np.ndarray:
    """The sorted, distinct fingerprints of every row in ``frames`` (a model's training data)."""
    if not frames:
        return np.empty(0, dtype=np.uint64)
    return np.unique(np.concatenate([row_hashes(frame) for frame in frames]))


def unseen(frame: pd.DataFrame, seen: np.ndarray) -> np.ndarray:
    """A mask of the rows of ``frame`` whose content is not among ``seen``."""
    return ~np.isin(row_hashes(frame), seen)


def rows_digest(frame: pd.DataFrame) -> str:
    """md5 of the rows' fingerprints, in order: names a comparison set in a few bytes."""
    return hashlib.md5(row_hashes(frame).tobytes()).hexdigest()
