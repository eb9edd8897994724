"""Resizable layers: pruning and growth leave the network's function (almost) unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from streamdas import DASNet, NetConfig, SizingConfig
from streamdas.model import make_activation
from streamdas.sizing import grow, prune

# Worst case: EVERY incoming parameter of the pruned units sits at 0.9*tau (real pruned units
# are mostly far below tau), two units pruned in every layer at once. A pruned unit's
# pre-activation is below tau * (|x|_1 + 1), its output below SELU's slope (1.76) times that.
# Stated tolerance on the network outputs (O(1) in scale) for this worst case:
PRUNE_TOL = 5e-2
# Grown weights are initialiser draws times tau, on both sides of the new unit: O(tau^2).
GROW_TOL = 1e-4


def _mlp(seed: int = 0) -> DASNet:
    return DASNet(
        NetConfig(n_inputs=6, hidden_sizes=(20, 15, 10), n_outputs=3),
        generator=torch.Generator().manual_seed(seed),
    )


def _cnn(seed: int = 0) -> DASNet:
    return DASNet(
        NetConfig.paper_cnn(2, (8, 8), 4, hidden_sizes=(6, 5, 4, 7, 9)),
        generator=torch.Generator().manual_seed(seed),
    ).eval()


@torch.no_grad()
def _shrink_units(net: DASNet, layer: int, units: list[int], value: float) -> None:
    """Set the incoming parameters of some units to +/- value (just under tau, or 0)."""
    w, b = net.hidden[layer].weight, net.hidden[layer].bias
    w[units] = value * torch.sign(torch.randn_like(w[units]))
    b[units] = value


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_pruning_zero_units_is_exact(make):
    net = make()
    x = torch.randn(16, *((6,) if net.n_conv == 0 else (2, 8, 8)))
    for layer in range(len(net.hidden)):
        _shrink_units(net, layer, [0, 2], 0.0)
    before = net(x)
    removed = prune(net, SizingConfig(tau=1e-3))
    assert removed == [2] * len(net.hidden)
    assert torch.allclose(net(x), before, atol=1e-6)


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_pruning_units_below_tau_changes_outputs_within_tolerance(make):
    net = make()
    x = torch.randn(32, *((6,) if net.n_conv == 0 else (2, 8, 8)))
    tau = 1e-3
    for layer in range(len(net.hidden)):
        _shrink_units(net, layer, [1, 3], 0.9 * tau)
    before = net(x)
    sizes = net.hidden_sizes
    prune(net, SizingConfig(tau=tau))
    assert net.hidden_sizes == [s - 2 for s in sizes]
    diff = (net(x) - before).abs().max().item()
    assert 0 < diff < PRUNE_TOL


def test_conv_to_dense_flatten_removes_the_right_columns():
    """Removing filter k of the last conv must drop exactly its H*W dense input columns."""
    net = _cnn()
    last_conv = net.n_conv - 1
    dense = net.hidden[net.n_conv]
    hw = net.flat_hw
    assert dense.weight.shape[1] == net.hidden_sizes[last_conv] * hw
    original = dense.weight.detach().clone()
    net.remove_units(last_conv, torch.tensor([0, 1, 3, 4, 5, 6]))  # drop filter 2
    expected = torch.cat([original[:, : 2 * hw], original[:, 3 * hw :]], dim=1)
    assert torch.equal(dense.weight.detach(), expected)


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_growth_does_not_perturb_outputs(make):
    net = make()
    x = torch.randn(32, *((6,) if net.n_conv == 0 else (2, 8, 8)))
    before = net(x)
    sizes = net.hidden_sizes
    added = grow(net, SizingConfig(tau=1e-3, min_growth=5), torch.Generator().manual_seed(1))
    assert net.hidden_sizes == [s + a for s, a in zip(sizes, added, strict=True)]
    assert all(a >= 5 for a in added)
    diff = (net(x) - before).abs().max().item()
    assert diff < GROW_TOL
    # ... and the new units are not dead: their weights are non-zero, of order tau.
    new_rows = net.hidden[0].weight[sizes[0] :]
    assert 0 < new_rows.abs().max().item() < 1e-2


@pytest.mark.parametrize("make", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_silent_growth_keeps_outputs_and_adds_informative_units(make):
    """grow_init="silent": zero outgoing weights (outputs unchanged to 1e-6), incoming weights at
    the initialiser's full scale (the new units' activations are not tiny), and the next step's
    gradient reaches the new units' outgoing weights at once."""
    net = make()
    x = torch.randn(32, *((6,) if net.n_conv == 0 else (2, 8, 8)))
    before = net(x).detach()
    sizes = net.hidden_sizes
    grow(net, SizingConfig(tau=1e-3, min_growth=5, grow_init="silent"), torch.Generator().manual_seed(1))
    out = net(x)
    assert (out - before).abs().max().item() < 1e-6
    new_rows = net.hidden[0].weight[sizes[0] :]
    assert new_rows.abs().max().item() > 0.1  # full scale, not tau-scaled
    last = len(sizes) - 1
    assert torch.count_nonzero(net.output.weight[:, -(net.hidden_sizes[last] - sizes[last]) :]) == 0
    out.sum().backward()
    assert net.output.weight.grad[:, sizes[last] :].abs().max().item() > 0


def test_grow_init_is_validated():
    with pytest.raises(ValueError, match="grow_init"):
        SizingConfig(grow_init="zeros")


