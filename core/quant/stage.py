"""The steps every quantize stage shares: fold, select, plan, compute fixed parameters, report.

A stage ends with a model whose every site is in ``fixed`` mode: the numpy parameters in it are the
ones the ONNX export writes, so the framework simulates exactly what onnxruntime runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from slimkit.adapter import LayerInfo, ModelAdapter, QuantAdapter, StructureAdapter, require
from slimkit.data import head
from slimkit.errors import DataError, RecipeError, UnsupportedModelError
from slimkit.graph import LayerGraph
from slimkit.quant.bn_fold import fold_batchnorm
from slimkit.quant.fake_quant import frozen_spec, mode_of
from slimkit.quant.methods import method_of
from slimkit.quant.overrides import check_overrides
from slimkit.quant.plan import FakeQuantSpec, QuantPlan, SiteParams, plan_sites
from slimkit.quant.specs import activation_params, bias_params, kernel_params, kernel_spec, weight_settings
from slimkit.recipe import QuantizeStage
from slimkit.report import QuantRow
from slimkit.quant.weight_only import snap_weight_only, weight_only_layers
from slimkit.selection import select_layers

@dataclass(frozen=True)
class Prepared:
    """A float model ready for quantization and the plan of its sites."""

    adapter: ModelAdapter
    plan: QuantPlan
    layers: tuple[LayerInfo, ...]
    folded: tuple[tuple[str, str], ...]
    graph: LayerGraph
    skipped: tuple[str, ...] = ()  # selected layers left float: no node of their own in the graph
    weight_only: tuple[str, ...] = ()  # layers whose matrices were snapped to int8 (run in float)


def prepare(work: ModelAdapter, stage: QuantizeStage, field: str, sample: np.ndarray | None,
            masked: tuple[str, ...] = ()) -> Prepared:
    """Folds batch norms, selects the layers and plans the sites.

    Args:
        work: the model so far (float, maybe masked by earlier prune stages).
        stage: the quantize stage.
        field: recipe path of the stage, for messages.
        sample: inputs for tracing (PyTorch needs them).
        masked: layers earlier stages pruned; their zeros are masked again after folding so that
            QAT keeps them.

    Raises:
        DataError: no sample to trace the model with.
        RecipeError: the selector matches no quantizable layer.
    """
    require(work, QuantAdapter, f"{field}: quantization")
    require(work, StructureAdapter, f"{field}: quantization (planning sites on the model's graph)")
    if work.quant_plan() is not None:
        raise UnsupportedModelError(
            f"{field}: the model is quantized already (it carries the fake-quant sites of an earlier compress); "
            "quantize the float model it came from (a recipe may prune first, then quantize, in one run)")
    if sample is None:
        raise DataError(f"calib_data: {field} needs input samples (pass calib_data= or train_data=)")
    source = work
    folded: list[tuple[str, str]] = []
    try:
        if stage.fold_batchnorm:
            work, folded = fold_batchnorm(work, sample)
        for info in work.layers() if folded else ():
            if info.name in masked:
                work.set_mask(info.name, (work.get_weights(info.name)["kernel"] != 0).astype(np.float32))
        graph = work.graph(sample)
    except Exception:
        # as before any capture: inputs the model refuses are named as the user's data, whatever failed
        source.check_input(head(sample, 1), "calib_data")
        raise
    # An adapter whose capture ran the model on the sample knows the inputs fit: no forward pass here.
    work.check_input(head(sample, 1), "calib_data")
    method = method_of(stage)
    layers = select_layers(work.layers(), stage.layers, method.kinds, f"{field}.layers")
    check_overrides(stage, layers, field)
    specs = {}
    for info in layers:
        w = weight_settings(stage, info)
        specs[info.name] = kernel_spec(w, info, method.kernel_mode(w))
    # A layer with no node of its own (weights tied to another layer, or called more than once)
    # cannot get sites: it stays float, and the report says so.
    own = {n.layer for n in graph.nodes if n.layer is not None}
    skipped = tuple(info.name for info in layers if info.name not in own)
    if skipped and len(skipped) == len(layers):
        raise RecipeError(f"{field}.layers: none of the selected layers ({', '.join(skipped[:5])}) has a node of its "
                          "own in the model's graph (weights tied to another layer, or called more than once); "
                          "quantization needs one")
    specs = {name: spec for name, spec in specs.items() if name not in skipped}
    plan = plan_sites(graph, specs, method.activation_spec(stage.activations), stage.method,
                      method.quantizes_outputs)
    check_act_modes(graph, plan, field)
    integer = {s.layer for s in plan.layers}
    weight_only = snap_weight_only(work, weight_only_layers(work.layers(), stage.layers, integer, skipped))
    return Prepared(work, plan, tuple(i for i in layers if i.name not in skipped), tuple(sorted(folded)), graph,
                    skipped, tuple(weight_only))


def check_act_modes(graph: LayerGraph, plan: QuantPlan, field: str) -> None:
    """Refuses activation sites their mode cannot quantize (:meth:`slimkit.quant.modes.Mode.site_problem`).

    Raises:
        RecipeError: naming the recipe's ``activations.learn``, the tensor, the layers reading or
            writing it, and why.
    """
    for a in plan.acts:
        problem = mode_of(a.spec.mode).site_problem(graph, a.node)
        if problem is None:
            continue
        roles = plan.act_roles(a.node)
        which = "those layers" if " and " in roles else "the layer"
        raise RecipeError(
            f"{field}.activations.learn: {a.spec.mode} cannot quantize tensor {a.node!r} ({roles}): "
            f"{problem}; exclude {which} from {field}.layers (kept float) or choose another activations.learn")


def fixed_plan(plan: QuantPlan) -> QuantPlan:
    """The same sites, frozen: in ``fixed`` mode, except those the deployed model computes in their own
    mode too (``dynamic``'s run-time range; see :meth:`slimkit.quant.modes.Mode.frozen`)."""
    return dataclasses.replace(
        plan, acts=tuple(dataclasses.replace(a, spec=frozen_spec(a.spec, "activation")) for a in plan.acts),
        layers=tuple(dataclasses.replace(s, kernel=frozen_spec(s.kernel, "kernel")) for s in plan.layers))


def weight_params(adapter: ModelAdapter, plan: QuantPlan, acts: dict[str, SiteParams],
                  learned: dict[str, SiteParams] | None = None) -> dict[str, SiteParams]:
    """Kernel params (min-max of the float kernels, or ``learned``) and bias params of every layer whose
    input has parameters in ``acts`` (the others keep float biases)."""
    learned = learned or {}
    out: dict[str, SiteParams] = {}
    for site in plan.layers:
        weights = adapter.read_weights(site.layer)
        key = f"{site.layer}/kernel"
        kernel = learned.get(key) or SiteParams.of(kernel_params(weights["kernel"], site.kernel))
        out[key] = kernel
        if "bias" in weights and site.input in acts:
            out[f"{site.layer}/bias"] = bias_params(acts[site.input].scale, kernel.scale, kernel.axis)
    return out


def calibrated_acts(plan: QuantPlan, ranges: dict[str, tuple[float, float]]) -> dict[str, SiteParams]:
    """Activation params from calibrated ranges."""
    return {a.node: SiteParams.of(activation_params(*ranges[a.node], a.spec)) for a in plan.acts
            if not mode_of(a.spec.mode).runtime_range}


def finish(prepared_float: ModelAdapter, plan: QuantPlan, params: dict[str, SiteParams]) -> ModelAdapter:
    """The fixed-mode fake-quant model holding ``params``."""
    sim = prepared_float.with_fake_quant(fixed_plan(plan))
    sim.set_quant_params(params)
    return sim


def quant_rows(plan: QuantPlan, params: dict[str, SiteParams], float_adapter: ModelAdapter,
               ranges: dict[str, tuple[float, float]]) -> list[QuantRow]:
    """Report rows: every site with its scales, zero points and the float range it covers."""
    rows = []
    for a in plan.acts:
        p = params.get(a.node)
        if p is None:  # computed at run time (dynamic ranges, bnn's sign): no fixed parameters
            lo, hi = ranges.get(a.node, (float("nan"), float("nan")))
            rows.append(QuantRow(a.node, f"activation ({a.spec.mode})", a.spec.bits, 1, float("nan"), float("nan"),
                                 (), lo, hi))
            continue
        lo, hi = ranges.get(a.node, _covered(p))
        rows.append(_row(a.node, "activation", a.spec.bits, p, lo, hi))
    for s in plan.layers:
        kernel = float_adapter.read_weights(s.layer)["kernel"]
        p = params[f"{s.layer}/kernel"]
        rows.append(_row(f"{s.layer}/kernel", "kernel", s.kernel.bits, p, float(kernel.min()), float(kernel.max())))
        b = params.get(f"{s.layer}/bias")
        if b is not None:
            bias = float_adapter.read_weights(s.layer)["bias"]
            rows.append(_row(f"{s.layer}/bias", "bias", 32, b, float(bias.min()), float(bias.max())))
    return rows


def _covered(p: SiteParams) -> tuple[float, float]:
    scale, zp = np.asarray(p.scale, np.float64), np.asarray(p.zero_point, np.float64)
    return float(np.min((p.qmin - zp) * scale)), float(np.max((p.qmax - zp) * scale))


def _row(site: str, kind: str, bits: int, p: SiteParams, lo: float, hi: float) -> QuantRow:
    scale = np.atleast_1d(np.asarray(p.scale, np.float64))
    zps = tuple(int(z) for z in np.unique(np.asarray(p.zero_point)))
    return QuantRow(site, kind, bits, int(scale.size), float(scale.min()), float(scale.max()), zps, lo, hi)
