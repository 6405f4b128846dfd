"""The quantization capability (``slimkit.adapter.QuantAdapter``), the same contract for every adapter.

Guarantees, on the contract MLP (``tests/frameworks.py``) with plans made by core
(``slimkit.quant.plan.plan_sites`` on the adapter's graph, specs from ``slimkit.quant.specs``):

* in every fake-quant mode (fixed once set, ema after training, lsq, minmax, dynamic, dorefa, bnn) the adapter's
  fake-quant model computes core's reference: every node's output equals the node's float op in
  numpy applied to its input as ``slimkit.quant.fake_quant.forward(NUMPY_OPS, site, ...)`` quantizes
  it, with the site in the mode and state the adapter reports (``quant_plan``, ``quant_state``);
  ``predict`` is the last site's output;
* fixed sites pass values through until set; ema sites learn the moving average of batch ranges;
  lsq activation sites start from their first batch, and lsq scales learn where the adapter can;
* ``set_quant_params`` then ``quant_state`` round-trips; modes after it follow core's rule; an
  unknown key is a KeyError naming it (nothing set), bad parameters a ValueError naming the site;
* pruning masks hold through QAT; ``without_fake_quant`` gives back the float model, ``strip`` keeps
  the sites.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from slimkit.errors import ExportError, UnsupportedModelError
from slimkit.ops import NUMPY_OPS
from slimkit.pruning.masks import to_canonical
from slimkit.quant import fake_quant, specs
from slimkit.quant.plan import ActSite, QuantPlan, SiteParams, plan_sites
from slimkit.adapter import TrainHooks
from slimkit.recipe import ActivationQuant, FineTune, WeightQuant
from slimkit.registry import adapter_for, adapter_for_copy

from frameworks import BN_EPS, MLP_HIDDEN, mlp_data, mlp_twin

DENSE = ("fc1", "fc2", "logits")
#: mode under test -> kernel mode, activation mode, method, and the roles (act, kernel, bias) of the
#: sites given calibrated parameters before the model runs (ema and lsq then train one epoch).
MODES = {
    "fixed": ("fixed", "fixed", "static", ("act", "kernel", "bias")),
    "ema": ("minmax", "ema", "qat", ()),
    "lsq": ("lsq", "lsq", "qat", ("kernel",)),
    "minmax": ("minmax", "fixed", "qat", ("act", "bias")),
    "dynamic": ("fixed", "dynamic", "dynamic", ("kernel",)),
    "dorefa": ("dorefa", "dorefa", "qat", ()),
    "bnn": ("bnn", "bnn", "qat", ()),
}


def role(key: str) -> str:
    return key.rsplit("/", 1)[1] if key.endswith(("/kernel", "/bias")) else "act"


def make_plan(adapter, kernel_mode: str, act_mode: str, method: str) -> QuantPlan:
    infos = {layer.name: layer for layer in adapter.layers()}
    kernels = {name: specs.kernel_spec(WeightQuant(), infos[name], kernel_mode) for name in DENSE}
    act = specs.activation_spec(ActivationQuant(), act_mode)
    return plan_sites(adapter.graph(mlp_data(2)[0]), kernels, act, method, quantize_outputs=act_mode != "dynamic")


def calibrated(adapter, plan: QuantPlan, x: np.ndarray) -> dict[str, SiteParams]:
    """Min-max parameters of every site from the float model, as a static calibration sets them."""
    outs = adapter.layer_outputs(x, [a.node for a in plan.acts])
    params = {a.node: SiteParams.of(specs.activation_params(outs[a.node].min(), outs[a.node].max(), a.spec))
              for a in plan.acts}
    for site in plan.layers:
        kp = specs.kernel_params(adapter.get_weights(site.layer)["kernel"], site.kernel)
        params[f"{site.layer}/kernel"] = SiteParams.of(kp)
        if site.input is not None:
            params[f"{site.layer}/bias"] = specs.bias_params(params[site.input].scale, kp.scale, kp.axis)
    return params


class Losses(TrainHooks):
    def __init__(self) -> None:
        self.epochs: list[float] = []

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(logs["loss"])


# ------------------------------------------------------------------------------- numpy reference
@dataclass
class NumpySite:
    """A :class:`slimkit.quant.fake_quant.SiteState` over numpy arrays."""

    site: str
    mode: str
    qmin: int
    qmax: int
    symmetric: bool
    axis: int | None
    momentum: float
    role: str
    scale: Any
    zero_point: Any
    range_min: Any
    range_max: Any
    ready: Any

    @classmethod
    def of(cls, key: str, spec, state: dict[str, np.ndarray], role: str) -> "NumpySite":
        scale = np.asarray(state.get("scale", 1.0), np.float32)
        nan = np.float32(np.nan)
        return cls(key, spec.mode, spec.qmin, spec.qmax, spec.symmetric, spec.axis, spec.momentum, role,
                   scale, np.asarray(state.get("zero_point", 0), np.float32),
                   np.asarray(state.get("min", nan), np.float32), np.asarray(state.get("max", nan), np.float32),
                   np.float32(1.0 if "scale" in state else 0.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(fake_quant.forward(NUMPY_OPS, self, np.asarray(x, np.float32), False), np.float32)


def reference_sites(fq) -> dict[str, NumpySite]:
    """Every site of ``fq`` in numpy, in the mode and state the adapter reports."""
    plan, state = fq.quant_plan(), fq.quant_state()
    sites = {a.node: NumpySite.of(a.node, a.spec, state[a.node], "activation") for a in plan.acts}
    for s in plan.layers:
        sites[f"{s.layer}/kernel"] = NumpySite.of(f"{s.layer}/kernel", s.kernel, state[f"{s.layer}/kernel"], "kernel")
        bias = state.get(f"{s.layer}/bias", {})
        sites[f"{s.layer}/bias"] = NumpySite.of(f"{s.layer}/bias", specs.bias_spec(s.kernel), bias, "bias")
    return sites


def assert_computes_the_reference(fq, graph, x: np.ndarray) -> None:
    """Each node of the float graph, fed its input as the fake-quant model's sites quantize it, in
    numpy float64, equals the fake-quant model's own output of that node; ``predict`` is the last
    node's output through its site. No rounding tie can flip: every comparison is before a site."""
    sites = reference_sites(fq)
    infos = {layer.name: layer for layer in fq.layers()}
    nodes = graph.nodes[:-1]  # up to the last layer; the output node has no op
    outs = fq.layer_outputs(x, [n.name for n in nodes])
    np.testing.assert_array_equal(outs[nodes[0].name], x)

    def fed(name: str) -> np.ndarray:
        v = outs[name]
        return (sites[name](v) if name in sites else v).astype(np.float64)

    for node in nodes[1:]:
        v = fed(node.inputs[0])
        if node.op == "dense":
            w = fq.get_weights(node.layer)
            kernel = to_canonical(sites[f"{node.layer}/kernel"](w["kernel"]), infos[node.layer].kernel_perm)
            expected = v @ kernel.astype(np.float64).T + sites[f"{node.layer}/bias"](w["bias"])
        elif node.op == "batchnorm":
            bn = fq.get_weights(node.layer)
            expected = (v - bn["mean"]) / np.sqrt(bn["var"].astype(np.float64) + BN_EPS) * bn["gamma"] + bn["beta"]
        else:
            assert node.attrs.get("quant") == "relu", node
            expected = np.maximum(v, 0.0)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(outs[node.name], expected, atol=2e-6 * scale, rtol=0, err_msg=node.name)
    last = fed(nodes[-1].name)
    np.testing.assert_allclose(fq.predict(x), last, atol=1e-6 * max(1.0, float(np.abs(last).max())), rtol=0)


