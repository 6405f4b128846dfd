"""DoReFa (``dorefa``) and binarization (``bnn``): forward values over numpy against the papers'
formulas, the parameters they freeze to, recipe bounds, site checks and QAT over the numpy fake.

Straight-through gradients need autodiff: ``tests/adapters/test_grid_mode_gradients.py``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import slimkit
from slimkit import RecipeError
from slimkit.ops import NUMPY_OPS
from slimkit.quant import fake_quant
from slimkit.quant.plan import FakeQuantSpec, SiteParams

from fake_adapter import FakeAdapter, FakeDense, FakeModel, make_mlp


@dataclasses.dataclass
class Site:
    """A :class:`slimkit.quant.fake_quant.SiteState` over numpy (nothing set: these modes need nothing)."""

    mode: str
    qmin: int
    qmax: int
    role: str = "kernel"
    axis: int | None = None
    symmetric: bool = True
    momentum: float = 0.9
    site: str = "t"
    ready: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((), np.float32))


def run(site, x):
    return np.asarray(fake_quant.forward(NUMPY_OPS, site, np.asarray(x, np.float32), True), np.float32)


RNG = np.random.default_rng(0)
W = (RNG.normal(size=(24, 6)) * 0.4).astype(np.float32)  # native (in, out): channels on axis 1
W[3, 2] = W[7, 0] = 0.0  # pruned weights


def dorefa_reference(w, bits, axis):
    """DoReFa-Net's weight quantizer (tanh, normalise, quantize_k, 2q - 1) times max|w|, per channel."""
    n = 2**bits - 1
    keep = axis is not None
    axes = tuple(i for i in range(w.ndim) if i != axis) if keep else None
    t = np.tanh(w.astype(np.float64))
    wt = t / (2 * np.max(np.abs(t), axis=axes, keepdims=keep)) + 0.5
    wq = 2 * np.rint(n * wt) / n - 1
    return np.where(w != 0, wq * np.max(np.abs(w), axis=axes, keepdims=keep), 0.0)


@pytest.mark.parametrize("bits", [1, 2, 4, 7])
@pytest.mark.parametrize("axis", [1, None], ids=["per-channel", "per-layer"])
def test_dorefa_weights_are_the_papers_grid_scaled_by_max_abs(bits, axis):
    n = 2**bits - 1
    site = Site("dorefa", -n, n, axis=axis)
    got = run(site, W)
    np.testing.assert_allclose(got, dorefa_reference(W, bits, axis), rtol=2e-6, atol=0)
    alpha = np.max(np.abs(W), axis=0 if axis is not None else None)
    levels = got / (alpha / np.float32(n))
    nonzero = W != 0
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)  # on the grid: integers ...
    assert np.all(np.rint(levels[nonzero]) % 2 == 1) and np.all(np.abs(levels) <= n + 1e-4)  # ... odd, in [-n, n]
    assert np.all(got[~nonzero] == 0)  # pruned zeros stay zero (the grid has no zero level)
    assert len(np.unique(np.rint(levels[nonzero]))) <= 2**bits


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_dorefa_activations_clip_to_0_1_then_k_bits(bits):
    n = 2**bits - 1
    x = np.concatenate([[-0.5, 0.0, 1.0, 1.5], RNG.uniform(-0.5, 1.5, 500)]).astype(np.float32)  # no ties
    got = run(Site("dorefa", 0, n, role="activation"), x)
    expected = np.rint(np.clip(x, 0, 1).astype(np.float64) * n) / n
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert got.min() == 0.0 and got.max() == np.float32(n) * np.float32(1 / n)


def test_bnn_weights_are_sign_times_mean_abs_of_the_nonzero_weights():
    got = run(Site("bnn", -1, 1, axis=1), W)
    nonzero = W != 0
    alpha = np.abs(W).sum(axis=0) / nonzero.sum(axis=0)  # XNOR-Net's alpha, pruned zeros left out
    np.testing.assert_allclose(got, np.where(nonzero, np.where(W >= 0, 1.0, -1.0) * alpha, 0.0), rtol=1e-6)
    per_layer = run(Site("bnn", -1, 1, axis=None), W)
    np.testing.assert_allclose(np.abs(per_layer[nonzero]), np.abs(W[nonzero]).mean(), rtol=1e-6)


