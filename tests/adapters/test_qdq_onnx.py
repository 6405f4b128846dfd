"""QDQ export: slimkit's scales inserted into exported float ONNX graphs (slimkit.deploy.qdq).

Models are built here in torch and Keras, exported with ``slimkit.export_onnx``; activation values
come from forward hooks / Keras sub-models and parameters from numpy ``params_from_range``.
"""

from __future__ import annotations

import collections
import copy
from dataclasses import dataclass, replace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import slimkit  # noqa: E402
from slimkit.deploy.mapping import QdqMapping, map_model, probe_values  # noqa: E402
from slimkit.deploy.inspect import check_quantized, fused_ops  # noqa: E402
from slimkit.deploy.qdq import insert_qdq  # noqa: E402
from slimkit.errors import ExportError  # noqa: E402
from slimkit.quant.params import QuantParams, fake_quantize, params_from_range  # noqa: E402
from slimkit.quant.plan import ActSite, FakeQuantSpec, LayerSite, QuantPlan, SiteParams  # noqa: E402

ACT = FakeQuantSpec(0, 255, symmetric=False, signed=False)
KERNEL = FakeQuantSpec(-128, 127, symmetric=True, axis=0)
DYNAMIC = FakeQuantSpec(0, 255, symmetric=False, mode="dynamic", signed=False)
INT32 = (-(2**31), 2**31 - 1)


@dataclass
class Case:
    """A float ONNX export and everything insert_qdq needs for it."""

    model: onnx.ModelProto
    path: str
    plan: QuantPlan
    params: dict
    kernels: dict
    acts: dict
    probe: np.ndarray
    out_site: str
    framework: object = None

    def quantize(self, **changes):
        case = replace(self, **changes)
        return insert_qdq(case.model, case.plan, case.params, case.kernels, case.acts, case.probe)


def static_plan(layers: list[tuple[str, str, str]], acts: list[str]) -> QuantPlan:
    """(layer, input site, output site) triples; the layer's graph node has the layer's name."""
    return QuantPlan(tuple(ActSite(a, ACT) for a in acts),
                     tuple(LayerSite(l, l, KERNEL, i, o) for l, i, o in layers), "static")


def dynamic_plan(layers: list[tuple[str, str]]) -> QuantPlan:
    sites = list(dict.fromkeys(i for _, i in layers))
    return QuantPlan(tuple(ActSite(a, DYNAMIC) for a in sites),
                     tuple(LayerSite(l, l, KERNEL, None, None) for l, _ in layers), "dynamic")


def make_params(plan: QuantPlan, acts: dict, kernels: dict, k_axis: int, symmetric_acts: bool = False,
                reduce_range: bool = False, bits: int = 8) -> dict:
    params = {}
    if plan.method != "dynamic":
        for a in plan.acts:
            v = acts[a.node]
            params[a.node] = SiteParams.of(params_from_range(v.min(), v.max(), signed=symmetric_acts,
                                                             symmetric=symmetric_acts))
    for s in plan.layers:
        w = kernels[s.layer]
        axis = k_axis % w.ndim
        red = tuple(i for i in range(w.ndim) if i != axis)
        kp = params_from_range(w.min(axis=red), w.max(axis=red), bits=bits, axis=k_axis,
                               reduce_range=reduce_range)
        params[f"{s.layer}/kernel"] = SiteParams.of(kp)
        if s.input is not None:
            params[f"{s.layer}/bias"] = SiteParams(params[s.input].scale * kp.scale,
                                                   np.zeros(kp.scale.shape, np.int32), *INT32, 0)
    return params


