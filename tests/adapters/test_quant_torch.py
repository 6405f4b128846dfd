"""PyTorch fake quantization against numpy: every site bit for bit, whole models within 1e-5, QAT, save/load.

The reference is core's numpy math (``slimkit.quant.params``): what the exported QDQ model computes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from slimkit.adapter import TrainHooks
from slimkit.errors import ExportError, UnsupportedModelError
from slimkit.quant.params import QuantParams, fake_quantize, params_from_range
from slimkit.quant.plan import ActSite, FakeQuantSpec, QuantPlan, SiteParams, plan_sites
from slimkit.recipe import FineTune
from slimkit.registry import adapter_for, adapter_for_copy

from slimkit.adapters.torch import quant

LAYERS = ("conv1", "conv2", "fc")
INT8_SYM = FakeQuantSpec(-128, 127, True, 0)
UINT8 = FakeQuantSpec(0, 255, False)
INT32 = (-(2**31), 2**31 - 1)


class Small(nn.Module):
    """conv - relu - max-pool - conv - relu - flatten - linear on (N, 3, 6, 6) inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = self.pool(self.act1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


def small(seed: int = 0) -> Small:
    """The model with weights drawn by numpy (the same on every machine)."""
    model = Small().eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.as_tensor(rng.normal(scale=0.4, size=tuple(p.shape)).astype(np.float32)))
    return model


def inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 6, 6)).astype(np.float32)


def labels(x: np.ndarray) -> np.ndarray:
    """A learnable target: the class of the strongest of five fixed input projections."""
    proj = np.random.default_rng(7).normal(size=(x[0].size, 5))
    return np.argmax(x.reshape(len(x), -1) @ proj, axis=1).astype(np.int64)


def static_plan(adapter, x, kernel: FakeQuantSpec = INT8_SYM, act: FakeQuantSpec = UINT8) -> QuantPlan:
    return plan_sites(adapter.graph(x), {name: kernel for name in LAYERS}, act, "static")


def calibrated(adapter, plan: QuantPlan, x: np.ndarray) -> tuple[dict[str, SiteParams], dict[str, QuantParams]]:
    """Site params from min-max ranges of the float model, and the numpy QuantParams of acts and kernels."""
    outs = adapter.layer_outputs(x, [a.node for a in plan.acts])
    qp = {a.node: params_from_range(outs[a.node].min(), outs[a.node].max(), 8, False, False) for a in plan.acts}
    params = {k: SiteParams.of(p) for k, p in qp.items()}
    for s in plan.layers:
        w = adapter.get_weights(s.layer)
        axes = tuple(range(1, w["kernel"].ndim))
        kp = params_from_range(w["kernel"].min(axis=axes), w["kernel"].max(axis=axes), 8, True, True, axis=0)
        qp[f"{s.layer}/kernel"] = kp
        params[f"{s.layer}/kernel"] = SiteParams.of(kp)
        bias_scale = (qp[s.input].scale * kp.scale).astype(np.float32)
        params[f"{s.layer}/bias"] = SiteParams(bias_scale, np.zeros(bias_scale.shape, np.int32), *INT32, axis=0)
    return params, qp