def test_bnn_activations_are_sign_with_plus_one_at_zero():
    x = np.array([-2.0, -0.3, -0.0, 0.0, 1e-9, 0.7, 3.0], np.float32)
    np.testing.assert_array_equal(run(Site("bnn", -1, 1, role="activation"), x), [-1, -1, 1, 1, 1, 1, 1])


def fixed(params: SiteParams, axis=None) -> Site:
    site = Site("fixed", params.qmin, params.qmax, axis=axis)
    site.scale, site.zero_point = np.asarray(params.scale, np.float32), np.asarray(params.zero_point, np.float32)
    site.ready = np.ones((), np.float32)
    return site


@pytest.mark.parametrize("mode, bits", [("dorefa", 1), ("dorefa", 4), ("dorefa", 7), ("bnn", 1)])
@pytest.mark.parametrize("axis", [1, None], ids=["per-channel", "per-layer"])
def test_a_frozen_kernel_is_its_simulation_and_the_fixed_site_reproduces_it_exactly(mode, bits, axis):
    impl = fake_quant.mode_of(mode)
    qmin, qmax = impl.integer_range(bits, "kernel", True)
    spec = FakeQuantSpec(qmin, qmax, True, axis, mode, bits=bits)
    values, params = impl.frozen_kernel(W, spec)
    # bnn's frozen alpha is summed in float64 (the same in every layout), the simulation's in float32
    np.testing.assert_allclose(values, run(Site(mode, qmin, qmax, axis=axis), W), rtol=1e-6, atol=0)
    assert (params.qmin, params.qmax) == (qmin, qmax) and -128 <= qmin and qmax <= 127  # int8 holds it
    assert np.all(params.zero_point == 0) and params.axis == axis
    np.testing.assert_array_equal(run(fixed(params, axis), values), values)  # what QDQ computes
    frozen = fake_quant.frozen_spec(spec, "kernel")
    assert (frozen.mode, frozen.qmin, frozen.qmax) == ("fixed", qmin, qmax)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_frozen_dorefa_activations_are_uint8_saturating_at_one(bits):
    impl = fake_quant.mode_of("dorefa")
    n = 2**bits - 1
    spec = FakeQuantSpec(0, n, False, None, "dorefa", bits=bits, signed=False)
    params, covered = impl.frozen_activation(spec)
    assert (params.qmin, params.qmax, int(params.zero_point)) == (0, 255, 255 - n) and covered == (0.0, 1.0)
    frozen = fake_quant.frozen_spec(spec, "activation")
    assert (frozen.mode, frozen.qmin, frozen.qmax, frozen.bits) == ("fixed", 0, 255, bits)
    relu_out = np.concatenate([np.linspace(0, 2, 401), [0.5 / n, 1.5 / n, 1e6]]).astype(np.float32)
    np.testing.assert_array_equal(run(fixed(params), relu_out), run(Site("dorefa", 0, n, role="activation"), relu_out))


def test_binarized_activations_stay_bnn_when_frozen():
    spec = FakeQuantSpec(-1, 1, True, None, "bnn", bits=1)
    assert fake_quant.frozen_spec(spec, "activation") == spec
    assert fake_quant.mode_after_params("bnn") == "bnn"


# ------------------------------------------------------------------------------------------ recipe
def qat(**body):
    return {"stages": [{"quantize": {"method": "qat", **body}}]}


def test_recipe_picks_the_modes_by_learn():
    stage = slimkit.Recipe.load(qat(weights={"bits": 1, "learn": "bnn"}, activations={"bits": 4, "learn": "dorefa"},
                                    overrides=[{"layers": {"names": ["fc2"]}, "weights": {"bits": 3,
                                                                                          "learn": "dorefa"}}])).stages[0]
    assert (stage.weights.bits, stage.weights.learn) == (1, "bnn")
    assert (stage.activations.bits, stage.activations.learn) == (4, "dorefa")
    assert (stage.overrides[0].weights.bits, stage.overrides[0].weights.learn) == (3, "dorefa")


