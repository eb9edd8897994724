"""The NumPy fast path computes what autograd and torch.optim compute.

Tolerances: float32 arithmetic in a different order than torch's kernels; gradients and one
Adam step agree to ~1e-6 absolute on unit-scale values. The NumPy engine's whole steps are
checked with the other engines' in tests/test_step_engines.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streamdas import DASNet, NetConfig
from streamdas.activations import ACTIVATIONS
from streamdas.adam import NumpyAdam
from streamdas.backprop import NumpyBackprop
from streamdas.regularizers import make_regularizer


def _batch(n: int, d: int, n_out: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * 2
    return x, torch.randint(0, n_out, (n,), generator=g)


@pytest.mark.parametrize("activation", sorted(n for n, a in ACTIVATIONS.items() if a.numpy))
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("shape", [(5, (7,), 3), (10, (34, 33), 2), (3, (4, 6, 5), 1), (2, (9,), 4)])
def test_gradients_equal_autograd(activation, loss, shape):
    n_in, hidden, n_out = shape
    net = DASNet(
        NetConfig(n_in, hidden, n_out, activation=activation), generator=torch.Generator().manual_seed(1)
    )
    x, y = _batch(16, n_in, n_out)
    if loss == "mse":
        y = torch.randn(16, n_out, generator=torch.Generator().manual_seed(2))
    bp = NumpyBackprop(net, loss)
    assert bp.supported
    value, grads = bp(x.numpy(), y.numpy())
    out = net(x)
    ref = (
        torch.nn.functional.cross_entropy(out, y)
        if loss == "cross_entropy"
        else torch.nn.functional.mse_loss(out, y)
    )
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    params = bp.parameters()
    assert [tuple(g.shape) for g in grads] == [tuple(p.shape) for p in params]
    for g, p in zip(grads, params, strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-4, atol=2e-6)
    # the torch views hold the same numbers, in parameter order
    for t, g in zip(bp.grad_tensors, grads, strict=True):
        assert np.shares_memory(t.numpy(), g)


def test_selu_derivative_at_zero_follows_torch():
    """A pre-activation of exactly 0 takes torch's branch (scale * alpha), not the positive one."""
    net = DASNet(NetConfig(1, (1,), 2), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.hidden[0].weight.fill_(1.0)
        net.hidden[0].bias.zero_()
    x, y = torch.zeros(1, 1), torch.tensor([1])
    bp = NumpyBackprop(net, "cross_entropy")
    _, grads = bp(x.numpy(), y.numpy())
    torch.nn.functional.cross_entropy(net(x), y).backward()
    np.testing.assert_allclose(grads[1], net.hidden[0].bias.grad.numpy(), rtol=1e-6)
    assert abs(float(grads[1][0])) > 0


def test_views_follow_in_place_updates_and_resizes():
    net = DASNet(NetConfig(4, (6,), 2), generator=torch.Generator().manual_seed(0))
    bp = NumpyBackprop(net, "cross_entropy")
    x, y = _batch(8, 4, 2)
    bp(x.numpy(), y.numpy())
    with torch.no_grad():
        net.hidden[0].weight.mul_(0.5)  # an optimizer step: in place
    net.add_units(0, 3)  # a resize: new storage, views rebuilt
    value, grads = bp(x.numpy(), y.numpy())
    ref = torch.nn.functional.cross_entropy(net(x), y)
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-5)
    assert grads[0].shape == (9, 4)
    np.testing.assert_allclose(grads[0], net.hidden[0].weight.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_batches_autograd_reads_differently_are_declined():
    net = DASNet(NetConfig(3, (4,), 2))
    ce, mse = NumpyBackprop(net, "cross_entropy"), NumpyBackprop(net, "mse")
    assert ce.accepts(torch.Size([5, 3]), torch.Size([5]), torch.int64)
    assert not ce.accepts(torch.Size([5, 3]), torch.Size([5, 2]), torch.float32)  # probabilities
    assert not ce.accepts(torch.Size([0, 3]), torch.Size([0]), torch.int64)
    assert mse.accepts(torch.Size([5, 3]), torch.Size([5, 2]), torch.float32)
    assert not mse.accepts(torch.Size([5, 3]), torch.Size([5, 1]), torch.float32)  # broadcasting
    assert not mse.accepts(torch.Size([5, 3]), torch.Size([5, 2]), torch.float64)


def test_unsupported_networks_are_declined():
    cnn = DASNet(NetConfig.paper_cnn(1, (8, 8), 3, hidden_sizes=(2, 2, 2, 2, 4)))
    assert not NumpyBackprop(cnn, "cross_entropy").supported
    dropout = DASNet(NetConfig(3, (4,), 2, dropout=(0.5,)))
    assert not NumpyBackprop(dropout, "cross_entropy").supported
    gelu = DASNet(NetConfig(3, (4,), 2, activation="gelu"))
    assert not NumpyBackprop(gelu, "cross_entropy").supported
    double = DASNet(NetConfig(3, (4,), 2)).double()
    assert not NumpyBackprop(double, "cross_entropy").supported
    with pytest.raises(RuntimeError, match="autograd"):
        NumpyBackprop(gelu, "cross_entropy")(np.zeros((1, 3), np.float32), np.zeros(1, np.int64))


@pytest.mark.parametrize("position", [0, 1, 7, 8, 15, 16, 17, -1])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_grads_finite_sees_every_position(position, bad):
    net = DASNet(NetConfig(3, (5,), 2))
    bp = NumpyBackprop(net, "cross_entropy")
    bp(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    assert bp.grads_finite()
    bp.flat_grad[:] = np.float32(3e38)  # huge but finite: no overflow in the check
    assert bp.grads_finite()
    bp.flat_grad[position] = bad
    assert not bp.grads_finite()


@pytest.mark.parametrize("name", ["weighted_l1", "l1", "l21", "none"])
def test_regularizer_array_gradient_equals_torch(name):
    net = DASNet(NetConfig(5, (6, 4), 2), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        net.hidden[1].weight[2] = 0.0  # sign(0) = 0 and a zero norm
        net.hidden[1].bias[2] = 0.0
    reg = make_regularizer(name, alpha=1e-2)
    layers = list(net.hidden)
    for layer in layers:
        layer.weight.grad = torch.randn_like(layer.weight)
        layer.bias.grad = torch.randn_like(layer.bias)
    arrays = [(layer.weight.grad.numpy().copy(), layer.bias.grad.numpy().copy()) for layer in layers]
    reg.add_grad(layers)
    reg.add_grad_arrays(
        [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in layers], arrays
    )
    for layer, (gw, gb) in zip(layers, arrays, strict=True):
        np.testing.assert_allclose(gw, layer.weight.grad.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(gb, layer.bias.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", [False, True])
def test_numpy_adam_equals_torch_adam(fused):
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 3), (7,), (2, 7), (2,)]
    params_a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    params_b = [torch.nn.Parameter(p.detach().clone()) for p in params_a]
    opt_a = torch.optim.Adam(params_a, lr=3e-3, betas=(0.8, 0.95), eps=1e-7, fused=fused)
    opt_b = torch.optim.Adam(params_b, lr=3e-3, betas=(0.8, 0.95), eps=1e-7, fused=fused)
    numpy_adam = NumpyAdam(opt_b)
    for step in range(50):
        grads = [torch.randn(s, generator=g) * 10 ** (step % 3 - 1) for s in shapes]
        for p, gr in zip(params_a, grads, strict=True):
            p.grad = gr
        opt_a.step()
        if step == 0:  # torch creates the state on its first step
            assert not numpy_adam.step(params_b, [gr.numpy() for gr in grads])
            for p, gr in zip(params_b, grads, strict=True):
                p.grad = gr
            opt_b.step()
        else:
            assert numpy_adam.step(params_b, [gr.numpy() for gr in grads])
    for pa, pb in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(pb.detach(), pa.detach(), rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(opt_b.state[pb][key], opt_a.state[pa][key], rtol=1e-5, atol=1e-7)


def test_numpy_adam_declines_what_it_does_not_compute():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    grads = [np.ones(2, np.float32)]
    for opt in (
        torch.optim.AdamW([p], lr=0.1),
        torch.optim.SGD([p], lr=0.1),
        torch.optim.Adam([p], lr=0.1, amsgrad=True),
        torch.optim.Adam([p], lr=0.1, weight_decay=0.1),
    ):
        opt.step()
        assert not NumpyAdam(opt).step([p], grads)


def _adam_pair(shapes, steps_b=None):
    g = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opts = [torch.optim.Adam(ps, lr=1e-2) for ps in (params, twins)]
    for ps, opt in zip((params, twins), opts, strict=True):
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
    if steps_b is not None:  # unequal step counts (a state loaded from elsewhere, say)
        for p, q, s in zip(params, twins, steps_b, strict=True):
            opts[0].state[p]["step"].fill_(s)
            opts[1].state[q]["step"].fill_(s)
    return params, twins, opts


def test_numpy_adam_flat_buffers_are_the_optimizer_state_and_bitwise_per_parameter():
    """After NumpyAdam's first step the moments live in one flat buffer each (the state tensors
    are views of it); the flat update gives bitwise the per-parameter update's result, with
    gradients gathered or handed over flat."""
    shapes = [(5, 3), (5,), (2, 5), (2,)]
    params, twins, (opt, opt_twin) = _adam_pair(shapes)
    flat_grad = np.random.default_rng(0).standard_normal(sum(math.prod(s) for s in shapes)).astype(np.float32)
    offsets = np.cumsum([0] + [math.prod(s) for s in shapes])
    grads = [flat_grad[a:b].reshape(s) for a, b, s in zip(offsets[:-1], offsets[1:], shapes, strict=True)]
    adam = NumpyAdam(opt)
    for step in range(3):
        gathered = [g.copy() for g in grads] if step == 1 else grads  # copies: not one buffer
        assert adam.step(params, gathered)
        views = [
            (
                p.detach().numpy(),
                opt_twin.state[p]["exp_avg"].numpy(),
                opt_twin.state[p]["exp_avg_sq"].numpy(),
                opt_twin.state[p]["step"].numpy(),
            )
            for p in twins
        ]
        NumpyAdam._update(views, grads, (1e-2, 0.9, 0.999, 1e-8))
    m = opt.state[params[0]]["exp_avg"]
    assert all(
        opt.state[p]["exp_avg"].untyped_storage().data_ptr() == m.untyped_storage().data_ptr() for p in params
    )
    for p, q in zip(params, twins, strict=True):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], opt_twin.state[q][key])
    # torch's own step on the views agrees too (the state stays torch's)
    for p, q in zip(params, twins, strict=True):
        p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    opt.step()
    opt_twin.step()
    assert all(torch.equal(p, q) for p, q in zip(params, twins, strict=True))


def test_numpy_adam_unequal_step_counts_keep_the_per_parameter_update():
    shapes = [(3, 2), (3,)]
    params, twins, (opt, opt_twin) = _adam_pair(shapes, steps_b=[4.0, 9.0])
    grads = [np.full(s, 0.5, np.float32) for s in shapes]
    assert NumpyAdam(opt).step(params, grads)
    for p, g in zip(twins, grads, strict=True):
        p.grad = torch.from_numpy(g.copy())
    opt_twin.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
    assert [float(opt.state[p]["step"]) for p in params] == [5.0, 10.0]