def run(model, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def export(model, path, x) -> onnx.ModelProto:
    slimkit.export_onnx(model, str(path), sample=x)
    return onnx.load(str(path))


# -- models ------------------------------------------------------------------------------------------


def torch_cnn():
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(collections.OrderedDict([
        ("conv1", nn.Conv2d(3, 8, 3, padding=1)), ("relu1", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(8, 16, 3)), ("relu2", nn.ReLU()), ("flat", nn.Flatten()),
        ("fc1", nn.Linear(16 * 6 * 6, 32)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(32, 10)),
    ])).eval()


def torch_values(model, x: np.ndarray, names: list[str]) -> dict:
    out, hooks = {}, []
    for name in names:
        def hook(mod, inp, res, name=name):
            out[name] = res.detach().numpy()
        hooks.append(getattr(model, name).register_forward_hook(hook))
    with torch.no_grad():
        model(torch.as_tensor(x))
    for h in hooks:
        h.remove()
    return out


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.body = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def trace(self, x):
        a = torch.relu(self.stem(x))
        b = self.body(a)
        r = torch.relu(b + a)
        return {"a": a, "b": b, "r": r, "head": self.head(r)}

    def forward(self, x):
        return self.trace(x)["head"]


def keras_cnn():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    layers, bias = keras.layers, "random_normal"
    inp = keras.Input((16, 16, 3))
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1", bias_initializer=bias)(inp)
    h = layers.MaxPooling2D(2)(h)
    h = layers.Conv2D(16, 3, activation="relu", name="c2", bias_initializer=bias)(h)
    h = layers.Flatten()(h)
    h = layers.Dense(32, activation="relu", name="f1", bias_initializer=bias)(h)
    out = layers.Dense(10, name="f2", bias_initializer=bias)(h)
    return keras.Model(inp, out)


def keras_values(model, x, names):
    keras = pytest.importorskip("keras")
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    return {n: np.asarray(v) for n, v in zip(names, sub([x]))}


@pytest.fixture(scope="module")
def torch_case(tmp_path_factory):
    model = torch_cnn()
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    path = tmp_path_factory.mktemp("qdq") / "torch_cnn.onnx"
    proto = export(model, path, x)
    acts = {"input": x, **torch_values(model, x, ["relu1", "relu2", "relu3", "fc2"])}
    plan = static_plan([("conv1", "input", "relu1"), ("conv2", "relu1", "relu2"), ("fc1", "relu2", "relu3"),
                        ("fc2", "relu3", "fc2")], ["input", "relu1", "relu2", "relu3", "fc2"])
    kernels = {n: getattr(model, n).weight.detach().numpy() for n in ("conv1", "conv2", "fc1", "fc2")}
    return Case(proto, str(path), plan, make_params(plan, acts, kernels, 0), kernels, acts, x, "fc2", model)


@pytest.fixture(scope="module")
def keras_case(tmp_path_factory):
    model = keras_cnn()
    x = np.random.default_rng(0).standard_normal((8, 16, 16, 3)).astype(np.float32)
    path = tmp_path_factory.mktemp("qdq") / "keras_cnn.onnx"
    proto = export(model, path, x)
    acts = {"x": x, **keras_values(model, x, ["c1", "c2", "f1", "f2"])}
    plan = static_plan([("c1", "x", "c1"), ("c2", "c1", "c2"), ("f1", "c2", "f1"), ("f2", "f1", "f2")],
                       ["x", "c1", "c2", "f1", "f2"])
    kernels = {n: np.asarray(model.get_layer(n).kernel) for n in ("c1", "c2", "f1", "f2")}
    return Case(proto, str(path), plan, make_params(plan, acts, kernels, -1), kernels, acts, x, "f2", model)


@pytest.fixture(scope="module")
def residual_case(tmp_path_factory):
    model = Residual().eval()
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("qdq") / "residual.onnx"
    proto = export(model, path, x)
    with torch.no_grad():
        acts = {k: v.numpy() for k, v in model.trace(torch.as_tensor(x)).items()}
    acts["input"] = x
    plan = static_plan([("stem", "input", "a"), ("body", "a", "b"), ("head", "r", "head")],
                       ["input", "a", "b", "r", "head"])
    kernels = {n: getattr(model, n).weight.detach().numpy() for n in ("stem", "body", "head")}
    return Case(proto, str(path), plan, make_params(plan, acts, kernels, 0), kernels, acts, x, "head", model)


CASES = ["torch_case", "keras_case", "residual_case"]


def producer_ops(model: onnx.ModelProto) -> dict[str, str]:
    ops = {i.name: "input" for i in model.graph.input}
    for node in model.graph.node:
        for o in node.output:
            ops[o] = node.op_type
    return ops


# -- mapping -----------------------------------------------------------------------------------------

EXPECTED_SITES = {
    "torch_case": {"input": "input", "relu1": "Relu", "relu2": "Relu", "relu3": "Relu", "fc2": "Gemm"},
    # Keras: the NHWC graph input, not its NCHW Transpose copy; c2's Relu, not the flatten copies.
    "keras_case": {"x": "input", "c1": "Relu", "c2": "Relu", "f1": "Relu", "f2": "Add"},
    "residual_case": {"input": "input", "a": "Relu", "b": "Conv", "r": "Relu", "head": "Conv"},
}
EXPECTED_LAYERS = {
    "torch_case": {"conv1": "Conv", "conv2": "Conv", "fc1": "Gemm", "fc2": "Gemm"},
    "keras_case": {"c1": "Conv", "c2": "Conv", "f1": "MatMul", "f2": "MatMul"},
    "residual_case": {"stem": "Conv", "body": "Conv", "head": "Conv"},
}


@pytest.mark.parametrize("name", CASES)
def test_mapping_finds_every_layer_and_site(name, request):
    case = request.getfixturevalue(name)
    mapping = map_model(case.model, case.plan, case.kernels, case.acts, case.probe)
    ops = producer_ops(case.model)
    assert {site: ops[tensor] for site, tensor in mapping.sites} == EXPECTED_SITES[name]
    nodes = {n.name: n for n in case.model.graph.node}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in case.model.graph.initializer}
    assert {layer: nodes[node].op_type for layer, node in mapping.layers} == EXPECTED_LAYERS[name]
    for layer, node in mapping.layers:
        weight = inits[nodes[node].input[1]]
        assert np.array_equal(np.sort(weight, axis=None), np.sort(case.kernels[layer], axis=None))
    _, values = probe_values(case.model, case.probe)
    for site, tensor in mapping.sites:
        np.testing.assert_allclose(np.sort(values[tensor], axis=None), np.sort(case.acts[site], axis=None),
                                   atol=1e-4)
    text = str(mapping)
    assert all(site in text for site, _ in mapping.sites)


