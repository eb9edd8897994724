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