# ---------------------------------------------------------------------------------------------- numpy reference
def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stride-1 'same' convolution in float64, NCHW / OIHW."""
    k = w.shape[-1]
    h, wd = x.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j].astype(np.float64))
    return out + b.astype(np.float64).reshape(1, -1, 1, 1)


def np_bias(b: np.ndarray, p: SiteParams) -> np.ndarray:
    """int32 bias fake-quant (QuantParams stops at 8 bits): ``clip(rint(b / s)) * s`` in float32."""
    return (np.clip(np.rint(b / p.scale).astype(np.float64), p.qmin, p.qmax).astype(np.float32) * p.scale)


def reference(x: np.ndarray, weights: dict, params: dict, qp: dict, margins: list[float]) -> np.ndarray:
    """The quantized model layer by layer in numpy; float ops in float64, each site with params.fake_quantize.

    ``margins`` collects how far (in steps) every float-op result lies from a rounding tie: far from a
    tie, float32 summation order (numpy vs torch) cannot change the quantized value.
    """
    def site(t: np.ndarray, key: str) -> np.ndarray:
        v = t / np.float64(qp[key].scale)
        margins.append(float(np.min(np.abs(v - np.floor(v) - 0.5))))
        return fake_quantize(t.astype(np.float32), qp[key])

    def kernel(name):
        return fake_quantize(weights[name]["kernel"], qp[f"{name}/kernel"])

    def bias(name):
        return np_bias(weights[name]["bias"], params[f"{name}/bias"])

    h = fake_quantize(x, qp["x"])
    h = site(np.maximum(np_conv(h, kernel("conv1"), bias("conv1")), 0), "act1")
    n, c, hh, ww = h.shape
    h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
    h = site(np.maximum(np_conv(h, kernel("conv2"), bias("conv2")), 0), "relu")
    h = h.reshape(len(h), -1).astype(np.float64)
    return site(h @ kernel("fc").T.astype(np.float64) + bias("fc"), "fc")


def fq_modules(adapter) -> dict[str, quant.FakeQuant]:
    return quant.sites(adapter.model)


class Losses(TrainHooks):
    def __init__(self) -> None:
        self.epochs: list[float] = []

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(logs["loss"])


# ---------------------------------------------------------------------------------------------- graph attrs
def test_graph_marks_relu_and_grid_keeping_ops():
    class Ops(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 4, 3, padding=1)
            self.r6, self.ht06, self.ht = nn.ReLU6(), nn.Hardtanh(0.0, 6.0), nn.Hardtanh()
            self.mp, self.dr, self.id, self.zp = nn.MaxPool2d(2), nn.Dropout(0.1), nn.Identity(), nn.ZeroPad2d(1)
            self.cp, self.sig = nn.ConstantPad2d(1, 0.5), nn.Sigmoid()
            self.fl, self.fc = nn.Flatten(), nn.Linear(144, 3)

        def forward(self, x):
            x = self.ht(self.ht06(self.r6(self.c1(x))))
            x = F.hardtanh(torch.relu(F.relu6(x)), 0.0, 6.0)
            x = self.cp(self.zp(self.id(self.dr(self.mp(x)))))
            x = F.pad(F.pad(x, (1, 1, 1, 1)), (0, 0, 0, 0), value=1.0)
            x = F.max_pool2d(x, 2).transpose(2, 3).permute(0, 1, 3, 2).contiguous()
            x = self.sig(x)
            return self.fc(self.fl(x).view(x.size(0), -1))

    graph = adapter_for(Ops().eval()).graph(np.zeros((2, 3, 12, 12), np.float32))
    got = {n.name: n.attrs.get("quant") for n in graph.nodes if n.op in ("elementwise", "flatten")}
    assert got == {
        "r6": "relu", "ht06": "relu", "ht": None, "relu6": "relu", "relu": "relu", "hardtanh": "relu",
        "mp": "same", "dr": "same", "id": "same", "zp": "same", "cp": None, "pad": "same", "pad_1": None,
        "max_pool2d": "same", "transpose": "same", "permute": "same", "contiguous": "same", "sig": None,
        "fl": "same", "view": "same",
    }
    assert {n.name: n.op for n in graph.nodes}["fl"] == "flatten"


# ---------------------------------------------------------------------------------------------- fixed mode
def test_fixed_sites_pass_through_until_set_then_equal_the_numpy_reference():
    x = inputs(3)
    adapter = adapter_for(small())
    plan = static_plan(adapter, x)
    assert [a.node for a in plan.acts] == ["x", "act1", "relu", "fc"]
    sim = adapter.with_fake_quant(plan)
    np.testing.assert_array_equal(sim.predict(x), adapter.predict(x))  # identity before set_quant_params
    assert sim.quant_state() == {k: {} for k in plan.site_keys()}

    params, qp = calibrated(adapter, plan, inputs(64, seed=2))
    sim.set_quant_params(params)
    margins: list[float] = []
    ref = reference(x, {n: adapter.get_weights(n) for n in LAYERS}, params, qp, margins)
    # numpy decides the data, so this holds on every machine; float32 error is ~1e-5 steps
    assert min(margins) > 1e-3, "a float-op result lies on a rounding tie; pick other seeds"
    got = sim.predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert np.abs(got - adapter.predict(x)).max() > 1e-3  # it does quantize
    assert sim.quant_plan() == plan
    for key, p in params.items():
        state = sim.quant_state()[key]
        np.testing.assert_array_equal(state["scale"], p.scale)
        np.testing.assert_array_equal(state["zero_point"], p.zero_point)
    np.testing.assert_array_equal(adapter.predict(x), small().eval()(torch.as_tensor(x)).detach().numpy())


def test_every_site_is_bit_exact_with_numpy_on_wide_data():
    x = inputs(64, seed=5) * 3.0
    adapter = adapter_for(small(seed=3))
    plan = static_plan(adapter, x)
    sim = adapter.with_fake_quant(plan)
    params, qp = calibrated(adapter, plan, x[:16])  # narrower calibration: the rest clips
    sim.set_quant_params(params)
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    handles = [m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod.site, (i[0].numpy(), o.numpy())))
               for m in fq_modules(sim).values() if m.role == "activation"]
    sim.predict(x)
    for h in handles:
        h.remove()
    assert sorted(seen) == sorted(a.node for a in plan.acts)
    for node, (before, after) in seen.items():
        np.testing.assert_array_equal(after, fake_quantize(before, qp[node]))
        assert np.any(after != before)
    for name in LAYERS:
        module = sim.model.get_submodule(name)
        float_w = adapter.get_weights(name)
        with torch.no_grad():
            np.testing.assert_array_equal(module.weight.numpy(), fake_quantize(float_w["kernel"], qp[f"{name}/kernel"]))
            np.testing.assert_array_equal(module.bias.numpy(), np_bias(float_w["bias"], params[f"{name}/bias"]))
        # get_weights reads the float weights under the fake-quant
        np.testing.assert_array_equal(sim.get_weights(name)["kernel"], float_w["kernel"])


def test_fake_quantize_rounds_ties_to_even_and_clips_like_numpy():
    p = QuantParams(np.float32(0.1), np.int32(3), bits=4, signed=False)
    x = ((np.arange(-10, 30) + 0.5) * np.float32(0.1)).astype(np.float32)
    m = quant.FakeQuant("t", FakeQuantSpec(0, 15, False), "activation")
    assert torch.equal(m(torch.as_tensor(x)), torch.as_tensor(x))  # unset: identity
    m.set_params(SiteParams.of(p))
    xt = torch.as_tensor(x, dtype=torch.float32).requires_grad_(True)
    y = m(xt)
    np.testing.assert_array_equal(y.detach().numpy(), fake_quantize(x, p))
    y.sum().backward()  # straight-through inside the range, zero where clipped
    q = np.rint(x / np.float32(0.1)) + 3
    np.testing.assert_array_equal(xt.grad.numpy(), ((q >= 0) & (q <= 15)).astype(np.float32))


def test_lsq_gradient_is_the_scaled_lsq_step_gradient():
    m = quant.FakeQuant("t", FakeQuantSpec(-8, 7, True, mode="lsq"), "activation").train()
    x = np.linspace(-2.0, 2.0, 41, dtype=np.float32).reshape(1, 41)  # one sample of 41 features
    assert torch.equal(m.eval()(torch.as_tensor(x)), torch.as_tensor(x))  # eval before init: identity
    m.train()(torch.as_tensor(x))  # the first training batch sets the scale: 2 * mean|x| / sqrt(qmax)
    s = np.float32(2 * np.abs(x).mean() / np.sqrt(7))
    np.testing.assert_allclose(m.state()["scale"], s, rtol=1e-6)
    m.scale.grad = None
    m(torch.as_tensor(x)).sum().backward()
    s = m.state()["scale"]
    v = x / s
    q = np.rint(v)
    inside = (q >= -8) & (q <= 7)
    d = np.where(inside, q - v, np.clip(q, -8, 7))  # d y / d s of LSQ
    g = 1 / np.sqrt(41 * 7)  # LSQ: features of one sample times qmax
    np.testing.assert_allclose(m.scale.grad.numpy(), g * d.sum(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------- dynamic mode
def _dynamic_quantize_linear(x: np.ndarray) -> np.ndarray:
    """ONNX DynamicQuantizeLinear followed by DequantizeLinear, float32 as onnxruntime computes it."""
    x = x.astype(np.float32)
    lo, hi = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = np.float32(1) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zp = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255)
    return ((q - zp) * scale).astype(np.float32)


def test_dynamic_sites_equal_dynamic_quantize_linear():
    x = inputs(16, seed=4)
    adapter = adapter_for(small())
    spec = FakeQuantSpec(0, 255, False, None, "dynamic")
    plan = plan_sites(adapter.graph(x), {"fc": INT8_SYM, "conv2": INT8_SYM}, spec, "dynamic", quantize_outputs=False)
    assert [a.node for a in plan.acts] == ["act1", "relu"] and all(s.input is None for s in plan.layers)
    sim = adapter.with_fake_quant(plan)
    seen = {}
    handle = fq_modules(sim)["relu"].register_forward_hook(lambda m, i, o: seen.update(i=i[0].numpy(), o=o.numpy()))
    sim.predict(x, batch_size=16)
    handle.remove()
    np.testing.assert_array_equal(seen["o"], _dynamic_quantize_linear(seen["i"]))
    assert np.any(seen["o"] != seen["i"])
    m = fq_modules(sim)["act1"]
    zeros = torch.zeros(2, 3)
    assert torch.equal(m(zeros), zeros)  # all-zero tensor: scale 1, passes unchanged
    signed = torch.as_tensor(np.linspace(-1.3, 2.1, 50, dtype=np.float32))
    np.testing.assert_array_equal(m(signed).numpy(), _dynamic_quantize_linear(signed.numpy()))
    assert sim.quant_state()["act1"] == {}


# ---------------------------------------------------------------------------------------------- QAT
def test_qat_with_ema_and_minmax_trains_keeps_masks_and_saves():
    x = inputs(64, seed=6)
    y = labels(x)
    adapter = adapter_for_copy(small(seed=1))
    rng = np.random.default_rng(0)
    masks = {}
    for name in ("conv2", "fc"):
        masks[name] = (rng.random(adapter.get_weights(name)["kernel"].shape) > 0.5).astype(np.float32)
        adapter.set_mask(name, masks[name])
    ema = FakeQuantSpec(0, 255, False, mode="ema")
    plan = static_plan(adapter, x, FakeQuantSpec(-127, 127, True, 0, "minmax"), ema)
    sim = adapter.with_fake_quant(plan)
    state0 = sim.quant_state()
    assert all(np.isnan(state0[a.node]["min"]) for a in plan.acts)
    assert sim.predict(x).shape == (64, 5)  # eval before any update: ema sites pass through
    losses = Losses()
    sim.fit((x, y), FineTune(epochs=4, batch_size=16, learning_rate=1e-2), losses)
    assert losses.epochs[-1] < losses.epochs[0]
    state = sim.quant_state()
    for a in plan.acts:
        assert np.isfinite(state[a.node]["min"]) and state[a.node]["max"] > state[a.node]["min"]
    for name, mask in masks.items():
        module = sim.model.get_submodule(name)
        with torch.no_grad():
            assert np.all(module.weight.numpy()[mask == 0] == 0.0)  # the fake-quantized kernel
        assert np.all(sim.get_weights(name)["kernel"][mask == 0] == 0.0)
        assert not np.allclose(sim.get_weights(name)["kernel"], adapter.get_weights(name)["kernel"])
    # eval uses the stored range: an ema site computes params_from_range of its min/max
    site = fq_modules(sim)["act1"]
    p = params_from_range(state["act1"]["min"], state["act1"]["max"], 8, False, False)
    t = torch.as_tensor(np.linspace(-1, 5, 97, dtype=np.float32))
    np.testing.assert_array_equal(site(t).detach().numpy(), fake_quantize(t.numpy(), p))
    # the source adapter is untouched
    assert adapter.quant_plan() is None and not quant.has_fake_quant(adapter.model)


def test_qat_with_lsq_learns_scales_from_set_params_and_first_batch():
    x = inputs(64, seed=8)
    y = labels(x)
    adapter = adapter_for(small(seed=2))
    lsq_kernel = FakeQuantSpec(-127, 127, True, 0, "lsq")
    plan = static_plan(adapter, x, lsq_kernel, FakeQuantSpec(0, 255, False, mode="lsq"))
    sim = adapter.with_fake_quant(plan)
    params, _ = calibrated(adapter, plan, x)
    init = {k: p for k, p in params.items() if k.endswith("/kernel")}
    sim.set_quant_params(init)  # lsq kernels start here and keep learning; lsq acts start from batch 1
    assert {k for k, v in sim.quant_state().items() if v} == set(init)
    losses = Losses()
    sim.fit((x, y), FineTune(epochs=3, batch_size=16, learning_rate=1e-2), losses)
    assert losses.epochs[-1] < losses.epochs[0]
    state = sim.quant_state()
    for key, p in init.items():
        assert state[key]["scale"].shape == p.scale.shape and np.all(state[key]["scale"] > 0)
        assert not np.array_equal(state[key]["scale"], p.scale), f"{key} did not learn"
    for a in plan.acts:  # started from batch 1: zero point 0 after a ReLU, inside the range elsewhere
        assert state[a.node]["scale"] > 0 and 0 <= state[a.node]["zero_point"] <= 255
    assert state["act1"]["zero_point"] == 0 < state["x"]["zero_point"]
    got = sim.quant_plan()
    assert [a.spec.mode for a in got.acts] == ["lsq"] * 4 and [s.kernel.mode for s in got.layers] == ["lsq"] * 3
    scales = [m.scale for m in fq_modules(sim).values() if m.mode == "lsq"]
    assert scales and all(isinstance(s, nn.Parameter) and s.grad is not None for s in scales)


def test_state_dict_round_trip_keeps_outputs_modes_and_state(tmp_path):
    x = inputs(32, seed=9)
    adapter = adapter_for(small())
    plan = static_plan(adapter, x, FakeQuantSpec(-127, 127, True, 0, "lsq"), FakeQuantSpec(0, 255, False, mode="ema"))
    sim = adapter.with_fake_quant(plan)
    sim.fit((x, labels(x)), FineTune(epochs=1, batch_size=16), Losses())
    params, _ = calibrated(adapter, plan, x)
    sim.set_quant_params({"relu": params["relu"], "fc/bias": params["fc/bias"]})  # ema -> fixed
    assert sim.quant_plan().act("relu").spec.mode == "fixed"
    path = tmp_path / "sim.pt"
    torch.save(sim.model.state_dict(), path)

    fresh = adapter.with_fake_quant(plan)
    fresh.model.load_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(fresh.predict(x), sim.predict(x))
    assert fresh.quant_plan() == sim.quant_plan() != plan
    got, want = fresh.quant_state(), sim.quant_state()
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].keys() == want[key].keys()
        for k in want[key]:
            np.testing.assert_array_equal(got[key][k], want[key][k])


# ---------------------------------------------------------------------------------------------- conversions
def test_without_fake_quant_and_strip():
    x = inputs(8)
    adapter = adapter_for_copy(small())
    mask = (np.random.default_rng(3).random((6, 4, 3, 3)) > 0.5).astype(np.float32)
    adapter.set_mask("conv2", mask)
    plan = static_plan(adapter, x)
    sim = adapter.with_fake_quant(plan)
    params, _ = calibrated(adapter, plan, x)
    sim.set_quant_params(params)
    assert [i.name for i in sim.layers()] == [i.name for i in adapter.layers()]
    sim.check_input(x, "calib_data")
    assert sim.num_batches((x, labels(x)), 3) == 3
    # layer_outputs by module path and by fx node name: the tensors before their fake-quant
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod.site, i[0].numpy()))
             for m in fq_modules(sim).values() if m.role == "activation"]
    sim.predict(x)
    for h in hooks:
        h.remove()
    outs = sim.layer_outputs(x, ["act1", "relu"])
    np.testing.assert_array_equal(outs["act1"], seen["act1"])
    np.testing.assert_array_equal(outs["relu"], seen["relu"])

    plain = sim.without_fake_quant()
    assert plain.quant_plan() is None and not quant.has_fake_quant(plain.model)
    assert not any(parametrize.is_parametrized(m) for m in plain.model.modules())
    assert [n.name for n in plain.graph(x).nodes] == [n.name for n in adapter.graph(x).nodes]
    np.testing.assert_allclose(plain.predict(x), adapter.predict(x), atol=1e-6)
    assert np.all(plain.get_weights("conv2")["kernel"][mask == 0] == 0.0)
    assert sim.quant_plan() == plan  # unchanged

    expected = sim.predict(x)
    stripped = adapter_for(adapter_for_copy(sim.model).strip())
    assert stripped.quant_plan() == plan
    np.testing.assert_array_equal(stripped.predict(x), expected)
    module = stripped.model.get_submodule("conv2")
    assert [type(p).__name__ for p in module.parametrizations.weight] == ["FakeQuant"]
    assert np.all(module.parametrizations.weight.original.detach().numpy()[mask == 0] == 0.0)
    with pytest.raises(ExportError, match="without_fake_quant"):
        sim.export_onnx("unused.onnx", x[:1], 17)


def test_errors_name_the_site_or_model():
    x = inputs(4)
    adapter = adapter_for(small())
    plan = static_plan(adapter, x)
    sim = adapter.with_fake_quant(plan)
    params, _ = calibrated(adapter, plan, x)
    with pytest.raises(KeyError, match="'conv9/kernel'"):
        sim.set_quant_params({"act1": params["act1"], "conv9/kernel": params["conv1/kernel"]})
    assert sim.quant_state()["act1"] == {}  # nothing set when one key is bad
    with pytest.raises(ValueError, match="'act1'"):
        sim.set_quant_params({"act1": params["conv1/kernel"]})
    missing = QuantPlan((ActSite("nowhere", UINT8),), ())
    with pytest.raises(UnsupportedModelError, match="'nowhere'"):
        adapter.with_fake_quant(missing)

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(UnsupportedModelError, match="Branchy"):
        adapter_for(Branchy()).with_fake_quant(QuantPlan((), ()))


# ---------------------------------------------------------------------------------------------- shrink(drop=)
def test_shrink_adds_bias_and_drops_folded_batch_norm():
    class ConvBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4, eps=1e-3)
            self.fc = nn.Linear(4 * 36, 2)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.bn(self.conv(x))), 1))

    model = ConvBN().eval()
    rng = np.random.default_rng(4)
    with torch.no_grad():
        model.bn.running_mean.copy_(torch.as_tensor(rng.normal(size=4), dtype=torch.float32))
        model.bn.running_var.copy_(torch.as_tensor(rng.uniform(0.5, 2, size=4), dtype=torch.float32))
        model.bn.weight.copy_(torch.as_tensor(rng.normal(size=4), dtype=torch.float32))
    adapter = adapter_for(model)
    assert next(i for i in adapter.layers() if i.name == "bn").eps == pytest.approx(1e-3)
    kernel, bn = adapter.get_weights("conv")["kernel"], adapter.get_weights("bn")
    factor = bn["gamma"] / np.sqrt(bn["var"] + np.float32(1e-3))
    folded = {"kernel": kernel * factor.reshape(-1, 1, 1, 1), "bias": bn["beta"] - bn["mean"] * factor}
    small_adapter = adapter.shrink({"conv": folded}, drop=("bn",))
    assert isinstance(small_adapter.model.bn, nn.Identity) and small_adapter.model.conv.bias is not None
    x = inputs(4)
    np.testing.assert_allclose(small_adapter.predict(x), adapter.predict(x), atol=1e-5)
    node = small_adapter.graph(x).by_name["bn"]
    assert node.op == "elementwise" and node.attrs["quant"] == "same"
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is None  # source untouched
    with pytest.raises(UnsupportedModelError, match="'fc'"):
        adapter.shrink({}, drop=("fc",))
