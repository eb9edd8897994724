"""The estimators' optional learning paths: the regressor's linear path (``linear_path``) and
rehearsal of recent samples (``rehearsal``, ``rehearsal_window``)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from river import checks, datasets, metrics

from streamdas import DASClassifier, DASRegressor, load_estimator, save_estimator


def _linear_stream(n: int, seed: int = 0) -> list[tuple[dict[str, float], float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.normal(size=2)
        out.append(({"a": float(a), "b": float(b)}, 100.0 + 3.0 * a - 2.0 * b))
    return out


def _mae(model: DASRegressor, data: list[tuple[dict[str, float], float]]) -> float:
    metric = metrics.MAE()
    for x, y in data:
        metric.update(y, model.predict_one(x))
        model.learn_one(x, y)
    return metric.get()


def test_linear_path_fits_a_linear_concept_sooner() -> None:
    data = _linear_stream(400)
    plain = _mae(DASRegressor(seed=1, linear_path=0.0), data)
    wide_model = DASRegressor(seed=1, linear_path=0.02)
    wide = _mae(wide_model, data)
    assert wide < 0.8 * plain
    assert wide_model._linear is not None and wide_model._linear.linear_share > 0.5
    assert np.isfinite(wide_model._linear.weights).all() and wide_model._linear.weights[0] > 0


def test_linear_path_converges_with_many_features() -> None:
    """Plain SGD at the default step diverges once the inputs' squared norm passes about 50
    (weights of 1e80 with 200 features); the normalized step keeps the path finite and useful."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=200)
    model = DASRegressor(seed=0)
    errors = []
    for _ in range(1500):
        v = rng.normal(size=200)
        x = {f"f{j}": float(v[j]) for j in range(200)}
        errors.append(abs(model.predict_one(x) - float(v @ w)))
        model.learn_one(x, float(v @ w))
    path = model._linear
    assert path is not None and np.isfinite(path.weights).all() and max(path.errors) < 1.0
    assert path.linear_share > 0.5 and np.mean(errors[-300:]) < 0.25 * np.mean(errors[:300])


def test_paths_off_keep_the_states_keys() -> None:
    assert DASRegressor()._linear is not None and DASRegressor().linear_path == 0.02  # the default
    assert DASRegressor().rehearsal == 2 and DASClassifier().rehearsal == 0  # the defaults
    assert DASClassifier().memory == 512 and DASClassifier()._memory is not None
    reg, clf = DASRegressor(seed=0, linear_path=0.0, rehearsal=0), DASClassifier(seed=0, memory=0)
    assert reg._linear is None and reg._rehearsal is None and clf._rehearsal is None
    assert clf._memory is None
    reg.learn_one({"a": 1.0}, 2.0)
    clf.learn_one({"a": 1.0}, True)
    assert "linear" not in reg.to_state() and "rehearsal" not in reg.to_state()
    assert "rehearsal" not in clf.to_state() and "memory" not in clf.to_state()


@pytest.mark.parametrize(
    "kw",
    [
        {"linear_path": -1.0},
        {"linear_path": "x"},
        {"rehearsal": -1},
        {"rehearsal": 1.5},
        {"rehearsal_window": 0},
    ],
)
def test_invalid_arguments_raise(kw: dict) -> None:
    with pytest.raises(ValueError):
        DASRegressor(**kw)


def test_predict_many_agrees_with_predict_one_with_the_linear_path() -> None:
    model = DASRegressor(seed=2, linear_path=0.02)
    data = _linear_stream(120)
    for x, y in data:
        model.learn_one(x, y)
    X = pd.DataFrame([x for x, _ in data[:10]])
    many = model.predict_many(X).to_numpy()
    one = np.array([model.predict_one(x) for x, _ in data[:10]])
    assert np.allclose(many, one, rtol=1e-4, atol=1e-3)


def test_rehearsal_counts_only_new_samples_and_keeps_the_schedule() -> None:
    plain = DASClassifier(seed=0, grow_every=100, batch_size=8)
    rehearsed = DASClassifier(seed=0, grow_every=100, batch_size=8, rehearsal=2, rehearsal_window=32)
    for x, y in datasets.Phishing().take(400):
        plain.learn_one(x, y)
        rehearsed.learn_one(x, y)
    assert rehearsed.n_samples_learned == plain.n_samples_learned == 400
    assert rehearsed.n_sizing_cycles == plain.n_sizing_cycles
    assert rehearsed._rehearsal is not None and len(rehearsed._rehearsal) == 32
    assert rehearsed.predict_proba_one(x) != plain.predict_proba_one(x)  # it did learn otherwise


def test_the_rehearsal_window_holds_the_last_samples_through_wraps_and_new_features() -> None:
    """Batches of uneven sizes (the ring wraps mid-batch) and a feature added on the way: the
    window holds exactly the last ``window`` rows (a new feature 0 in older ones), and each
    rehearsed row is one of them."""
    from streamdas.rehearsal import RehearsalWindow

    rng = np.random.default_rng(0)
    window = RehearsalWindow(window=10, per_sample=2, seed=1)
    seen_x: list[np.ndarray] = []
    seen_y: list[int] = []
    for i, (k, d) in enumerate([(3, 2), (5, 2), (7, 2), (4, 3), (9, 3), (12, 3), (1, 3)]):
        x = rng.normal(size=(k, d)).astype(np.float32)
        y = np.arange(len(seen_y), len(seen_y) + k)
        before = [np.pad(r, (0, d - len(r))) for r in seen_x[-10:]]
        out_x, out_y = window.extend(torch.from_numpy(x), torch.from_numpy(y))
        assert out_x.shape == (k + (2 * k if i else 0), d) and np.array_equal(out_x[:k].numpy(), x)
        for row, target in zip(out_x[k:].numpy(), out_y[k:].tolist(), strict=True):
            assert target in seen_y[-10:]
            assert np.array_equal(row, before[seen_y[-10:].index(target)])
        seen_x += list(x)
        seen_y += y.tolist()
        order = [(window.next + j) % 10 for j in range(10)] if len(window) == 10 else range(len(window))
        assert [int(window.targets[j]) for j in order] == seen_y[-10:]
        held = [window.rows[j] for j in order]
        assert all(
            np.array_equal(a, np.pad(b, (0, d - len(b)))) for a, b in zip(held, seen_x[-10:], strict=True)
        )


