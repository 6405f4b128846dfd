"""Quantize an exported float ONNX model with slimkit's own scales: QuantizeLinear / DequantizeLinear.

The framework model is exported to float ONNX by the usual path; zero Pads are folded into the
convolutions that read them (:mod:`.cleanup`); :func:`insert_qdq` then finds every site of the :class:`~slimkit.quant.plan.QuantPlan` in that graph (:mod:`.mapping`) and rewrites it:

Static plans (``static``, ``qat``):

* each quantized layer's weight becomes an int8 initializer + DequantizeLinear (per channel on the
  ONNX weight's output-channel axis: Conv 0, Gemm 0 with ``transB=1`` else 1, MatMul 1); its bias an
  int32 initializer (scale ``input_scale * kernel_scale``, zero point 0) + DequantizeLinear. A Keras
  Dense (MatMul + Add of a constant bias) on a 2-D input becomes one Gemm;
* each activation site's tensor gets QuantizeLinear -> DequantizeLinear, every reader reading the
  DequantizeLinear output;
* where a layer's data input reaches its input site only through ops that keep values on the grid
  (Transpose, Reshape, Flatten, MaxPool, zero Pad, Squeeze, Unsqueeze, Identity, Dropout), every such
  op's output gets another Q/DQ pair with the same parameters, and where a layer's output reaches its
  output site through Relu / Clip / such ops that onnxruntime cannot fold, the layer's own output
  does. These pairs are numerically the identity (the values are on the grid already; a ReLU or clip
  of grid values commutes with fake quantization) and let onnxruntime see ``DQ -> op -> Q`` units.

What onnxruntime 1.32 (CPU) makes of it, measured with ORT_ENABLE_EXTENDED and ORT_ENABLE_ALL:

* ``DQ -> Conv -> Q`` (int8 per-channel weight, int32 bias): QLinearConv (ALL: the NHWC
  com.microsoft QLinearConv, with MaxPool as NhwcMaxPool);
* ``DQ -> Gemm -> Q``, ``transB`` 0 or 1, per-channel weight: com.microsoft QGemm;
* ``DQ -> MatMul -> Q``, per-column weight: QLinearMatMul;
* ``Conv/Gemm/MatMul -> Relu -> Q``: the Relu is removed when the Q's zero point is the type's
  minimum (0 for uint8, -128 for int8), i.e. any range calibrated on a ReLU output with
  ``min = 0``; otherwise a Q/DQ pair is placed before the Relu;
* ``DQ -> MaxPool/Transpose/Reshape/Flatten -> Q`` with equal parameters: the pair is dropped and the
  op runs on 8-bit values;
* ``DQ, DQ -> Add -> Q``: QLinearAdd (residual adds whose inputs and output are quantized);
* int4 weights (``DequantizeLinear`` of INT4, opset 21) run, but as a float Conv/MatMul/Gemm after
  dequantization: no integer kernel. Weight ranges narrower than 8 bits (k-bit QAT, DoReFa, BNN's
  +-1) are therefore written as int8, a k-bit grid in an 8-bit container, which runs the integer
  kernels above.

Dynamic plans (``dynamic``): weights are int8 as above; each layer's input is quantized at run time
by DynamicQuantizeLinear (uint8, range ``[min(0, min x), max(0, max x)]`` of the whole tensor),
followed by ConvInteger / MatMulInteger -> Cast -> Mul(input_scale * kernel_scale) [-> Add(bias)],
the pattern of ``onnxruntime.quantization.quantize_dynamic``; onnxruntime fuses the MatMul form into
com.microsoft DynamicQuantizeMatMul and runs ConvInteger as is. The bias stays float.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slimkit.deploy.cleanup import fold_zero_pads
from slimkit.deploy.mapping import QdqMapping, map_layers, map_sites, own_weights, probe_values
from slimkit.deploy.qdq_dynamic import quantize_dynamic_graph
from slimkit.deploy.qdq_edit import Editor
from slimkit.deploy.qdq_static import quantize_static_graph
from slimkit.deploy.qdq_weight_only import store_weight_only
from slimkit.errors import ExportError
from slimkit.quant.moments import Moments, summaries

if TYPE_CHECKING:
    import onnx

    from slimkit.quant.plan import QuantPlan, SiteParams

__all__ = ["QdqMapping", "check_file", "insert_qdq"]


def check_file(model: "onnx.ModelProto | str") -> None:
    """onnx's checker on a QDQ model or the file it was saved to.

    Raises:
        ExportError: the model is invalid (an internal error: slimkit wrote it).
    """
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"internal error: the QDQ model is invalid: {exc}") from exc


def insert_qdq(
    float_model: "onnx.ModelProto",
    plan: "QuantPlan",
    params: dict[str, "SiteParams"],
    kernels: dict[str, np.ndarray],
    act_values: "dict[str, np.ndarray | Moments]",
    probe: np.ndarray,
    check: bool = True,
    in_place: bool = False,
) -> tuple["onnx.ModelProto", QdqMapping]:
    """Quantizes the float ONNX export of a model at the sites of ``plan`` with slimkit's params.

    Args:
        float_model: the verified float export (not modified, unless ``in_place``).
        plan: the sites; a plan whose activation sites take their range at run time (dynamic) gets
            DynamicQuantizeLinear, any other Q/DQ pairs with fixed parameters.
        params: site key -> :class:`SiteParams` (activation nodes, ``<layer>/kernel``,
            ``<layer>/bias``; dynamic plans need the kernels only).
        kernels: layer -> float32 kernel as the framework holds it (any layout).
        act_values: activation site -> the framework's float32 values of that tensor on ``probe``, or
            their :class:`~slimkit.quant.moments.Moments` (calibration takes these on its first inputs).
        probe: a small input batch in the framework's layout (= the ONNX input's layout).
        check: run onnx's checker on the result; a caller that saves it first may check the file
            instead (:func:`check_file`: the in-memory check serializes the whole model, 0.07 s for
            a ResNet50, a file check a fifth of that).
        in_place: edit ``float_model`` itself into the result, for a caller that owns it and needs it no
            more (no copy of every weight: 100 MB of fresh memory for a ResNet50).

    Returns:
        The quantized model and where each site went.

    Raises:
        ExportError: a site cannot be found, lacks parameters, has an uncalibrated range, or a range
            that is not 8-bit; the message names it.
    """
    import onnx

    opset = max((o.version for o in float_model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise ExportError(f"QDQ export needs opset 13 or later (per-channel DequantizeLinear), the model has {opset}")
    if in_place:
        model = float_model
    else:
        model = onnx.ModelProto()
        model.CopyFrom(float_model)
    own_weights(model)
    fold_zero_pads(model)  # before probing: the Pad's output tensor is gone
    layers = map_layers(model, plan, kernels)
    order, values = probe_values(model, probe)
    act_values = summaries(act_values)  # each site summarised once, for mapping and the range check
    sites = map_sites(model, plan, act_values, order, values, layers)
    ed = Editor(model)
    if plan.runtime_ranges:
        weights, nodes = quantize_dynamic_graph(ed, plan, params, kernels, layers)
    else:
        weights, nodes = quantize_static_graph(ed, plan, params, kernels, layers, sites, values, act_values)
    ed.finish()
    store_weight_only(model)  # matrices slimkit snapped to int8 for layers that run in float
    if check:
        check_file(model)
    mapping = QdqMapping(tuple((a.node, sites[a.node]) for a in plan.acts),
                         tuple((s.layer, nodes[s.layer]) for s in plan.layers),
                         tuple((s.layer, weights[s.layer]) for s in plan.layers))
    return model, mapping