# ----------------------------------------------------------------------------------------- modes
@pytest.mark.parametrize("mode", list(MODES))
def test_fake_quant_model_computes_cores_reference(framework, mode):
    kernel_mode, act_mode, method, roles = MODES[mode]
    float_adapter = adapter_for(mlp_twin(framework))
    graph = float_adapter.graph(mlp_data(2)[0])
    plan = make_plan(float_adapter, kernel_mode, act_mode, method)
    x, y = mlp_data(64)
    fq = float_adapter.with_fake_quant(plan)
    assert fq.quant_plan() == plan and float_adapter.quant_plan() is None
    assert [layer.name for layer in fq.layers()] == [layer.name for layer in float_adapter.layers()]
    state = fq.quant_state()
    assert set(state) == set(plan.site_keys())
    if mode == "fixed":  # identity until set
        assert all(value == {} for value in state.values())
        np.testing.assert_array_equal(fq.predict(x), float_adapter.predict(x))
    params = calibrated(float_adapter, plan, mlp_data(64, seed=7)[0])
    fq.set_quant_params({k: p for k, p in params.items() if role(k) in roles})
    if act_mode in ("ema", "lsq"):
        fq.fit((x, y), FineTune(epochs=1, batch_size=32, optimizer="sgd", learning_rate=1e-3, shuffle=False),
               TrainHooks())
    state = fq.quant_state()
    input_site = plan.acts[0].node
    if act_mode == "ema":  # first batch sets the range, the second moves it by 1 - momentum
        first, second = x[:32], x[32:]
        np.testing.assert_allclose(state[input_site]["min"], 0.9 * first.min() + 0.1 * second.min(), rtol=1e-6)
        np.testing.assert_allclose(state[input_site]["max"], 0.9 * first.max() + 0.1 * second.max(), rtol=1e-6)
        assert all(np.all(np.isfinite(state[a.node]["min"])) for a in plan.acts)
    if act_mode == "lsq":  # started from the first batch: 2 mean|x| / sqrt(qmax), then learned a little
        expected = 2 * np.abs(x[:32]).mean() / np.sqrt(plan.acts[0].spec.qmax)
        np.testing.assert_allclose(state[input_site]["scale"], expected, rtol=1e-2)
    if kernel_mode == "minmax":  # ranges of the current kernels: nothing held
        assert all(state[f"{s.layer}/kernel"] == {} for s in plan.layers)
    if act_mode == "dynamic":  # ranges of each tensor at run time
        assert all(state[a.node] == {} for a in plan.acts)
    assert_computes_the_reference(fq, graph, x)
    assert np.abs(fq.predict(x) - fq.without_fake_quant().predict(x)).max() > 1e-3  # it does quantize


