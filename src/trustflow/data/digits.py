"""scikit-learn's bundled handwritten digits (1,797 8x8 images, UCI ML hand-written digits,
CC BY 4.0; in the sklearn package, so nothing is downloaded) as a table: one column per pixel,
scaled to [0, 1], and the digit."""

from __future__ import annotations

import numpy as np
import pandas as pd

PIXELS = [f"pixel_{i}" for i in range(64)]
TARGET = "digit"
CLASSES = [str(d) for d in range(10)]
ORIGIN = "sklearn.datasets.load_digits (UCI ML hand-written digits, 8x8)"


def digits_frame() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    frame = pd.DataFrame((digits.data / 16.0).astype(np.float32), columns=PIXELS)
    frame[TARGET] = digits.target.astype(np.int64)
    return frame


def features(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return frame[PIXELS].to_numpy(dtype=np.float32), frame[TARGET].to_numpy(dtype=np.int64)
