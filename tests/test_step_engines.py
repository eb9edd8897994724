"""The one contract of the step engines (:mod:`streamdas.engines`), checked on every engine.

Each engine is a :class:`~streamdas.DASTrainer` set up so that it steps the batches (NumPy,
autograd, sync-free; on CUDA also autograd, sync-free and CUDA-graph replay, skipped without a
GPU). The reference is the synchronising autograd engine on the same device. Every engine:

* follows the reference over runs with sizing cycles (and, in the sync-free scenarios, running
  averages and a non-finite batch in the middle): same architecture, parameters, optimizer
  state, averages, counters and size history, exactly for the engines that compute in the same
  order and to float32 tolerance for the others (NumPy: a different order of float32
  arithmetic; CUDA: other kernels), in streaming mode and in batch mode;
* skips a batch whose loss or a gradient is not finite, changing nothing but the count;
* keeps copies and restored states on their own storage.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
import torch

from streamdas import DASTrainer, NetConfig, SizingConfig, TrainConfig
from streamdas.backprop import NumpyBackprop
from streamdas.engines import AutogradEngine, DeviceEngine, NumpyEngine, StepEngine

CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Engine:
    """How to make a trainer step with one engine, and how closely it follows the reference."""

    name: str
    kind: type[StepEngine]
    settings: dict[str, Any]
    device: str = "cpu"
    tol: dict[str, float] = field(default_factory=lambda: {"rtol": 0.0, "atol": 0.0})
    #: per-step loss tolerance (None: equal)
    loss_tol: dict[str, float] | None = None
    mlp_only: bool = False
    #: whether it steps with optimizers that take no device-side non-finite flag (SGD)
    any_optimizer: bool = True
    copyable: bool = True
    graphs: bool = False

    @property
    def exact(self) -> bool:
        return self.tol["rtol"] == 0 and self.tol["atol"] == 0


_CUDA_TOL = {"rtol": 1e-4, "atol": 1e-5}
ENGINES = [
    Engine(
        "numpy",
        NumpyEngine,
        {"numpy_backprop": True, "sync_free": False},
        tol={"rtol": 1e-3, "atol": 1e-4},
        loss_tol={"rel": 1e-4, "abs": 1e-5},
        mlp_only=True,
    ),
    Engine("autograd", AutogradEngine, {"numpy_backprop": False, "sync_free": False}),
    Engine("sync_free", DeviceEngine, {"numpy_backprop": False, "sync_free": True}, any_optimizer=False),
    Engine("cuda_autograd", AutogradEngine, {"numpy_backprop": False, "sync_free": False}, device="cuda"),
    Engine(
        "cuda_sync_free",
        DeviceEngine,
        {"numpy_backprop": False, "sync_free": True, "cuda_graphs": False},
        device="cuda",
        tol=_CUDA_TOL,
        any_optimizer=False,
    ),
    Engine(
        "cuda_graph",
        DeviceEngine,
        {"numpy_backprop": False, "sync_free": True, "cuda_graphs": True},
        device="cuda",
        tol=_CUDA_TOL,
        any_optimizer=False,
        copyable=False,
        graphs=True,
    ),
]
REFERENCE = {"numpy_backprop": False, "sync_free": False}


def _params(engines: list[Engine]) -> list[Any]:
    marks = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
    return [pytest.param(e, id=e.name, marks=marks if e.device == "cuda" else ()) for e in engines]


# ---------------------------------------------------------------------- scenarios
MLP = NetConfig(6, (12, 10), 3)
CNN = NetConfig(n_inputs=2, hidden_sizes=(4, 5, 6), n_outputs=3, input_hw=(6, 6), conv_strides=(1, 2))
STREAM_NET = NetConfig(6, (10, 8), 3)


@dataclass(frozen=True)
class Scenario:
    """A run: network, settings, schedule and batches, and what the reference run must show."""

    name: str
    net: NetConfig
    train: dict[str, Any]
    sizing: SizingConfig
    seed: int
    batches: Callable[[str], list[tuple[torch.Tensor, torch.Tensor]]]
    check: Callable[[DASTrainer], None]

    def trainer(self, settings: dict[str, Any], device: str) -> DASTrainer:
        train = TrainConfig(lr=3e-3, alpha=1e-3, **{**settings, **self.train})
        return DASTrainer(self.net, train, self.sizing, seed=self.seed, device=device)


def stream_batches(mse: bool, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(60):
        x = torch.randn(16, 6, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
        if mse:
            y = torch.nn.functional.one_hot(y, 3).float()
        out.append((x.to(device), y.to(device)))
    return out


def batches(
    config: NetConfig,
    n_batches: int,
    batch: int,
    seed: int = 0,
    bad_at: int | None = None,
    device: str = "cpu",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    shape = (config.n_inputs, *config.input_hw) if config.input_hw else (config.n_inputs,)
    out = []
    for i in range(n_batches):
        x = torch.randn(batch, *shape, generator=g)
        y = (x.flatten(1)[:, 0] > 0).long() + (x.flatten(1)[:, 1] > 0.5).long()
        if i == bad_at:
            x[1].view(-1)[0] = math.nan
        out.append((x.to(device), y.to(device)))
    return out


def sync_free_batches(config: NetConfig, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return batches(config, 30, 16, bad_at=13, device=device)


def _cycles(reference: DASTrainer) -> None:
    assert reference.n_cycles > 3


def _cycles_prunes_and_a_skip(reference: DASTrainer) -> None:
    assert reference.n_cycles >= 5 and reference.n_nonfinite == 1
    assert any(
        e["event"] == "prune" and e["sizes"] != h["sizes"]
        for e, h in zip(reference.size_history[1:], reference.size_history, strict=False)
    )


STREAM_SIZING = SizingConfig(every=160, min_growth=3, prune_horizon=64, tau=5e-3)
SYNC_FREE_SIZING = SizingConfig(every=64, min_growth=2, tau=5e-2, prune_horizon=40)
SCENARIOS = [
    *(
        Scenario(
            f"stream-{name}",
            STREAM_NET,
            train,
            STREAM_SIZING,
            0,
            partial(stream_batches, train.get("loss") == "mse"),
            _cycles,
        )
        for name, train in [
            ("adam", {}),
            ("adamw", {"optimizer": "adamw"}),
            ("sgd", {"optimizer": "sgd"}),
            ("l21", {"regularizer": "l21"}),
            ("mse", {"loss": "mse"}),
        ]
    ),
    *(
        Scenario(
            f"{net_name}-{optimizer}-{horizon_name}",
            net,
            {"optimizer": optimizer, "average_horizon": horizon},
            SYNC_FREE_SIZING,
            3,
            partial(sync_free_batches, net),
            _cycles_prunes_and_a_skip,
        )
        for net_name, net in [("mlp", MLP), ("cnn", CNN)]
        for optimizer in ["adam", "adamw"]
        for horizon_name, horizon in [("live", 0), ("polyak", 40)]
    ),
]


def _covers(engine: Engine, scenario: Scenario) -> bool:
    if engine.mlp_only and scenario.net.input_hw:
        return False
    return engine.any_optimizer or scenario.train.get("optimizer") != "sgd"


def assert_same(a: DASTrainer, b: DASTrainer, tol: dict[str, float]) -> None:
    """Same architecture, parameters, optimizer state, running averages (the sizer's and the
    predictions'), counters and size history."""
    assert a.net.hidden_sizes == b.net.hidden_sizes
    for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
        torch.testing.assert_close(pa.detach().cpu(), pb.detach().cpu(), **tol)
        sa, sb = a.optimizer.state[pa], b.optimizer.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            torch.testing.assert_close(sa[key].cpu(), sb[key].cpu(), **tol, msg=lambda m, k=key: f"{k}: {m}")
    for pa, pb in zip(a.net.hidden.parameters(), b.net.hidden.parameters(), strict=True):
        aa, ab = a.pruning_averages.get(pa), b.pruning_averages.get(pb)
        assert (aa is None) == (ab is None)
        if aa is not None:
            torch.testing.assert_close(aa.cpu(), ab.cpu(), **tol)
    assert (a.prediction_averages is None) == (b.prediction_averages is None)
    if a.prediction_averages is not None and b.prediction_averages is not None:
        for pa, pb in zip(a.net.parameters(), b.net.parameters(), strict=True):
            torch.testing.assert_close(
                a.prediction_averages.get(pa).cpu(), b.prediction_averages.get(pb).cpu(), **tol
            )
    assert (a.n_samples, a.n_steps, a.n_nonfinite, a.n_cycles, a.last_cycle) == (
        b.n_samples,
        b.n_steps,
        b.n_nonfinite,
        b.n_cycles,
        b.last_cycle,
    )
    assert a.size_history == b.size_history


def _same_loss(engine: Engine, got: float | None, expected: float | None) -> None:
    assert got is not None and expected is not None
    if not math.isfinite(expected):
        assert not math.isfinite(got)
    elif engine.loss_tol is None:
        assert got == expected
    else:
        assert got == pytest.approx(expected, **engine.loss_tol)


@pytest.fixture
def deterministic_cudnn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same kernels on every run (no dropout here: same randomness too)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


# ---------------------------------------------------------------------- the contract
@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("engine", _params(ENGINES))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_follows_the_reference(engine: Engine, scenario: Scenario) -> None:
    """Same seed, same stream, with sizing cycles (growth and pruning): the engine ends where
    the synchronising autograd engine does, step by step in the loss."""
    if not _covers(engine, scenario):
        pytest.skip(f"{engine.name} does not step {scenario.name}")
    reference = scenario.trainer(REFERENCE, engine.device)
    trainer = scenario.trainer(engine.settings, engine.device)
    data = scenario.batches(engine.device)
    assert type(trainer.engine_for(*data[0])) is engine.kind
    assert type(reference.engine_for(*data[0])) is AutogradEngine
    for x, y in data:
        reference.step(x, y)
        trainer.step(x, y)
        _same_loss(engine, trainer.last_loss, reference.last_loss)
    scenario.check(reference)
    assert_same(reference, trainer, engine.tol)
    if engine.graphs:
        assert trainer.graph_captures >= trainer.n_cycles >= 5


@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("engine", _params(ENGINES))
def test_batch_mode_follows_the_reference(engine: Engine) -> None:
    """:meth:`~streamdas.DASTrainer.fit` (epochs, shuffling, a non-finite batch): same epoch
    losses, counters and state."""
    x = torch.cat([b[0] for b in batches(MLP, 6, 16, bad_at=2)]).to(engine.device)
    y = torch.cat([b[1] for b in batches(MLP, 6, 16, bad_at=2)]).to(engine.device)
    reference, trainer = _mlp_trainer(REFERENCE, engine.device), _mlp_trainer(engine.settings, engine.device)
    expected, got = reference.fit(x, y, epochs=2, batch_size=16), trainer.fit(x, y, epochs=2, batch_size=16)
    if engine.loss_tol is None:
        assert got == expected
    else:
        assert got == pytest.approx(expected, **engine.loss_tol)
    assert_same(reference, trainer, engine.tol)


@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("engine", _params(ENGINES))
def test_rows_beyond_n_samples_count_as_no_samples(engine: Engine) -> None:
    """Each batch stepped twice over (its rows repeated: the mean loss and the gradients are
    the same) with ``n_samples`` its own rows ends where the batch alone does: the counters,
    the sizing schedule and both averages' horizons advance by ``n_samples``, not by the rows
    (rehearsal's extra rows are not samples)."""
    scenario = next(s for s in SCENARIOS if s.name == "mlp-adam-polyak")
    alone = scenario.trainer(engine.settings, engine.device)
    doubled = scenario.trainer(engine.settings, engine.device)
    for x, y in scenario.batches(engine.device):
        alone.step(x, y)
        doubled.step(torch.cat((x, x)), torch.cat((y, y)), n_samples=len(x))
    scenario.check(alone)
    assert_same(alone, doubled, {"rtol": 1e-5, "atol": 1e-6} if engine.exact else engine.tol)
    with pytest.raises(ValueError, match="n_samples"):
        alone.step(x, y, n_samples=len(x) + 1)


def _mlp_trainer(settings: dict[str, Any], device: str) -> DASTrainer:
    train = TrainConfig(lr=3e-3, alpha=1e-3, **settings)
    return DASTrainer(MLP, train, SYNC_FREE_SIZING, seed=3, device=device)


def _stream_trainer(engine: Engine) -> DASTrainer:
    return SCENARIOS[0].trainer(engine.settings, engine.device)


def _batch(
    n: int, d: int, n_out: int, seed: int = 0, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 2
    return x.to(device), torch.randint(0, n_out, (n,), generator=g).to(device)


def _snapshot(trainer: DASTrainer) -> list[torch.Tensor]:
    out = [p.detach().clone() for p in trainer.net.parameters()]
    return out + [v.clone() for p in trainer.net.parameters() for v in trainer.optimizer.state[p].values()]


def _assert_unchanged(trainer: DASTrainer, before: list[torch.Tensor], n_steps: int) -> None:
    assert trainer.n_steps == n_steps
    after = _snapshot(trainer)
    assert len(after) == len(before)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("engine", _params(ENGINES))
def test_non_finite_batches_change_nothing(engine: Engine) -> None:
    """A non-finite input and finite inputs that overflow the activations: both skipped."""
    trainer = _stream_trainer(engine)
    x, y = _batch(16, 6, 3, device=engine.device)
    assert type(trainer.engine_for(x, y)) is engine.kind
    trainer.step(x, y)
    trainer.step(x, y)
    before, n_steps = _snapshot(trainer), trainer.n_steps
    x_bad = x.clone()
    x_bad[3, 2] = float("inf")
    trainer.step(x_bad, y)
    x_huge = x * 1e38  # finite inputs, overflowing activations
    trainer.step(x_huge, y)
    assert trainer.n_nonfinite == 2
    _assert_unchanged(trainer, before, n_steps)


def _poison_numpy(trainer: DASTrainer, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    real = NumpyBackprop.__call__
    armed = [False]

    def poisoned(self: NumpyBackprop, xs: np.ndarray, ys: np.ndarray) -> tuple[float, list[np.ndarray]]:
        loss, grads = real(self, xs, ys)
        if armed[0]:
            grads[0][1, 2] = np.nan  # finite loss, one bad gradient entry
        return loss, grads

    monkeypatch.setattr(NumpyBackprop, "__call__", poisoned)
    return lambda: armed.__setitem__(0, True)


def _poison_autograd(trainer: DASTrainer, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    poison = torch.zeros((), device=trainer.device)  # changed in place: a captured graph reads it too

    def hook(g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        g[1, 2] += poison
        return g

    trainer.net.hidden[0].weight.register_hook(hook)

    def arm() -> None:
        poison.fill_(math.nan)  # finite loss, one bad gradient entry

    return arm


@pytest.mark.parametrize("engine", _params(ENGINES))
def test_a_non_finite_gradient_behind_a_finite_loss_changes_nothing(engine: Engine, monkeypatch) -> None:
    trainer = _stream_trainer(engine)
    poison = (_poison_numpy if engine.kind is NumpyEngine else _poison_autograd)(trainer, monkeypatch)
    x, y = _batch(16, 6, 3, device=engine.device)
    trainer.step(x, y)
    trainer.step(x, y)
    before, n_steps = _snapshot(trainer), trainer.n_steps
    poison()
    trainer.step(x, y)
    assert trainer.n_nonfinite == 1
    _assert_unchanged(trainer, before, n_steps)


@pytest.mark.parametrize("engine", _params(ENGINES))
def test_copies_use_their_own_storage(engine: Engine) -> None:
    if not engine.copyable:
        pytest.skip("a captured CUDA graph is not copied")
    trainer = _stream_trainer(engine)
    x, y = _batch(16, 6, 3, device=engine.device)
    trainer.step(x, y)
    twin = copy.deepcopy(trainer)
    trainer.step(x, y)
    twin.step(x, y)
    for pa, pb in zip(trainer.net.parameters(), twin.net.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("engine", _params(ENGINES))
def test_state_dict_round_trip(engine: Engine) -> None:
    trainer = _mlp_trainer(engine.settings, engine.device)
    for x, y in batches(MLP, 10, 16, bad_at=4, device=engine.device):
        trainer.step(x, y)
    clone = DASTrainer.from_state_dict(copy.deepcopy(trainer.state_dict()), device=engine.device)
    assert clone.n_nonfinite == trainer.n_nonfinite == 1
    assert_same(trainer, clone, {"rtol": 0.0, "atol": 0.0})
