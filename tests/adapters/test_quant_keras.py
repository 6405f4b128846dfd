"""Keras-only fake quantization: convolution, depthwise, pooling and flatten sites against numpy's
QuantizeLinear/DequantizeLinear, the FakeQuant layer's rounding, Keras graph attributes, .keras save
and load in safe mode, Sequential models, folding shrinks, and what cannot take a site.

What every adapter guarantees (modes, state, errors, QAT, the float copy) is checked once for all
of them in tests/contract/test_quant_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from slimkit.adapters.keras import KerasAdapter  # noqa: E402
from slimkit.errors import UnsupportedModelError  # noqa: E402
from slimkit.quant.params import QuantParams, fake_quantize, params_from_range  # noqa: E402
from slimkit.quant.plan import FakeQuantSpec, SiteParams, plan_sites  # noqa: E402

L = keras.layers
INT32 = (-(2**31), 2**31 - 1)
KERNEL_AXES = {"conv1": 3, "dw": 2, "conv2": 3, "fc": 1}
ACT = FakeQuantSpec(0, 255, False, signed=False)


def small_model() -> keras.Model:
    """conv - relu - maxpool - depthwise - conv(relu) - flatten - dense."""
    inp = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv1")(inp)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(6, 3, activation="relu", name="conv2")(x)
    x = L.Flatten(name="flat")(x)
    out = L.Dense(5, name="fc")(x)
    model = keras.Model(inp, out, name="small")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def data(n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype(np.float32)


def plan_for(adapter: KerasAdapter, method: str = "static", kernel_mode: str = "fixed", act: FakeQuantSpec = ACT):
    specs = {name: FakeQuantSpec(-128, 127, True, axis=axis, mode=kernel_mode) for name, axis in KERNEL_AXES.items()}
    return plan_sites(adapter.graph(data(2)), specs, act, method, quantize_outputs=method != "dynamic")


def channels_last(v: np.ndarray) -> np.ndarray:
    """layer_outputs moves channels to axis 1; move them back."""
    return np.moveaxis(v, 1, -1) if v.ndim >= 3 else v


def kernel_params(kernel: np.ndarray, axis: int) -> QuantParams:
    other = tuple(i for i in range(kernel.ndim) if i != axis)
    return params_from_range(kernel.min(axis=other), kernel.max(axis=other), bits=8, signed=True,
                             symmetric=True, axis=axis)


def calibrate(float_adapter: KerasAdapter, plan, x: np.ndarray) -> tuple[dict[str, SiteParams], dict[str, QuantParams]]:
    """Site params from the float model: activation ranges on ``x``, per-channel kernel ranges, and
    bias scale = input scale * kernel scale (int32)."""
    outs = float_adapter.layer_outputs(x, [a.node for a in plan.acts])
    qp: dict[str, QuantParams] = {}
    for site in plan.acts:
        v = outs[site.node]
        qp[site.node] = params_from_range(v.min(), v.max(), bits=8, signed=False, symmetric=False)
    params = {key: SiteParams.of(p) for key, p in qp.items()}
    for site in plan.layers:
        kp = kernel_params(float_adapter.get_weights(site.layer)["kernel"], site.kernel.axis)
        qp[f"{site.layer}/kernel"] = kp
        params[f"{site.layer}/kernel"] = SiteParams.of(kp)
        bias_scale = (qp[site.input].scale * kp.scale).astype(np.float32).reshape(-1)
        params[f"{site.layer}/bias"] = SiteParams(bias_scale, np.zeros(bias_scale.shape, np.int32), *INT32, axis=0)
    return params, qp


def fq_bias(bias: np.ndarray, p: SiteParams) -> np.ndarray:
    """Bias fake-quantized with int32 params (numpy ``fake_quantize`` needs bits <= 8, so by hand)."""
    q = np.clip(np.rint(bias / p.scale).astype(np.float64) + p.zero_point, p.qmin, p.qmax)
    return ((q - p.zero_point).astype(np.float32) * p.scale).astype(np.float32)


# -------------------------------------------------------------------------------- numpy layers
def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: str) -> np.ndarray:
    """NHWC x HWIO convolution, stride 1, in float64."""
    kh, kw = w.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, wd, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,co->nhwo", x[:, i:i + h, j:j + wd].astype(np.float64), w[i, j].astype(np.float64))
    return out + b


def depthwise2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' depthwise convolution, multiplier 1, in float64."""
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))).astype(np.float64)
    out = np.zeros(x.shape)
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i:i + x.shape[1], j:j + x.shape[2]] * w[i, j, :, 0]
    return out + b


