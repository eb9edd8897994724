"""The neighbour memory and the mix of experts (issue 22): the vote is the brute-force
nearest-neighbour vote, the mix's batches do not matter, predictions are exactly the mix, the
state round-trips and a damaged one is refused. What the memory buys in accuracy:
``tests/test_estimators.py::test_classifier_defaults_beat_a_bar_the_old_defaults_missed``."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.accuracy import CLASSIFICATION
from streamdas import CheckpointError, DASClassifier, load_estimator, save_estimator
from streamdas.checkpoint import estimator_from_state, estimator_to_state
from streamdas.mixing import FLOOR, ExpertMix
from streamdas.neighbours import CHUNK, PRIOR, NeighbourMemory


def _brute_vote(rows: np.ndarray, targets: np.ndarray, z: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """The vote by definition: every row at most as far as the k-th nearest votes."""
    width = rows.shape[1]
    q = np.zeros(width, dtype=np.float64)
    q[: min(width, len(z))] = z[:width]
    dist = ((rows.astype(np.float64) - q) ** 2).sum(axis=1)
    if len(dist) > k:
        near = dist <= np.sort(dist)[k - 1] * (1 + 1e-5) + 1e-6
    else:
        near = np.ones(len(dist), dtype=bool)
    counts = np.bincount(targets[near], minlength=n_classes)[:n_classes] + PRIOR
    return counts / counts.sum()


def test_the_vote_is_the_nearest_neighbours_vote_through_wraps_new_features_and_classes() -> None:
    rng = np.random.default_rng(0)
    memory = NeighbourMemory(size=50, n_neighbors=5)
    kept_rows: list[np.ndarray] = []
    kept_targets: list[int] = []
    width, n_classes = 3, 2
    for step in range(40):  # 40 pushes of 1-9 rows: the ring wraps many times
        if step == 15:
            width += 2  # two new features: 0 (their mean) in the older rows
        if step == 25:
            n_classes = 4
        k = int(rng.integers(1, 10))
        rows = rng.standard_normal((k, width)).astype(np.float32)
        targets = rng.integers(0, n_classes, k)
        memory.push(rows, targets)
        kept_rows += [np.pad(r, (0, 5 - width)) for r in rows]
        kept_targets += targets.tolist()
        ref_rows = np.array(kept_rows[-50:])[:, :width]
        ref_targets = np.array(kept_targets[-50:])
        assert len(memory) == len(ref_targets)
        queries = rng.standard_normal((6, width)).astype(np.float32)
        many = memory.vote_many(queries, n_classes)
        for q, row in zip(queries, many, strict=True):
            want = _brute_vote(ref_rows, ref_targets, q, 5, n_classes)
            np.testing.assert_allclose(memory.vote(q, n_classes), want, rtol=1e-6)
            np.testing.assert_allclose(row, want, rtol=1e-6)
    np.testing.assert_allclose(memory.rows[(memory.next + np.arange(50)) % 50], ref_rows)


def test_a_large_batch_votes_in_chunks_as_one() -> None:
    rng = np.random.default_rng(3)
    memory = NeighbourMemory(size=64, n_neighbors=3)
    memory.push(rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64))
    queries = rng.standard_normal((2 * CHUNK + 5, 4)).astype(np.float32)
    many = memory.vote_many(queries, 3)
    assert many.shape == (len(queries), 3)
    for i in (0, CHUNK - 1, CHUNK, 2 * CHUNK + 4):
        np.testing.assert_allclose(many[i], memory.vote(queries[i], 3), rtol=1e-6)


def test_tied_rows_all_vote() -> None:
    memory = NeighbourMemory(size=8, n_neighbors=1)
    memory.push(np.zeros((3, 2), np.float32), np.array([0, 1, 1]))  # three rows at one point
    np.testing.assert_allclose(memory.vote(np.zeros(2, np.float32), 2), [1.1 / 3.2, 2.1 / 3.2])


def test_an_empty_memory_votes_uniformly() -> None:
    memory = NeighbourMemory(size=8, n_neighbors=3)
    assert memory.vote(np.ones(2, np.float32), 4).tolist() == [0.25] * 4
    assert memory.vote_many(np.ones((2, 2), np.float32), 2).tolist() == [[0.5, 0.5]] * 2


def test_the_mix_does_not_depend_on_how_samples_were_batched() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.random(40), rng.random(40)
    whole, split = ExpertMix(0.05), ExpertMix(0.05)
    whole.update(first, second)
    for lo, hi in ((0, 1), (1, 17), (17, 33), (33, 40)):
        split.update(first[lo:hi], second[lo:hi])
    np.testing.assert_allclose(whole.log_weights, split.log_weights, rtol=1e-12)
    by_hand = [0.0, 0.0]
    for a, b in zip(first, second, strict=True):
        by_hand = [0.95 * by_hand[0] + np.log(max(a, FLOOR)), 0.95 * by_hand[1] + np.log(max(b, FLOOR))]
    np.testing.assert_allclose(whole.log_weights, by_hand, rtol=1e-12)


def test_the_mix_follows_the_expert_right_lately() -> None:
    mix = ExpertMix(0.05)
    mix.update(np.full(100, 0.9), np.full(100, 0.3))
    assert mix.weights[0] > 0.99
    mix.update(np.full(60, 0.3), np.full(60, 0.9))  # the second has been right for 60 samples
    assert mix.weights[1] > 0.99
    mix.update(np.zeros(10), np.ones(10))  # probability 0 counts as FLOOR: finite weights
    assert np.isfinite(mix.log_weights).all() and sum(mix.weights) == pytest.approx(1.0)


def _rbf(n: int, seed: int = 0) -> list:
    """RandomRBFDrift, 50 centroids crossing the space in about 1,000 samples (the suite's)."""
    return CLASSIFICATION["RandomRBFDrift, 50 moving, 4 cl."](n, seed)


def _trained(n: int = 600, **params) -> tuple[DASClassifier, list]:
    data = _rbf(n + 200)
    model = DASClassifier(seed=0, **params)
    for x, y in data[:n]:
        model.learn_one(x, y)
    return model, data[n:]


def test_predictions_are_the_mix_of_the_network_and_the_vote() -> None:
    model, rest = _trained()
    assert model._memory is not None and len(model._memory) == 512
    assert model._mix.weights[1] > 0.9  # the vote leads on this stream ...
    model._mix._set(0.0, -0.5)  # ... set weights where both count, to take both paths
    w_net, w_memory = model._mix.weights
    skipped = 0
    for x, _ in rest:
        z = model._predict_input(x)
        logits = torch.from_numpy(model._fwd(z).astype(np.float64))
        want = w_net * torch.softmax(logits, 0).numpy() + w_memory * model._memory.vote(z, 4)
        proba = model.predict_proba_one(x)
        np.testing.assert_allclose([proba[c] for c in model.classes], want, rtol=1e-9)
        best = model.classes[int(np.argmax(want))]
        assert model.predict_one(x) == best == max(proba, key=proba.get)
        p = np.sort(torch.softmax(logits, 0).numpy())
        skipped += w_net * (p[-1] - p[-2]) >= w_memory  # predict_one skipped the vote
    assert 0 < skipped < len(rest)  # both of predict_one's paths were taken
    frame_proba = model.predict_proba_many(pd.DataFrame([x for x, _ in rest]))
    one = [[model.predict_proba_one(x)[c] for c in model.classes] for x, _ in rest]
    np.testing.assert_allclose(frame_proba[model.classes].to_numpy(), one, rtol=1e-5)


def test_two_class_predictions_are_the_mix_without_its_arrays() -> None:
    """With two classes predict_one decides on the sign of the mix's difference of the two
    probabilities (the vote's through ``vote_lead``): the same answer as the mix's argmax."""
    data = CLASSIFICATION["SEA, abrupt drift"](900, 3)
    model = DASClassifier(seed=0)
    for x, y in data[:700]:
        model.learn_one(x, y)
    model._mix._set(0.0, -1.0)  # weights where both count (0.73, 0.27), to take both paths
    w_net, w_memory = model._mix.weights
    voted = 0
    for x, _ in data[700:]:
        z = model._predict_input(x)
        vote = model._memory.vote(z, 2)
        assert model._memory.vote_lead(z) == pytest.approx(vote[0] - vote[1], abs=1e-12)
        logits = torch.from_numpy(model._fwd(z).astype(np.float64))
        want = w_net * torch.softmax(logits, 0).numpy() + w_memory * vote
        proba = model.predict_proba_one(x)
        assert model.predict_one(x) == model.classes[int(np.argmax(want))] == max(proba, key=proba.get)
        p = torch.softmax(logits, 0).numpy()
        voted += w_net * abs(p[0] - p[1]) < w_memory  # predict_one computed the vote
    assert 0 < voted < 200  # both of predict_one's paths were taken


def test_the_vote_lead_of_one_class_and_of_an_empty_memory() -> None:
    memory = NeighbourMemory(size=8, n_neighbors=2)
    z = np.zeros(2, np.float32)
    assert memory.vote_lead(z) == 0.0  # uniform
    memory.push(np.ones((3, 2), np.float32), np.array([0, 0, 0]))  # only the first class kept
    vote = memory.vote(z, 2)
    assert memory.vote_lead(z) == pytest.approx(vote[0] - vote[1]) == pytest.approx(3 / 3.2)


def test_memory_zero_is_the_network_alone() -> None:
    model, rest = _trained(memory=0)
    assert model._memory is None and "memory" not in model.to_state()
    for x, _ in rest[:50]:
        logits = torch.from_numpy(model._fwd(model._predict_input(x)).astype(np.float64))
        proba = model.predict_proba_one(x)
        np.testing.assert_allclose([proba[c] for c in model.classes], torch.softmax(logits, 0), rtol=1e-9)


def test_the_state_round_trips_and_learning_goes_on_identically(tmp_path) -> None:
    model, rest = _trained(n=700)
    path = tmp_path / "m.ckpt"
    save_estimator(model, path)
    copy_, _ = load_estimator(path)
    for x, y in rest:
        assert copy_.predict_proba_one(x) == model.predict_proba_one(x)
        model.learn_one(x, y)
        copy_.learn_one(x, y)
    assert copy_._mix.log_weights == model._mix.log_weights
    np.testing.assert_array_equal(copy_._memory.rows, model._memory.rows)
    assert copy.deepcopy(model).predict_proba_one(rest[0][0]) == model.predict_proba_one(rest[0][0])


def test_a_model_saved_before_the_memory_loads_without_it() -> None:
    model, _ = _trained(n=100, memory=0)
    state = model.to_state()
    del state["params"]["memory"]  # a file written before the parameter existed
    assert DASClassifier.from_state(state).memory == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.update(targets=[9] * len(m["targets"])),  # not a class position
        lambda m: m.update(targets=m["targets"][:-1]),  # fewer targets than rows
        lambda m: m.update(rows=torch.full_like(m["rows"], float("nan"))),
        lambda m: m.update(rows=torch.zeros(len(m["targets"]), 99)),  # wider than the features
        lambda m: m.update(next=10**6),
        lambda m: m.update(extra=1),
    ],
)
def test_a_damaged_memory_is_refused(damage, tmp_path) -> None:
    model, _ = _trained(n=100)
    state = model.to_state()
    damage(state["memory"]["rows"])
    with pytest.raises(ValueError):
        DASClassifier.from_state(state)


