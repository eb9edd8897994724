"""Benchmark 6: the paper's CNN on ``cuda``: DAS steps against static ones, eager and as a
captured CUDA graph, and what recapturing costs per sizing cycle. Skips cleanly without CUDA.

DAS: :class:`~streamdas.DASTrainer` on ``NetConfig.paper_cnn(3, (32, 32), 10,
hidden_sizes=(39, 18, 26, 57, 175))`` (Table I's CIFAR-10 widths) with weighted L1 and a sizing
cycle every ``cycle_steps`` batches, in three step modes: the sync-free step replayed as a CUDA
graph between resizes (the CUDA default), the sync-free step eager (``cuda_graphs=False``) and
the synchronising step (``sync_free=False``, as before issue 13). Static: the same trainer at
DAS's final widths with sizing and regularizer off, eager and as a graph, and a plain torch
loop (``zero_grad``/forward/backward/``Adam.step``, nothing else). Inputs: synthetic 32x32x3
images whose labels come from a fixed random projection (learnable), already on the device.

Each model runs ``steps`` steps timed as one stretch (one synchronisation at the end: the host
may run ahead of the device, which is the point of a sync-free step), then ``steps`` more timed
one by one (synchronised) to separate steps that ran a sizing cycle, or followed one (the
recapture), from the others.

    python -m benchmarks --only gpu
    python -m benchmarks.gpu --steps 300 --batch 128      # prints the table
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import Section, Sizes, setup_torch

__all__ = ["PAPER_WIDTHS", "capture_cost", "main", "measure", "run", "table"]

PAPER_WIDTHS = (39, 18, 26, 57, 175)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(device: torch.device, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    proj = torch.randn(3 * 32 * 32, 10, generator=g)
    y = (x.flatten(1) @ proj).argmax(1)
    return x.to(device), y.to(device)


def _time_steps(
    step: Callable[[torch.Tensor, torch.Tensor], Any],
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    steps: int,
    warmup: int,
    device: torch.device,
    cycles: Callable[[], int] = lambda: 0,
) -> dict[str, Any]:
    """Warm up, then time ``steps`` steps as one stretch and ``steps`` more one by one.

    Returns ``stretch`` (seconds per step), ``each`` (per-step seconds) and ``cycled`` (per
    step: 0 none, 1 it ran a sizing cycle, 2 it followed one).
    """
    n = x.shape[0]
    i = 0

    def batch_at(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = (k * batch) % (n - batch + 1)
        return x[s : s + batch], y[s : s + batch]

    for _ in range(warmup):
        step(*batch_at(i))
        i += 1
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*batch_at(i))
        i += 1
    _sync(device)
    stretch = (time.perf_counter() - t0) / max(steps, 1)
    each: list[float] = []
    cycled: list[int] = []
    previous = False
    for _ in range(steps):
        before = cycles()
        _sync(device)
        t0 = time.perf_counter()
        step(*batch_at(i))
        _sync(device)
        each.append(time.perf_counter() - t0)
        i += 1
        now = cycles() != before
        cycled.append(1 if now else 2 if previous else 0)
        previous = now
    return {"stretch": stretch, "each": each, "cycled": cycled}


def measure(
    device: str = "cuda",
    steps: int = 300,
    batch: int = 128,
    cycle_steps: int = 50,
    warmup: int = 20,
    seed: int = 42,
) -> dict[str, Any]:
    """Step times of DAS (graph, eager, synchronising), static trainers (eager, graph) and a
    plain torch loop on ``device``, and the graph captures DAS made.

    Works on any device (the suite calls it on the CPU at tiny sizes, where the graph and
    sync-free modes fall back to the CPU path); the figures mean something on CUDA.
    """
    from streamdas import DASTrainer, NetConfig, SizingConfig, TrainConfig
    from streamdas.model import DASNet

    dev = torch.device(device)
    x, y = _data(dev, max(4 * batch, 1024), seed)
    das_cfg = NetConfig.paper_cnn(3, (32, 32), 10, hidden_sizes=PAPER_WIDTHS)
    sizing = SizingConfig(every=cycle_steps * batch, min_growth=4)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
    }
    das: dict[str, Any] = {}
    for key, train in [
        ("das_graph", TrainConfig()),
        ("das_eager", TrainConfig(cuda_graphs=False)),
        ("das_sync", TrainConfig(sync_free=False)),
    ]:
        trainer = DASTrainer(das_cfg, train, sizing, seed=seed, device=dev)
        result[key] = _time_steps(
            trainer.step, x, y, batch, steps, warmup, dev, cycles=lambda t=trainer: t.n_cycles
        )
        das[key] = trainer
    graphed = das["das_graph"]
    final = tuple(graphed.net.hidden_sizes)
    static_cfg = NetConfig.paper_cnn(3, (32, 32), 10, hidden_sizes=final)
    off = SizingConfig(grow=False, prune=False)
    for key, train in [
        ("static_eager", TrainConfig(regularizer="none", cuda_graphs=False)),
        ("static_graph", TrainConfig(regularizer="none")),
    ]:
        trainer = DASTrainer(static_cfg, train, off, seed=seed, device=dev)
        result[key] = _time_steps(trainer.step, x, y, batch, steps, warmup, dev)

    net = DASNet(static_cfg, generator=torch.Generator().manual_seed(seed)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def plain(xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()

    net.train()
    result["plain"] = _time_steps(plain, x, y, batch, steps, warmup, dev)
    result.update(
        final_sizes=list(final),
        cycles=graphed.n_cycles,
        captures=graphed.graph_captures,
        capture_s=graphed.graph_capture_seconds,
    )
    return result


ROWS = [
    ("DAS, graph replay between resizes (CUDA default)", "das_graph"),
    ("DAS, sync-free eager (cuda_graphs=False)", "das_eager"),
    ("DAS, synchronising step (sync_free=False)", "das_sync"),
    ("static trainer, eager, DAS's final widths", "static_eager"),
    ("static trainer, graph, DAS's final widths", "static_graph"),
    ("plain torch loop, DAS's final widths", "plain"),
]


def table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One row per model: stretch ms/step (cycles included), median of the synchronised steps
    that neither ran nor followed a cycle, images/s over the stretch, ratios of stretch times."""
    b = result["batch"]
    eager, graph = result["static_eager"]["stretch"], result["static_graph"]["stretch"]
    rows = []
    for label, key in ROWS:
        r = result[key]
        between = [t for t, c in zip(r["each"], r["cycled"], strict=True) if c == 0] or r["each"]
        rows.append(
            [
                label,
                1e3 * r["stretch"],
                1e3 * statistics.median(between),
                b / r["stretch"],
                r["stretch"] / eager,
                r["stretch"] / graph,
            ]
        )
    headers = [
        "step",
        "ms/step (stretch)",
        "median ms between resizes",
        "images/s (stretch)",
        "ratio to static eager",
        "ratio to static graph",
    ]
    return headers, rows


