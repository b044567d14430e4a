"""The channel-packed one-sample CNN (einfhe.compiler.image_layout, slot_linear, packed_cnn): convolutions of any
stride and padding as rotations of the packed image times channel-mixing diagonals, against torch's conv2d on the
simulator and on a small OpenFHE ring; a residual network with composite ReLUs and bootstraps placed where values
run out of levels, against the same polynomial network in float64 (simulated), and a bootstrapped one decrypted
on OpenFHE within the bootstraps' error carried to its logits."""

import numpy as np
import pytest

import einfhe
from einfhe.compiler import CompositeReLU, Linear
from einfhe.compiler.image_layout import ImageLayout
from einfhe.compiler.packed_cnn import (Block, Conv, GlobalAvgPool, compile_packed_cnn, compile_packed_image,
                                        conv_with_batchnorm)
from einfhe.compiler.slot_linear import slot_linear
from einfhe.params.precision import error_bound

torch = pytest.importorskip("torch")  # imported after einfhe (openfhe first)
F = torch.nn.functional


def _conv(x, conv):
    bias = None if conv.bias is None else torch.tensor(conv.bias)
    return F.conv2d(x, torch.tensor(conv.weight), bias, stride=conv.stride, padding=conv.padding)


def test_image_layout_places_every_pixel_once_and_strides_keep_the_grid():
    layout = ImageLayout(3, 8, 8, 512)
    image = np.random.default_rng(0).standard_normal((3, 8, 8))
    packed = layout.pack(image)
    assert layout.period == 256 and np.array_equal(packed[:256], packed[256:])  # 4 padded channels, two copies
    np.testing.assert_array_equal(layout.unpack(packed), image)
    strided = layout.strided(16, 2)  # 16 channels of 4x4 at gap 2 on the 8x8 grid: 1024 slots, so 2 a group
    assert (strided.gap, strided.mux, strided.rows, strided.period) == (2, 2, 8, 512)
    positions = strided.positions()
    assert np.unique(positions).size == positions.size and positions.max() < strided.period
    with pytest.raises(einfhe.ModelError, match="more than the 512"):
        ImageLayout(16, 8, 8, 512)
    with pytest.raises(einfhe.ModelError, match="client"):
        strided.client_layout()


def test_slot_linear_baby_step_giant_step_applies_the_map():
    rng = np.random.default_rng(1)
    period, entries = 64, 300
    out_slots, in_slots, weights = rng.integers(0, period, entries), rng.integers(0, period, entries), \
        rng.standard_normal(entries)
    transform = slot_linear(out_slots, in_slots, weights, period)
    x = rng.standard_normal(period)
    expected = np.zeros(period)
    np.add.at(expected, out_slots, weights * x[in_slots])
    got = np.zeros(period)  # the lowering's arithmetic: sum_g rot_g(sum_b row * rot_b(x))
    for g, terms in transform.giant:
        part = sum(transform.plain[row] * np.roll(x, -b) for b, row in terms)
        got += np.roll(part, -g)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert transform.rotations() < transform.diagonals  # baby-step giant-step saves rotations


@pytest.mark.parametrize("c_in, c_out, size, kernel, stride, padding",
                         [(3, 4, 8, 3, 1, 1), (4, 8, 8, 3, 2, 1), (4, 8, 8, 1, 2, 0), (2, 2, 6, 3, 1, 0)])
def test_packed_convolution_matches_torch_on_the_simulator(c_in, c_out, size, kernel, stride, padding):
    rng = np.random.default_rng(c_in * 7 + stride)
    conv = Conv(rng.standard_normal((c_out, c_in, kernel, kernel)), rng.standard_normal(c_out), stride, padding)
    x = rng.standard_normal((c_in, size, size))
    if size & (size - 1):  # the client encrypts power-of-two sides: a 6x6 image is not one
        with pytest.raises(einfhe.ModelError, match="power-of-two"):
            compile_packed_image([conv], x.shape, slots=1024, max_depth=4)
        return
    cnn, out_layout = compile_packed_image([conv], x.shape, slots=1024, max_depth=4)
    got = out_layout.unpack(einfhe.simulate(cnn.plan, x, *cnn.plains))
    np.testing.assert_allclose(got, _conv(torch.tensor(x)[None], conv)[0].numpy(), atol=1e-12)
    assert cnn.plan.depth == 1 and cnn.bootstraps == 0


