"""Feature index and running standardization."""

from __future__ import annotations

import numpy as np
import pytest

from streamdas.features import FeatureIndex, RunningStandardizer


def test_running_statistics_equal_the_batch_statistics_with_and_without_missing_values():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((400, 4)) * [1, 10, 1e3, 0.01] + [5, -2, 1e4, 0]).astype(np.float32)
    complete, gappy = RunningStandardizer(), RunningStandardizer()
    for i in range(0, 400, 16):
        batch = data[i : i + 16]
        complete.update(batch)  # no NaN: the one-pass fast path
        nan_row = np.full((1, 4), np.nan, dtype=np.float32)
        gappy.update(np.vstack([batch, nan_row]))  # NaN present: the general path
    for s in (complete, gappy):
        np.testing.assert_array_equal(s.count, [400] * 4)
        np.testing.assert_allclose(s.mean, data.astype(np.float64).mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(s.m2 / s.count, data.astype(np.float64).var(0), rtol=1e-7)
    z = complete.transform(data[:3], standardize=True, missing=False)
    np.testing.assert_allclose(z, (data[:3] - data.mean(0)) / data.std(0), rtol=1e-3, atol=1e-4)


def test_missing_values_are_ignored_and_imputed_with_the_mean():
    s = RunningStandardizer()
    s.update(np.array([[1.0, np.nan], [3.0, 4.0], [5.0, np.nan]], dtype=np.float32))
    assert s.count.tolist() == [3.0, 1.0]
    assert s.mean.tolist() == [3.0, 4.0]
    out = s.transform(np.array([[np.nan, 4.0]], dtype=np.float32), standardize=True)
    assert out.tolist() == [[0.0, 0.0]]


def test_memoised_values_are_read_only_and_follow_the_dict():
    index = FeatureIndex(["a", "b"])
    x = {"a": 1, "b": 2.5}
    keys, first = index.values(x)
    assert keys == ("a", "b") and first.tolist() == [1.0, 2.5]
    assert index.values(dict(x))[1] is first  # equal content: converted once
    with pytest.raises(ValueError):
        first[0] = 3.0
    x["a"] = 2
    assert index.values(x)[1].tolist() == [2.0, 2.5]


def test_dense_reports_missing_features():
    index = FeatureIndex(["a", "b", "c"])
    vec, complete = index.dense({"a": 1.0, "b": 2.0, "c": 3.0})
    assert complete and vec.tolist() == [1.0, 2.0, 3.0]
    vec, complete = index.dense({"c": 3.0, "a": 1.0})
    assert not complete and np.isnan(vec[1]) and vec[[0, 2]].tolist() == [1.0, 3.0]
    vec, complete = index.dense({"c": 3.0, "b": 2.0, "a": 1.0, "z": 9.0})  # z unknown: ignored
    assert complete and vec.tolist() == [1.0, 2.0, 3.0]


def test_out_of_range_values_name_the_feature_even_with_warnings_as_errors():
    import warnings

    index = FeatureIndex(["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="'a' is out of float32 range"):
            index.values({"a": 1e39})


# ---------------------------------------------------------------- robust warm-up (clip)
def _normal(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1)).astype(np.float32)


def _feed(s: RunningStandardizer, data: np.ndarray, batch: int) -> RunningStandardizer:
    for i in range(0, len(data), batch):
        s.update(data[i : i + batch])
    return s


def _sd(s: RunningStandardizer) -> np.ndarray:
    return np.sqrt(s.m2 / s.count)


@pytest.mark.parametrize("value", [1e30, -3.4e38])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("at", [0, 4, 11, 29])
def test_one_far_out_value_among_the_first_cannot_rule_the_statistics(at: int, batch: int, value: float):
    """Clipping used to start after the warm-up: one 1e30 among a feature's first 30 values set
    its mean near 3e28 for good. Now it enters at the edge of the others' window."""
    data = _normal(2000)
    poisoned = data.copy()
    poisoned[at] = value
    clean = _feed(RunningStandardizer(clip=10.0), data[:30], batch)
    s = _feed(RunningStandardizer(clip=10.0), poisoned[:30], batch)
    assert abs(s.mean[0] - clean.mean[0]) < 0.5 and _sd(s)[0] < 2.5 * _sd(clean)[0]
    _feed(clean, data[30:], batch)
    _feed(s, poisoned[30:], batch)
    assert abs(s.mean[0] - clean.mean[0]) < 0.02 and abs(_sd(s)[0] / _sd(clean)[0] - 1) < 0.05


def test_a_far_out_value_at_each_end_and_a_late_feature_with_gaps():
    """One far-out value at each end of the first values is clipped; a feature that appears
    after the others are past their warm-up has its own, missing values skipped."""
    rng = np.random.default_rng(1)
    first = rng.normal(size=(100, 1)).astype(np.float32)
    b = (5 + 2 * rng.normal(size=(1000, 1))).astype(np.float32)
    b[rng.uniform(size=1000) < 0.3] = np.nan
    rows = np.hstack([rng.normal(size=(1000, 1)).astype(np.float32), b])
    poisoned = rows.copy()
    poisoned[[2, 9], 1] = [3e38, -1e30]
    clean, s = RunningStandardizer(clip=10.0), RunningStandardizer(clip=10.0)
    for stats, data in ((clean, rows), (s, poisoned)):
        stats.update(first)
        assert stats._ready
        _feed(stats, data, 7)
    assert abs(s.mean[1] - clean.mean[1]) < 0.1 and _sd(s)[1] < 1.25 * _sd(clean)[1]


@pytest.mark.parametrize("gaps", [False, True])
def test_while_nothing_is_clipped_the_arithmetic_is_unchanged(gaps: bool):
    """Clean data: the statistics with clip equal those without, to the last bit."""
    data = (np.random.default_rng(2).normal(size=(200, 3)) * [1, 1e3, 1e-2] + [0, 1e4, 5]).astype(np.float32)
    if gaps:
        data[np.random.default_rng(3).uniform(size=data.shape) < 0.2] = np.nan
    for batch in (1, 5, 16):
        a = _feed(RunningStandardizer(clip=10.0), data, batch)
        b = _feed(RunningStandardizer(), data, batch)
        for name in ("count", "mean", "m2"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("seen", [[[3.4e38]] * 20, [[3.4e38], [-3.4e38]] * 10, [[1.0], [2.0]] * 10])
def test_any_float32_input_standardizes_to_a_finite_bounded_value(seen):
    """Values whose squares or differences overflow float32 (3.4e38) gave inf and NaN inputs."""
    s = RunningStandardizer(clip=10.0)
    s.update(np.array(seen, dtype=np.float32))
    probe = np.array([[3.4e38], [-3.4e38], [0.0], [1e-45], [np.nan]], dtype=np.float32)
    with np.errstate(over="ignore"):
        z = s.transform(probe, standardize=True)
    assert np.isfinite(z).all() and (np.abs(z) <= 10).all()
    assert np.isfinite(s.mean).all() and np.isfinite(s.m2).all()


def test_the_warm_up_is_kept_in_checkpoint_states():
    data = _normal(60)
    data[3] = 1e30
    s = _feed(RunningStandardizer(clip=10.0), data[:15], 4)
    state = s.state()
    assert len(state["early"][0]) == 15 and state["early"][0][3] == float(np.float32(1e30))
    restored = RunningStandardizer.from_state(state, clip=10.0)
    _feed(s, data[15:], 4)
    _feed(restored, data[15:], 4)
    for name in ("count", "mean", "m2"):
        np.testing.assert_array_equal(getattr(s, name), getattr(restored, name))
    assert s.state()["early"] == [[]]  # past the warm-up: nothing kept
    old = _feed(RunningStandardizer(clip=10.0), data[:15], 4).state()
    del old["early"]  # written before the warm-up values were kept: loads
    assert RunningStandardizer.from_state(old, clip=10.0).count.tolist() == [15.0]


@pytest.mark.parametrize(
    "early", [[], [[1.0] * 14], [[1.0] * 15, []], [[float("nan")] * 15], [[1e39] * 15], [["1"] * 15], "x"]
)
def test_bad_warm_up_values_in_a_state_are_refused(early):
    state = _feed(RunningStandardizer(clip=10.0), _normal(15), 4).state()
    state["early"] = early
    with pytest.raises(ValueError, match="early"):
        RunningStandardizer.from_state(state, clip=10.0)
