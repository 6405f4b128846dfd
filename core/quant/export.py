"""Quantized ONNX export: the float graph from the adapter, then Q/DQ with slimkit's own parameters.

Why not export the fake-quant graph directly: tf2onnx folds a per-channel weight fake-quant into an
fp32 initializer (onnxruntime then runs float convolutions) and torch.onnx fails on per-channel
fake-quant of a trainable weight. Exporting the float model through the path every model already
uses, then inserting Q/DQ with the parameters the framework simulated, gives one implementation
for both frameworks, int8 initializers (a ~4x smaller file) and the exact scales of the simulation.
The ONNX rewriting lives in the deployment layer (``slimkit.deploy``); this module decides and verifies.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from slimkit import checks, deferred, deploy
from slimkit.data import PROBE_BATCH, at_least_two, head
from slimkit.deploy.ops import ACT_RANGES, INTEGER_OPS
from slimkit.quant.fake_quant import mode_of
from slimkit.quant.known_outputs import MAPPING_SAMPLES, KnownOutputs
from slimkit.adapter import ModelAdapter
from slimkit.errors import ExportError
from slimkit.quant.plan import QuantPlan, SiteParams, grid_source
from slimkit.quant.reuse import export_float
from slimkit.quant.specs import INT32_RANGE
from slimkit.recipe import OnnxExport
from slimkit.report import QuantExportRow


#: Kernels export as int8: any grid within it (a k-bit grid in an 8-bit container runs the same integer kernels).
INT8 = (-128, 127)


def site_params(adapter: ModelAdapter, plan: QuantPlan) -> dict[str, SiteParams]:
    """Every fixed site's parameters, as the model holds them.

    Raises:
        ExportError: a site was never calibrated or trained, has an integer range onnxruntime cannot run
            (activations: not the whole 8-bit range; kernels: beyond int8), or a mode no Q/DQ pair computes.
    """
    state = adapter.quant_state()
    params: dict[str, SiteParams] = {}
    for a in plan.acts:
        mode = mode_of(a.spec.mode)
        if mode.runtime_range:
            continue
        if mode.export_refusal:
            raise ExportError(f"activation {a.node!r} ({plan.act_roles(a.node)}): {mode.export_refusal}")
        if (a.spec.qmin, a.spec.qmax) not in ACT_RANGES:
            # A k-bit range in an 8-bit container would saturate at the container's bounds, not the range's.
            raise ExportError(
                f"activation {a.node!r} is quantized to {a.spec.bits} bits; onnxruntime runs 8-bit activations, "
                f"whose QuantizeLinear saturates at [0, 255] or [-128, 127], not at this site's [{a.spec.qmin}, "
                f"{a.spec.qmax}], so only a QAT simulation of it exists (use bits: 8 to export, or learn: dorefa, "
                "whose k-bit grid ends where its clip to [0, 1] does)")
        params[a.node] = _fixed(a.node, a.spec, state.get(a.node, {}))
    for s in plan.layers:
        if not (INT8[0] <= s.kernel.qmin and s.kernel.qmax <= INT8[1]):
            raise ExportError(
                f"layer {s.layer!r}: its {s.kernel.bits}-bit weights lie on the integers [{s.kernel.qmin}, "
                f"{s.kernel.qmax}] (8-bit DoReFa weights: 256 odd multiples of 1/255, with no zero level), beyond "
                "int8, and onnxruntime's integer kernels take int8 weights; train DoReFa weights with bits 7 or "
                "less to export")
        params[f"{s.layer}/kernel"] = _fixed(f"{s.layer}/kernel", s.kernel, state.get(f"{s.layer}/kernel", {}))
        bias = state.get(f"{s.layer}/bias", {})
        if "scale" in bias:
            params[f"{s.layer}/bias"] = SiteParams(np.asarray(bias["scale"], np.float32),
                                                   np.asarray(bias["zero_point"], np.int32),
                                                   *INT32_RANGE, 0 if np.ndim(bias["scale"]) else None)
    return params


def _fixed(key: str, spec: Any, state: dict[str, np.ndarray]) -> SiteParams:
    if not mode_of(spec.mode).exportable or "scale" not in state:
        raise ExportError(f"quantization site {key!r} has no calibrated parameters (mode {spec.mode}); "
                          "an uncalibrated range cannot be exported: run compress() with a quantize stage")
    scale = np.asarray(state["scale"], np.float32)
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ExportError(f"quantization site {key!r} has an invalid scale {scale!r}; it was never calibrated")
    return SiteParams(scale, np.asarray(state["zero_point"], np.int32), spec.qmin, spec.qmax,
                      spec.axis if scale.ndim else None)


def output_step(adapter: ModelAdapter, plan: QuantPlan, params: dict[str, SiteParams],
                x: np.ndarray) -> tuple[float | None, float | None]:
    """The scale and the float range ``(qmax - qmin) * scale`` of the model's output when a site
    quantizes it, else ``(None, None)``."""
    grid = plan.output_grid
    if grid is None:  # a plan made elsewhere: read the graph (a capture and shape pass on PyTorch)
        graph = adapter.graph(head(x, 1))
        outputs = [n for n in graph.nodes if n.op == "output"]
        grid = (grid_source(graph, outputs[0].inputs[0]),) if len(outputs) == 1 else ()
    if len(grid) != 1:
        return None, None
    p = params.get(grid[0])
    if p is None:
        return None, None
    scale = float(np.max(p.scale))
    return scale, scale * (p.qmax - p.qmin)


class _Fidelity:
    """How far onnxruntime's int8 output and the simulated output each are from the float model."""

    def __init__(self, fp32: np.ndarray, simulated: np.ndarray, ort: np.ndarray) -> None:
        def rms(a: np.ndarray) -> float:
            return float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0

        self.sim_rms, self.ort_rms = rms(simulated - fp32), rms(ort - fp32)
        self.sim_max = float(np.max(np.abs(simulated - fp32))) if fp32.size else 0.0
        self.ort_max = float(np.max(np.abs(ort - fp32))) if fp32.size else 0.0
        # float noise where quantization changed nothing at all (a model of exactly representable values)
        self._floor = 1e-6 * max(1.0, float(np.max(np.abs(fp32))) if fp32.size else 1.0)

    def ort_as_good(self, ratio: float) -> bool:
        """onnxruntime's error at most ``ratio`` times the simulation's, in RMS and at the worst element."""
        return self.ort_rms <= ratio * self.sim_rms + self._floor and self.ort_max <= ratio * self.sim_max + self._floor


