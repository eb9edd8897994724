"""Turning River's dict features into vectors: a growing feature index and running statistics.

Features are indexed in order of first appearance; several new features arriving together are
indexed in sorted order (by ``repr``), so two models that see the same stream with the features
in any order build identical columns. Missing features are imputed with their running mean
(zero after standardization).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, KeysView, Mapping
from typing import Any

import numpy as np

from streamdas.warmup import WarmupClipping, _warmup_window

__all__ = [
    "EMPTY_RECORD",
    "FeatureIndex",
    "LimitError",
    "RunningStandardizer",
    "check_label",
    "check_target",
    "check_value",
]

#: The message for a record with no features (the library and the service both refuse it).
EMPTY_RECORD = "x has no features: a record needs at least one"

_NUMERIC = (int, float, bool, np.integer, np.floating, np.bool_)
# Exact types checked in one set operation on the hot path (subclasses take the slow path).
_NUMERIC_TYPES = frozenset({int, float, bool, np.float64, np.float32, np.int64, np.int32, np.bool_})


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class LimitError(ValueError):
    """A record that would take a model past one of its bounds (``max_classes``,
    ``max_label_length``, ``max_features``). Raised before anything changes: the model is
    exactly as it was, and the caller may set the record aside and go on.
    ``reason`` names the bound: ``"too_many_classes"``, ``"label_too_long"`` or
    ``"too_many_features"``.

    >>> error = LimitError("too many classes", "too_many_classes")
    >>> isinstance(error, ValueError), error.reason, str(error)
    (True, 'too_many_classes', 'too many classes')
    """

    def __init__(self, message: str, reason: str = "limit") -> None:
        super().__init__(message)
        self.reason = reason


def check_value(name: Hashable, value: Any, subject: str | None = None) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming the feature.

    ``subject`` replaces ``feature 'NAME'`` in the message (the regressors' target). Booleans
    are numbers (1 and 0), as everywhere in River.

    >>> check_value("a", 2), check_value("on", True)
    (2.0, 1.0)
    >>> check_value("b", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: feature 'b' is not finite: nan
    >>> check_value("c", "1.5")
    Traceback (most recent call last):
    ...
    ValueError: feature 'c' is not numeric: '1.5' (str)
    >>> check_value("d", 1e39)
    Traceback (most recent call last):
    ...
    ValueError: feature 'd' is out of float32 range (|x| <= 3.4e+38): 1e+39
    """
    subject = subject or f"feature {name!r}"
    if not isinstance(value, _NUMERIC):
        raise ValueError(f"{subject} is not numeric: {value!r} ({type(value).__name__})")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond any float
        raise ValueError(f"{subject} is out of float32 range (|x| <= {_FLOAT32_MAX:.2g})") from None
    if not math.isfinite(v):
        raise ValueError(f"{subject} is not finite: {v}")
    if abs(v) > _FLOAT32_MAX:  # the network computes in float32: this would become inf
        raise ValueError(f"{subject} is out of float32 range (|x| <= {_FLOAT32_MAX:.2g}): {v:g}")
    return v


def check_target(y: Any) -> float:
    """A regression target as a float, or ``ValueError`` calling it the target. Unlike
    features, a boolean is not a target.

    >>> check_target(2)
    2.0
    >>> check_target("abc")
    Traceback (most recent call last):
    ...
    ValueError: target is not numeric: 'abc' (str)
    >>> check_target(True)
    Traceback (most recent call last):
    ...
    ValueError: target is not numeric: True (bool)
    """
    if isinstance(y, (bool, np.bool_)):
        raise ValueError(f"target is not numeric: {y!r} (bool)")
    return check_value("target", y, subject="target")


def check_label(y: Any) -> None:
    """Raise ``ValueError`` unless ``y`` can be a class label: not None, hashable, and not a
    NaN or infinite float.

    >>> check_label("spam"), check_label(3), check_label(True)
    (None, None, None)
    >>> check_label(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: label nan is not finite
    >>> check_label([1])
    Traceback (most recent call last):
    ...
    ValueError: label [1] is not hashable
    """
    if y is None:
        raise ValueError("label is None")
    if isinstance(y, (float, np.floating)) and not math.isfinite(y):
        raise ValueError(f"label {y!r} is not finite")
    try:
        hash(y)
    except TypeError:
        raise ValueError(f"label {y!r} is not hashable") from None