def capture_cost(result: dict[str, Any]) -> dict[str, float]:
    """What a sizing cycle costs DAS with graphs: host seconds per capture (warm-up included),
    and the synchronised time of a cycle step and of the step after it (the recapture) above
    the median step between resizes."""
    r = result["das_graph"]
    between = [t for t, c in zip(r["each"], r["cycled"], strict=True) if c == 0] or r["each"]
    base = statistics.median(between)
    cycle = [t - base for t, c in zip(r["each"], r["cycled"], strict=True) if c == 1]
    after = [t - base for t, c in zip(r["each"], r["cycled"], strict=True) if c == 2]
    return {
        "capture_ms": 1e3 * result["capture_s"] / max(result["captures"], 1),
        "cycle_step_extra_ms": 1e3 * statistics.fmean(cycle) if cycle else math.nan,
        "next_step_extra_ms": 1e3 * statistics.fmean(after) if after else math.nan,
    }


def _notes(result: dict[str, Any]) -> list[str]:
    cost = capture_cost(result)
    return [
        f"{result['device']}, batch {result['batch']}, fp32, Adam (fused), {result['steps']} steps "
        f"per model timed as one stretch after {result['warmup']} warm-up steps, then {result['steps']} "
        f"timed one by one; DAS (graph) ran {result['cycles']} sizing cycles and {result['captures']} "
        f"graph captures; its final widths {result['final_sizes']} (start {list(PAPER_WIDTHS)}).",
        f"Capture cost per sizing cycle: {cost['capture_ms']:.1f} ms host time per capture (3 warm-up "
        f"steps and the capture); synchronised, a cycle step took {cost['cycle_step_extra_ms']:.1f} ms "
        f"and the step after it (the recapture) {cost['next_step_extra_ms']:.1f} ms more than the "
        "median step between resizes.",
        "Targets (issue 13): DAS step <= 1.15x a static step of the same widths; with graph replay "
        ">= 100k images/s at batch 128 on an H100/H200.",
    ]


def run(sizes: Sizes) -> list[Section]:
    title = "6. GPU: paper CNN, DAS vs static step time, eager and CUDA graph"
    if not torch.cuda.is_available():
        return [
            Section(
                "gpu",
                title,
                [],
                [],
                [
                    "Skipped: CUDA is not available here (`torch.cuda.is_available()` is False). "
                    "Run `python -m benchmarks --only gpu` on a CUDA machine."
                ],
            )
        ]
    result = measure("cuda", steps=sizes.gpu_steps, batch=sizes.gpu_batch)
    headers, rows = table(result)
    return [Section("gpu", title, headers, rows, _notes(result))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cycle-steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    setup_torch(1 if args.device == "cpu" else torch.get_num_threads())
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: CUDA is not available")
        return 0
    result = measure(args.device, args.steps, args.batch, args.cycle_steps, warmup=args.warmup)
    headers, rows = table(result)
    print(Section("gpu", f"paper CNN on {result['device']}", headers, rows, _notes(result)).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
