"""The preprocessing stage: a fitted scikit-learn ColumnTransformer built from the schema.

Categories come from the public schema, not from the rows, so the encoding is identical for every
data version and unseen values at serving time are ignored rather than fatal. A missing category
(kept under ``data.missing: impute``) encodes like an unknown one, as all zeros: no category is
invented for it, and the transformer stays convertible to ONNX (skl2onnx cannot convert a string
imputer whose missing marker is NaN). Missing numbers take the training median.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from trustflow.config import CategoricalColumn, DatasetSchema
from trustflow.errors import DataValidationError


def build_preprocessor(
    schema: DatasetSchema, kept: dict[str, list[str]] | None = None
) -> ColumnTransformer:
    """``kept`` narrows a column's categories (the rest encode as all zeros, like unknowns)."""
    categories = [
        list((kept or {}).get(name, spec.categories))
        for name in schema.categorical_features
        if isinstance(spec := schema.columns[name], CategoricalColumn)
    ]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)
    return ColumnTransformer(
        [
            ("numeric", numeric, schema.numeric_features),
            ("categorical", categorical, schema.categorical_features),
        ],
        verbose_feature_names_out=False,
    )


def features_and_target(
    frame: pd.DataFrame, schema: DatasetSchema
) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature columns in schema order and the target encoded 0, 1, ... in the order of
    ``schema.target_labels`` (binary: 1 = the positive label). Validation has refused labels
    outside the schema, so every row has a code."""
    column = schema.target.column
    if not schema.classification:  # a number to regress on (validation made it a float)
        return frame[schema.feature_columns], frame[column].to_numpy(dtype=np.float64)
    codes = pd.Categorical(frame[column], categories=schema.target_labels).codes
    if (codes < 0).any():
        value = frame[column].iloc[int(np.argmax(codes < 0))]
        raise DataValidationError(
            f"target '{column}' has {value!r}, not one of {list(schema.target_labels)}"
        )
    return frame[schema.feature_columns], codes.astype(np.int64)


def fit_preprocessor(train: pd.DataFrame, schema: DatasetSchema) -> ColumnTransformer:
    features, _ = features_and_target(train, schema)
    return build_preprocessor(schema).fit(features)