class FeatureIndex:
    """Maps feature names to columns, growing as new names appear.

    >>> index = FeatureIndex()
    >>> index.add(index.new_names({"b": 2.0, "a": 1.0}))  # new names sorted: a -> 0, b -> 1
    >>> index.add(index.new_names({"c": 3.0}))
    >>> index.names
    ['a', 'b', 'c']
    >>> index.vector({"c": 3.0, "b": 5.0, "z": 1.0})  # "a" missing -> nan, "z" unknown: ignored
    array([nan,  5.,  3.], dtype=float32)
    """

    def __init__(self, names: list[Hashable] | None = None) -> None:
        self.names: list[Hashable] = []
        self._pos: dict[Hashable, int] = {}
        self._last_keys: tuple[Hashable, ...] | None = None
        self._last_cols: np.ndarray | None = None
        self._last_complete = False
        # the last validated dict: (keys, values, float32 values), reused while x is unchanged
        self._memo: tuple[tuple[Hashable, ...], tuple[Any, ...], np.ndarray] | None = None
        for name in names or []:
            self._add(name)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._pos

    def view(self) -> KeysView[Hashable]:
        """The indexed names in column order, as a live read-only view.

        >>> FeatureIndex(["b", "a"]).view()
        dict_keys(['b', 'a'])
        """
        return self._pos.keys()

    def _add(self, name: Hashable) -> None:
        self._pos[name] = len(self.names)
        self.names.append(name)

    def new_names(self, keys: Any) -> list[Hashable]:
        """Names among ``keys`` not yet indexed, in the order they would be added."""
        return sorted((k for k in keys if k not in self._pos), key=repr)

    def known(self, keys: list[Hashable]) -> list[int]:
        """Places in ``keys`` of the indexed names.

        >>> FeatureIndex(["a", "b"]).known(["z", "b", "a"])
        [1, 2]
        """
        return [i for i, k in enumerate(keys) if k in self._pos]

    def add(self, names: list[Hashable]) -> None:
        for name in names:
            if name not in self._pos:
                self._add(name)
        self._last_keys = None

    def columns(self, keys: tuple[Hashable, ...]) -> np.ndarray:
        """Column of each key (all must be indexed); cached for repeated key layouts."""
        if keys != self._last_keys:
            cols = np.fromiter((self._pos[k] for k in keys), dtype=np.intp, count=len(keys))
            self._last_complete = len(keys) == len(self.names) and bool((cols == np.arange(len(keys))).all())
            self._last_cols, self._last_keys = cols, keys
        assert self._last_cols is not None
        return self._last_cols

    @property
    def complete(self) -> bool:
        """Whether the cached key layout (:attr:`cached_keys`) is every indexed name, in index
        order: a row in that layout is already the dense vector, with nothing missing."""
        return self._last_complete

    def values(self, x: Mapping[Hashable, Any]) -> tuple[tuple[Hashable, ...], np.ndarray]:
        """Validated values of ``x`` as a read-only float32 array, in ``x``'s key order.

        The last result is memoised on ``x``'s keys and values (compared by ``==``), so
        ``predict_one(x)`` then ``learn_one(x, y)`` validate and convert ``x`` once.
        """
        keys = tuple(x)
        if not keys:
            raise ValueError(EMPTY_RECORD)
        raw = tuple(x.values())
        memo = self._memo
        if memo is not None:
            try:
                if keys == memo[0] and raw == memo[1]:
                    return keys, memo[2]
            except (TypeError, ValueError):  # an exotic __eq__ (arrays...): validate below
                pass
        try:
            vals = np.fromiter(raw, dtype=np.float32, count=len(keys))
        except (TypeError, ValueError, OverflowError, RuntimeWarning):  # the last: under -W error
            vals = None
        if (
            vals is None
            or not np.isfinite(vals).all()
            or not (_NUMERIC_TYPES.issuperset(map(type, raw)) or all(isinstance(v, _NUMERIC) for v in raw))
        ):
            for k, v in x.items():
                check_value(k, v)
            raise AssertionError("unreachable")  # pragma: no cover
        vals.flags.writeable = False
        self._memo = (keys, raw, vals)
        return keys, vals

    @property
    def cached_keys(self) -> tuple[Hashable, ...] | None:
        """The last key layout resolved by :meth:`columns` (all of its names are indexed)."""
        return self._last_keys

    def vector(self, x: Mapping[Hashable, Any]) -> np.ndarray:
        """Dense float32 vector of ``x`` for inference (read-only: it may be shared): NaN where a
        feature is missing, unknown features ignored (inference never changes the index)."""
        return self.dense(x)[0]

    def dense(self, x: Mapping[Hashable, Any]) -> tuple[np.ndarray, bool]:
        """:meth:`vector` (read-only, possibly shared) and whether no feature is missing."""
        keys, vals = self.values(x)
        if keys != self._last_keys:  # the cached layout is all known: skip the scan
            known = [i for i, k in enumerate(keys) if k in self._pos]
            if len(known) != len(keys):
                keys = tuple(keys[i] for i in known)
                vals = vals[known]
        cols = self.columns(keys)
        if self._last_complete:
            return vals, True
        out = np.full(len(self.names), np.nan, dtype=np.float32)
        out[cols] = vals
        return out, len(keys) == len(self.names)