def test_lsq_scales_learn_where_the_adapter_can(framework):
    float_adapter = adapter_for(mlp_twin(framework))
    plan = make_plan(float_adapter, "lsq", "lsq", "qat")
    fq = float_adapter.with_fake_quant(plan)
    params = calibrated(float_adapter, plan, mlp_data(64)[0])
    kernels = {k: p for k, p in params.items() if k.endswith("/kernel")}
    fq.set_quant_params(kernels)
    assert {k for k, v in fq.quant_state().items() if v} == set(kernels)  # activations start in training
    fq.fit(mlp_data(64), FineTune(epochs=2, batch_size=16, optimizer="adam", learning_rate=1e-2), TrainHooks())
    state = fq.quant_state()
    assert [s.kernel.mode for s in fq.quant_plan().layers] == ["lsq"] * 3
    for key, p in kernels.items():
        assert state[key]["scale"].shape == p.scale.shape and np.all(state[key]["scale"] > 0)
        np.testing.assert_array_equal(state[key]["zero_point"], p.zero_point)
        if framework.learns_lsq:
            assert np.abs(state[key]["scale"] / p.scale - 1).max() > 1e-3, f"{key} did not learn"
        else:
            np.testing.assert_array_equal(state[key]["scale"], p.scale)


# --------------------------------------------------------------------------------- params and state
def test_set_quant_params_round_trips_through_quant_state(framework):
    float_adapter = adapter_for(mlp_twin(framework))
    plan = make_plan(float_adapter, "fixed", "fixed", "static")
    fq = float_adapter.with_fake_quant(plan)
    params = calibrated(float_adapter, plan, mlp_data(64)[0])
    fq.set_quant_params(params)
    state = fq.quant_state()
    assert set(state) == set(params) == set(plan.site_keys())
    for key, p in params.items():
        assert set(state[key]) == {"scale", "zero_point"}, key
        np.testing.assert_array_equal(state[key]["scale"], np.broadcast_to(p.scale, state[key]["scale"].shape))
        np.testing.assert_array_equal(state[key]["zero_point"], p.zero_point)
    assert state["fc1/kernel"]["scale"].shape == (MLP_HIDDEN,) and state[plan.acts[0].node]["scale"].shape == ()
    assert fq.quant_plan() == plan


def test_quant_plan_reports_the_modes_after_set_quant_params(framework):
    float_adapter = adapter_for(mlp_twin(framework))
    plan = make_plan(float_adapter, "lsq", "ema", "qat")
    fq = float_adapter.with_fake_quant(plan)
    params = calibrated(float_adapter, plan, mlp_data(64)[0])
    first, second = plan.acts[0].node, plan.acts[1].node
    fq.set_quant_params({first: params[first], "fc2/kernel": params["fc2/kernel"]})
    modes = fq.quant_plan()
    assert modes.act(first).spec.mode == "fixed" and modes.act(second).spec.mode == "ema"
    assert [s.kernel.mode for s in modes.layers] == ["lsq"] * 3  # lsq keeps learning from there
    assert fq.quant_state()[first]["scale"] == params[first].scale
    dynamic = float_adapter.with_fake_quant(make_plan(float_adapter, "fixed", "dynamic", "dynamic"))
    site = dynamic.quant_plan().acts[0]
    dynamic.set_quant_params({site.node: params[plan.acts[0].node], "fc1/kernel": params["fc1/kernel"]})
    assert dynamic.quant_plan().act(site.node).spec.mode == "dynamic"  # its range stays the tensor's
    assert dynamic.quant_state()[site.node] == {}