def test_relu_identity_trap_prefers_the_relu_output(tmp_path):
    """A conv with no negative outputs on the probe equals its ReLU; the plan's site is the ReLU's."""
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(collections.OrderedDict([("conv", nn.Conv2d(3, 4, 3)), ("relu", nn.ReLU()),
                                                   ("flat", nn.Flatten())])).eval()
    with torch.no_grad():
        model.conv.weight.abs_()
        model.conv.bias.abs_()
    x = np.random.default_rng(0).random((2, 3, 6, 6)).astype(np.float32)  # >= 0: conv output >= 0
    proto = export(model, tmp_path / "m.onnx", x)
    acts = {"input": x, **torch_values(model, x, ["conv", "relu"])}
    assert np.array_equal(acts["conv"], acts["relu"])
    ops = producer_ops(proto)
    plan = static_plan([("conv", "input", "relu")], ["input", "relu"])
    mapping = map_model(proto, plan, {"conv": model.conv.weight.detach().numpy()}, acts, x)
    assert ops[mapping.tensor("relu")] == "Relu"


def test_unmatched_site_raises_naming_it(torch_case):
    acts = dict(torch_case.acts, relu2=torch_case.acts["relu2"] * 1.5 + 0.1)
    with pytest.raises(ExportError, match="relu2"):
        torch_case.quantize(acts=acts)


def test_missing_kernel_match_raises(torch_case):
    kernels = dict(torch_case.kernels, conv2=torch_case.kernels["conv2"] + 1.0)
    with pytest.raises(ExportError, match="conv2"):
        torch_case.quantize(kernels=kernels)


# -- static ------------------------------------------------------------------------------------------

EXPECTED_FUSED = {
    "torch_case": {"QLinearConv": 2, "QGemm": 2},
    "keras_case": {"QLinearConv": 2, "QGemm": 2},  # MatMul + Add became Gemm
    "residual_case": {"QLinearConv": 3, "QLinearAdd": 1},
}


