"""The sync-free training step and its CUDA-graph replay (issue 13).

What is particular to the sync-free engine (its contract with the other engines, that it
follows the synchronising step exactly, is checked in tests/test_step_engines.py). On the CPU:
it reads no tensor into Python; and the graph bookkeeping (warm-up, static buffers, recapture
after every resize) gives the same run with the CUDA graph API mocked. The tests marked
``gpu`` run the real thing (they skip without CUDA; ``scripts/gpu_check.sh`` runs them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from test_step_engines import assert_same, batches

from streamdas import DASTrainer, NetConfig, SizingConfig, TrainConfig
from streamdas.cudagraph import GraphAPI, StepGraph
from streamdas.engines import DeviceEngine

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

MLP = NetConfig(6, (12, 10), 3)
CNN = NetConfig(n_inputs=2, hidden_sizes=(4, 5, 6), n_outputs=3, input_hw=(6, 6), conv_strides=(1, 2))


_batches = batches  # the contract tests' batches


def _trainer(config: NetConfig, sync_free: bool, device: str = "cpu", **train: object) -> DASTrainer:
    settings = dict(lr=3e-3, alpha=1e-3, numpy_backprop=False, sync_free=sync_free)
    settings.update(train)
    return DASTrainer(
        config,
        TrainConfig(**settings),  # type: ignore[arg-type]
        SizingConfig(every=64, min_growth=2, tau=5e-2, prune_horizon=40),
        seed=3,
        device=device,
    )


def _assert_same(a: DASTrainer, b: DASTrainer) -> None:
    assert_same(a, b, {"rtol": 0.0, "atol": 0.0})


def test_sync_free_falls_back_for_sgd_and_keeps_the_numpy_path():
    sgd = _trainer(MLP, True, optimizer="sgd")
    assert not isinstance(sgd.engine_for(*_batches(MLP, 1, 8)[0]), DeviceEngine)
    x, y = _batches(MLP, 1, 8)[0]
    sgd.step(x, y)
    assert isinstance(sgd.last_loss, float) and not sgd.counters.on_device
    default = DASTrainer(MLP, seed=0)  # CPU default: NumPy path, losses on the host
    default.step(x, y)
    assert not default.counters.on_device and not isinstance(default.engine_for(x, y), DeviceEngine)


@contextlib.contextmanager
def _count_host_reads(counts: dict[str, int]) -> Iterator[None]:
    """Count calls of the Tensor methods that read a tensor into Python."""
    names = ["item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "cpu"]
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def wrap(name: str):
        original = originals[name]

        def counted(self, *args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return original(self, *args, **kwargs)

        return counted

    try:
        for name in names:
            setattr(torch.Tensor, name, wrap(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("config", [MLP, CNN], ids=["mlp", "cnn"])
def test_sync_free_step_reads_no_tensor_into_python(config):
    trainer = _trainer(config, True)
    trainer.with_sizing(every=10_000)  # no sizing cycle (which reads, by design) in this run
    batches = _batches(config, 6, 16, bad_at=3)
    trainer.step(*batches[0])  # first growth and lazy optimizer state
    reads: dict[str, int] = {}
    with _count_host_reads(reads):
        for x, y in batches[1:]:  # a non-finite batch among them
            trainer.step(x, y)
    assert reads == {}
    assert trainer.n_cycles == 0 and trainer.n_nonfinite == 1 and trainer.n_steps == 5
    # the counting works: the synchronising step reads its loss
    today = _trainer(config, False)
    today.step(*batches[0])
    with _count_host_reads(reads):
        today.step(*batches[1])
    assert reads.get("__float__", 0) >= 1 and reads.get("__bool__", 0) >= 1


class _Stream:
    def wait_stream(self, other: object) -> None:
        pass


def _mock_api(trainer: DASTrainer, log: list[str]) -> GraphAPI:
    """A CPU stand-in for torch.cuda's graph API. Capture records nothing but must also change
    nothing (a real capture runs no kernel): the mock snapshots every tensor the step may
    write and restores it on exit. Replay runs the step body on the static buffers."""

    def tensors() -> list[torch.Tensor]:
        out = [p.data for p in trainer.net.parameters()]
        holders = [trainer.optimizer, trainer.pruning_averages]
        if trainer.prediction_averages is not None:
            holders.append(trainer.prediction_averages)
        out += [
            t
            for holder in holders
            for st in holder.state.values()
            for t in st.values()
            if isinstance(t, torch.Tensor)
        ]
        counters = trainer.counters
        return [*out, counters.skipped, counters.device_loss, trainer.engines.sync_free.found_inf]

    class Graph:
        def replay(self) -> None:
            log.append("replay")
            sg = trainer.engines.sync_free.graph
            assert sg is not None
            trainer.engines.sync_free.body(sg.static_x, sg.static_y, False)

    @contextlib.contextmanager
    def capture(graph: Graph, pool: object) -> Iterator[None]:
        assert all(g["capturable"] for g in trainer.optimizer.param_groups)
        log.append("capture")
        saved = [(t, t.clone()) for t in tensors()]
        yield
        for t, copy_ in saved:
            t.copy_(copy_)

    return GraphAPI(
        new_graph=Graph,
        capture=capture,
        new_stream=_Stream,
        use_stream=lambda s: contextlib.nullcontext(),
        current_stream=_Stream,
        new_pool=object,
    )


def _install_mock_graph(trainer: DASTrainer, log: list[str]) -> None:
    engine = trainer.engines.sync_free
    engine.graph = StepGraph(engine.body, engine.capturable, api=_mock_api(trainer, log))


def test_graph_replay_bookkeeping_with_mocked_api():
    """Recapture after every resize (and only then), warm-up changes nothing, static buffers
    carry each batch: the mocked-graph run equals the eager sync-free run exactly."""
    eager = _trainer(MLP, True)
    graphed = _trainer(MLP, True)
    log: list[str] = []
    _install_mock_graph(graphed, log)
    versions = set()
    for i, (x, y) in enumerate(_batches(MLP, 30, 16, bad_at=13)):
        if i:
            versions.add(graphed.net.structure_version)
        eager.step(x, y)
        graphed.step(x, y)
    # the first step runs eagerly (it creates the optimizer state and averages), then one
    # capture per network version the steps saw: each sizing cycle changes it
    assert log.count("replay") == 29
    assert graphed.graph_captures == log.count("capture") == len(versions) == graphed.n_cycles + 1
    assert graphed.n_cycles >= 5
    assert not any(g["capturable"] for g in graphed.optimizer.param_groups)
    _assert_same(eager, graphed)
    # a different batch shape, fine-tune mode or learning rate recaptures; the same does not
    x, y = _batches(MLP, 1, 8, seed=5)[0]
    n = graphed.graph_captures
    graphed.step(x, y)
    graphed.step(x, y)
    assert graphed.graph_captures == n + 1
    graphed.fine_tune = True
    graphed.step(x, y)
    graphed.optimizer.param_groups[0]["lr"] = 1e-4
    graphed.step(x, y)
    assert graphed.graph_captures == n + 3
    # turned off: eager steps
    off = _trainer(MLP, True, cuda_graphs=False)
    _install_mock_graph(off, [])
    off.step(x, y)
    assert off.graph_captures == 0


def test_graph_replay_with_prediction_averages_waits_for_their_warm_up():
    """With Polyak averages the steps stay eager until the averages' time constant stops
    changing (a capture bakes it in); then replays give the eager run exactly."""
    eager = _trainer(MLP, True, average_horizon=30)
    graphed = _trainer(MLP, True, average_horizon=30)
    log: list[str] = []
    _install_mock_graph(graphed, log)
    assert graphed.prediction_averages is not None
    captured_at = []
    for x, y in _batches(MLP, 30, 16, bad_at=13):
        before, captures = graphed.n_samples, log.count("capture")
        eager.step(x, y)
        graphed.step(x, y)
        if log.count("capture") > captures:
            captured_at.append(before)
    assert captured_at and all(graphed.prediction_averages.warm(n) for n in captured_at)
    # the first capture came at warm-up's end
    assert not graphed.prediction_averages.warm(captured_at[0] - 16)
    assert log.count("replay") >= 20
    _assert_same(eager, graphed)


# ---------------------------------------------------------------------- GPU (skip without CUDA)
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "graph"])
def test_gpu_steps_do_not_synchronise(graphs):
    """Between sizing cycles a step neither synchronises nor reads a tensor (sync debug mode
    'error' raises on any synchronising call); sizing cycles and (re)captures may."""
    trainer = _trainer(CNN, True, device="cuda", cuda_graphs=graphs)
    trainer.with_sizing(every=10_000)  # no sizing cycle in the checked steps
    batches = _batches(CNN, 8, 16, bad_at=5, device="cuda")
    trainer.step(*batches[0])  # first growth, lazy optimizer state and averages (eager)
    trainer.step(*batches[1])  # graphs: the capture (it synchronises, by torch's design)
    torch.cuda.synchronize()
    reads: dict[str, int] = {}
    torch.cuda.set_sync_debug_mode("error")
    try:
        with _count_host_reads(reads):
            for x, y in batches[2:]:  # a non-finite batch among them
                trainer.step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert reads == {}
    assert trainer.n_cycles == 0 and trainer.n_nonfinite == 1 and trainer.n_steps == 7
    assert trainer.graph_captures == (1 if graphs else 0)


@pytest.mark.gpu
@needs_cuda
def test_gpu_benchmark_runs_tiny():
    from benchmarks import gpu

    result = gpu.measure("cuda", steps=6, batch=8, cycle_steps=3, warmup=2)
    _, rows = gpu.table(result)
    assert result["captures"] >= result["cycles"] >= 1
    assert all(r[1] > 0 for r in rows)
    assert gpu.main(["--steps", "4", "--batch", "8", "--cycle-steps", "2", "--warmup", "1"]) == 0
