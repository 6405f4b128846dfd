"""Dynamic QDQ: int8 weights, each layer's input quantized at run time by DynamicQuantizeLinear,
ConvInteger / MatMulInteger then Cast and Mul by the scales (onnxruntime's ``quantize_dynamic`` pattern)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slimkit.errors import ExportError
from slimkit.quant.params import quantize

from slimkit.deploy.qdq_edit import Editor, kernel_qparams, params_for, weight_axis

if TYPE_CHECKING:
    from slimkit.quant.plan import QuantPlan, SiteParams


def quantize_dynamic_graph(ed: Editor, plan: "QuantPlan", params: dict[str, "SiteParams"],
                           kernels: dict[str, np.ndarray],
                           layers: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    import onnx

    weights, names = {}, {}
    for s in plan.layers:
        node = ed.by_name(layers[s.layer])
        w = ed.array(node.input[1]).astype(np.float32)
        kp, dtype = kernel_qparams(s.layer, node, w, kernels[s.layer],
                                   params_for(params, f"{s.layer}/kernel", "kernel site"))
        base = node.input[1]
        x = node.input[0]
        xq, xs, xz = (ed.fresh(f"{x}_quantized"), ed.fresh(f"{x}_scale"), ed.fresh(f"{x}_zero_point"))
        ed.node("DynamicQuantizeLinear", [x], [xq, xs, xz], f"{node.name}_DynamicQuantizeLinear")
        acc = ed.fresh(f"{node.output[0]}_int32")
        if node.op_type == "Conv":
            wq = quantize(w, kp).astype(dtype)
            out_ch = w.shape[0]
            shape = (out_ch,) + (1,) * (w.ndim - 2)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for key in ("auto_pad",):
                if key in attrs and isinstance(attrs[key], bytes):
                    attrs[key] = attrs[key].decode()
            zps = np.unique(kp.zero_point)
            if zps.size != 1:
                raise ExportError(
                    f"layer {s.layer}: dynamic quantization of a Conv needs one kernel zero point for all "
                    f"channels (onnxruntime's ConvInteger); got {zps.size} different ones: use a symmetric "
                    "kernel range")
            wname = ed.add_init(f"{base}_quantized", wq)
            wzp = ed.add_init(f"{base}_zero_point", zps.reshape(()).astype(dtype))
            integer = ed.node("ConvInteger", [xq, wname, xz, wzp], [acc], f"{node.name}_ConvInteger", **attrs)
        else:
            axis = weight_axis(node, s.layer, w)
            wq = quantize(w, kp).astype(dtype)
            if axis == 0:  # Gemm transB=1: [N, K] -> [K, N] for MatMulInteger
                wq = wq.T
            out_ch = wq.shape[1]
            shape = (out_ch,)
            wname = ed.add_init(f"{base}_quantized", np.ascontiguousarray(wq))
            wzp = ed.add_init(f"{base}_zero_point", kp.zero_point.astype(dtype))
            integer = ed.node("MatMulInteger", [xq, wname, xz, wzp], [acc], f"{node.name}_MatMulInteger")
        cast = ed.fresh(f"{node.output[0]}_int32_cast")
        ed.node("Cast", [acc], [cast], f"{node.name}_Cast", to=onnx.TensorProto.FLOAT)
        wscale = kp.scale.reshape(shape) if kp.axis is not None else kp.scale
        ws = ed.add_init(f"{base}_scale", wscale.astype(np.float32))
        both = ed.fresh(f"{node.name}_scales")
        ed.node("Mul", [xs, ws], [both], f"{node.name}_scales_Mul")
        has_bias = node.op_type != "MatMul" and len(node.input) > 2 and node.input[2]
        scaled = ed.fresh(f"{node.output[0]}_scaled") if has_bias else node.output[0]
        ed.node("Mul", [cast, both], [scaled], f"{node.name}_Mul")
        if has_bias:
            b = ed.array(node.input[2])
            if b is None:
                raise ExportError(f"layer {s.layer}: bias {node.input[2]!r} is not a constant")
            if node.op_type == "Conv":
                b = b.reshape((-1,) + (1,) * (w.ndim - 2))
            bias = ed.add_init(f"{node.input[2]}_bias", b.astype(np.float32))
            ed.node("Add", [scaled, bias], [node.output[0]], f"{node.name}_Add")
        ed.nodes.remove(node)
        weights[s.layer] = wname
        names[s.layer] = integer.name
    return weights, names


# -- public ----------------------------------------------------------------------------------------


