"""The 8-puzzle regression set: all 181,440 solvable states with their optimal solution lengths.

Breadth-first search from the goal over the state graph (moves are reversible, so the BFS depth
of a state is its optimal solution length). States are tuples of 9 tiles read row by row, 0 the
blank; the goal is ``(1, 2, ..., 8, 0)``. The result is cached as a compressed ``.npz`` under the
cache directory (``$STREAMDAS_CACHE``, default ``~/.cache/streamdas``), never in git.

>>> states, dist = bfs_distances()
>>> len(states), int(dist.max()), int((dist == 0).sum())
(181440, 31, 1)
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import numpy as np

__all__ = ["GOAL", "bfs_distances", "cache_dir", "load_puzzle", "one_hot"]

GOAL: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 0)
N_STATES = 181_440

# Neighbouring cells of each cell of the 3x3 board.
_NEIGHBOURS: tuple[tuple[int, ...], ...] = tuple(
    tuple(
        r * 3 + c
        for r, c in ((i // 3 - 1, i % 3), (i // 3 + 1, i % 3), (i // 3, i % 3 - 1), (i // 3, i % 3 + 1))
        if 0 <= r < 3 and 0 <= c < 3
    )
    for i in range(9)
)


def cache_dir() -> Path:
    """Where generated data sets are cached (``$STREAMDAS_CACHE`` or ``~/.cache/streamdas``).

    >>> cache_dir().name in ("streamdas", os.environ.get("STREAMDAS_CACHE", "x").split("/")[-1])
    True
    """
    return Path(os.environ.get("STREAMDAS_CACHE", Path.home() / ".cache" / "streamdas"))


def bfs_distances() -> tuple[np.ndarray, np.ndarray]:
    """BFS from the goal: ``(states (181440, 9) uint8, distances (181440,) uint8)``.

    States are in BFS order (non-decreasing distance). Takes about a second.
    """
    goal = bytes(GOAL)
    seen = {goal: 0}
    order = [goal]
    queue = deque([(goal, GOAL.index(0))])
    while queue:
        state, blank = queue.popleft()
        d = seen[state] + 1
        for nb in _NEIGHBOURS[blank]:
            s = bytearray(state)
            s[blank], s[nb] = s[nb], 0
            key = bytes(s)
            if key not in seen:
                seen[key] = d
                order.append(key)
                queue.append((key, nb))
    states = np.frombuffer(b"".join(order), dtype=np.uint8).reshape(-1, 9)
    dist = np.fromiter((seen[k] for k in order), dtype=np.uint8, count=len(order))
    return states, dist


def load_puzzle(cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cached BFS result (computing and caching it the first time).

    >>> s, d = load_puzzle()
    >>> s.shape, d.dtype.name
    ((181440, 9), 'uint8')
    """
    path = (cache or cache_dir()) / "8puzzle_bfs.npz"
    if path.exists():
        with np.load(path) as z:
            states, dist = z["states"], z["dist"]
        if len(states) == N_STATES:
            return states, dist
    states, dist = bfs_distances()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, states=states, dist=dist)
    tmp.replace(path)
    return states, dist


def one_hot(states: np.ndarray) -> np.ndarray:
    """Features: for tiles 1..8, a one-hot of the cell they are in (8 x 9 = 72 floats).

    >>> float(one_hot(np.array([GOAL], dtype=np.uint8)).reshape(8, 9)[0, 0])
    1.0
    """
    n = len(states)
    out = np.zeros((n, 8, 9), dtype=np.float32)
    cells = np.argsort(states, axis=1)  # cells[:, t] = cell holding tile t
    rows = np.arange(n)[:, None]
    out[rows, np.arange(8)[None, :], cells[:, 1:]] = 1.0
    return out.reshape(n, 72)
