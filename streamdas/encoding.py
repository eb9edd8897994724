"""Records as network inputs: River dicts and DataFrames as rows in the columns of a growing
:class:`~streamdas.features.FeatureIndex`, standardized with running statistics.

Learning grows the index (bounded by ``max_features``); predicting never changes it, and
ignores features it does not know. Missing features are NaN in the raw rows and their running
mean (zero) once standardized.

>>> encoder = FeatureEncoder(max_features=3, clip_sd=None, standardize=True)
>>> encoder.learn_row({"b": 2.0, "a": 1.0}, on_grow=print)  # new names: sorted, then added
2
array([1., 2.], dtype=float32)
>>> encoder.standardize_batch(np.array([[1.0, 2.0], [3.0, 6.0]], dtype=np.float32)).tolist()
[[-1.0, -1.0], [1.0, 1.0]]
>>> encoder.predict_row({"a": 3.0, "z": 9.0}).tolist()  # "b" missing -> its mean; "z" ignored
[1.0, 0.0]
>>> encoder.learn_row({"c": 1.0, "d": 1.0}, on_grow=print)
Traceback (most recent call last):
...
streamdas.features.LimitError: too many features: 2 new (first 'c') would make 4, max_features=3
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from streamdas.checkpoint import short_repr
from streamdas.features import FeatureIndex, LimitError, RunningStandardizer

__all__ = ["FeatureEncoder"]


class FeatureEncoder:
    """The feature index and the input statistics of one model, and the conversions between
    records and float32 rows that use them.

    Parameters
    ----------
    max_features
        Most features the index may hold (``None``: no bound).
    clip_sd
        Clipping of the running statistics (:class:`~streamdas.features.RunningStandardizer`).
    standardize
        Scale by the running standard deviation (otherwise only centre).
    index, stats
        Restored ones (a checkpoint); new, empty ones by default.
    """

    def __init__(
        self,
        max_features: int | None,
        clip_sd: float | None,
        standardize: bool,
        index: FeatureIndex | None = None,
        stats: RunningStandardizer | None = None,
    ) -> None:
        self.max_features = max_features
        self.standardize = standardize
        self.index = FeatureIndex() if index is None else index
        self.stats = RunningStandardizer(clip=clip_sd) if stats is None else stats

    def __len__(self) -> int:
        return len(self.index)

    @property
    def names(self) -> Collection[Hashable]:
        """The features known, in column order (a live read-only view)."""
        return self.index.view()

    # ------------------------------------------------------------------ learning
    def _grow(self, names: list[Hashable], on_grow: Callable[[int], None]) -> None:
        """Add ``names`` (new features) to the index and statistics, then tell ``on_grow`` how
        many; :class:`~streamdas.features.LimitError` first if they exceed ``max_features``."""
        if not names:
            return
        n = len(self.index) + len(names)
        if self.max_features is not None and n > self.max_features:
            raise LimitError(
                f"too many features: {len(names)} new (first {short_repr(names[0], 40)}) would make "
                f"{n}, max_features={self.max_features}",
                "too_many_features",
            )
        self.index.add(names)
        self.stats.extend(len(self.index))
        on_grow(len(names))

    def learn_row(self, x: Mapping[Hashable, Any], on_grow: Callable[[int], None]) -> np.ndarray:
        """Validated raw row of ``x`` (NaN = missing); new features grow the index and
        statistics (``LimitError`` beyond ``max_features``, before anything changes)."""
        index = self.index
        keys, vals = index.values(x)  # validates before anything changes
        if keys != index.cached_keys:  # a known layout has no new names
            self._grow(index.new_names(keys), on_grow)
        cols = index.columns(keys)
        if index.complete:
            return vals  # read-only, already dense
        out = np.full(len(index), np.nan, dtype=np.float32)
        out[cols] = vals
        return out

    def learn_frame(self, X: pd.DataFrame, on_grow: Callable[[int], None]) -> np.ndarray:
        """Raw float32 matrix of ``X``, every column validated before its new features grow the
        index."""
        return self._frame(X, on_grow)

    def standardize_batch(self, raw: np.ndarray) -> np.ndarray:
        """Fold a raw batch into the statistics; return it standardized (the network's input)."""
        self.stats.update(raw)
        return self.stats.transform(raw, self.standardize)

    # ------------------------------------------------------------------ predicting
    def predict_row(self, x: Mapping[Hashable, Any]) -> np.ndarray:
        """Standardized row of ``x`` (unknown features ignored, nothing changes)."""
        vec, complete = self.index.dense(x)
        return self.stats.transform(vec, self.standardize, missing=not complete)

    def predict_frame(self, X: pd.DataFrame) -> np.ndarray:
        """Standardized matrix of ``X`` (unknown columns ignored, nothing changes)."""
        return self.stats.transform(self._frame(X, None), self.standardize)

    def _frame(self, X: pd.DataFrame, on_grow: Callable[[int], None] | None) -> np.ndarray:
        """Raw float32 matrix of a DataFrame in index order (NaN = missing, as pandas has it);
        ``on_grow``: learn its new columns, ``None``: drop them."""
        cols = list(X.columns)
        for c in cols:
            if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])):
                raise ValueError(f"feature {c!r} is not numeric (dtype {X[c].dtype})")
        values = X.to_numpy(dtype=np.float32, na_value=np.nan) if cols else np.zeros((len(X), 0), np.float32)
        bad = np.isinf(values).any(axis=0)
        if bad.any():
            c = cols[int(np.flatnonzero(bad)[0])]
            raise ValueError(f"feature {c!r} is not finite (inf)")
        if on_grow is not None:
            self._grow(self.index.new_names(cols), on_grow)
        else:
            known = self.index.known(cols)
            cols = [cols[i] for i in known]
            values = values[:, known]
        out = np.full((len(X), len(self.index)), np.nan, dtype=np.float32)
        out[:, self.index.columns(tuple(cols))] = values
        return out