@pytest.mark.parametrize("name", CASES)
def test_static_qdq_runs_integer_kernels_and_matches_simulation(name, request):
    case = request.getfixturevalue(name)
    before = case.model.SerializeToString()
    qdq, mapping = case.quantize()
    assert case.model.SerializeToString() == before  # the float model is left alone
    assert isinstance(mapping, QdqMapping)
    fused = fused_ops(qdq)
    for op, count in EXPECTED_FUSED[name].items():
        assert fused[op] == count, fused
    assert not {"Conv", "Gemm", "MatMul", "Relu"} & set(fused), fused
    check_quantized(qdq, mapping)
    # Optimizations off: float ops on dequantized values, the exact simulation. On: integer kernels.
    exact = run(qdq, case.probe, optimize=False)
    fast = run(qdq, case.probe, optimize=True)
    step = float(case.params[case.out_site].scale)
    assert np.max(np.abs(exact - fast)) <= step * 1.001
    # The QDQ model still computes the float model, up to quantization error.
    assert np.max(np.abs(exact - run(case.model, case.probe))) < 0.1 * np.max(np.abs(exact)) + 0.05
    # Kernels are int8 only: no float copy of any kernel stays.
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    for layer, weight in mapping.weights:
        assert inits[weight].dtype == np.int8
        assert not any(v.dtype == np.float32 and v.size == case.kernels[layer].size for v in inits.values())


def fq(x, p: SiteParams):
    q = QuantParams(p.scale, p.zero_point, signed=p.qmin < 0, axis=p.axis)
    return fake_quantize(x, q)


def test_static_qdq_equals_torch_fake_quant(torch_case):
    """The QDQ graph computes what fake quantization at the plan's sites computes in torch."""
    case, params = torch_case, torch_case.params
    sim = copy.deepcopy(case.framework)
    for layer in case.kernels:
        mod = getattr(sim, layer)
        site = {s.layer: s for s in case.plan.layers}[layer]
        mod.weight.data = torch.as_tensor(fq(case.kernels[layer], params[f"{layer}/kernel"]))
        bp = params[f"{layer}/bias"]
        b = np.clip(np.rint(mod.bias.detach().numpy() / bp.scale), *INT32) * bp.scale
        mod.bias.data = torch.as_tensor(b.astype(np.float32))
        assert site.output is not None
    for name in ("relu1", "relu2", "relu3", "fc2"):
        getattr(sim, name).register_forward_hook(
            lambda m, i, o, name=name: torch.as_tensor(fq(o.numpy(), params[name])))
    with torch.no_grad():
        want = sim(torch.as_tensor(fq(case.probe, params["input"]))).numpy()
    qdq, _ = case.quantize()
    got = run(qdq, case.probe, optimize=False)
    step = float(params["fc2"].scale)
    # Float round-off may flip a rounding at some site: allow one output step, rarely.
    assert np.max(np.abs(got - want)) <= step * 1.001
    assert np.mean(np.abs(got - want) > 1e-6) < 0.05


def test_symmetric_int8_activations_still_fuse(torch_case):
    """Zero point 0 on int8 ReLU outputs: ORT cannot drop the Relu; a Q/DQ pair before it keeps the fusion."""
    params = make_params(torch_case.plan, torch_case.acts, torch_case.kernels, 0, symmetric_acts=True)
    qdq, mapping = torch_case.quantize(params=params)
    check_quantized(qdq, mapping)
    exact, fast = run(qdq, torch_case.probe, False), run(qdq, torch_case.probe, True)
    assert np.max(np.abs(exact - fast)) <= float(params["fc2"].scale) * 1.001


