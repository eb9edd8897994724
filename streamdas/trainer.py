"""The sizing controller: optimizer steps, regularization and the grow/prune schedule.

Streaming mode (:meth:`DASTrainer.step`) takes one optimizer step per minibatch and, every
``SizingConfig.every`` samples, prunes then grows: Algorithm 1 of the paper with "epoch" read as
"N samples" (the first growth happens before the first step, as in Algorithm 1). Batch mode
(:meth:`DASTrainer.fit`) runs Algorithm 1 per epoch exactly: grow, one epoch of steps, prune.

How alpha relates to the minibatch size
---------------------------------------
The penalty ``alpha * Omega(W)`` is added **once per optimizer step** to the **mean** loss of the
minibatch, exactly as the paper does with batches of 128. The expected gradient of one step,
``E[grad mean_loss] + alpha * grad Omega``, therefore does not depend on the batch size: at any
batch size (1 included) SGD and Adam are driven towards the same regularized optimum, so a given
alpha means the same thing in a stream with ``batch_size=1`` as in the paper's epochs. Only the
gradient noise changes with the batch size. ``tests/test_trainer.py`` checks that final sizes
stay monotone in alpha at several batch sizes.

Learning rate and tau
---------------------
With Adam, a weight whose gradient is dominated by the L1 term does not settle at zero: it
oscillates around it with an amplitude of about ``lr / 2`` (more when the loss gradient is
noisy). Pruning needs *all* incoming parameters of a unit below ``tau`` at once, so keep
``lr`` at most about ``tau`` (the defaults: ``lr = tau = 1e-3``, Adam's usual rate and the
paper's threshold): with ``lr`` well above ``tau`` the dead units of a layer may never get all
their weights under ``tau`` at once, and the layer grows until ``max_units``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from streamdas import checkpoint, trainer_settings, trainer_state
from streamdas.averaging import ParameterAverages
from streamdas.counters import Count, EpochLoss, StepCounters
from streamdas.engines import EngineChoice, StepEngine
from streamdas.model import DASNet, Layer, NetConfig, ResizeRegistry
from streamdas.sizing import (
    RunningAverages,
    SizingConfig,
    grow,
    prune,
)
from streamdas.train_config import TrainConfig, preload_optimizer
from streamdas.trainer_state import check_architecture

__all__ = ["DASTrainer", "TrainConfig", "check_architecture", "preload_optimizer"]

FORMAT = "streamdas-trainer"
VERSION = 1


def _generator(seed: int | None) -> torch.Generator:
    """A generator seeded with ``seed`` (``None``: from the system's entropy)."""
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def _epochs(epochs: int, progress: bool) -> Any:
    """``range(epochs)``, with a progress bar where asked."""
    if not progress:
        return range(epochs)
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "fit(progress=True) needs tqdm: pip install tqdm (or 'streamdas[sim]')"
        ) from exc
    return tqdm(range(epochs), desc="epochs")