def _resnet(rng, relu):
    conv = lambda o, i, k=3, s=1, p=1: Conv(rng.uniform(-0.4, 0.4, (o, i, k, k)), None, s, p)  # noqa: E731
    bn = conv_with_batchnorm(rng.uniform(-0.4, 0.4, (4, 3, 3, 3)), None, *rng.uniform(0.8, 1.2, (4, 4)),
                             stride=1, padding=1)
    return [bn, relu, Block((conv(4, 4), relu, conv(4, 4))), relu,
            Block((conv(8, 4, s=2), relu, conv(8, 8)), (conv(8, 4, 1, 2, 0),)), relu,
            GlobalAvgPool(), Linear(rng.standard_normal((5, 8)), rng.standard_normal(5))]


def _torch_forward(layers, x):
    t = torch.tensor(x)[None]
    for layer in layers[:-2]:
        if isinstance(layer, Conv):
            t = _conv(t, layer)
        elif isinstance(layer, CompositeReLU):
            t = torch.tensor(layer(t.numpy()))
        else:
            body = _torch_forward(list(layer.body) + [None, None], t[0].numpy())
            skip = _torch_forward(list(layer.shortcut) + [None, None], t[0].numpy())
            t = body + skip
    if layers[-1] is None:
        return t
    head = layers[-1]
    return (t.mean(dim=(2, 3)) @ torch.tensor(head.weight).T + torch.tensor(head.bias))[0].numpy()


def test_a_strided_residual_network_with_bootstraps_matches_its_polynomial_model():
    rng = np.random.default_rng(2)
    relu = CompositeReLU.fit(6.0, (7, 7))
    layers = _resnet(rng, relu)
    x = rng.uniform(-1, 1, (3, 8, 8))
    cnn = compile_packed_cnn(layers, x.shape, slots=512, max_depth=7)
    got = einfhe.simulate(cnn.plan, x, *cnn.plains)
    np.testing.assert_allclose(got, _torch_forward(layers, x), atol=1e-10)
    # each ReLU's two 4-level stages and its product do not fit one 7-level stretch: every ReLU holds a bootstrap
    assert cnn.bootstraps >= 5 and any("bootstrap" in line for line in cnn.level_map)
    levels = cnn.plan.levels()
    assert max(levels.values()) <= 7
    starts = cnn.layer_starts  # one per image layer, then the head's, in step order
    assert len(starts) == len(layers) - 1 and list(starts) == sorted(set(starts))
    assert cnn.plan.steps[starts[-1]].op == "rotate"  # the pool's rotate-and-sum opens the head
    with pytest.raises(einfhe.ModelError, match="needs 5 levels"):
        compile_packed_cnn(_resnet(rng, CompositeReLU.fit(6.0, (27,))), x.shape, slots=512, max_depth=4)
    with pytest.raises(einfhe.ModelError, match="ends with GlobalAvgPool"):
        compile_packed_cnn(layers[:-2], x.shape, slots=512, max_depth=7)


def test_a_block_input_is_bootstrapped_once_and_relu_stages_run_on_the_unit_domain():
    """At 5 levels a stretch a block's spent input is refreshed once for its body and its shortcut, the identity
    shortcut adds that refreshed input, and every ReLU stage runs on [-1, 1] (one level less in OpenFHE): the
    convolution or block before a ReLU divides its output by the first stage's bound (an identity shortcut by a
    constant product), each stage's coefficients by the next one's, and the last stage multiplies the bound back;
    the network still computes its polynomial model."""
    rng = np.random.default_rng(2)
    relu = CompositeReLU.fit(6.0, (7, 7))
    layers = _resnet(rng, relu)
    x = rng.uniform(-1, 1, (3, 8, 8))
    cnn = compile_packed_cnn(layers, x.shape, slots=512, max_depth=5)
    np.testing.assert_allclose(einfhe.simulate(cnn.plan, x, *cnn.plains), _torch_forward(layers, x), atol=1e-10)
    sources = [step.src for step in cnn.plan.steps if step.op == "bootstrap"]
    assert len(sources) == len(set(sources)) == cnn.bootstraps == 10  # 15 with the first stages on [-6, 6]
    assert not any(step.op == "add" and set(step.args) & set(sources) for step in cnn.plan.steps)
    series = [step for step in cnn.plan.steps if step.op == "chebyshev"]
    assert {(step.lo, step.hi) for step in series} == {(-1.0, 1.0)}
    assert [step.levels for step in series[:2]] == [4, 4]