def reference_layer(name: str, x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    if name == "conv1":
        return conv2d(x, w, b, "same")
    if name == "dw":
        return depthwise2d(x, w, b)
    if name == "conv2":
        return np.maximum(conv2d(x, w, b, "valid"), 0)
    return x.astype(np.float64) @ w.astype(np.float64) + b


@pytest.fixture(scope="module")
def float_adapter() -> KerasAdapter:
    return KerasAdapter(small_model())


@pytest.fixture(scope="module")
def static(float_adapter):
    """A static fake-quant adapter with calibrated parameters set."""
    plan = plan_for(float_adapter)
    fq = float_adapter.with_fake_quant(plan)
    params, qp = calibrate(float_adapter, plan, data(64, seed=3))
    fq.set_quant_params(params)
    return fq, plan, params, qp


# ------------------------------------------------------------------------------------- the graph
def test_graph_marks_relus_and_grid_keeping_ops():
    inp = keras.Input((8, 8, 4))
    x = L.Activation("relu", name="act_relu")(inp)
    x = L.ReLU(max_value=6.0, name="relu6")(x)
    x = L.ReLU(negative_slope=0.1, name="leaky")(x)
    x = L.Activation("relu6", name="act_relu6")(x)
    x = keras.ops.relu(x)
    x = L.MaxPooling2D(1, name="maxpool")(x)
    x = L.AveragePooling2D(1, name="avgpool")(x)
    x = L.Dropout(0.1, name="drop")(x)
    x = L.GaussianDropout(0.1, name="gdrop")(x)
    x = L.Identity(name="ident")(x)
    x = L.ZeroPadding2D(1, name="zpad")(x)
    x = L.Cropping2D(1, name="crop")(x)
    x = L.Permute((2, 1, 3), name="perm")(x)
    x = L.Reshape((8, 8, 4), name="reshape")(x)
    x = L.Activation("sigmoid", name="sig")(x)
    x = L.Flatten(name="flat")(x)
    graph = KerasAdapter(keras.Model(inp, L.Dense(2, name="fc")(x))).graph()
    quant = {n.name: n.attrs.get("quant") for n in graph.nodes}
    relu_op = next(n.name for n in graph.nodes if n.attrs.get("type_name") == "keras op Relu")
    assert {k: quant[k] for k in ("act_relu", "relu6", "act_relu6", relu_op)} == dict.fromkeys(
        ("act_relu", "relu6", "act_relu6", relu_op), "relu")
    assert all(quant[k] == "same" for k in ("maxpool", "drop", "ident", "zpad", "crop", "perm", "reshape", "flat"))
    assert all(quant[k] is None for k in ("leaky", "avgpool", "gdrop", "sig", "fc"))
    assert graph.by_name["perm"].op == "elementwise"


# ------------------------------------------------------------------------------- fixed (static)
def test_fixed_sites_equal_the_numpy_reference(float_adapter, static):
    fq, plan, params, qp = static
    x = data(16)
    q_names = [n.name for n in fq.graph().nodes if n.attrs.get("type_name") == "FakeQuant"]
    assert q_names == ["image_fakequant", "relu1_fakequant", "dw_fakequant", "conv2_fakequant", "fc_fakequant"]
    names = ["relu1", "dw", "conv2", "fc", "pool", "flat"] + q_names + [s.layer for s in plan.layers]
    outs = {k: channels_last(v) for k, v in fq.layer_outputs(x, sorted(set(names))).items()}
    # Every fake-quant op equals numpy's QuantizeLinear -> DequantizeLinear bit for bit.
    for node, before in (("image", x), ("relu1", outs["relu1"]), ("dw", outs["dw"]), ("conv2", outs["conv2"]),
                         ("fc", outs["fc"])):
        np.testing.assert_array_equal(outs[f"{node}_fakequant"], fake_quantize(before, qp[node]), err_msg=node)
    # Every layer computes with fake-quantized kernel and bias, fed the model's own quantized input.
    feeds = {"conv1": outs["image_fakequant"], "dw": outs["pool"], "conv2": outs["dw_fakequant"], "fc": outs["flat"]}
    for site in plan.layers:
        w = float_adapter.get_weights(site.layer)
        kernel = fake_quantize(w["kernel"], qp[f"{site.layer}/kernel"])
        bias = fq_bias(w["bias"], params[f"{site.layer}/bias"])
        expected = reference_layer(site.layer, feeds[site.layer], kernel, bias)
        np.testing.assert_allclose(outs[site.layer], expected, atol=1e-5, err_msg=site.layer)
    np.testing.assert_array_equal(fq.predict(x), outs["fc_fakequant"])
    # And end to end in numpy: equal within 1e-5 except where float summation order flips a rounding.
    y = fake_quantize(x, qp["image"])
    for site in plan.layers:
        w = float_adapter.get_weights(site.layer)
        y = reference_layer(site.layer, y, fake_quantize(w["kernel"], qp[f"{site.layer}/kernel"]),
                            fq_bias(w["bias"], params[f"{site.layer}/bias"])).astype(np.float32)
        if site.layer == "conv1":
            y = fake_quantize(np.maximum(y, 0), qp["relu1"])
            y = y.reshape(16, 4, 2, 4, 2, 4).max(axis=(2, 4))
        elif site.layer == "conv2":
            y = fake_quantize(y, qp["conv2"]).reshape(16, -1)
        else:
            y = fake_quantize(y, qp[site.layer])
    close = np.isclose(fq.predict(x), y, atol=1e-5, rtol=0)
    assert close.mean() > 0.95


def test_fake_quant_op_rounds_half_to_even_like_numpy():
    from slimkit.adapters.keras.ops import no_gradients
    from slimkit.adapters.keras.quant import FakeQuant

    rng = np.random.default_rng(5)
    scale = np.float32(0.05)
    ties = (rng.integers(-300, 300, size=200) + 0.5).astype(np.float32) * scale  # exact halves mostly
    x = np.concatenate([ties, rng.normal(scale=4, size=300).astype(np.float32)]).reshape(1, 10, 50)
    per_tensor = params_from_range(-3.3, 6.1, bits=8, signed=False, symmetric=False)
    layer = FakeQuant(0, 255, False, site="t")
    layer.build(x.shape)
    layer.set_params(SiteParams.of(per_tensor))
    np.testing.assert_array_equal(np.asarray(layer(x)), fake_quantize(x, per_tensor))
    with no_gradients():  # the short inference path: the same values
        np.testing.assert_array_equal(np.asarray(layer(x)), fake_quantize(x, per_tensor))
    w = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    per_channel = kernel_params(w, 3)
    layer = FakeQuant(-128, 127, True, axis=3, site="k", role="kernel")
    layer.build(w.shape)
    layer.set_params(SiteParams.of(per_channel))
    np.testing.assert_array_equal(np.asarray(layer(w)), fake_quantize(w, per_channel))
    with no_gradients():
        np.testing.assert_array_equal(np.asarray(layer(w)), fake_quantize(w, per_channel))


# ------------------------------------------------------------------------------ save, copies
def test_save_and_load_keeps_sites_and_outputs(static, tmp_path):
    fq, plan, _, _ = static
    path = str(tmp_path / "fq.keras")
    fq.strip().save(path)
    loaded = KerasAdapter(keras.models.load_model(path, safe_mode=True))
    assert loaded.quant_plan() == fq.quant_plan()
    x = data(8)
    np.testing.assert_array_equal(loaded.predict(x), fq.predict(x))
    for key, state in fq.quant_state().items():
        for name, value in state.items():
            np.testing.assert_array_equal(loaded.quant_state()[key][name], value)


def test_sequential_model_gets_sites():
    model = keras.Sequential([keras.Input((6,), name="inp"), L.Dense(8, activation="relu", name="d1"),
                              L.Dense(3, name="d2")], name="seq")
    adapter = KerasAdapter(model)
    plan = plan_sites(adapter.graph(), {"d1": FakeQuantSpec(-128, 127, True, axis=1)}, ACT, "static")
    fq = adapter.with_fake_quant(plan)
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(fq.predict(x), adapter.predict(x))
    assert fq.quant_plan() == plan
    assert [layer.name for layer in fq.layers()] == ["d1", "d2"]


# -------------------------------------------------------------------------- shrink for folding
def test_shrink_adds_a_bias_and_drops_batch_norms():
    inp = keras.Input((6, 6, 3), name="img")
    x = L.Conv2D(5, 3, use_bias=False, name="conv")(inp)
    x = L.BatchNormalization(epsilon=1e-3, name="conv_bn")(x)
    x = L.ReLU(name="relu")(x)
    out = L.Dense(2, name="fc")(L.Flatten(name="flat")(x))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(2)
    bn = model.get_layer("conv_bn")
    bn.set_weights([rng.uniform(0.5, 1.5, 5).astype(np.float32), rng.normal(size=5).astype(np.float32),
                    rng.normal(size=5).astype(np.float32), rng.uniform(0.5, 2, 5).astype(np.float32)])
    adapter = KerasAdapter(model)
    w, b = adapter.get_weights("conv"), adapter.get_weights("conv_bn")
    factor = b["gamma"] / np.sqrt(b["var"] + 1e-3)
    folded = adapter.shrink({"conv": {"kernel": w["kernel"] * factor, "bias": b["beta"] - b["mean"] * factor}},
                            drop=("conv_bn",))
    x = np.random.default_rng(3).normal(size=(4, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(folded.predict(x), adapter.predict(x), atol=1e-5)
    assert set(folded.get_weights("conv")) == {"kernel", "bias"}
    assert "conv_bn" not in {layer.name for layer in folded.layers()}
    node = folded.graph().by_name["conv_bn"]
    assert node.op == "elementwise" and node.attrs["quant"] == "same"


def test_shrink_folds_the_residual_zoo_model():
    from zoo import BUILD, sample

    adapter = KerasAdapter(BUILD["keras"]("residual"))
    weights, drop = {}, []
    for layer in adapter.layers():
        if layer.kind != "batchnorm":
            continue
        conv = layer.name[: -len("_bn")]
        b, w = adapter.get_weights(layer.name), adapter.get_weights(conv)
        factor = b["gamma"] / np.sqrt(b["var"] + 1e-3)
        weights[conv] = {"kernel": w["kernel"] * factor, "bias": (w["bias"] - b["mean"]) * factor + b["beta"]}
        drop.append(layer.name)
    folded = adapter.shrink(weights, drop=tuple(drop))
    x = sample("residual", "keras")
    np.testing.assert_allclose(folded.predict(x), adapter.predict(x), atol=1e-4)
    assert [n.name for n in folded.graph().nodes] == [n.name for n in adapter.graph().nodes]


# ------------------------------------------------------------------------------------- errors
def test_sites_on_keras_ops_and_subclassed_models_are_unsupported():
    inp = keras.Input((8, 8, 3), name="img")
    x = keras.ops.relu(L.Conv2D(4, 3, name="conv1")(inp))
    out = L.Dense(2, name="fc")(L.Flatten(name="flat")(L.Conv2D(4, 3, name="conv2")(x)))
    adapter = KerasAdapter(keras.Model(inp, out))
    plan = plan_sites(adapter.graph(), {"conv1": FakeQuantSpec(-128, 127, True, axis=3)}, ACT, "static")
    op_node = plan.layers[0].output
    assert op_node != "conv1"
    with pytest.raises(UnsupportedModelError, match=op_node):
        adapter.with_fake_quant(plan)

    class Sub(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(UnsupportedModelError, match="Sequential or Functional"):
        KerasAdapter(sub).with_fake_quant(plan)