class DASTrainer:
    """Trains a :class:`DASNet` with Dynamic Auto-Sizing.

    Parameters
    ----------
    net
        The network; a :class:`NetConfig` builds a fresh one.
    train
        Optimizer, loss and regularizer settings.
    sizing
        Grow/prune settings and the streaming schedule.
    seed
        Seeds the generator used for initial and grown weights and for batch-mode shuffling.
    device
        Where the network lives (``"cpu"`` or ``"cuda"``).
    history_limit
        Most recent size-history events kept (older ones are dropped).

    Examples
    --------
    >>> trainer = DASTrainer(NetConfig(n_inputs=2, hidden_sizes=(8,), n_outputs=2),
    ...                      sizing=SizingConfig(every=64, min_growth=4), seed=0)
    >>> g = torch.Generator().manual_seed(1)
    >>> for _ in range(8):
    ...     x = torch.randn(16, 2, generator=g)
    ...     trainer.step(x, (x[:, 0] > 0).long())
    >>> trainer.n_samples, trainer.n_cycles
    (128, 2)
    >>> [e["event"] for e in trainer.size_history]
    ['init', 'grow', 'prune', 'grow', 'prune', 'grow']
    """

    def __init__(
        self,
        net: DASNet | NetConfig,
        train: TrainConfig = TrainConfig(),  # noqa: B008
        sizing: SizingConfig = SizingConfig(),  # noqa: B008
        seed: int | None = None,
        device: str | torch.device = "cpu",
        history_limit: int = 10_000,
    ) -> None:
        self.train_config = train
        self.sizing = sizing
        self.seed = seed
        self.device = torch.device(device)
        self.generator = _generator(seed)
        if isinstance(net, NetConfig):
            net = DASNet(net, generator=self.generator)
        self.net = net.to(self.device)
        self.regularizer = train.make_regularizer()
        self.optimizer = train.make_optimizer(list(self.net.parameters()))
        #: the sizer's state: running averages read by the pruning test (kept aligned on resizes)
        self.pruning_averages = RunningAverages()
        #: averages of all parameters that predictions use (None: the live ones, the paper's)
        self.prediction_averages = (
            ParameterAverages(self.net, train.average_horizon) if train.average_horizon > 0 else None
        )
        self.loss_fn: nn.Module = nn.CrossEntropyLoss() if train.loss == "cross_entropy" else nn.MSELoss()
        #: everything that follows a resize, each with its policy for new slices
        self.resize_followers = ResizeRegistry(self, "optimizer", "pruning_averages", "prediction_averages")
        #: samples, steps, skipped batches and the last loss
        self.counters = StepCounters(self.device)
        #: the step engines, and which one steps a batch
        self.engines = EngineChoice(self, self.device)
        self.fine_tune = False
        self.history_limit = history_limit
        self.n_cycles, self.last_cycle, self.started = 0, 0, False
        n_hidden = len(self.net.hidden)
        self.n_grown, self.n_pruned = [0] * n_hidden, [0] * n_hidden
        self.size_history: list[dict[str, Any]] = []
        self._record("init")

    # ------------------------------------------------------------------ read-outs
    n_samples = Count("samples", "Samples learnt from (skipped non-finite batches excluded).")
    n_steps = Count("steps", "Optimizer steps taken (skipped non-finite batches excluded).")
    n_nonfinite = Count("nonfinite", "Minibatches skipped because their loss or a gradient was not finite.")

    @property
    def last_loss(self) -> float | None:
        """Mean data loss of the last minibatch (non-finite if it was skipped; ``None`` before
        any step). After sync-free steps, reading it waits for the device."""
        return self.counters.last_loss

    @property
    def graph_captures(self) -> int:
        """CUDA graphs captured so far (one per shape between resizes; 0 without graphs)."""
        return self.engines.graph_captures

    @property
    def graph_capture_seconds(self) -> float:
        """Host seconds spent warming up and capturing CUDA graphs."""
        return self.engines.graph_capture_seconds

    # settings changed while learning, and the memory of the state (streamdas.trainer_settings)
    set_hyperparameters = trainer_settings.set_hyperparameters
    set_average_horizon = trainer_settings.set_average_horizon
    with_sizing = trainer_settings.with_sizing
    state_bytes = trainer_settings.state_bytes

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, event: str) -> None:
        self.size_history.append(
            {"n_samples": self.n_samples, "event": event, "sizes": self.net.hidden_sizes}
        )
        if len(self.size_history) > self.history_limit:
            del self.size_history[: len(self.size_history) - self.history_limit]

    @property
    def sizing_active(self) -> bool:
        return not self.fine_tune

    # ------------------------------------------------------------------ structure
    def grow(self) -> list[int]:
        """Grow every hidden layer now (if growth is on) and record it."""
        if not self.sizing.grow:
            return [0] * len(self.net.hidden)
        added = grow(self.net, self.sizing, self.generator, self.resize_followers)
        self.n_grown = [a + b for a, b in zip(self.n_grown, added, strict=True)]
        self._record("grow")
        return added

    def prune(self) -> list[int]:
        """Prune every hidden layer now (if pruning is on) and record it."""
        if not self.sizing.prune:
            return [0] * len(self.net.hidden)
        removed = prune(self.net, self.sizing, self.resize_followers, self.pruning_averages)
        self.n_pruned = [a + b for a, b in zip(self.n_pruned, removed, strict=True)]
        self._record("prune")
        return removed

    def cycle(self) -> None:
        """One sizing cycle: prune, then grow (the boundary between two "epochs")."""
        self.prune()
        self.grow()
        self.n_cycles += 1
        self.last_cycle = self.n_samples

    def add_inputs(self, n_new: int) -> None:
        """New input features (zero weights, optimizer state kept)."""
        self.net.add_inputs(n_new, optimizer=self.resize_followers)

    def add_outputs(self, n_new: int) -> None:
        """New output units, e.g. classes (optimizer state kept)."""
        self.net.add_outputs(n_new, generator=self.generator, optimizer=self.resize_followers)

    # ------------------------------------------------------------------ learning
    def _hidden_layers(self) -> list[Layer]:
        return list(self.net.hidden)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean data loss plus the regularization term (for reporting; steps use :meth:`step`)."""
        data = self.loss_fn(self.net(x), y)
        if self.fine_tune:
            return data
        return data + self.regularizer.penalty(self._hidden_layers())

    def engine_for(self, x: Tensor, y: Tensor) -> StepEngine:
        """The engine that would step the minibatch ``(x, y)`` (see :mod:`streamdas.engines`)."""
        return self.engines.for_batch(x, y)

    def optimizer_step(self, x: Tensor, y: Tensor, n_samples: int | None = None) -> None:
        """One guarded optimizer step on a minibatch, outside the sizing schedule: nothing
        changes where the loss or a gradient is not finite (see :mod:`streamdas.engines`).
        ``n_samples`` is as in :meth:`step`."""
        if n_samples is not None and not 1 <= n_samples <= int(x.shape[0]):
            raise ValueError(f"n_samples must be in [1, {int(x.shape[0])}], got {n_samples}")
        self.engines.for_batch(x, y).step(x, y, n_samples)

    def step(self, x: Tensor, y: Tensor, n_samples: int | None = None) -> None:
        """Streaming mode: one optimizer step on the minibatch ``(x, y)``, then a sizing cycle
        if ``sizing.every`` samples have passed since the last one.

        The minibatch's mean data loss is then :attr:`last_loss`. Where the loss or a gradient
        is not finite nothing changes and the batch is counted in :attr:`n_nonfinite`. With
        ``TrainConfig.sync_free`` the host waits for the device only when the schedule may
        call for a sizing cycle (or when a counter or :attr:`last_loss` is read).

        ``n_samples`` (default: the rows of ``x``) is how many samples the step counts: the
        first ``n_samples`` rows are new and the rest revisit earlier ones (rehearsal), which
        advance neither :attr:`n_samples`, the sizing schedule nor the averages' horizons.
        """
        if not self.started and self.sizing_active:
            self.grow()  # Algorithm 1 grows before training
        self.started = True
        x, y = x.to(self.device), y.to(self.device)
        self.optimizer_step(x, y, n_samples)
        c = self.counters
        if not c.last_taken:
            return
        since = c.samples - self.last_cycle  # an upper bound until settled, after sync-free steps
        if self.sizing_active and since >= self.sizing.every:
            if c.pending:  # skipped batches may not count: settle (one round trip)
                c.settle()
                since = c.samples - self.last_cycle
                if since < self.sizing.every:
                    return
            self.cycle()
            # Stay on the grid of multiples of `every`, whatever the minibatch size.
            self.last_cycle = c.samples - since % self.sizing.every

    def fit(
        self, x: Tensor, y: Tensor, epochs: int = 1, batch_size: int = 128, progress: bool = False
    ) -> list[float]:
        """Batch mode: Algorithm 1 exactly, per epoch: grow, train one shuffled epoch, prune.

        With :attr:`fine_tune` on, it trains statically. Returns the mean loss of each epoch.
        """
        losses: list[float] = []
        x, y = x.to(self.device), y.to(self.device)
        for _ in _epochs(epochs, progress):
            if self.sizing_active:
                self.grow()
            self.started = True
            order = torch.randperm(x.shape[0], generator=self.generator).to(self.device)
            epoch = EpochLoss()
            for start in range(0, x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                self.optimizer_step(x[idx], y[idx])
                epoch.add(self.counters, idx.numel())
            loss = epoch.mean(self.counters)  # settles the counts before the cycle reads them
            if self.sizing_active:
                self.prune()
                self.n_cycles += 1
                self.last_cycle = self.n_samples
            losses.append(loss)
        return losses

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Network outputs in evaluation mode (dropout off), with the averaged parameters
        where :attr:`TrainConfig.average_horizon` is set."""
        self.net.eval()
        x = x.to(self.device)
        if self.prediction_averages is None:
            return self.net(x)
        return torch.func.functional_call(self.net, self.prediction_averages.named(self.net), (x,))

    # ------------------------------------------------------------------ state
    # checkpoint state: to_state, from_state, save and load of streamdas.trainer_state
    state_dict = trainer_state.to_state
    save = trainer_state.save

    @classmethod
    def from_state_dict(
        cls,
        state: dict[str, Any],
        device: str | torch.device = "cpu",
        limits: checkpoint.Limits | None = None,
    ) -> DASTrainer:
        """Rebuild a trainer from :meth:`state_dict`; ``ValueError`` if it does not fit."""
        return trainer_state.from_state(cls, state, device, limits)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> DASTrainer:
        """Load a trainer saved with :meth:`save`; raises :class:`~streamdas.CheckpointError`."""
        return trainer_state.load(cls, path, device)
