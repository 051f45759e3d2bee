"""Row fingerprints: equal content, equal hash, wherever the row sits and whatever its dtype."""

from __future__ import annotations

import pandas as pd

from trustflow.config import TabularConfig
from trustflow.data.fingerprint import row_hashes, rows_digest, seen_rows, unseen
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame

SCHEMA = TabularConfig().data.dataset


def test_a_row_hashes_by_content_not_position_or_dtype() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    shuffled = frame.iloc[[2, 0, 1]].reset_index(drop=True)[["b", "a"]]
    assert list(row_hashes(shuffled)) == list(row_hashes(frame)[[2, 0, 1]])
    assert list(row_hashes(frame.astype({"a": "int32"}))) == list(row_hashes(frame))
    changed = frame.copy()
    changed.loc[1, "b"] = "q"
    assert (row_hashes(changed) != row_hashes(frame)).tolist() == [False, True, False]
    assert rows_digest(frame) != rows_digest(changed)


def test_a_new_split_seed_finds_the_old_training_rows_again(adult_sample) -> None:
    frame, _ = validate_frame(adult_sample, SCHEMA, "drop", "sample")
    target = SCHEMA.target.column
    old = split_frame(frame, target, TabularConfig().split)
    new = split_frame(frame, target, TabularConfig().split.model_copy(update={"seed": 7}))
    mask = unseen(new.test, seen_rows(old.train, old.valid))
    # What is left of the new test split are rows of the old test split, and all of them.
    kept = set(row_hashes(new.test[mask]))
    assert kept <= set(row_hashes(old.test))
    assert kept == set(row_hashes(new.test)) & set(row_hashes(old.test)) - set(
        seen_rows(old.train, old.valid)
    )
    assert 0 < mask.sum() < len(new.test)