def test_growth_respects_max_units_and_prune_respects_min_units():
    net = _mlp()
    grow(net, SizingConfig(max_units=22, min_growth=20))
    assert net.hidden_sizes == [22, 22, 22]
    with torch.no_grad():
        for layer in net.hidden:
            layer.weight.zero_()
            layer.bias.zero_()
    prune(net, SizingConfig(min_units=3))
    assert net.hidden_sizes == [3, 3, 3]


def test_the_min_units_rescue_keeps_the_strongest_prunable_units():
    net = DASNet(NetConfig(3, (6,), 2))
    with torch.no_grad():
        w = net.hidden[0].weight
        w.zero_()
        net.hidden[0].bias.zero_()
        w[:, 0] = torch.tensor([1e-6, 5e-4, 2e-6, 9e-4, 3e-6, 7e-4])  # all below tau = 1e-3
    prune(net, SizingConfig(min_units=3, prune_horizon=0))
    assert net.hidden_sizes == [3]
    assert net.hidden[0].weight[:, 0].tolist() == pytest.approx([5e-4, 9e-4, 7e-4])  # order kept


@pytest.mark.parametrize("keep", [[4, 0, 2], np.array([2, 4, 0]), torch.tensor([0, 4, 2])])
def test_remove_units_takes_indices_in_any_form_and_order(keep):
    net = DASNet(NetConfig(3, (5, 4), 2), generator=torch.Generator().manual_seed(0))
    w0, w1 = net.hidden[0].weight.detach().clone(), net.hidden[1].weight.detach().clone()
    net.remove_units(0, keep)
    assert torch.equal(net.hidden[0].weight, w0[[0, 2, 4]])
    assert torch.equal(net.hidden[1].weight, w1[:, [0, 2, 4]])
    assert net.hidden[0].out_features == 3 and net.hidden[1].in_features == 3


def test_inputs_and_outputs_can_be_added_without_changing_old_outputs():
    net = _mlp()
    x = torch.randn(8, 6)
    before = net(x)
    net.add_inputs(2)
    after = net(torch.cat([x, torch.randn(8, 2)], dim=1))
    assert torch.allclose(after, before, atol=1e-6)  # new inputs start with zero weights
    net.add_outputs(2, generator=torch.Generator().manual_seed(0))
    out = net(torch.cat([x, torch.zeros(8, 2)], dim=1))
    assert out.shape == (8, 5)
    assert torch.allclose(out[:, :3], before, atol=1e-6)


def test_activation_with_nonzero_at_origin_is_rejected():
    with pytest.raises(ValueError, match="f\\(0\\)"):
        make_activation("sigmoid")
    with pytest.raises(ValueError, match="f\\(0\\)"):
        DASNet(NetConfig(n_inputs=2, hidden_sizes=(3,), n_outputs=1, activation="softplus"))


def test_paper_cnn_layout():
    net = _cnn()
    convs = net.hidden[: net.n_conv]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2]
    rates = [getattr(d, "p", 0.0) for d in net.dropouts]
    assert rates == [0.0, 0.2, 0.0, 0.5, 0.0]
    assert net(torch.randn(3, 2, 8, 8)).shape == (3, 4)
    assert net.flat_hw == 2 * 2  # 8 -> 4 -> 2 with two stride-2 convs


def test_config_round_trip_carries_current_sizes():
    net = _mlp()
    grow(net, SizingConfig(min_growth=3))
    rebuilt = DASNet(NetConfig.from_dict(net.config.to_dict()))
    rebuilt.load_state_dict(copy.deepcopy(net.state_dict()))
    x = torch.randn(4, 6)
    assert torch.equal(rebuilt(x), net(x))


def test_activation_registry_gives_matching_torch_and_numpy_forms():
    """Each registry entry's NumPy forward and derivative equal its torch module and autograd."""
    from streamdas.activations import ACTIVATIONS

    a = torch.linspace(-3, 3, 61)  # includes 0 exactly (kinks follow torch's convention)
    for name, act in ACTIVATIONS.items():
        module = act.torch()
        if not act.numpy:
            continue
        x = a.clone().requires_grad_(True)
        h = module(x)
        h.sum().backward()
        a_np = a.numpy().copy()
        h_np = act.forward(a_np)
        np.testing.assert_array_equal(a_np, a.numpy(), err_msg=f"{name}: forward changed its input")
        np.testing.assert_allclose(h_np, h.detach().numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(
            act.derivative(a_np, h_np), x.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_structure_version_is_per_network():
    """Resizing one network leaves another's version (and so its view caches) alone; direct
    edit_parameter calls and copies count for their own network only."""
    from streamdas.model import edit_parameter

    a = DASNet(NetConfig(3, (4,), 2), generator=torch.Generator().manual_seed(0))
    b = DASNet(NetConfig(3, (4,), 2), generator=torch.Generator().manual_seed(1))
    va, vb = a.structure_version, b.structure_version
    a.add_units(0, 2)
    assert a.structure_version > va and b.structure_version == vb
    va = a.structure_version
    edit_parameter(b.output.bias, 0, append=torch.zeros(1))
    assert b.structure_version > vb and a.structure_version == va
    c = copy.deepcopy(a)
    vc = c.structure_version
    edit_parameter(c.hidden[0].bias, 0, keep=torch.tensor([0, 1, 2, 3, 4, 5]))
    assert c.structure_version > vc and a.structure_version == va
    edit_parameter(a.hidden[0].bias, 0, keep=torch.tensor([0, 1, 2, 3, 4, 5]))
    assert a.structure_version > va
