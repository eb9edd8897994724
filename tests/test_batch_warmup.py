"""``batch_warmup`` (issue 22): the first batches start at one sample and double every
``batch_warmup`` samples learned, up to ``batch_size``; the schedule depends on the samples
learned alone (batching, checkpoints), and ``0`` is the plain batch. What it buys on short
streams: docs/benchmarks.md, "Batch warm-up"."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from streamdas import DASClassifier, DASRegressor, load_estimator, save_estimator


def _samples(n: int, seed: int = 0) -> list[tuple[dict[str, float], int]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return [({f"f{j}": float(v) for j, v in enumerate(row)}, int(row[0] + row[1] > 0)) for row in X]


def _steps(model: DASClassifier) -> int:
    return 0 if model.trainer is None else model.trainer.n_steps


def _step_sizes(model: DASClassifier, data: list[tuple[dict[str, float], int]]) -> list[int]:
    """The samples each optimizer step took while ``model`` learned ``data`` one by one."""
    sizes, learned = [], 0
    for x, y in data:
        model.learn_one(x, y)
        if model.n_samples_learned != learned:
            sizes.append(model.n_samples_learned - learned)
            learned = model.n_samples_learned
    return sizes


def test_batches_start_at_one_and_double_every_warmup_samples() -> None:
    model = DASClassifier(batch_size=16, batch_warmup=4, seed=0)
    sizes = _step_sizes(model, _samples(60))
    # 4 samples at batch 1, then 2, 4 (8 learned), 8 (12 learned: 2**3), then 16 from 20 on
    assert sizes == [1, 1, 1, 1, 2, 2, 4, 8, 16, 16]
    assert _steps(model) == len(sizes) and model.n_samples_buffered == 60 - sum(sizes)


def test_zero_is_the_plain_batch() -> None:
    zero = DASClassifier(batch_warmup=0, seed=0)
    for x, y in _samples(200):
        zero.learn_one(x, y)
    assert _steps(zero) == 200 // 16 and zero.n_samples_buffered == 200 % 16


def test_the_model_does_not_depend_on_how_samples_arrived(tmp_path) -> None:
    data = _samples(300, seed=1)
    one = DASClassifier(batch_warmup=8, seed=3)
    for x, y in data:
        one.learn_one(x, y)
    chunks = DASClassifier(batch_warmup=8, seed=3)
    frame = pd.DataFrame([x for x, _ in data])
    target = pd.Series([y for _, y in data])
    cuts = [0, 5, 6, 40, 41, 150]
    for lo, hi in itertools.pairwise(cuts):
        chunks.learn_many(frame.iloc[lo:hi], target.iloc[lo:hi], split=True)
    path = tmp_path / "warm.ckpt"  # a restart in the middle of the warm-up's doublings
    save_estimator(chunks, path)
    chunks, _ = load_estimator(path)
    chunks.learn_many(frame.iloc[150:], target.iloc[150:], split=True)
    assert _steps(chunks) == _steps(one) and chunks.n_samples_buffered == one.n_samples_buffered
    probe = pd.DataFrame([x for x, _ in _samples(20, seed=2)])
    np.testing.assert_array_equal(chunks.predict_proba_many(probe), one.predict_proba_many(probe))


def test_a_model_saved_before_the_parameter_loads_without_warmup() -> None:
    model = DASClassifier(seed=0)
    for x, y in _samples(40):
        model.learn_one(x, y)
    state = model.to_state()
    del state["params"]["batch_warmup"]  # a file written before the parameter existed
    assert DASClassifier.from_state(state).batch_warmup == 0


@pytest.mark.parametrize("value", [-1, 1.5, True, "8"])
def test_invalid_warmup_raises(value) -> None:
    with pytest.raises(ValueError, match="batch_warmup"):
        DASClassifier(batch_warmup=value)
    with pytest.raises(ValueError, match="batch_warmup"):
        DASRegressor(batch_warmup=value)


def test_the_batch_never_exceeds_batch_size() -> None:
    model = DASClassifier(batch_size=4, batch_warmup=1, seed=0)
    sizes = _step_sizes(model, _samples(40))
    # 1 (then 1 learned: 2), 2 (3 learned: 8, capped at 4), then batch_size
    assert sizes == [1, 2] + [4] * 9 and model.n_samples_buffered == 1