@pytest.mark.fhe
def test_packed_convolutions_on_openfhe_match_torch_within_the_bound():
    """Stride 1 then stride 2 (padding 1) and a composite ReLU on a small insecure ring: the decrypted image
    against torch within error_bound of the parameters (inputs below 1, each output a sum of c_in * 9 products)."""
    rng = np.random.default_rng(3)
    first = Conv(rng.uniform(-0.3, 0.3, (4, 2, 3, 3)), rng.uniform(-0.1, 0.1, 4), 1, 1)
    second = Conv(rng.uniform(-0.3, 0.3, (8, 4, 3, 3)), None, 2, 1)
    relu = CompositeReLU.fit(4.0, (3, 3))
    x = rng.uniform(-1, 1, (2, 8, 8))
    cnn, out_layout = compile_packed_image([first, second, relu], x.shape, slots=512, max_depth=12)
    ctx = einfhe.Context.for_plan(cnn.plan, params=einfhe.Parameters.insecure_for_tests(cnn.plan.depth, 512))
    assert ctx.backend.rotation_key_indices() == set(cnn.plan.rotations)
    xe = einfhe.encrypt(ctx, x, cnn.plan.input_layout(0))
    got = out_layout.unpack(einfhe.decrypt(ctx, einfhe.run(ctx, cnn.plan, *cnn.operands(xe))))
    expected = relu(_conv(_conv(torch.tensor(x)[None], first), second)[0].numpy())
    bound = error_bound(ctx.params, 4.0, 4 * 9 * 2 * 9, cnn.plan.depth, cnn.plan.keyswitches)
    assert np.abs(got - expected).max() <= bound


def _slope_near(relu, values, radius):
    """max |relu'| within `radius` of the given values (central differences on a grid around each)."""
    grid = np.asarray(values).reshape(-1, 1) + np.linspace(-radius, radius, 41)[None, :]
    return float(np.abs((relu(grid + 1e-6) - relu(grid - 1e-6)) / 2e-6).max())


@pytest.mark.fhe
def test_bootstrapped_packed_cnn_on_openfhe_decrypts_to_its_polynomial_model():
    """Two bootstraps for real (the input encrypted at `input_level`, the output one level under the refreshed
    chain), on a small insecure ring: each bootstrap's error (2^-10, einfhe.params.bootstrap, as in
    test_levels) carried to the logits through what follows it (the strided convolution's largest row sum of
    |weights|, the ReLU's largest slope near its actual inputs, the pool, the head's largest row sum)."""
    rng = np.random.default_rng(4)
    relu = CompositeReLU.fit(4.0, (7, 7))
    first = Conv(rng.uniform(-0.3, 0.3, (4, 3, 3, 3)), rng.uniform(-0.1, 0.1, 4), 1, 1)
    second = Conv(rng.uniform(-0.3, 0.3, (8, 4, 3, 3)), None, 2, 1)
    head = Linear(rng.uniform(-1, 1, (5, 8)), rng.uniform(-1, 1, 5))
    layers = [first, relu, second, relu, GlobalAvgPool(), head]
    x = rng.uniform(-1, 1, (3, 8, 8))
    cnn = compile_packed_cnn(layers, x.shape, slots=512, max_depth=10)
    assert cnn.bootstraps == 2  # conv + ReLU fill each 10-level stretch: before the second conv and the head
    params = einfhe.Parameters.insecure_for_tests(10, 512, bootstrap=True)
    ctx = einfhe.Context.for_plan(cnn.plan, params=params)
    xe = einfhe.encrypt(ctx, x, cnn.plan.input_layout(0), level=cnn.input_level(params))
    ye = einfhe.run(ctx, cnn.plan, *cnn.operands(xe))
    assert ye.cts[0].GetLevel() == einfhe.params.BOOTSTRAP_DEPTH + 1  # the head's level after the last refresh
    got = einfhe.decrypt(ctx, ye)
    bootstrap_error, rows = 2.0**-10, np.abs(second.weight).sum(axis=(1, 2, 3)).max()
    inputs = _conv(torch.tensor(relu(_conv(torch.tensor(x)[None], first).numpy())), second).numpy()
    through_first = rows * _slope_near(relu, inputs, 2 * rows * bootstrap_error)
    bound = bootstrap_error * (through_first + 1) * np.abs(head.weight).sum(axis=1).max()
    levels = error_bound(params, float(np.abs(inputs).max()), second.weight[0].size, cnn.plan.depth,
                         cnn.plan.keyswitches)
    assert np.abs(got - _torch_forward(layers, x)).max() <= bound + levels