def export_quantized(adapter: ModelAdapter, plan: QuantPlan, tmp: Path, x: np.ndarray,
                     settings: OnnxExport, dest: Path,
                     known: KnownOutputs | None = None) -> tuple[float, QuantExportRow]:
    """Writes the QDQ model for ``adapter``'s fake-quant model to ``tmp`` and verifies it.

    The check (see :class:`slimkit.recipe.OnnxExport`): onnxruntime's output equals the simulated
    output within one step of the output's scale (or ``quant_tolerance`` of its range), or else is
    as faithful to the float model as the simulation (``quant_error_ratio``). Otherwise the deployed
    integer kernels do not compute what was simulated (a wrong scale, u8s8 saturation on CPUs without
    VNNI, a mis-mapped tensor), and nothing is written.

    ``known``: the float and simulated outputs the quantize stage computed; used instead of running both
    models again when they cover the probe and the model still gives them.

    Returns:
        The max abs difference found and the report row (sizes, latency, fused integer ops).
    """
    if known is not None and not known.describes(adapter):
        known = None  # the model changed since the stage: nothing it recorded applies
    if plan.output_grid is None and known is not None:
        plan = dataclasses.replace(plan, output_grid=known.output_grid)
    params = site_params(adapter, plan)
    float_adapter = adapter.without_fake_quant(read_only=True)  # dropped before this function returns
    # The float twin stays (in a folder of its own) until its latency is read: see slimkit.deferred.
    folder = Path(tempfile.mkdtemp(prefix="slimkit-float-"))
    float_path = folder / "model.onnx"
    kept = False
    try:
        export_float(float_adapter, str(float_path), head(x, 1), settings.opset)  # once per run when reusing
        # no more inputs than the stage's fidelity check compares (it reads as many as the outputs need),
        # whose outputs are then known: neither model runs again
        count = checks.probe_samples() if known is None else \
            min(checks.probe_samples(), checks.fidelity_samples(known.reference))
        probe = at_least_two(head(x, count))
        # Tensors are found by their values on a few inputs (every tensor of the float graph is kept for
        # them, so memory grows with this count); the file is then verified on the whole probe.
        few = at_least_two(head(x, MAPPING_SAMPLES))
        kernels = {s.layer: float_adapter.read_weights(s.layer)["kernel"] for s in plan.layers}
        sites = [a.node for a in plan.acts]
        # calibration took the sites' moments on these inputs: the float model need not run again for them
        acts = known.moments_on(few, sites) if known is not None else None
        if acts is None:
            acts = float_adapter.layer_outputs(few, sites)
        runtime = deploy.load_runtime()
        runtime.write_qdq(str(float_path), str(tmp), plan, params, kernels, acts, few)
        fp32, reference = _outputs(adapter, float_adapter, probe, known)
        got, optimized_proto = runtime.run_optimized(str(tmp), probe)  # the report's ops from the same session
        if reference.shape != got.shape:
            raise ExportError(f"{dest}: quantized ONNX output shape {got.shape} != framework output {reference.shape}")
        diff = float(np.max(np.abs(reference - got))) if reference.size else 0.0
        step, span = output_step(float_adapter, plan, params, x)
        if span is None:  # a float op (softmax, say) after the last quantized tensor
            span = float(np.max(reference) - np.min(reference)) if reference.size else 0.0
        bound = max(settings.tolerance * max(1.0, float(np.max(np.abs(reference)))),
                    settings.quant_tolerance * span, 1.001 * (step or 0.0))
        fidelity = _Fidelity(fp32, reference, got)
        if settings.verify and not diff <= bound and not fidelity.ort_as_good(settings.quant_error_ratio):
            reduced = all(s.kernel.qmax < 127 for s in plan.layers)
            hint = ("" if reduced else " Weights use the full int8 range: onnxruntime's u8s8 kernels on CPUs "
                    "without VNNI saturate with it; quantize with weights.reduce_range: true.")
            raise ExportError(
                f"{dest}: onnxruntime's int8 output differs from the simulated model by {diff:.4g} (max abs), "
                f"above the bound {bound:.4g} (one output step, or export.onnx.quant_tolerance of the output's "
                f"range), and is further from the float model than the simulation is (RMS {fidelity.ort_rms:.4g} "
                f"vs {fidelity.sim_rms:.4g}, max {fidelity.ort_max:.4g} vs {fidelity.sim_max:.4g}; "
                f"export.onnx.quant_error_ratio allows {settings.quant_error_ratio:g}x); the file was not "
                f"written.{hint}")
        inspect = deploy.load_inspect()
        optimized = optimized_proto.graph
        ops = collections.Counter(n.op_type for n in optimized.node)
        integer_ops = {k: int(v) for k, v in ops.items() if k in INTEGER_OPS}
        # The report's indication, not a benchmark (benchmarks/ interleaves rounds): a median of 5 runs
        # after one warm-up, taken when the row is first read, so an export does not wait for it.
        one = head(x, 1)
        lat_f = _float_latency(float_adapter, float_path, folder, one, settings.opset)
        kept = isinstance(lat_f, deferred.Pending)
        lat_q = deferred.of_file(dest, lambda p: deploy.load_bench().latency_ms(str(p), one, repeats=5, warmup=1),
                                 written=tmp)
        row = QuantExportRow(str(dest), os.path.getsize(float_path), os.path.getsize(tmp), lat_f, lat_q,
                             integer_ops, diff, step, bound, fidelity.ort_rms, fidelity.sim_rms,
                             inspect.float_between_quantized(optimized))
        return diff, row
    finally:
        if not kept:
            shutil.rmtree(folder, ignore_errors=True)