_STATE_KEYS = frozenset({"count", "mean", "m2", "early"})


class RunningStandardizer(WarmupClipping):
    """Per-feature running mean and variance (Chan et al.'s batch update), NaN-aware.

    With ``clip``, no single value rules the statistics, from a feature's first value on:

    * **Warm-up.** A feature's first ``warmup`` values are kept, and until it has them its
      statistics are those of the kept values, each clipped to ``mean +- clip * sd`` of the
      kept values less the smallest and the largest (:func:`_warmup_window`; from the 12th
      value on). The window is recomputed as values arrive, so a far-out value (``1e30``
      among values near 1) is clipped wherever it comes, even first, and neither end of the
      feature's first values can widen the window that judges it. While nothing is clipped,
      the statistics are the plain running ones, to the last bit.
    * **Then** each new value is clipped to ``mean +- clip * sd`` (the running statistics
      before its batch) before it enters the statistics: one extreme value moves them by at
      most ``clip * sd / n``, and a real change of scale still gets through, since every
      clipped value widens the window (the variance grows with each one).
    * Standardized values are clipped to ``[-clip, clip]``. The statistics are kept in
      float64, so any float32 input (up to ``3.4e38``) gives a finite standardized value.

    ``None``: unbounded, every value counts in full.

    >>> s = RunningStandardizer()
    >>> s.update(np.array([[1.0, np.nan], [3.0, 4.0]], dtype=np.float32))
    >>> s.mean.tolist(), s.count.tolist()
    ([2.0, 4.0], [2.0, 1.0])
    >>> s.transform(np.array([[3.0, np.nan]], dtype=np.float32), standardize=True).tolist()
    [[1.0, 0.0]]

    With ``clip``, a ``1e30`` among a feature's first values enters at the window's edge
    (9.1, see :func:`_warmup_window`), and standardizes to ``clip``:

    >>> s = RunningStandardizer(clip=10.0)
    >>> s.update(np.array([[1.0], [2.0], [3.0], [1e30]] + [[1.0], [2.0], [3.0], [2.0]] * 2, dtype=np.float32))
    >>> round(float(s.mean[0]), 2), s.transform(np.array([[1e30]], dtype=np.float32), True).tolist()
    (2.59, [[10.0]])
    """

    def __init__(self, n_features: int = 0, clip: float | None = None, warmup: int = 30) -> None:
        if clip is not None and not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a positive number or None, got {clip!r}")
        self.clip = None if clip is None else float(clip)
        self.warmup = int(warmup)
        self.count = np.zeros(n_features)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        # With clip, the first ``warmup`` raw values of each feature (row i: its i-th value, NaN:
        # none yet), kept while a feature is within them (None: none is). ``_tracked``: the
        # feature's statistics come from its kept values (not so for one restored, within its
        # warm-up, from a state written without them).
        self._early: np.ndarray | None = None if clip is None else np.full((self.warmup, n_features), np.nan)
        self._tracked = np.ones(n_features, dtype=bool)
        self._clipped = np.zeros(n_features, dtype=bool)  # see _admit_early
        self._warming = False  # a tracked feature is within its warm-up (and clip is set)
        self._ready = False  # every feature has ``warmup`` values (see _refresh)
        self._refresh()

    def extend(self, n_features: int) -> None:
        extra = n_features - len(self.count)
        if extra > 0:
            pad = np.zeros(extra)
            self.count = np.concatenate([self.count, pad])
            self.mean = np.concatenate([self.mean, pad])
            self.m2 = np.concatenate([self.m2, pad])
            self._tracked = np.concatenate([self._tracked, np.ones(extra, dtype=bool)])
            self._clipped = np.concatenate([self._clipped, np.zeros(extra, dtype=bool)])
            if self.clip is not None:
                if self._early is None:  # every older feature is past its warm-up
                    self._early = np.full((self.warmup, n_features), np.nan)
                else:
                    self._early = np.concatenate([self._early, np.full((self.warmup, extra), np.nan)], axis=1)
            self._ready = False
            self._refresh()

    def _refresh(self) -> None:
        # Runs after every batch: once every feature has its warm-up (the steady state, flagged
        # by ``_ready``), the masks are all true and the arrays that depend only on them are kept.
        ready_all = self._ready
        if ready_all and self.warmup > 1:
            var = self.m2 / self.count
        else:
            var = np.divide(self.m2, self.count, out=np.ones_like(self.m2), where=self.count > 1)
        std = np.sqrt(var)
        std[std < 1e-8] = 1.0
        self.center = self.mean.astype(np.float32)
        self.inv_std = (1.0 / std).astype(np.float32)
        if self.clip is None:
            self._clipping = False
            self._ready = bool((self.count >= self.warmup).all()) and len(self.count) > 0
            return
        if ready_all:
            half = std
            half *= self.clip
            self._lo, self._hi = self.mean - half, self.mean + half
            return
        ready = self.count >= self.warmup
        self._clipping = bool(ready.any())
        half = np.where(ready, self.clip * std, np.inf)
        self._lo, self._hi = self.mean - half, self.mean + half
        self._zclip = np.full(len(ready), self.clip, dtype=np.float32)
        self._nzclip = -self._zclip
        self._ready = bool(ready.all()) and len(ready) > 0
        self._warming = bool((self._tracked & ~ready).any())
        if self._ready:
            self._early = None

    def update(self, X: np.ndarray) -> None:
        """Fold a batch (rows are samples, NaN = missing) into the statistics."""
        self.extend(X.shape[1])
        if self._warming:
            X = self._admit_early(X)
        if self._clipping:  # bounded influence (NaN stays NaN); np.clip's wrapper costs more
            X = np.minimum(np.maximum(X, self._lo), self._hi)
        if X.shape[0] and X.shape[1] == len(self.count) and not np.isnan(X).any():
            self._update_complete(X)
            return
        present = ~np.isnan(X)
        n_b = present.sum(0).astype(np.float64)
        if not n_b.any():
            self._refresh()  # the warm-up may have set statistics
            return
        Xd = np.where(present, X, 0.0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(n_b > 0, Xd.sum(0) / np.maximum(n_b, 1), 0.0)
            m2_b = (np.where(present, Xd - mean_b, 0.0) ** 2).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        safe_n = np.maximum(n, 1)
        self.mean = self.mean + delta * n_b / safe_n
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / safe_n
        self.count = n
        self._refresh()

    def _update_complete(self, X: np.ndarray) -> None:
        """:meth:`update` for a batch with every value present (the common case, fewer passes)."""
        n_b = X.shape[0]
        Xd = X.astype(np.float64)
        mean_b = np.add.reduce(Xd, axis=0) / n_b  # = Xd.mean(0), without its wrapper
        Xd -= mean_b
        Xd *= Xd
        m2_b = Xd.sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        w = n_b / n
        self.mean = self.mean + delta * w
        delta *= delta
        delta *= self.count
        delta *= w
        self.m2 = self.m2 + m2_b + delta
        self.count = n
        self._refresh()

    def transform(self, X: np.ndarray, standardize: bool, missing: bool = True) -> np.ndarray:
        """Center (and scale, if ``standardize``) ``X``; missing values (NaN) become 0, the mean.
        ``missing=False`` promises there are none and skips that pass."""
        d = X.shape[-1]
        Z = X - self.center[:d]
        if standardize:
            Z *= self.inv_std[:d]
            if self.clip is not None:  # two ufuncs: np.clip's wrapper costs several times more
                np.minimum(Z, self._zclip[:d], out=Z)
                np.maximum(Z, self._nzclip[:d], out=Z)
        if missing:
            Z[np.isnan(Z)] = 0.0
        return Z

    def state(self) -> dict[str, Any]:
        """The statistics as plain lists, and under ``early`` each feature's kept warm-up values
        (empty once past its warm-up, and without ``clip``)."""
        early: list[list[float]] = [[] for _ in range(len(self.count))]
        if self._early is not None:
            for j in np.flatnonzero(self._tracked & (self.count < self.warmup)):
                early[j] = self._early[: int(self.count[j]), j].tolist()
        return {
            "count": self.count.tolist(),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "early": early,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], clip: float | None = None) -> RunningStandardizer:
        """Rebuild from :meth:`state` (``clip`` is configuration, not state); ``ValueError``
        unless it holds three equally long lists of finite numbers (counts and sums of squares
        not negative) and, if present, one list of kept warm-up values per feature (as many as
        its count, within the warm-up, and in float32's range). A state without them (written
        before they were kept) loads: its features within their warm-up finish it without
        the warm-up's clipping."""
        if not isinstance(state, dict) or not {"count", "mean", "m2"} <= set(state) <= _STATE_KEYS:
            raise ValueError("standardizer state is not {count, mean, m2, early}")
        s = cls(clip=clip)
        arrays = []
        for key in ("count", "mean", "m2"):
            values = state[key]
            if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
                raise ValueError(f"standardizer {key} is not a list of numbers")
            arrays.append(np.asarray(values, dtype=np.float64).reshape(-1))
        s.count, s.mean, s.m2 = arrays
        s._ready = False
        if not len(s.count) == len(s.mean) == len(s.m2):
            raise ValueError("standardizer state has mismatched lengths")
        if not (
            np.isfinite(s.mean).all()
            and np.isfinite(s.m2).all()
            and np.isfinite(s.count).all()
            and (s.count >= 0).all()
            and (s.m2 >= 0).all()
        ):
            raise ValueError("standardizer state holds non-finite or negative values")
        if not (np.abs(s.mean) <= _FLOAT32_MAX).all():  # the centres are float32
            raise ValueError("standardizer means are out of float32 range")
        s._restore_early(state.get("early"))
        s._refresh()
        return s

    def _restore_early(self, early: Any) -> None:
        """Take :meth:`state`'s ``early`` lists (``None``: a state written without them)."""
        n = len(self.count)
        self._tracked = (self.count == 0) | (self.count >= self.warmup)
        self._clipped = np.zeros(n, dtype=bool)
        self._early = None if self.clip is None else np.full((self.warmup, n), np.nan)
        if early is None:
            return
        if not isinstance(early, list) or len(early) != n:
            raise ValueError("standardizer early values are not one list per feature")
        for j, values in enumerate(early):
            if not isinstance(values, list) or not all(type(v) in (int, float) for v in values):
                raise ValueError("standardizer early values are not lists of numbers")
            if not values:
                continue
            if not len(values) == self.count[j] < self.warmup:
                raise ValueError("standardizer early values do not match the counts")
            kept = np.asarray(values, dtype=np.float64)
            if not (np.isfinite(kept).all() and (np.abs(kept) <= _FLOAT32_MAX).all()):
                raise ValueError("standardizer early values are not finite float32 numbers")
            self._tracked[j] = True
            if self._early is not None:
                self._early[: len(values), j] = kept
        cols = np.flatnonzero(self._tracked & (self.count > 0) & (self.count < self.warmup))
        if self._early is not None and self.clip is not None and len(cols):
            # as _admit_early left it: clipped or not
            kept = self._early[:, cols]
            lo, hi = _warmup_window(kept, self.count[cols], self.clip)
            self._clipped[cols] = ((kept < lo) | (kept > hi)).any(0)
