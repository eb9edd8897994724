"""Regularizers equal their formulas, computed independently, and never touch the output layer."""

from __future__ import annotations

import math

import pytest
import torch

from streamdas import L1, DASNet, GroupL21, NetConfig, WeightedL1


def _nets() -> list[DASNet]:
    g = torch.Generator().manual_seed(3)
    mlp = DASNet(NetConfig(n_inputs=4, hidden_sizes=(5, 3), n_outputs=2), generator=g)
    cnn = DASNet(NetConfig.paper_cnn(1, (6, 6), 3, hidden_sizes=(3, 2, 2, 3, 4)), generator=g)
    for net in (mlp, cnn):
        with torch.no_grad():
            for layer in net.layers:
                layer.bias.normal_(generator=g)
    return [mlp, cnn]


def _equation_1(net: DASNet, alpha: float, f) -> float:
    """Paper eq. (1) by plain loops: alpha * sum_l sum_j f(j) sum_k |W_ljk| (+ |b_lj|)."""
    total = 0.0
    for layer in net.hidden:  # hidden layers only, never the output layer
        weights = layer.weight.detach().tolist()
        biases = layer.bias.detach().tolist()
        for j0, (row, bias) in enumerate(zip(weights, biases, strict=True)):
            j = j0 + 1  # units are counted from 1

            def flat(v):
                return [u for w in v for u in flat(w)] if isinstance(v, list) else [v]

            total += f(j) * (sum(abs(w) for w in flat(row)) + abs(bias))
    return alpha * total


@pytest.mark.parametrize("net", _nets(), ids=["mlp", "cnn"])
@pytest.mark.parametrize(
    ("name", "f"), [("identity", lambda j: j), ("square", lambda j: j * j), ("sqrt", math.sqrt)]
)
def test_weighted_l1_equals_equation_1(net, name, f):
    reg = WeightedL1(alpha=3e-3, f=name)
    assert reg.penalty(list(net.hidden)).item() == pytest.approx(_equation_1(net, 3e-3, f), rel=1e-5)


@pytest.mark.parametrize("net", _nets(), ids=["mlp", "cnn"])
@pytest.mark.parametrize("reg", [WeightedL1(1e-2), GroupL21(1e-2), L1(1e-2)], ids=repr)
def test_fast_gradient_equals_autograd(net, reg):
    layers = list(net.hidden)
    net.zero_grad(set_to_none=True)
    reg.penalty(layers).backward()
    expected = [p.grad.clone() for layer in layers for p in (layer.weight, layer.bias)]
    net.zero_grad(set_to_none=True)
    reg.add_grad(layers)
    got = [p.grad for layer in layers for p in (layer.weight, layer.bias)]
    for e, g in zip(expected, got, strict=True):
        assert torch.allclose(e, g, atol=1e-7)
    assert net.output.weight.grad is None  # never the output layer


def test_group_l21_and_l1_formulas():
    net = _nets()[0]
    layers = list(net.hidden)
    l21 = sum(
        math.sqrt(sum(w * w for w in row) + b * b)
        for layer in layers
        for row, b in zip(layer.weight.tolist(), layer.bias.tolist(), strict=True)
    )
    l1 = sum(abs(w) for layer in layers for row in layer.weight.tolist() for w in row) + sum(
        abs(b) for layer in layers for b in layer.bias.tolist()
    )
    assert GroupL21(0.5).penalty(layers).item() == pytest.approx(0.5 * l21, rel=1e-5)
    assert L1(0.5).penalty(layers).item() == pytest.approx(0.5 * l1, rel=1e-5)


def test_weight_function_must_be_non_decreasing_through_origin():
    with pytest.raises(ValueError, match="non-decreasing"):
        WeightedL1(1e-3, f=lambda j: -j)
    with pytest.raises(ValueError, match="non-decreasing"):
        WeightedL1(1e-3, f=lambda j: j + 1)
    with pytest.raises(ValueError, match="alpha"):
        WeightedL1(-1.0)
