"""PyTorch-only fake quantization: a CNN's sites bit for bit against numpy (``slimkit.quant.params``,
what the exported QDQ model computes) and the whole CNN within 1e-5, the FakeQuant module's rounding
and LSQ gradient, torch.fx graph attributes, state_dict save and load, parametrizations after strip.

What every adapter guarantees (modes, state, errors, QAT, the float copy) is checked once for all
of them in tests/contract/test_quant_contract.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.adapter import TrainHooks
from slimkit.errors import DataError, UnsupportedModelError
from slimkit.quant.params import QuantParams, fake_quantize, params_from_range
from slimkit.quant.plan import FakeQuantSpec, QuantPlan, SiteParams, plan_sites
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
def test_fixed_sites_of_a_cnn_equal_the_numpy_reference():
    x = inputs(3)
    adapter = adapter_for(small())
    plan = static_plan(adapter, x)
    assert [a.node for a in plan.acts] == ["x", "act1", "relu", "fc"]
    sim = adapter.with_fake_quant(plan)
    params, qp = calibrated(adapter, plan, inputs(64, seed=2))
    sim.set_quant_params(params)
    margins: list[float] = []
    ref = reference(x, {n: adapter.get_weights(n) for n in LAYERS}, params, qp, margins)
    # numpy decides the data, so this holds on every machine; float32 error is ~1e-5 steps
    assert min(margins) > 1e-3, "a float-op result lies on a rounding tie; pick other seeds"
    got = sim.predict(x)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    assert np.abs(got - adapter.predict(x)).max() > 1e-3  # it does quantize
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


# ---------------------------------------------------------------------------------------------- save and load
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
def test_layer_outputs_are_site_inputs_and_strip_keeps_only_fake_quant_parametrizations():
    x = inputs(8)
    adapter = adapter_for_copy(small())
    mask = (np.random.default_rng(3).random((6, 4, 3, 3)) > 0.5).astype(np.float32)
    adapter.set_mask("conv2", mask)
    plan = static_plan(adapter, x)
    sim = adapter.with_fake_quant(plan)
    params, _ = calibrated(adapter, plan, x)
    sim.set_quant_params(params)
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
    assert not quant.has_fake_quant(sim.without_fake_quant().model)

    expected = sim.predict(x)
    stripped = adapter_for(adapter_for_copy(sim.model).strip())
    assert stripped.quant_plan() == plan
    np.testing.assert_array_equal(stripped.predict(x), expected)
    module = stripped.model.get_submodule("conv2")
    assert [type(p).__name__ for p in module.parametrizations.weight] == ["FakeQuant"]
    assert np.all(module.parametrizations.weight.original.detach().numpy()[mask == 0] == 0.0)


def test_an_untraceable_model_is_named():
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
    assert not np.shares_memory(small_adapter.model.conv.weight.detach().numpy(), folded["kernel"])
    adopted = adapter.shrink({"conv": folded}, drop=("bn",), adopt=True)  # handed over: held as they are
    assert np.shares_memory(adopted.model.conv.weight.detach().numpy(), folded["kernel"])
    assert isinstance(adopted.model.conv.weight, nn.Parameter) and adopted.model.conv.weight.requires_grad
    view = {"kernel": folded["kernel"][:, :, :, :], "bias": folded["bias"]}  # owns no memory: copied
    assert not np.shares_memory(adapter.shrink({"conv": view}, drop=("bn",), adopt=True).model.conv.weight
                                .detach().numpy(), folded["kernel"])
    x = inputs(4)
    np.testing.assert_allclose(small_adapter.predict(x), adapter.predict(x), atol=1e-5)
    node = small_adapter.graph(x).by_name["bn"]
    assert node.op == "elementwise" and node.attrs["quant"] == "same"
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is None  # source untouched



def test_shrink_copies_no_replaced_tensor_and_keeps_a_module_held_twice_apart():
    """The rebuilt copy does not copy what it replaces (a replaced conv's and a dropped batch norm's
    tensors), and a module the model holds at two paths is copied as before: training the copy changes
    nothing in the source."""
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Conv2d(4, 4, 1)
            self.again = self.head  # the same module at a second path

        def forward(self, x):
            return self.again(self.head(self.bn(self.conv(x)))).mean((2, 3))

    model = Twice().eval()
    source = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = adapter_for(model)
    copied = []
    real = copy.deepcopy

    def spy(x, memo=None):
        copied.append(memo)
        return real(x, memo)

    conv = adapter.get_weights("conv")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("slimkit.adapters.torch.rebuild.copy.deepcopy", spy)
        small = adapter.shrink({"conv": conv, "head": adapter.get_weights("head")}, drop=("bn",))
    shared = {id(t) for t in copied[0].values()}
    assert {id(model.conv.weight), id(model.conv.bias), id(model.bn.running_mean)} <= shared
    assert id(model.head.weight) not in shared  # held at two paths: the copy keeps one of them as it was
    assert small.model.conv.weight is not model.conv.weight  # rebuilt: a tensor of its own
    with torch.no_grad():
        for p in small.model.parameters():
            p.add_(1.0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0, msg=key)

def test_a_folded_model_is_captured_with_its_source_shapes_and_a_pruned_one_is_shaped_anew(monkeypatch):
    from slimkit.adapters.torch import graph as torch_graph
    from slimkit.quant.bn_fold import fold_batchnorm

    class ConvBNView(nn.Module):  # x.size(0) yields no tensor: its node is carried over as well
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 36, 2)

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x)))
            return self.fc(y.view(x.size(0), -1))

    x = inputs(4)
    adapter = adapter_for(ConvBNView().eval())
    calls = []
    real = torch_graph.propagate_shapes
    monkeypatch.setattr(torch_graph, "propagate_shapes", lambda *a: calls.append(1) or real(*a))
    adapter.check_input(x[:1], "calib_data")
    folded, pairs = fold_batchnorm(adapter, x)  # captures the source model: one propagation
    assert pairs == [("conv", "bn")] and calls == [1]
    inherited = folded.graph(x)
    assert calls == [1]  # the fold kept every shape: none for the folded model
    fresh = adapter_for(copy.deepcopy(folded.model)).graph(x)  # another model object: nothing to inherit
    assert calls == [1, 1]
    assert [(n.name, n.op, n.inputs, n.channels, n.layer, n.attrs) for n in inherited.nodes] == \
        [(n.name, n.op, n.inputs, n.channels, n.layer, n.attrs) for n in fresh.nodes]
    # pruning changes the kernel's shape: the rebuilt model's shapes are propagated again
    weights = adapter.get_weights("conv")
    smaller = {"conv": {"kernel": weights["kernel"][:2]}, "bn": {
        k: v[:2] for k, v in adapter.get_weights("bn").items()}, "fc": {
        "kernel": adapter.get_weights("fc")["kernel"][:, :72], "bias": adapter.get_weights("fc")["bias"]}}
    pruned, unchecked = adapter.shrink(smaller), adapter.shrink(smaller)
    assert pruned.graph(x).by_name["conv"].channels == 2 and calls == [1, 1, 1]

    def refuse(*args):
        raise RuntimeError("ran")

    folded.model.forward = refuse
    folded.check_input(x[:1], "calib_data")  # what the source model accepted: the folded one does not run
    pruned.model.forward = refuse
    pruned.check_input(x[:1], "calib_data")  # its capture ran it on these inputs: no run either
    unchecked.model.forward = refuse
    with pytest.raises(DataError, match="calib_data"):  # rebuilt with other shapes, never run: it runs now
        unchecked.check_input(x[:1], "calib_data")


def test_pytorch_model_folder_needs_the_architecture(tmp_path):
    import slimkit
    from frameworks import torch_mlp

    pruned = slimkit.compress(torch_mlp(), {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]},
                              verbose=False)
    folder = pruned.save(tmp_path / "model")
    with pytest.raises(slimkit.DataError, match=r"pass an instance of it .*model=MyModel\(\)"):
        slimkit.load(folder)
    with pytest.raises(slimkit.DataError, match="has layer 'bn', which Sequential lacks; pass the architecture"):
        slimkit.load(folder, model=torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_batch_norm_after_a_grouped_convolution_is_folded_before_static_int8(tmp_path):
    import slimkit
    from slimkit.deploy.runtime import run

    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn0 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.grouped, self.bn = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            h = torch.relu(self.bn0(self.stem(x)))
            return self.fc(torch.relu(self.bn(self.grouped(h))).mean((2, 3)))

    model = Grouped().eval()
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).normal(size=(16, 3, 10, 10)).astype(np.float32)
    result = slimkit.compress(model, {"stages": [{"quantize": {"method": "static"}}]}, calib_data=x, verbose=False)
    assert "grouped" in result.report.quantized
    assert "batch norms folded: grouped: bn" not in result.report.notes  # the note names pairs as 'bn into layer'
    assert any("bn into grouped" in note for note in result.report.notes)
    result.export_onnx(tmp_path / "grouped.onnx")
    reference = slimkit.registry.adapter_for(model).predict(x)
    assert np.corrcoef(run(str(tmp_path / "grouped.onnx"), x).ravel(), reference.ravel())[0, 1] > 0.99


def test_weight_norm_is_refused_by_name_and_the_model_is_untouched():
    import slimkit
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model[2] = parametrizations.weight_norm(model[2])  # weight = g * v / |v|: two tensors under it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    for recipe in ({"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "fine_tune": None}}]},
                   {"stages": [{"quantize": {"method": "static"}}]}):
        with pytest.raises(UnsupportedModelError, match=r"layer '2' \(Linear\): its 'weight' is computed from several "
                                                         r"tensors by a parametrization \(_WeightNorm.*"
                                                         r"remove_parametrizations\(module, 'weight'\)"):
            slimkit.compress(model, recipe, calib_data=x, verbose=False)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # baked in as the message says, the same model compresses
    torch.nn.utils.parametrize.remove_parametrizations(model[2], "weight")
    result = slimkit.compress(model, {"stages": [{"prune": {"method": "magnitude", "sparsity": 0.5,
                                                            "fine_tune": None}}]}, calib_data=x, verbose=False)
    assert result.report.layer("2").sparsity == pytest.approx(0.5, abs=0.02)
