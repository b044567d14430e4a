"""Quantized models: quant's integer export read by einfhe, integer layers spending no level, same predictions."""

import numpy as np
import pytest
import torch
from torch import nn

import einfhe
import quant
from einfhe.compiler.model import IntLinear, Linear, Square, compile_model
from einfhe.params.precision import error_bound


def _int_mlp(rng):
    q1, s1 = rng.integers(-8, 8, (12, 20)), rng.uniform(0.01, 0.05, 12)
    q2, s2 = rng.integers(-8, 8, (5, 12)), rng.uniform(0.01, 0.05, 5)
    b1, b2 = rng.uniform(-0.2, 0.2, 12), rng.uniform(-0.2, 0.2, 5)
    layers = [IntLinear(q1, s1, b1), Square(), IntLinear(q2, s2, b2)]
    W1, W2 = q1 * s1[:, None], q2 * s2[:, None]
    return layers, lambda X: ((X @ W1.T + b1) ** 2) @ W2.T + b2


@pytest.mark.parametrize("batch, slots", [(None, 64), (6, 8), (16, 16)])
def test_integer_model_matches_numpy_on_the_simulator(batch, slots):
    rng = np.random.default_rng(3)
    layers, reference = _int_mlp(rng)
    model = compile_model(layers, 20, batch=batch, slots=slots)
    X = rng.uniform(0, 1, (batch or 1, 20))
    x = X if batch else X[0]
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(x), *model.plains))
    np.testing.assert_allclose(got, reference(X) if batch else reference(X)[0], rtol=1e-10, atol=1e-10)


def test_integer_layers_spend_fewer_levels_than_float_ones_when_batched():
    layers, _ = _int_mlp(np.random.default_rng(0))
    float_layers = [Linear(layer.weight, layer.bias) if isinstance(layer, IntLinear) else layer for layer in layers]
    quantized = compile_model(layers, 20, batch=16, slots=16).plan
    floating = compile_model(float_layers, 20, batch=16, slots=16).plan
    assert (quantized.depth, floating.depth) == (2, 3)
    assert quantized.op_counts()["mul_plain"] < floating.op_counts()["mul_plain"]


@pytest.mark.fhe
def test_integer_model_on_openfhe():
    rng = np.random.default_rng(4)
    layers, reference = _int_mlp(rng)
    model = compile_model(layers, 20, batch=8, slots=16)
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(model.plan.depth, 16))
    X = rng.uniform(0, 1, (8, 20))
    xe = einfhe.encrypt(ctx, model.pack_input(X), model.input_layout)
    got = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    # stored values before the deferred scales: |sum q x| <= 8 * 20, squared; output scale <= 0.05 * 0.05^2
    bound = error_bound(ctx.params, 160.0**2, 12 * 20, model.plan.depth, model.plan.keyswitches) * 0.05**3 * 8
    assert np.abs(got - reference(X)).max() <= bound


@pytest.mark.parametrize("recipe", ["rtn", "awq"])
def test_quant_export_read_by_einfhe_gives_the_quantized_model(tmp_path, recipe):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 16), quant.Square(), nn.Linear(16, 4))
    x = torch.rand(64, 32)
    quant.quantize_(net, quant.W4A16(32), calibration=[x], recipe=recipe)
    quant.export_integer_model(net, tmp_path, example_input=x)
    layers, n_features = einfhe.load_integer_model(tmp_path)
    assert n_features == 32 and [type(layer).__name__ for layer in layers] == ["IntLinear", "Square", "IntLinear"]
    model = compile_model(layers, n_features, batch=64, slots=64)
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(x.numpy()), *model.plains))
    expected = quant.run_integer_model(quant.read_integer_model(tmp_path), x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)  # the reference runs in float32
    assert model.plan.depth == 2  # integer first layer (AWQ's smoothing applied by the client), square, last


def test_unsupported_exports_are_refused(tmp_path):
    net = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    quant.export_integer_model(net, tmp_path)
    with pytest.raises(einfhe.ModelError, match="needs the input range"):
        einfhe.load_integer_model(tmp_path)
    net = nn.Sequential(nn.Linear(32, 16), nn.Softplus(), nn.Linear(16, 4))
    with pytest.raises(quant.FormatError):
        quant.export_integer_model(net, tmp_path / "other")
    with pytest.raises(einfhe.ModelError, match="cannot read"):
        einfhe.load_integer_model(tmp_path / "missing")


def test_conv_matrix_is_the_convolution():
    rng = np.random.default_rng(0)
    weight, x = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((1, 2, 6, 5))
    from einfhe.compiler.integer_model import conv_matrix

    matrix, out_shape = conv_matrix(weight, (2, 6, 5), (2, 1), (1, 1))
    expected = nn.functional.conv2d(torch.tensor(x), torch.tensor(weight), stride=(2, 1), padding=(1, 1)).numpy()
    assert out_shape == expected.shape[1:]
    np.testing.assert_allclose(matrix @ x.reshape(-1), expected.reshape(-1), rtol=1e-12, atol=1e-12)