@pytest.mark.parametrize("body, field, message", [
    ({"weights": {"learn": "bnn"}}, "weights.bits", "learn bnn simulates exactly 1 bit, got 8"),
    ({"weights": {"bits": 2, "learn": "bnn"}}, "weights.bits", "exactly 1 bit, got 2"),
    ({"activations": {"bits": 4, "learn": "bnn"}}, "activations.bits", "learn bnn simulates exactly 1 bit, got 4"),
    ({"weights": {"bits": 9, "learn": "dorefa"}}, "weights.bits", "9 bits is not supported"),
    ({"activations": {"bits": 0, "learn": "dorefa"}}, "activations.bits", "0 bits is not supported"),
    ({"weights": {"bits": 1}}, "weights.bits", "learn minmax simulates 2 to 8 bits, got 1 (1 bit: learn bnn or dorefa)"),
    ({"activations": {"bits": 1}}, "activations.bits", "learn ema simulates 2 to 8 bits, got 1"),
    ({"weights": {"bits": 1, "learn": "bnn"}, "overrides": [{"layers": {"names": ["fc2"]}, "weights": {"bits": 4}}]},
     "overrides[0].weights.bits", "learn bnn simulates exactly 1 bit, got 4"),
    ({"weights": {"bits": 4, "learn": "dorefa", "symmetric": False}}, "weights.symmetric",
     "learn dorefa defines its grid itself"),
    ({"weights": {"bits": 8, "learn": "dorefa", "reduce_range": True}}, "weights.reduce_range",
     "learn dorefa defines its grid itself"),
    ({"activations": {"bits": 4, "learn": "dorefa", "signed": True}}, "activations.signed",
     "learn dorefa defines its grid itself"),
    ({"activations": {"bits": 1, "learn": "bnn", "symmetric": True}}, "activations.symmetric", "learn bnn"),
    ({"activations": {"bits": 4, "learn": "dorefa", "samples": 8}}, "activations.samples", "calibrates nothing"),
])
def test_recipe_errors_name_the_field(body, field, message):
    with pytest.raises(RecipeError) as info:
        slimkit.Recipe.load(qat(**body))
    assert str(info.value).startswith(f"stages[0].quantize.{field}: ") and message in str(info.value)


def test_post_training_methods_still_take_8_bits_only():
    with pytest.raises(RecipeError, match=r"weights\.bits: learn minmax simulates 2 to 8 bits, got 1"):
        slimkit.Recipe.load({"stages": [{"quantize": {"method": "static", "weights": {"bits": 1}}}]})


# ----------------------------------------------------------------------------- QAT over the fake
uses_fake = pytest.mark.usefixtures("fake_registered")
# Low-bit models do not follow the float model closely; compress says so, and that is not under test here.
quiet_fidelity = pytest.mark.filterwarnings("ignore:.*correlate.*with the float model")
TRAIN = {"epochs": 4, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.1}
INNER = {"exclude": ["fc1", "logits"]}  # DoReFa-Net keeps the first and last layers float


@uses_fake
@quiet_fidelity
def test_dorefa_qat_trains_and_freezes_onto_its_grids(classification_data):
    x, y = classification_data
    model = make_mlp(sizes=(8, 16, 12, 12, 4), other=False)
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {
        "method": "qat", "layers": INNER, "weights": {"bits": 3, "learn": "dorefa"},
        "activations": {"bits": 4, "learn": "dorefa"}}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), eval_data=(x, y), verbose=False)
    adapter = FakeAdapter(result.model)
    plan, state = adapter.quant_plan(), adapter.quant_state()
    assert [s.layer for s in plan.layers] == ["fc2", "fc3"]
    assert {(a.spec.mode, a.spec.qmin, a.spec.qmax, a.spec.bits) for a in plan.acts} == {("fixed", 0, 255, 4)}
    assert {(s.kernel.mode, s.kernel.qmin, s.kernel.qmax) for s in plan.layers} == {("fixed", -7, 7)}
    for a in plan.acts:
        assert int(state[a.node]["zero_point"]) == 255 - 15 and state[a.node]["scale"] == np.float32(1 / 15)
    for s in plan.layers:
        kernel = adapter.get_weights(s.layer)["kernel"]  # the frozen values themselves
        levels = kernel / state[f"{s.layer}/kernel"]["scale"]
        np.testing.assert_allclose(levels, np.rint(levels), atol=1e-4)
        assert set(np.unique(np.rint(levels)).astype(int)) <= {-7, -5, -3, -1, 1, 3, 5, 7}
    rows = {r.site: r for r in result.report.quant}
    assert rows["fc2/kernel"].bits == 3 and rows[plan.acts[0].node].bits == 4
    assert result.report.metrics_after["accuracy"] > 0.5  # it still classifies (4 classes)


