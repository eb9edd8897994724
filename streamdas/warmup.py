"""The warm-up clipping of :class:`~streamdas.features.RunningStandardizer`: bounded influence
of a feature's first values, before its running statistics can judge them.

A feature's first ``warmup`` values are kept; from the 12th on, each is clipped to the mean
plus or minus ``clip`` standard deviations of the kept values less the smallest and the largest
(:func:`_warmup_window`), so a far-out value is clipped wherever it comes, even first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WarmupClipping"]

#: Values a feature needs before its warm-up values are clipped: fewer tell too little about
#: its spread (clean values would be clipped too often); until then they count in full, and
#: the recomputation from the kept values clips a far-out one later.
_ROBUST_MIN = 12


def _warmup_window(early: np.ndarray, n: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray]:
    """Clipping bounds for each column of ``early`` (a feature's first values, NaN after its
    ``n[j]``): ``mean +- clip * sd`` of its values less the smallest and the largest, so that
    neither moves it (an sd of 0 counts as 1, as in the standardization). Unbounded below
    :data:`_ROBUST_MIN` values.

    >>> x = np.array([[1.0], [2.0], [3.0], [1e30]] + [[1.0], [2.0], [3.0], [2.0]] * 2)
    >>> [round(float(b[0]), 2) for b in _warmup_window(x, np.array([12.0]), 10.0)]
    [-4.9, 9.1]
    """
    s = np.sort(early, axis=0)  # NaN (no value yet) sorts last
    rows = np.arange(len(s))[:, None]
    inner = (rows >= 1) & (rows < n - 1)
    m = np.maximum(n - 2, 1)
    mean = np.where(inner, s, 0.0).sum(0) / m
    sd = np.sqrt((np.where(inner, s - mean, 0.0) ** 2).sum(0) / m)
    sd[sd < 1e-8] = 1.0
    sd *= clip
    few = n < _ROBUST_MIN
    sd[few] = np.inf
    return mean - sd, mean + sd


class WarmupClipping:
    """The warm-up step of :class:`~streamdas.features.RunningStandardizer`, on its arrays."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    warmup: int
    clip: float | None
    _early: np.ndarray | None
    _tracked: np.ndarray
    _clipped: np.ndarray

    def _admit_early(self, X: np.ndarray) -> np.ndarray:
        """Keep the batch's warm-up values and clip them, and the feature's later values in the
        batch (past its warm-up), to the window of its kept values; return ``X`` for the
        running update.

        While no kept value of a feature lies outside its window, its values enter the running
        update as they are (the arithmetic of an unclipped stream is unchanged). Otherwise its
        statistics are set from its kept values, clipped to the window, and those values are
        taken out of ``X`` (NaN); ``_clipped`` remembers it, so the next batch, which moves
        the window, sets them again.
        """
        cols = np.flatnonzero(self._tracked & (self.count < self.warmup))
        Xw = X[:, cols].astype(np.float64)
        present = ~np.isnan(Xw)
        new = present.any(0)
        if not new.all():
            cols, Xw, present = cols[new], Xw[:, new], present[:, new]
            if not len(cols):
                return X
        assert self._early is not None and self.clip is not None
        # each value's place among its feature's values; the first ``warmup`` are kept
        place = self.count[cols].astype(np.intp) + np.cumsum(present, axis=0) - 1
        kept = present & (place < self.warmup)
        r, c = np.nonzero(kept)
        self._early[place[r, c], cols[c]] = Xw[r, c]
        n = np.minimum(self.count[cols] + present.sum(0), self.warmup)
        early = self._early[:, cols]
        lo, hi = _warmup_window(early, n, self.clip)
        outside = ((early < lo) | (early > hi)).any(0)  # NaN compares false
        redo = outside | self._clipped[cols]
        self._clipped[cols] = outside
        X = X.astype(np.float64)
        X[:, cols] = np.where(kept & redo, np.nan, np.minimum(np.maximum(Xw, lo), hi))
        if redo.any():
            cols, n, lo, hi = cols[redo], n[redo], lo[redo], hi[redo]
            early = np.minimum(np.maximum(early[:, redo], lo), hi)  # NaN stays NaN
            filled = ~np.isnan(early)
            mean = np.where(filled, early, 0.0).sum(0) / n
            self.count[cols], self.mean[cols] = n, mean
            self.m2[cols] = (np.where(filled, early - mean, 0.0) ** 2).sum(0)
        return X
