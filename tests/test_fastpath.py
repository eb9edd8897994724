"""NumpyForward (per-sample inference in NumPy) equals the torch forward pass."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from streamdas import DASNet, NetConfig
from streamdas.activations import ACTIVATIONS
from streamdas.fastpath import NumpyForward
from streamdas.model import edit_parameter


def _check(net: DASNet, fwd: NumpyForward, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):
        x = torch.randn(net.n_inputs, generator=g) * 2
        with torch.no_grad():
            ref = net(x[None])[0].numpy()
        np.testing.assert_allclose(fwd(x.numpy()), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", sorted(n for n, a in ACTIVATIONS.items() if a.numpy))
def test_equals_torch_for_every_activation(activation):
    net = DASNet(NetConfig(7, (12, 9), 3, activation=activation), generator=torch.Generator().manual_seed(1))
    fwd = NumpyForward(net)
    assert fwd.supported
    _check(net, fwd)


@pytest.mark.parametrize("activation", ["selu", "relu"])  # the two inlined forms
def test_follows_optimizer_steps_and_resizes(activation):
    net = DASNet(NetConfig(5, (8, 6), 2, activation=activation), generator=torch.Generator().manual_seed(2))
    fwd = NumpyForward(net)
    _check(net, fwd)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.7).add_(0.01)  # in place, as an optimizer step: the views see it
    _check(net, fwd, seed=1)
    net.add_units(0, 4)
    net.remove_units(1, torch.tensor([0, 2, 5]))
    net.add_inputs(2)
    _check(net, fwd, seed=2)
    twin = copy.deepcopy(fwd)  # a copy reads its own net, not the original's storage
    with torch.no_grad():
        twin.net.output.bias.add_(1.0)
    _check(twin.net, twin, seed=3)
    _check(net, fwd, seed=3)


def test_a_direct_edit_parameter_call_is_seen():
    """Resizing through edit_parameter by hand (not a DASNet method) still refreshes the views."""
    net = DASNet(NetConfig(3, (4,), 2), generator=torch.Generator().manual_seed(0))
    fwd = NumpyForward(net)
    _check(net, fwd)
    edit_parameter(net.output.bias, 0, keep=torch.tensor([0, 1]))  # same shape, new storage
    with torch.no_grad():
        net.output.bias.add_(3.0)
    _check(net, fwd, seed=1)


def test_output_is_a_fresh_array():
    net = DASNet(NetConfig(3, (4,), 2))
    fwd = NumpyForward(net)
    x = np.ones(3, np.float32)
    a = fwd(x)
    expected = a.copy()
    a += 100.0  # the caller owns its result: the next call is unaffected
    np.testing.assert_array_equal(fwd(x), expected)