def _outputs(adapter: ModelAdapter, float_adapter: ModelAdapter, probe: np.ndarray,
             known: KnownOutputs | None) -> tuple[np.ndarray, np.ndarray]:
    """The float and the simulated model's outputs on ``probe``: recorded ones when ``known`` covers the
    probe and the model still holds the arrays they were computed with; else both models run now."""
    recorded = known.covering(probe) if known is not None else None  # known describes the model
    if recorded is not None:
        return recorded
    return float_adapter.predict(probe, PROBE_BATCH), adapter.predict(probe, PROBE_BATCH)


def _float_latency(float_adapter: ModelAdapter, path: Path, folder: Path, one: Any, opset: int) -> Any:
    """The float file's latency, measured when first read (the file kept in ``folder`` until then);
    within a tuning run (``reusing``) measured once per float file, which every trial of the run exports
    identically (those trials' files go at once)."""
    from slimkit.quant import reuse

    def measure(p: Path) -> float:
        return deploy.load_bench().latency_ms(str(p), one, repeats=5, warmup=1)

    cache = reuse.active()
    if cache is None:
        return deferred.of_file(path, measure, owned_folder=folder)
    return cache.remember("float_latency", ("float_latency",) + reuse.export_key(float_adapter, one, opset),
                          lambda: measure(path))