def test_quantized_cnn_export_runs_batched_with_integer_layers(tmp_path):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=1, padding=1), quant.Square(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(2 * 3 * 3, 4))
    x = torch.rand(16, 1, 6, 6)
    quant.quantize_(net, quant.W4A16(32), calibration=[x], recipe="rtn")
    quant.export_integer_model(net, tmp_path, example_input=x)
    layers, n_features = einfhe.load_integer_model(tmp_path)
    assert n_features == 36
    model = compile_model(layers, n_features, batch=16, slots=16)
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(x.numpy().reshape(16, -1)), *model.plains))
    expected = quant.run_integer_model(quant.read_integer_model(tmp_path), x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # conv and pooling are integer (no level), the square one level, and the last layer one: its rows mix
    # channels whose deferred scales differ. The same model with float weights spends a level per layer.
    float_layers = [Linear(layer.weight, layer.bias) if isinstance(layer, IntLinear) else layer for layer in layers]
    assert (model.plan.depth, compile_model(float_layers, n_features, batch=16, slots=16).plan.depth) == (2, 4)


@pytest.mark.fhe
def test_digits_mlp_quantized_and_encrypted_keeps_its_accuracy():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split((X / 16).astype(np.float32), y, test_size=0.3, random_state=0, stratify=y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), quant.Square(), nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.tensor(Xtr)), torch.tensor(ytr)).backward()
        opt.step()
    with torch.no_grad():
        float_accuracy = (net(torch.tensor(Xte)).argmax(1).numpy() == yte).mean()
    quant.quantize_(net, quant.W4A16(64), calibration=[torch.tensor(Xtr)], recipe="awq")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        quant.export_integer_model(net, tmp, example_input=torch.tensor(Xtr))
        layers, n_features = einfhe.load_integer_model(tmp)
        plain = quant.run_integer_model(quant.read_integer_model(tmp), Xte)
    model = compile_model(layers, n_features, batch=len(Xte), slots=1024)
    ctx = einfhe.Context.for_plan(model.plan, params=einfhe.Parameters.insecure_for_tests(model.plan.depth, 1024))
    xe = einfhe.encrypt(ctx, model.pack_input(Xte), model.input_layout)
    out = model.unpack_output(einfhe.decrypt(ctx, einfhe.run(ctx, model.plan, *model.operands(xe))))
    assert (out.argmax(1) == plain.argmax(1)).mean() >= 0.99
    assert (out.argmax(1) == yte).mean() >= float_accuracy - 0.01


@pytest.mark.parametrize("batch, slots", [(None, 64), (8, 8)])
def test_relu_becomes_a_one_level_quadratic(tmp_path, batch, slots):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.rand(64, 32)
    quant.quantize_(net, quant.W4A16(32), calibration=[x], recipe="rtn")
    quant.export_integer_model(net, tmp_path, example_input=x)
    layers, n_features = einfhe.load_integer_model(tmp_path)
    fit = layers[1]
    assert isinstance(fit, einfhe.Quadratic)
    model = compile_model(layers, n_features, batch=batch, slots=slots)
    X = x.numpy()[: batch or 1]
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X if batch else X[0]), *model.plains))
    im = quant.read_integer_model(tmp_path)
    hidden = quant.run_integer_model(type(im)(im.layers[:1], im.arrays, im.input_shape), X)
    expected = quant.run_integer_model(type(im)(im.layers[2:], im.arrays, None), fit.a * hidden**2 + fit.b * hidden + fit.c)
    np.testing.assert_allclose(got, expected if batch else expected[0], rtol=1e-4, atol=1e-4)
    assert model.plan.depth == (2 if batch else 3)


@pytest.mark.parametrize("batch, slots", [(None, 64), (8, 8)])
def test_gelu_as_a_chebyshev_series(tmp_path, batch, slots):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(32, 16), nn.GELU(), nn.Linear(16, 4))
    x = torch.rand(64, 32)
    quant.quantize_(net, quant.W4A16(32), calibration=[x], recipe="rtn")
    quant.export_integer_model(net, tmp_path, example_input=x)
    layers, n_features = einfhe.load_integer_model(tmp_path, activation_degree=13)
    assert isinstance(layers[1], einfhe.ChebyshevActivation)
    model = compile_model(layers, n_features, batch=batch, slots=slots)
    X = x.numpy()[: batch or 1]
    got = model.unpack_output(einfhe.simulate(model.plan, model.pack_input(X if batch else X[0]), *model.plains))
    expected = quant.run_integer_model(quant.read_integer_model(tmp_path), X)  # exact GELU
    # a degree-13 interpolant of GELU on the recorded range is within ~1e-6 of it; the last layer sums 16 terms
    np.testing.assert_allclose(got, expected if batch else expected[0], rtol=1e-3, atol=1e-4)


@pytest.mark.fhe
def test_chebyshev_levels_match_openfhe():
    from einfhe.plan import chebyshev_levels

    params = einfhe.Parameters.insecure_for_tests(8, 8)
    backend = einfhe.backends.get_backend_class("openfhe").generate(params, [])
    x = np.linspace(-2, 2, 8)
    for degree in (2, 3, 5, 6, 13, 14, 27):
        coeffs = np.random.default_rng(degree).uniform(-1, 1, degree + 1)
        ct = backend.chebyshev(backend.encrypt(x), tuple(coeffs), -2.0, 2.0)
        assert ct.GetLevel() == chebyshev_levels(degree)
        unit = backend.chebyshev(backend.encrypt(x / 2), tuple(coeffs), -1.0, 1.0)  # no linear map: one level less
        assert unit.GetLevel() == chebyshev_levels(degree, -1.0, 1.0) == chebyshev_levels(degree) - 1
        np.testing.assert_allclose(backend.decrypt(unit), backend.decrypt(ct), atol=1e-4)
        series = coeffs.copy()
        series[0] /= 2
        expected = np.polynomial.chebyshev.chebval(x / 2, series)
        assert np.abs(backend.decrypt(ct) - expected).max() <= 1e-4 * np.abs(coeffs).sum()
