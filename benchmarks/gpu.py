"""Benchmark 6: the paper's CNN on ``cuda``, DAS training steps against a static model of DAS's
final size (ratio of step times). Skips cleanly when CUDA is not available.

DAS: :class:`~streamdas.DASTrainer` on ``NetConfig.paper_cnn(3, (32, 32), 10,
hidden_sizes=(39, 18, 26, 57, 175))`` (Table I's CIFAR-10 widths) with weighted L1 and a sizing
cycle every ``cycle_steps`` batches. Static: the same trainer class at DAS's final widths with
sizing and regularizer off, and a plain torch loop (``zero_grad``/forward/backward/``Adam.step``,
nothing else) on the same network, as the lower bound. Inputs: synthetic 32x32x3 images whose
labels come from a fixed random projection (learnable), already on the device.

    python -m benchmarks --only gpu
    python -m benchmarks.gpu --steps 300 --batch 128      # prints the table
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import Section, Sizes, setup_torch

__all__ = ["PAPER_WIDTHS", "main", "measure", "run"]

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


def _time_steps(step: Callable[[torch.Tensor, torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor,
                batch: int, steps: int, warmup: int, device: torch.device) -> list[float]:
    n = x.shape[0]
    times: list[float] = []
    for i in range(warmup + steps):
        s = (i * batch) % (n - batch + 1)
        xb, yb = x[s:s + batch], y[s:s + batch]
        _sync(device)
        t0 = time.perf_counter()
        step(xb, yb)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def measure(device: str = "cuda", steps: int = 300, batch: int = 128, cycle_steps: int = 50,
            warmup: int = 20, seed: int = 42) -> dict[str, Any]:
    """Step times (seconds) of DAS, the static trainer and a plain torch loop on ``device``.

    Works on any device (the suite only calls it with CUDA); on CPU it is a correctness check.
    """
    from streamdas import DASTrainer, NetConfig, SizingConfig, TrainConfig
    from streamdas.model import DASNet

    dev = torch.device(device)
    x, y = _data(dev, max(4 * batch, 1024), seed)
    das = DASTrainer(NetConfig.paper_cnn(3, (32, 32), 10, hidden_sizes=PAPER_WIDTHS),
                     TrainConfig(), SizingConfig(every=cycle_steps * batch, min_growth=4),
                     seed=seed, device=dev)
    das_times = _time_steps(das.step, x, y, batch, steps, warmup, dev)
    cycle_flags = _cycle_flags(das, warmup, steps, batch, cycle_steps)
    final = tuple(das.net.hidden_sizes)

    static_cfg = NetConfig.paper_cnn(3, (32, 32), 10, hidden_sizes=final)
    static = DASTrainer(static_cfg, TrainConfig(regularizer="none"), SizingConfig(grow=False, prune=False),
                        seed=seed, device=dev)
    static_times = _time_steps(static.step, x, y, batch, steps, warmup, dev)

    net = DASNet(static_cfg, generator=torch.Generator().manual_seed(seed)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def plain(xb: torch.Tensor, yb: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()

    net.train()
    plain_times = _time_steps(plain, x, y, batch, steps, warmup, dev)
    between = [t for t, c in zip(das_times, cycle_flags, strict=True) if not c]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"device": name, "batch": batch, "steps": steps, "final_sizes": list(final),
            "das": das_times, "das_between": between or das_times, "static": static_times,
            "plain": plain_times, "cycles": das.n_cycles}


def _cycle_flags(trainer: Any, warmup: int, steps: int, batch: int, cycle_steps: int) -> list[bool]:
    """Which timed steps ran a sizing cycle (every ``cycle_steps`` steps on the sample grid)."""
    every = cycle_steps * batch
    return [((warmup + i + 1) * batch) % every < batch for i in range(steps)]


def table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    b = result["batch"]
    static_med = statistics.median(result["static"])
    plain_med = statistics.median(result["plain"])
    rows = []
    for label, key in [("DAS step, amortized (cycles included)", "das"),
                       ("DAS step between resizes", "das_between"),
                       ("static DASTrainer step, DAS's final size", "static"),
                       ("static plain torch step, DAS's final size", "plain")]:
        ts = result[key]
        mean, med = statistics.fmean(ts), statistics.median(ts)
        rows.append([label, 1e3 * mean, 1e3 * med, b / med, med / static_med, med / plain_med])
    rows[0][4] = statistics.fmean(result["das"]) / statistics.fmean(result["static"])
    rows[0][5] = statistics.fmean(result["das"]) / statistics.fmean(result["plain"])
    headers = ["step", "mean ms", "median ms", "images/s (median)", "ratio to static trainer",
               "ratio to plain torch"]
    return headers, rows


def run(sizes: Sizes) -> list[Section]:
    title = "6. GPU: paper CNN, DAS vs static step time"
    if not torch.cuda.is_available():
        return [Section("gpu", title, [], [], [
            "Skipped: CUDA is not available here (`torch.cuda.is_available()` is False). "
            "Run `python -m benchmarks --only gpu` on a CUDA machine."])]
    result = measure("cuda", steps=sizes.gpu_steps, batch=sizes.gpu_batch)
    headers, rows = table(result)
    notes = [
        f"{result['device']}, batch {result['batch']}, fp32, Adam, {result['steps']} timed steps per model "
        f"after 20 warm-up steps, each step synchronized; {result['cycles']} DAS sizing cycles; "
        f"DAS's final widths {result['final_sizes']} (start {list(PAPER_WIDTHS)}).",
        "Ratio rows use medians except the amortized row (means). Target: DAS step <= 1.15x a "
        "static step of the same size.",
    ]
    return [Section("gpu", title, headers, rows, notes)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cycle-steps", type=int, default=50)
    args = parser.parse_args(argv)
    setup_torch(1 if args.device == "cpu" else torch.get_num_threads())
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: CUDA is not available")
        return 0
    result = measure(args.device, args.steps, args.batch, args.cycle_steps)
    headers, rows = table(result)
    print(Section("gpu", f"paper CNN on {result['device']}", headers, rows).to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
