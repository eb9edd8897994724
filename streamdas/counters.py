"""What a trainer has learnt from so far: samples, steps, skipped batches and the last loss.

Synchronising steps count on the host as they go. Sync-free steps (see
:attr:`~streamdas.TrainConfig.sync_free`) count every batch as taken, an upper bound, while the
device counts the batches it skipped; reading a count :meth:`~StepCounters.settle` s the two
(one host round trip), so a stream of sync-free steps never waits for the device.
"""

from __future__ import annotations

import math
from typing import Any, overload

import torch
from torch import Tensor

__all__ = ["Count", "EpochLoss", "StepCounters"]


class StepCounters:
    """The step counts of one trainer, settled lazily after sync-free steps.

    Parameters
    ----------
    device
        Where sync-free steps count their skipped batches and leave their loss.

    Examples
    --------
    >>> c = StepCounters("cpu")
    >>> c.record_loss(0.5); c.taken(16)
    >>> c.skip()
    >>> c.n_samples, c.n_steps, c.n_nonfinite, c.last_loss, c.last_taken
    (16, 1, 1, 0.5, False)
    """

    def __init__(self, device: str | torch.device) -> None:
        #: counts as the host knows them (after sync-free steps: upper bounds until settled)
        self.samples = 0
        self.steps = 0
        self.nonfinite = 0
        #: sync-free steps since the counts were last settled
        self.pending = 0
        #: skipped (batches, samples) counted on the device and not yet read by the host
        self.skipped = torch.zeros(2, dtype=torch.int64, device=device)
        #: the loss of the last sync-free step, on the device (a buffer the steps overwrite)
        self.device_loss = torch.full((), math.nan, device=device)
        #: the last sync-free step's loss as it returned it (the buffer itself under CUDA graphs)
        self.loss_tensor: Tensor = self.device_loss
        self.host_loss: float | None = None
        #: whether the last step was sync-free (its loss is on the device)
        self.on_device = False
        #: whether the last step counted as taken (sync-free steps count, until settled)
        self.last_taken = False

    def settle(self) -> None:
        """Subtract the batches the device skipped since the last settling (one host read)."""
        if not self.pending:
            return
        batches, samples = self.skipped.tolist()
        self.skipped.zero_()
        self.pending = 0
        self.nonfinite += batches
        self.steps -= batches
        self.samples -= samples

    @property
    def n_samples(self) -> int:
        """Samples learnt from (skipped non-finite batches excluded)."""
        self.settle()
        return self.samples

    @property
    def n_steps(self) -> int:
        """Optimizer steps taken (skipped non-finite batches excluded)."""
        self.settle()
        return self.steps

    @property
    def n_nonfinite(self) -> int:
        """Minibatches skipped because their loss or a gradient was not finite."""
        self.settle()
        return self.nonfinite

    @property
    def last_loss(self) -> float | None:
        """Mean data loss of the last minibatch (non-finite if it was skipped; ``None`` before
        any step). After a sync-free step, reading it waits for the device."""
        if self.host_loss is None and self.on_device:
            return float(self.device_loss)
        return self.host_loss

    def record_loss(self, loss: float) -> None:
        """A synchronising step computed its loss (finite or not)."""
        self.host_loss, self.on_device = loss, False

    def skip(self) -> None:
        """A synchronising step dropped its batch: nothing changed."""
        self.nonfinite += 1
        self.last_taken = False

    def taken(self, n: int) -> None:
        """A synchronising step learnt from ``n`` samples."""
        self.steps += 1
        self.samples += n
        self.last_taken = True

    def taken_on_device(self, n: int, loss: Tensor) -> None:
        """A sync-free step ran on ``n`` samples: counted as taken until settled; ``loss`` is
        the loss tensor it returned."""
        self.pending += 1
        self.steps += 1
        self.samples += n
        self.host_loss, self.on_device, self.loss_tensor = None, True, loss
        self.last_taken = True


class Count:
    """A trainer attribute that reads one count of the trainer's :class:`StepCounters` (settled
    first) and sets it (for restoring a state).

    >>> class Trainer:
    ...     n_steps = Count("steps", "Optimizer steps taken.")
    ...     def __init__(self): self.counters = StepCounters("cpu")
    >>> t = Trainer(); t.counters.taken(4); t.n_steps
    1
    >>> t.n_steps = 7; t.counters.steps
    7
    """

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type) -> Count: ...
    @overload
    def __get__(self, obj: object, owner: type) -> int: ...
    def __get__(self, obj: Any, owner: type) -> Count | int:
        if obj is None:
            return self
        counters: StepCounters = obj.counters
        counters.settle()
        value: int = getattr(counters, self.name)
        return value

    def __set__(self, obj: Any, value: int) -> None:
        counters: StepCounters = obj.counters
        counters.settle()
        setattr(counters, self.name, value)


class EpochLoss:
    """The mean data loss over an epoch's taken batches, weighted by their sizes; after sync-free
    steps summed on the device (skipped batches add 0) and read once, at :meth:`mean`.

    >>> c, epoch = StepCounters("cpu"), EpochLoss()
    >>> c.record_loss(1.0); c.taken(2); epoch.add(c, 2)
    >>> c.record_loss(4.0); c.taken(1); epoch.add(c, 1)
    >>> epoch.mean(c)
    2.0
    """

    def __init__(self) -> None:
        self.total: float | Tensor = 0.0
        self.count = 0

    def add(self, c: StepCounters, n: int) -> None:
        """Count the last step, on ``n`` samples, if it was taken."""
        if c.last_taken and c.on_device:  # sync-free: skipped batches add 0, settled in mean
            value = c.loss_tensor
            self.total += torch.where(value.isfinite(), value.double() * n, 0.0)
            self.count += n
        elif c.last_taken:
            assert c.host_loss is not None
            self.total += c.host_loss * n
            self.count += n

    def mean(self, c: StepCounters) -> float:
        """The epoch's mean loss (settles the counters: the samples of skipped batches are
        taken out of the count)."""
        if c.pending:
            before = c.samples
            c.settle()
            self.count -= before - c.samples
        return float(self.total) / max(self.count, 1)
