"""The classifier's labels: output positions in order of first appearance, within bounds.

Labels may be any hashable (NumPy scalars count as their Python value); a boolean label brings
both booleans, ``False`` first (River's binary convention). New labels are checked against
``max_classes`` and ``max_label_length`` before anything changes.

>>> labels = LabelIndex(max_classes=3, max_label_length=5)
>>> labels.add(["b", "a", "b"]), labels.classes
(2, ['b', 'a'])
>>> labels.positions(["a", "b"]).tolist()
[1, 0]
>>> labels.check(["c", "d"])
Traceback (most recent call last):
...
streamdas.features.LimitError: too many classes: 2 new label(s) would make 4, max_classes=3
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamdas import checkpoint
from streamdas.features import LimitError, check_label

__all__ = ["LabelIndex", "label_length"]

_PLAIN_LABELS = (str, int, float, bool, type(None))


def label_length(y: Any) -> float:
    """Characters of ``str(y)`` (infinite for an integer too long to write out at all)."""
    if isinstance(y, str):
        return len(y)
    try:
        return len(str(y))
    except ValueError:  # Python refuses to write integers of more than 4,300 digits
        return float("inf")


def _normalize(y: Any) -> Any:
    return y.item() if isinstance(y, np.generic) else y


class LabelIndex:
    """Labels seen so far and their output positions, at most ``max_classes`` of them, each at
    most ``max_label_length`` characters long (``len(str(label))``)."""

    def __init__(self, max_classes: int | None, max_label_length: int) -> None:
        self.max_classes = max_classes
        self.max_label_length = max_label_length
        self.classes: list[Any] = []
        self.pos: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self.classes)

    def check(self, ys: list[Any]) -> None:
        """Valid labels whose new classes fit ``max_classes`` and ``max_label_length``, or
        ``ValueError`` (:class:`~streamdas.features.LimitError` for a bound)."""
        for y in ys:
            check_label(y)
        new = self.new(ys)
        if not new:
            return
        n = len(self.classes) + len(new)
        if self.max_classes is not None and n > self.max_classes:
            raise LimitError(
                f"too many classes: {len(new)} new label(s) would make {n}, max_classes={self.max_classes}",
                "too_many_classes",
            )
        for c in new:
            length = label_length(c)
            if length > self.max_label_length:
                size = "" if length == float("inf") else f" ({length:.0f} characters)"
                raise LimitError(
                    f"label too long{size}: max_label_length={self.max_label_length} "
                    f"characters of str(label)",
                    "label_too_long",
                )

    def new(self, ys: list[Any]) -> list[Any]:
        """The classes ``ys`` would add, in order (a boolean label adds both booleans)."""
        new: dict[Any, None] = {}
        pos = self.pos
        for y in ys:
            y = _normalize(y)
            if y in pos or y in new:
                continue
            if isinstance(y, bool):
                new.update(dict.fromkeys((False, True)))
            else:
                new[y] = None
        return [c for c in new if c not in pos]

    def add(self, ys: list[Any]) -> int:
        """Give the new classes among ``ys`` their positions; return how many there were."""
        new = self.new(ys)
        if new:
            if not self.classes and any(isinstance(c, bool) for c in new):
                new.sort()  # River's binary convention: {False, True}
            for c in new:
                self.pos[c] = len(self.classes)
                self.classes.append(c)
        return len(new)

    def known(self, y: Any) -> bool:
        """Whether ``y`` is a valid label that already has a position."""
        try:
            return y in self.pos
        except TypeError:  # unhashable: check names the problem
            return False

    def positions(self, targets: list[Any]) -> np.ndarray:
        """The output position of each of ``targets`` (all known), as int64."""
        pos = self.pos
        return np.array([pos[_normalize(y)] for y in targets], dtype=np.int64)

    def state(self) -> list[Any]:
        """The labels in output order; ``ValueError`` for one a checkpoint cannot hold."""
        for c in self.classes:
            if not isinstance(c, _PLAIN_LABELS):
                raise ValueError(f"label {c!r} cannot be checkpointed (str, int, float or bool only)")
        return list(self.classes)

    def load(self, state: Any) -> None:
        """Take :meth:`state`'s labels, validated (``ValueError`` when they do not fit)."""
        classes = checkpoint.plain(state, "classes")
        checkpoint.require(
            isinstance(classes, list)
            and None not in classes
            and not any(isinstance(c, float) and c != c for c in classes),
            "classes are not a list of labels",
        )
        checkpoint.require(
            self.max_classes is None or len(classes) <= self.max_classes, "more classes than max_classes"
        )
        checkpoint.require(
            all(label_length(c) <= self.max_label_length for c in classes),
            "a label is longer than max_label_length",
        )
        self.classes = list(classes)
        self.pos = {c: i for i, c in enumerate(self.classes)}
        checkpoint.require(len(self.pos) == len(self.classes), "classes repeat")
