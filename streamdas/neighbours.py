"""Neighbour memory: a vote of the nearest recent samples, beside the network.

A one-pass network is slow to follow a concept made of many small local regions that move (the
blobs of RandomRBFDrift, the two moons of Bananas): every region needs its own updates, and by
the time they have come the region has moved. The nearest of the last few hundred samples
follow such a concept at once. :class:`NeighbourMemory` keeps the network inputs (standardized
rows) and class positions of the last ``size`` samples learned, in a ring, and gives the vote of the
``n_neighbors`` nearest of them (Euclidean) as class probabilities;
:class:`~streamdas.mixing.ExpertMix` weighs that vote against the network by their recent
log loss. Rows are stored as they were standardized when learned; a feature added since is 0
there (its mean), and it adds the same to every distance, so it changes no ranking.

>>> import numpy as np
>>> m = NeighbourMemory(size=4, n_neighbors=1)
>>> m.push(np.array([[0.0, 0.0], [5.0, 5.0]], np.float32), np.array([0, 1]))
>>> m.vote(np.array([4.0, 4.5], np.float32), n_classes=2).round(3).tolist()
[0.083, 0.917]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamdas import checkpoint

__all__ = ["CHUNK", "PRIOR", "NeighbourMemory"]

#: Pseudo-count added to every class's votes, so that no class gets probability 0 (the mix
#: weighs the experts by log loss).
PRIOR = 0.1
#: Most query rows whose distances to the kept rows are held at once.
CHUNK = 1024


class NeighbourMemory:
    """The last ``size`` rows and class positions learned, and their nearest-neighbour vote.

    Each kept row ``r`` is stored as ``[-2 r, |r|^2]``, so that one product with ``[z, 1]``
    gives every ``|r - z|^2 - |z|^2`` (``|z|^2`` is the same for all rows: the ranking is
    unchanged), and its class one-hot, so that one product with the 0/1 mask of the nearest
    rows counts their classes.

    Parameters
    ----------
    size
        Samples kept (the newest replace the oldest).
    n_neighbors
        Nearest samples that vote.
    """

    def __init__(self, size: int, n_neighbors: int) -> None:
        self.size, self.n_neighbors = int(size), int(n_neighbors)
        self.scaled = np.zeros((self.size, 1), dtype=np.float32)  # [-2 r, |r|^2] per slot
        self.onehot = np.zeros((self.size, 0), dtype=np.float32)  # class per slot, one-hot
        self.count = 0  # slots filled
        self.next = 0  # the ring's next slot
        self._query = np.ones(1, dtype=np.float32)  # [z, 1], filled in place
        self._arange = np.arange(self.size)  # row positions, for the one-hot writes

    def __len__(self) -> int:
        return self.count

    @property
    def rows(self) -> np.ndarray:
        """The kept rows, slot by slot (a new array)."""
        return self.scaled[: self.count, :-1] / np.float32(-2.0)

    def _widen(self, width: int, n_classes: int) -> None:
        """Room for ``width`` features (0 in older rows: their mean) and ``n_classes``."""
        d = self.scaled.shape[1] - 1
        if width > d:
            grown = np.zeros((self.size, width + 1), dtype=np.float32)
            grown[:, :d], grown[:, -1] = self.scaled[:, :d], self.scaled[:, -1]
            self.scaled, self._query = grown, np.ones(width + 1, dtype=np.float32)
        if n_classes > self.onehot.shape[1]:
            self.onehot = np.pad(self.onehot, ((0, 0), (0, n_classes - self.onehot.shape[1])))

    def push(self, rows: np.ndarray, targets: np.ndarray) -> None:
        """Keep float32 ``rows`` and their class positions ``targets`` (the oldest make room)."""
        rows, targets = rows[-self.size :], targets[-self.size :]
        k, d = rows.shape
        if not k:
            return
        self._widen(d, int(targets.max()) + 1)
        lo = self.next
        first = min(k, self.size - lo)  # slots up to the ring's end, then from its start
        for at, part in ((lo, slice(0, first)), (0, slice(first, k))):
            block, labels = rows[part], targets[part]
            hi = at + len(block)
            if hi == at:
                continue
            scaled, onehot = self.scaled[at:hi], self.onehot[at:hi]
            np.multiply(block, -2.0, out=scaled[:, :d])
            scaled[:, d:-1] = 0.0
            scaled[:, -1] = np.add.reduce(block * block, axis=1)
            onehot[...] = 0.0
            onehot[self._arange[: len(labels)], labels] = 1.0
        self.next = (lo + k) % self.size
        self.count = min(self.count + k, self.size)

    def _probabilities(self, near: np.ndarray, n_classes: int) -> np.ndarray:
        """Class probabilities from the 0/1 mask ``near`` of voting rows (one mask per row of
        a 2-d ``near``): their classes counted from :data:`PRIOR`, normalized."""
        counts = (near @ self.onehot[: self.count]).astype(np.float64)
        if counts.shape[-1] < n_classes:  # classes none of the kept samples has
            counts = np.concatenate(
                [counts, np.zeros((*counts.shape[:-1], n_classes - counts.shape[-1]))], -1
            )
        counts += PRIOR
        counts /= counts.sum(axis=-1, keepdims=True)
        return counts

    def vote(self, z: np.ndarray, n_classes: int) -> np.ndarray:
        """Class probabilities of the standardized row ``z``: the classes of its
        ``n_neighbors`` nearest kept samples (all of those tied with the last), each class
        counted from :data:`PRIOR`; uniform while nothing is kept."""
        if not self.count:
            return np.full(n_classes, 1.0 / n_classes)
        return self._probabilities(self._near(z), n_classes)

    def vote_lead(self, z: np.ndarray) -> float:
        """For two classes: the first class's vote probability minus the second's (as
        :meth:`vote` gives them), without the probability array; 0 while nothing is kept."""
        if not self.count:
            return 0.0
        counts = (self._near(z) @ self.onehot[: self.count]).tolist()  # one column per class kept
        first, second = counts[0], counts[1] if len(counts) > 1 else 0.0
        return (first - second) / (first + second + 2.0 * PRIOR)

    def _near(self, z: np.ndarray) -> np.ndarray:
        """The 0/1 mask of the kept rows that vote for the standardized row ``z`` (at least
        one row is kept)."""
        n = self.count
        query = self._query
        query[:-1] = z[: len(query) - 1]
        dist = self.scaled[:n] @ query
        k = self.n_neighbors
        return dist <= np.partition(dist, k - 1)[k - 1] if k < n else np.ones(n, dtype=bool)

    def vote_many(self, z: np.ndarray, n_classes: int) -> np.ndarray:
        """:meth:`vote` of each row of ``z``, one row of probabilities each (in chunks of
        :data:`CHUNK` rows, so that the distances of a large batch stay bounded)."""
        n = self.count
        if not n:
            return np.full((len(z), n_classes), 1.0 / n_classes)
        if len(z) > CHUNK:
            return np.concatenate(
                [self.vote_many(z[i : i + CHUNK], n_classes) for i in range(0, len(z), CHUNK)]
            )
        queries = np.ones((len(z), len(self._query)), dtype=np.float32)
        queries[:, :-1] = z[:, : len(self._query) - 1]
        dist = queries @ self.scaled[:n].T
        k = self.n_neighbors
        if k < n:
            near = dist <= np.partition(dist, k - 1, axis=1)[:, k - 1 : k]
        else:
            near = np.ones(dist.shape, dtype=bool)
        return self._probabilities(near, n_classes)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The kept rows and class positions in their slots, and the ring's next slot."""
        return {
            "rows": torch.from_numpy(self.rows) if self.count else torch.zeros(0, 0),
            "targets": self.onehot[: self.count].argmax(axis=1).tolist() if self.count else [],
            "next": self.next,
        }

    @classmethod
    def from_state(
        cls, state: Any, size: int, n_neighbors: int, n_features: int, n_classes: int
    ) -> NeighbourMemory:
        """Rebuild from :meth:`state`; ``ValueError`` unless it fits ``size`` and
        ``n_features``, holds finite rows and every class position is one of ``n_classes``."""
        require = checkpoint.require
        require(
            isinstance(state, dict) and set(state) == {"rows", "targets", "next"},
            "memory state is not {rows, targets, next}",
        )
        rows = checkpoint.check_tensor(state["rows"], "memory rows", dtype=torch.float32)
        targets = checkpoint.plain(state["targets"], "memory targets")
        require(
            isinstance(targets, list) and all(type(t) is int for t in targets),
            "memory targets are not a list",
        )
        n = len(targets)
        require(
            rows.dim() == 2 and n <= size and (n == 0 or tuple(rows.shape) == (n, rows.shape[1])),
            "memory rows do not fit its size",
        )
        require(rows.shape[1] <= n_features, "memory rows are wider than the features")
        require(all(0 <= t < n_classes for t in targets), "memory targets are not class positions")
        nxt = state["next"]
        require(type(nxt) is int and 0 <= nxt < size and (n == size or nxt == n), "memory next slot")
        out = cls(size, n_neighbors)
        if n:
            out.push(rows.numpy().copy(), np.asarray(targets, dtype=np.int64))  # slots 0..n-1
            out.next = nxt
        return out
