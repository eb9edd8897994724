"""Rehearsal: each optimizer step also revisits a few recent samples.

:class:`RehearsalWindow` keeps the network inputs (standardized rows) and targets of the last
``window`` samples learned; each batch is stepped together with ``per_sample`` samples per new
one drawn uniformly from that window. A local concept (a blob of one class) then gets several
updates per sample without a second pass over the stream, while the window keeps it recent.

>>> import numpy as np, torch
>>> w = RehearsalWindow(window=4, per_sample=1, seed=0)
>>> x, y = w.extend(torch.ones(2, 3), torch.tensor([0, 1]))  # empty window: the batch alone
>>> tuple(x.shape), y.tolist()
((2, 3), [0, 1])
>>> x, y = w.extend(torch.zeros(2, 3), torch.tensor([1, 1]))  # then 2 rehearsed rows
>>> tuple(x.shape), len(w)
((4, 3), 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamdas import checkpoint

__all__ = ["RehearsalWindow"]


class RehearsalWindow:
    """A ring of the last ``window`` rows and targets learned, and the draw of rehearsed ones.

    Parameters
    ----------
    window
        Samples kept.
    per_sample
        Rehearsed samples drawn per new sample of a batch.
    seed
        Seed of the draws.
    """

    def __init__(self, window: int, per_sample: int, seed: int | None = None) -> None:
        self.window, self.per_sample = int(window), int(per_sample)
        self.rng = np.random.default_rng(seed)
        self.rows = np.zeros((0, 0), dtype=np.float32)
        self.targets: np.ndarray | None = None
        self.size = 0  # rows filled
        self.next = 0  # the ring's next slot

    def __len__(self) -> int:
        return self.size

    def extend(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``(x, y)`` followed by its rehearsed samples; the batch then joins the
        window (its newest rows replacing the oldest)."""
        cpu = x.device.type == "cpu"
        rows = x.numpy() if cpu else x.cpu().numpy()
        targets = y.numpy() if cpu else y.cpu().numpy()
        out_x, out_y = x, y
        if self.size and self.per_sample:
            assert self.targets is not None
            k, d = rows.shape
            idx = (self.rng.random(self.per_sample * k) * self.size).astype(np.intp)
            xs = np.empty((k + len(idx), d), dtype=np.float32)
            ys = np.empty((k + len(idx), *targets.shape[1:]), dtype=self.targets.dtype)
            xs[:k], ys[:k] = rows, targets
            if self.rows.shape[1] == d:
                self.rows.take(idx, axis=0, out=xs[k:])
            else:  # features added since: missing there (their mean, 0)
                xs[k:] = np.pad(self.rows[idx, :d], ((0, 0), (0, max(d - self.rows.shape[1], 0))))
            self.targets.take(idx, axis=0, out=ys[k:])
            out_x, out_y = torch.from_numpy(xs), torch.from_numpy(ys)
            if not cpu:
                out_x, out_y = out_x.to(x.device), out_y.to(y.device)
        self._push(rows, targets)
        return out_x, out_y

    def _push(self, rows: np.ndarray, targets: np.ndarray) -> None:
        d, k, lo = rows.shape[1], len(rows), self.next
        if self.targets is not None and self.rows.shape[1] == d and lo + k <= self.window:
            self.rows[lo : lo + k] = rows  # the common case: no new feature, no wrap
            self.targets[lo : lo + k] = targets
            self.next = (lo + k) % self.window
            self.size = min(self.size + k, self.window)
            return
        if self.targets is None:
            self.targets = np.zeros((self.window, *targets.shape[1:]), dtype=targets.dtype)
        if self.rows.shape != (self.window, max(d, self.rows.shape[1])):
            grown = np.zeros((self.window, max(d, self.rows.shape[1])), dtype=np.float32)
            grown[: len(self.rows), : self.rows.shape[1]] = self.rows
            self.rows = grown
        rows, targets = rows[-self.window :], targets[-self.window :]
        k = len(rows)
        first = min(k, self.window - self.next)  # slots up to the ring's end, then from its start
        for lo, hi, src in ((self.next, self.next + first, slice(0, first)), (0, k - first, slice(first, k))):
            if hi > lo:
                self.rows[lo:hi, :d] = rows[src]
                if d < self.rows.shape[1]:
                    self.rows[lo:hi, d:] = 0.0
                self.targets[lo:hi] = targets[src]
        self.next = (self.next + k) % self.window
        self.size = min(self.size + k, self.window)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The kept rows and targets in their slots, the ring's next slot and the draws'
        generator state."""
        targets = [] if self.targets is None else self.targets[: self.size].tolist()
        return {
            "rows": torch.from_numpy(self.rows[: self.size].copy()) if self.size else torch.zeros(0, 0),
            "targets": targets,
            "next": self.next,
            "rng": _rng_state(self.rng),
        }

    @classmethod
    def from_state(
        cls, state: Any, window: int, per_sample: int, n_features: int, target_dtype: Any
    ) -> RehearsalWindow:
        """Rebuild from :meth:`state`; ``ValueError`` unless it fits ``window`` and
        ``n_features`` and holds finite values."""
        require = checkpoint.require
        require(
            isinstance(state, dict) and set(state) == {"rows", "targets", "next", "rng"},
            "rehearsal state is not {rows, targets, next, rng}",
        )
        rows = checkpoint.check_tensor(state["rows"], "rehearsal rows", dtype=torch.float32)
        targets = checkpoint.plain(state["targets"], "rehearsal targets")
        require(isinstance(targets, list), "rehearsal targets are not a list")
        n = len(targets)
        require(
            rows.dim() == 2 and n <= window and (n == 0 or tuple(rows.shape) == (n, rows.shape[1])),
            "rehearsal rows do not fit the window",
        )
        require(rows.shape[1] <= n_features, "rehearsal rows are wider than the features")
        out = cls(window, per_sample)
        _set_rng_state(out.rng, state["rng"])
        nxt = state["next"]
        require(type(nxt) is int and 0 <= nxt < window and (n == window or nxt == n), "rehearsal next slot")
        if n:
            values = np.asarray(targets, dtype=target_dtype)
            require(bool(np.isfinite(values).all()), "rehearsal targets are not finite")
            out._push(rows.numpy().copy(), values)  # fills slots 0..n-1 in order
            out.next = nxt
        return out


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's PCG64 state, its 128-bit numbers as decimal strings (a checkpoint holds
    integers up to 2**64)."""
    inner = rng.bit_generator.state
    return {
        "state": str(inner["state"]["state"]),
        "inc": str(inner["state"]["inc"]),
        "has_uint32": int(inner["has_uint32"]),
        "uinteger": int(inner["uinteger"]),
    }


def _set_rng_state(rng: np.random.Generator, state: Any) -> None:
    """Restore :func:`_rng_state`'s data; ``ValueError`` unless it is one."""
    checkpoint.require(
        isinstance(state, dict)
        and set(state) == {"state", "inc", "has_uint32", "uinteger"}
        and all(
            isinstance(state[k], str) and state[k].isdigit() and len(state[k]) <= 40 for k in ("state", "inc")
        )
        and all(type(state[k]) is int for k in ("has_uint32", "uinteger")),
        "rehearsal rng state is not a PCG64 state",
    )
    try:
        rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(state["state"]), "inc": int(state["inc"])},
            "has_uint32": state["has_uint32"],
            "uinteger": state["uinteger"],
        }
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"rehearsal rng state is not valid: {exc}") from None