def test_keras_dense_on_sequences_and_conv1d(tmp_path):
    """tf2onnx writes these as MatMul -> Reshape -> Add and Conv -> Squeeze -> Add: the bias moves in."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(3)
    bias = "random_normal"
    inp = keras.Input((12, 4))
    h = keras.layers.Conv1D(8, 3, activation="relu", name="conv", bias_initializer=bias)(inp)
    h = keras.layers.Dense(16, activation="relu", name="d1", bias_initializer=bias)(h)
    out = keras.layers.Dense(4, name="d2", bias_initializer=bias)(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(3).standard_normal((6, 12, 4)).astype(np.float32)
    proto = export(model, tmp_path / "seq.onnx", x)
    acts = {"x": x, **keras_values(model, x, ["conv", "d1", "d2"])}
    plan = static_plan([("conv", "x", "conv"), ("d1", "conv", "d1"), ("d2", "d1", "d2")], ["x", "conv", "d1", "d2"])
    kernels = {n: np.asarray(model.get_layer(n).kernel) for n in ("conv", "d1", "d2")}
    params = make_params(plan, acts, kernels, -1)
    qdq, mapping = insert_qdq(proto, plan, params, kernels, acts, x)
    fused = fused_ops(qdq)
    assert fused["QLinearConv"] == 1 and fused["QGemm"] == 2, fused
    assert not {"Add", "Relu", "Conv", "MatMul"} & set(fused), fused
    check_quantized(qdq, mapping)
    exact, fast = run(qdq, x, False), run(qdq, x, True)
    assert np.max(np.abs(exact - fast)) <= float(params["d2"].scale) * 1.001


def test_int8_file_is_small(tmp_path):
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(collections.OrderedDict([
        ("fc1", nn.Linear(256, 512)), ("relu1", nn.ReLU()), ("fc2", nn.Linear(512, 256)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(256, 10))])).eval()
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    proto = export(model, tmp_path / "mlp.onnx", x)
    acts = {"input": x, **torch_values(model, x, ["relu1", "relu2", "fc3"])}
    plan = static_plan([("fc1", "input", "relu1"), ("fc2", "relu1", "relu2"), ("fc3", "relu2", "fc3")],
                       ["input", "relu1", "relu2", "fc3"])
    kernels = {n: getattr(model, n).weight.detach().numpy() for n in ("fc1", "fc2", "fc3")}
    qdq, mapping = insert_qdq(proto, plan, make_params(plan, acts, kernels, 0), kernels, acts, x)
    onnx.save(qdq, str(tmp_path / "mlp_int8.onnx"))
    ratio = (tmp_path / "mlp_int8.onnx").stat().st_size / (tmp_path / "mlp.onnx").stat().st_size
    assert ratio <= 0.3, ratio
    assert fused_ops(qdq)["QGemm"] == 3


# -- dynamic -----------------------------------------------------------------------------------------


def dql(x: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear then DequantizeLinear, over the whole tensor (uint8)."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255.0)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zp, 0, 255)
    return ((q - zp) * scale).astype(np.float32)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_dynamic_torch_matches_simulation(torch_case, reduce_range):
    case = torch_case
    plan = dynamic_plan([("conv1", "input"), ("conv2", "pool"), ("fc1", "flat"), ("fc2", "relu3")])
    acts = {"input": case.probe, **torch_values(case.framework, case.probe, ["pool", "flat", "relu3"])}
    params = make_params(plan, acts, case.kernels, 0, reduce_range=reduce_range)
    qdq, mapping = insert_qdq(case.model, plan, params, case.kernels, acts, case.probe)
    fused = fused_ops(qdq)
    assert fused["ConvInteger"] == 2 and fused["DynamicQuantizeMatMul"] == 2, fused
    check_quantized(qdq, mapping)
    sim = copy.deepcopy(case.framework)
    for layer in case.kernels:
        mod = getattr(sim, layer)
        mod.weight.data = torch.as_tensor(fq(case.kernels[layer], params[f"{layer}/kernel"]))
        mod.register_forward_pre_hook(lambda m, i: (torch.as_tensor(dql(i[0].numpy())),))
    with torch.no_grad():
        want = sim(torch.as_tensor(case.probe)).numpy()
    got = run(qdq, case.probe)
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))
    assert not any(i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) == case.kernels["fc1"].size
                   for i in qdq.graph.initializer)


def test_dynamic_keras_dense(keras_case):
    case = keras_case
    acts = keras_values(case.framework, case.probe, ["c1", "f1"])
    plan = QuantPlan((ActSite("f1", DYNAMIC),), (LayerSite("f2", "f2", KERNEL, None, None),), "dynamic")
    params = make_params(plan, acts, case.kernels, -1)
    qdq, mapping = insert_qdq(case.model, plan, params, case.kernels, acts, case.probe)
    assert fused_ops(qdq)["DynamicQuantizeMatMul"] == 1
    check_quantized(qdq, mapping)
    model = case.framework
    layer = model.get_layer("f2")
    w = fq(case.kernels["f2"], params["f2/kernel"])
    want = dql(acts["f1"]) @ w + np.asarray(layer.bias)
    got = run(qdq, case.probe)
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))


def test_dynamic_conv_needs_one_zero_point(torch_case):
    plan = dynamic_plan([("conv1", "input")])
    params = {"conv1/kernel": SiteParams.of(params_from_range(
        torch_case.kernels["conv1"].min(axis=(1, 2, 3)), torch_case.kernels["conv1"].max(axis=(1, 2, 3)),
        symmetric=False, axis=0))}
    with pytest.raises(ExportError, match="conv1.*zero point"):
        insert_qdq(torch_case.model, plan, params, torch_case.kernels, torch_case.acts, torch_case.probe)


# -- errors ------------------------------------------------------------------------------------------


def test_missing_params_raise(torch_case):
    for key in ("relu2", "conv2/kernel", "fc1/bias"):
        params = {k: v for k, v in torch_case.params.items() if k != key}
        with pytest.raises(ExportError, match=key):
            torch_case.quantize(params=params)
    with pytest.raises(ExportError, match="fc1"):
        torch_case.quantize(kernels={k: v for k, v in torch_case.kernels.items() if k != "fc1"})


def test_uncalibrated_activation_raises(torch_case):
    degenerate = SiteParams.of(params_from_range(0.0, 0.0, signed=False, symmetric=False))  # scale 1, zp 0
    with pytest.raises(ExportError, match="relu2.*degenerate"):
        torch_case.quantize(params=dict(torch_case.params, relu2=degenerate))
    p = torch_case.params["relu1"]
    for scale in (0.0, np.nan):
        with pytest.raises(ExportError, match="relu1"):
            bad = SiteParams(np.float32(scale), p.zero_point, 0, 255)
            torch_case.quantize(params=dict(torch_case.params, relu1=bad))


def test_narrow_kernel_ranges_are_written_in_int8(torch_case):
    # a k-bit grid (QAT's 4-bit weights, DoReFa's odd levels, BNN's +-1) in an 8-bit container runs the
    # integer kernels 8-bit weights run; onnxruntime's INT4 DequantizeLinear would leave the conv in float
    p = torch_case.params["conv1/kernel"]
    p4 = SiteParams(p.scale, p.zero_point, -8, 7, p.axis)
    model, mapping = torch_case.quantize(params=dict(torch_case.params, **{"conv1/kernel": p4}))
    q = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}[mapping.weight("conv1")]
    assert q.dtype == np.int8 and q.min() >= -8 and q.max() <= 7 and q.min() == -8  # clipped to the 4-bit range


def test_non_8bit_ranges_raise(torch_case):
    p16 = SiteParams(np.full(8, 1e-4, np.float32), np.zeros(8, np.int32), -32768, 32767, 0)
    with pytest.raises(ExportError, match="16-bit weights cannot be exported for conv1"):
        torch_case.quantize(params=dict(torch_case.params, **{"conv1/kernel": p16}))
    p = torch_case.params["relu1"]
    with pytest.raises(ExportError, match="relu1.*not 8-bit"):
        torch_case.quantize(params=dict(torch_case.params, relu1=SiteParams(p.scale, p.zero_point, 0, 127)))


def test_reduce_range_weights_export(torch_case):
    params = make_params(torch_case.plan, torch_case.acts, torch_case.kernels, 0, reduce_range=True)
    qdq, mapping = torch_case.quantize(params=params)
    check_quantized(qdq, mapping)
    w = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}[mapping.weight("conv1")]
    assert w.min() >= -64 and w.max() <= 64


def test_bias_scale_must_be_input_times_kernel(torch_case):
    p = torch_case.params["fc1/bias"]
    bad = SiteParams(p.scale * 2, p.zero_point, p.qmin, p.qmax, p.axis)
    with pytest.raises(ExportError, match="fc1/bias"):
        torch_case.quantize(params=dict(torch_case.params, **{"fc1/bias": bad}))


def test_check_quantized_names_layers_left_in_float(torch_case):
    qdq, mapping = torch_case.quantize()
    nodes = {n.name: n for n in qdq.graph.node}
    producers = {o: n for n in qdq.graph.node for o in n.output}
    conv = nodes[mapping.node("conv2")]
    dq = producers[conv.input[0]]
    q = producers[dq.input[0]]
    conv.input[0] = q.input[0]  # the conv now reads the float tensor: no DQ -> Conv unit
    with pytest.raises(ExportError, match="conv2"):
        check_quantized(qdq, mapping)


def test_write_qdq_checks_the_saved_file_and_removes_an_invalid_one(torch_case, tmp_path, monkeypatch):
    """The saved file, not an in-memory copy, goes through onnx's checker; a file it refuses is not left
    behind, and the error is an ExportError naming the check."""
    from slimkit.deploy import qdq, runtime

    good = tmp_path / "good.onnx"
    mapping = runtime.write_qdq(torch_case.path, str(good), torch_case.plan, torch_case.params, torch_case.kernels,
                                torch_case.acts, torch_case.probe)
    assert good.exists() and {layer for layer, _ in mapping.layers} == {"conv1", "conv2", "fc1", "fc2"}
    real = qdq.insert_qdq

    def broken(*args, **kwargs):
        model, found = real(*args, **kwargs)
        model.graph.node[0].input[0] = "no_such_tensor"  # reads a tensor nothing produces
        return model, found

    monkeypatch.setattr(qdq, "insert_qdq", broken)
    bad = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="the QDQ model is invalid"):
        runtime.write_qdq(torch_case.path, str(bad), torch_case.plan, torch_case.params, torch_case.kernels,
                          torch_case.acts, torch_case.probe)
    assert not bad.exists()


def test_run_optimized_gives_the_optimized_ops_without_reading_the_weights_back(torch_case, tmp_path):
    """Export's verification session yields the outputs and the optimized graph its report counts ops in;
    that graph is the one optimized_model gives, with its large initializers left in a side file."""
    from slimkit.deploy import runtime
    from slimkit.deploy.inspect import optimized_model

    path = tmp_path / "q.onnx"
    runtime.write_qdq(torch_case.path, str(path), torch_case.plan, torch_case.params, torch_case.kernels,
                      torch_case.acts, torch_case.probe)
    out, graph_only = runtime.run_optimized(str(path), torch_case.probe)
    np.testing.assert_array_equal(out, runtime.run(str(path), torch_case.probe))
    full = optimized_model(str(path))
    assert [n.op_type for n in graph_only.graph.node] == [n.op_type for n in full.graph.node]
    assert "QLinearConv" in {n.op_type for n in full.graph.node}
    apart = [i for i in graph_only.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert apart and all(not i.raw_data for i in apart)
    assert {i.name for i in graph_only.graph.initializer} == {i.name for i in full.graph.initializer}


def test_insert_qdq_copies_the_float_model_unless_told_to_edit_it(torch_case):
    """By default the float model is left as it was; ``in_place`` edits it into the result (write_qdq
    owns the model it loads) and gives the same graph as a copy does."""
    before = torch_case.model.SerializeToString()
    copied, mapping = torch_case.quantize()
    assert torch_case.model.SerializeToString() == before
    own = onnx.ModelProto()
    own.CopyFrom(torch_case.model)
    edited, same = insert_qdq(own, torch_case.plan, torch_case.params, torch_case.kernels, torch_case.acts,
                              torch_case.probe, in_place=True)
    assert edited is own and same == mapping
    assert edited.SerializeToString() == copied.SerializeToString()


def test_torch_kernels_written_as_they_are_map_by_name_without_summing_every_weight(torch_case, monkeypatch):
    """A PyTorch export holds each kernel as it is under a node named after the layer: map_layers takes
    that node after one comparison; a kernel it does not hold as it is goes through the values search."""
    from slimkit.deploy import mapping

    summed = []
    real = mapping._Signature.of
    monkeypatch.setattr(mapping._Signature, "of", classmethod(lambda cls, v: summed.append(v.size) or real(v)))
    layers = mapping.map_layers(torch_case.model, torch_case.plan, torch_case.kernels)
    assert set(layers) == {"conv1", "conv2", "fc1", "fc2"} and summed == []
    assert all(mapping.names_layer(node, layer) for layer, node in layers.items())
    changed = dict(torch_case.kernels, conv2=torch_case.kernels["conv2"] + np.float32(1.0))
    with pytest.raises(ExportError, match="layer 'conv2': no Conv/Gemm/MatMul node"):
        mapping.map_layers(torch_case.model, torch_case.plan, changed)
    assert summed  # the values search ran for it