@pytest.mark.parametrize("mix", [[0.0], [float("inf"), 0.0], ["a", 0.0], None])
def test_damaged_mix_weights_are_refused(mix) -> None:
    model, _ = _trained(n=100)
    state = model.to_state()
    state["memory"]["mix"] = mix
    with pytest.raises(ValueError):
        DASClassifier.from_state(state)


def test_a_checkpoint_cannot_make_the_kept_rows_outgrow_a_file() -> None:
    """memory=65,536 rows of up to 10,000 features would reach 2.6 GB as features arrive."""
    model, _ = _trained(n=100)
    state = model.to_state()
    state["params"]["memory"] = 2**16  # its 96 rows fit the larger ring
    with pytest.raises(ValueError, match="kept rows"):
        DASClassifier.from_state(state)
    state["params"]["max_features"] = 100  # the same rows, 100 features at most: they fit
    assert DASClassifier.from_state(state).memory == 2**16


def test_a_memory_without_the_parameter_is_refused() -> None:
    model, _ = _trained(n=100)
    state = model.to_state()
    state["params"]["memory"] = 0
    with pytest.raises(ValueError, match="memory state"):
        DASClassifier.from_state(state)


@pytest.mark.parametrize(
    "kw",
    [{"memory": -1}, {"memory": 1.5}, {"n_neighbors": 0}, {"mix_forgetting": 0.0}, {"mix_forgetting": 2.0}],
)
def test_invalid_memory_arguments_raise(kw: dict) -> None:
    with pytest.raises(ValueError):
        DASClassifier(**kw)


def test_the_memory_is_bounded() -> None:
    model, _ = _trained(n=700, memory=64)
    assert len(model._memory) == 64 and model._memory.scaled.shape[0] == 64


def test_a_loaded_snapshot_predicts_as_the_learner(tmp_path) -> None:
    from consumers.snapshots import decode_snapshot, encode_snapshot

    model, rest = _trained(n=700)
    snap = decode_snapshot(encode_snapshot(model, n_learned=700), epoch=1, version=1)
    for x, _ in rest[:50]:
        assert snap.estimator.predict_proba_one(x) == model.predict_proba_one(x)


def test_load_failures_are_checkpoint_errors() -> None:
    model, _ = _trained(n=100)
    payload = estimator_to_state(model)
    rows = payload["estimator"]["memory"]["rows"]
    rows["targets"] = ["x"] * len(rows["targets"])
    with pytest.raises(CheckpointError, match="memory targets"):
        estimator_from_state(payload)