def test_unknown_site_keys_and_bad_params_are_rejected_by_name(framework):
    float_adapter = adapter_for(mlp_twin(framework))
    plan = make_plan(float_adapter, "fixed", "fixed", "static")
    fq = float_adapter.with_fake_quant(plan)
    params = calibrated(float_adapter, plan, mlp_data(64)[0])
    act = plan.acts[1].node
    with pytest.raises(KeyError, match="'fc9/kernel'"):
        fq.set_quant_params({act: params[act], "fc9/kernel": params["fc1/kernel"]})
    with pytest.raises(KeyError, match="'fc1/kernel'"):
        float_adapter.set_quant_params({"fc1/kernel": params["fc1/kernel"]})  # a float model has no sites
    with pytest.raises(ValueError, match=f"'{act}'"):
        fq.set_quant_params({act: params["fc1/kernel"]})  # per-channel params on a per-tensor site
    with pytest.raises(ValueError, match="'fc2/kernel'"):
        fq.set_quant_params({"fc2/kernel": params["logits/kernel"]})  # 5 channels for 32
    bad = params[act]
    with pytest.raises(ValueError, match=f"'{act}'"):
        fq.set_quant_params({act: SiteParams(np.float32(-0.1), bad.zero_point, bad.qmin, bad.qmax)})
    assert all(value == {} for value in fq.quant_state().values())  # nothing was set by a bad call


def test_a_site_on_no_node_is_refused_by_name(framework):
    adapter = adapter_for(mlp_twin(framework))
    spec = specs.activation_spec(ActivationQuant(), "fixed")
    with pytest.raises(UnsupportedModelError, match="'nowhere'"):
        adapter.with_fake_quant(QuantPlan((ActSite("nowhere", spec),), ()))


# ------------------------------------------------------------------------------ masks and float copy
def test_masks_hold_through_qat_and_without_fake_quant_gives_the_float_model(framework, tmp_path):
    x, y = mlp_data(64)
    source = adapter_for_copy(mlp_twin(framework))
    rng = np.random.default_rng(3)
    masks = {name: (rng.random(source.get_weights(name)["kernel"].shape) > 0.5).astype(np.float32)
             for name in ("fc1", "logits")}
    for name, mask in masks.items():
        source.set_mask(name, mask)
    plan = make_plan(source, "minmax", "ema", "qat")
    fq = source.with_fake_quant(plan)
    before = fq.get_weights("fc1")["kernel"]
    losses = Losses()
    fq.fit((x, y), FineTune(epochs=3, batch_size=16, learning_rate=1e-2), losses)
    assert len(losses.epochs) == 3 and losses.epochs[-1] < losses.epochs[0]  # it learns through the sites
    assert np.mean(fq.get_weights("fc1")["kernel"] != before) > 0.4
    for name, mask in masks.items():
        assert np.all(fq.get_weights(name)["kernel"][mask == 0] == 0.0), name
    expected = fq.predict(x)
    flt = fq.without_fake_quant()
    assert flt.quant_plan() is None and fq.quant_plan() is not None
    assert framework.is_plain(flt.model)
    assert [n.name for n in flt.graph(x).nodes] == [n.name for n in source.graph(x).nodes]
    for name in ("fc1", "bn", "fc2", "logits"):
        for key, value in flt.get_weights(name).items():
            np.testing.assert_array_equal(value, fq.get_weights(name)[key], err_msg=f"{name}/{key}")
    for name, mask in masks.items():
        assert np.all(flt.get_weights(name)["kernel"][mask == 0] == 0.0), name
    assert np.abs(flt.predict(x) - expected).max() > 1e-3  # float again
    np.testing.assert_array_equal(fq.predict(x), expected)  # the fake-quant model is unchanged
    stripped = adapter_for(adapter_for_copy(fq.model).strip())
    assert stripped.quant_plan() == fq.quant_plan()
    np.testing.assert_array_equal(stripped.predict(x), expected)
    assert source.quant_plan() is None
    # the fake-quant model is never exported as float: slimkit exports its float copy and quantizes that
    with pytest.raises(ExportError, match="without_fake_quant" if framework.exports_onnx else None):
        fq.export_onnx(str(tmp_path / "fq.onnx"), x[:1], 17)
    assert list(tmp_path.iterdir()) == []