@uses_fake
def test_dorefa_activations_refuse_a_site_that_can_be_negative(classification_data):
    x, y = classification_data
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {
        "method": "qat", "activations": {"bits": 4, "learn": "dorefa"}}}]}
    with pytest.raises(RecipeError) as info:
        slimkit.compress(make_mlp(other=False), recipe, train_data=(x, y), verbose=False)
    message = str(info.value)
    assert message.startswith("stages[0].quantize.activations.learn: dorefa cannot quantize tensor 'input' "
                              "(the input of layer 'fc1'): it is not a ReLU output, so it can be negative")
    assert "exclude the layer from stages[0].quantize.layers" in message


def binary_mlp() -> FakeModel:
    """fc1 -> fc2 -> fc3 -> logits without activations: BinaryNet's sign is the nonlinearity."""
    rng = np.random.default_rng(3)
    sizes = (8, 16, 16, 16, 4)
    names = ("fc1", "fc2", "fc3", "logits")
    return FakeModel([FakeDense(name, rng.normal(0, size ** -0.5, (size, out)), rng.normal(0, 0.1, out), relu=False)
                      for name, size, out in zip(names, sizes[:-1], sizes[1:])])


@uses_fake
@quiet_fidelity
def test_bnn_qat_binarizes_weights_and_activations(classification_data):
    x, y = classification_data
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {
        "method": "qat", "layers": INNER, "weights": {"bits": 1, "learn": "bnn"},
        "activations": {"bits": 1, "learn": "bnn"}}}]}
    result = slimkit.compress(binary_mlp(), recipe, train_data=(x, y), verbose=False)
    adapter = FakeAdapter(result.model)
    plan, state = adapter.quant_plan(), adapter.quant_state()
    assert [a.spec.mode for a in plan.acts] == ["bnn"] * 3  # sign stays in the quantized model
    for s in plan.layers:
        kernel = adapter.get_weights(s.layer)["kernel"]
        scale = state[f"{s.layer}/kernel"]["scale"]
        np.testing.assert_allclose(np.abs(kernel), np.broadcast_to(scale, kernel.shape), rtol=1e-6)
    # fc3 reads fc2's output binarized (+1 at 0): its output is that +-1 matrix times its +-alpha kernel,
    # plus its bias, float as in training (no int32 grid: nothing exports binarized activations)
    assert state["fc3/bias"] == {} and state["fc2/bias"] == {}
    outs = adapter.layer_outputs(x[:16], ["fc2", "fc3"])
    weights = adapter.get_weights("fc3")
    expected = np.where(outs["fc2"] >= 0, 1.0, -1.0) @ weights["kernel"].astype(np.float64) + weights["bias"]
    np.testing.assert_allclose(outs["fc3"], expected, rtol=0, atol=1e-5)
    rows = {r.site: r for r in result.report.quant}
    assert rows["fc2"].kind == "activation (bnn)" and (rows["fc2"].range_min, rows["fc2"].range_max) == (-1.0, 1.0)


@uses_fake
@pytest.mark.parametrize("layers, tensor, why", [
    ({"exclude": ["logits"]}, "'input' (the input of layer 'fc1')", "it is the model's input"),
    ({"exclude": ["fc1"]}, "'logits' (the output of layer 'logits')", "it is the model's output"),
])
def test_bnn_activations_refuse_the_models_input_and_output(classification_data, layers, tensor, why):
    x, y = classification_data
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {
        "method": "qat", "layers": layers, "activations": {"bits": 1, "learn": "bnn"}}}]}
    with pytest.raises(RecipeError, match=re.escape(f"activations.learn: bnn cannot quantize tensor {tensor}: {why}")):
        slimkit.compress(binary_mlp(), recipe, train_data=(x, y), verbose=False)


@uses_fake
def test_bnn_activations_refuse_a_relu_output(classification_data):
    x, y = classification_data
    recipe = {"seed": 0, "fine_tune": TRAIN, "stages": [{"quantize": {
        "method": "qat", "layers": INNER, "activations": {"bits": 1, "learn": "bnn"}}}]}
    with pytest.raises(RecipeError, match="tensor 'relu1' \\(the input of layer 'fc2'\\): it is a ReLU output, never "
                                          "negative, so its sign would always be \\+1"):
        slimkit.compress(make_mlp(other=False), recipe, train_data=(x, y), verbose=False)
