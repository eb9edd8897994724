"""The minibatch buffer: samples waiting for the next optimizer step.

``learn_one`` and ``learn_many(split=True)`` add rows here and step once per ``batch_size``
of them, so the model after N samples does not depend on how they arrived. Rows are kept as
they were encoded; a row from before new features appeared is shorter, and those features are
missing (NaN) in it when the batch is taken.

>>> buffer = MinibatchBuffer()
>>> buffer.add(np.array([1.0], dtype=np.float32), "a")
>>> buffer.add(np.array([2.0, 3.0], dtype=np.float32), "b")
>>> raw, targets = buffer.take(n_features=2)
>>> raw.tolist(), targets, len(buffer)
([[1.0, nan], [2.0, 3.0]], ['a', 'b'], 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MinibatchBuffer"]


class MinibatchBuffer:
    """Raw input rows (float32, NaN = missing) and their targets, in arrival order."""

    def __init__(self, rows: list[np.ndarray] | None = None, targets: list[Any] | None = None) -> None:
        self.rows: list[np.ndarray] = [] if rows is None else rows
        self.targets: list[Any] = [] if targets is None else targets

    def __len__(self) -> int:
        return len(self.targets)

    def add(self, row: np.ndarray, target: Any) -> None:
        self.rows.append(row)
        self.targets.append(target)

    def take(self, n_features: int) -> tuple[np.ndarray, list[Any]]:
        """Every buffered sample as one ``(rows, n_features)`` matrix and its targets; the
        buffer is empty afterwards."""
        rows = self.rows
        if all(len(v) == n_features for v in rows):
            raw = np.stack(rows)
        else:  # features were added since some rows were buffered: those are missing there
            raw = np.full((len(rows), n_features), np.nan, dtype=np.float32)
            for i, v in enumerate(rows):
                raw[i, : len(v)] = v
        targets = self.targets
        self.rows, self.targets = [], []
        return raw, targets