def _trained(cls: type, **kw) -> tuple[object, list]:
    data = list((datasets.Phishing() if cls is DASClassifier else datasets.TrumpApproval()).take(400))
    model = cls(seed=3, grow_every=100, batch_size=8, **kw)
    for x, y in data[:300]:
        model.learn_one(x, y)
    return model, data[300:]


@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        (DASClassifier, {"rehearsal": 1, "rehearsal_window": 64}),
        (DASRegressor, {"linear_path": 0.02}),
        (DASRegressor, {"linear_path": 0.02, "rehearsal": 2}),
    ],
)
def test_checkpoint_round_trip_predicts_and_resumes_identically(tmp_path: Path, cls: type, kw: dict) -> None:
    model, rows = _trained(cls, **kw)
    loaded, _ = load_estimator(save_estimator(model, tmp_path / "m.ckpt"))
    method = "predict_proba_one" if cls is DASClassifier else "predict_one"
    for x, _ in rows[:10]:
        assert getattr(loaded, method)(x) == getattr(model, method)(x)
    copied = pickle.loads(pickle.dumps(model))
    deep = copy.deepcopy(model)
    for x, y in rows:
        for m in (model, loaded, copied, deep):
            m.learn_one(x, y)
    x = rows[-1][0]
    expected = getattr(model, method)(x)
    assert [getattr(m, method)(x) for m in (loaded, copied, deep)] == [expected] * 3


def test_a_state_must_match_its_paths() -> None:
    model, _ = _trained(DASRegressor, linear_path=0.02, rehearsal=1)
    state = model.to_state()
    for key in ("linear", "rehearsal"):
        broken = {**state, key: {"nonsense": 1}}
        with pytest.raises(ValueError):
            DASRegressor.from_state(broken)
    plain_params = {**state["params"], "linear_path": 0.0}
    with pytest.raises(ValueError):
        DASRegressor.from_state({**state, "params": plain_params})
    without = {k: v for k, v in state.items() if k != "rehearsal"}  # as in a snapshot
    loaded = DASRegressor.from_state(without)
    assert loaded._rehearsal is not None and len(loaded._rehearsal) == 0
    no_rehearsal = {**state, "params": {**state["params"], "rehearsal": 0}}
    with pytest.raises(ValueError):
        DASRegressor.from_state(no_rehearsal)


def test_a_snapshot_leaves_the_rehearsal_window_out_and_predicts_the_same() -> None:
    from consumers.snapshots import prediction_state

    for cls, kw in ((DASClassifier, {"rehearsal": 2}), (DASRegressor, {"rehearsal": 1})):
        model, rows = _trained(cls, **kw)
        lean = prediction_state(model.to_state())
        assert "rehearsal" not in lean and ("linear" in lean) == (cls is DASRegressor)
        copy_ = cls.from_state(lean)
        method = "predict_proba_one" if cls is DASClassifier else "predict_one"
        assert all(getattr(copy_, method)(x) == getattr(model, method)(x) for x, _ in rows[:10])


def _river_cases():
    for model in (
        DASClassifier(hidden_sizes=(16, 16), grow_every=100, batch_size=8, rehearsal=1, rehearsal_window=16),
        DASRegressor(hidden_sizes=(16, 16), grow_every=100, batch_size=8, linear_path=0.02, rehearsal=1),
    ):
        for check in checks.yield_checks(model):
            if check.__name__ in model._unit_test_skips():
                continue
            yield pytest.param(model, check, id=f"{type(model).__name__}-{check.__name__}")


@pytest.mark.parametrize(("model", "check"), list(_river_cases()))
def test_river_checks_pass_with_the_paths_on(model, check) -> None:
    check(model.clone())


def test_a_state_from_before_the_linear_path_loads_without_it() -> None:
    model = DASRegressor(seed=0, linear_path=0.0, rehearsal=0)
    for x, y in datasets.TrumpApproval().take(50):
        model.learn_one(x, y)
    state = model.to_state()
    del state["params"]["linear_path"], state["params"]["rehearsal"], state["params"]["rehearsal_window"]
    loaded = DASRegressor.from_state(state)
    assert loaded.linear_path == 0.0 and loaded._linear is None
    assert loaded.rehearsal == 0 and loaded._rehearsal is None
    assert loaded.predict_one(x) == model.predict_one(x)


def test_a_classifier_state_from_before_rehearsal_loads_without_it() -> None:
    model = DASClassifier(seed=0, rehearsal=0)
    for x, y in datasets.Phishing().take(50):
        model.learn_one(x, y)
    state = model.to_state()
    del state["params"]["rehearsal"], state["params"]["rehearsal_window"]
    loaded = DASClassifier.from_state(state)
    assert loaded.rehearsal == 0 and loaded._rehearsal is None
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)
