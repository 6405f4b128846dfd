"""ONNX op tables slimkit's deployment layer shares: one definition each."""

from __future__ import annotations

#: Op types of onnxruntime's integer kernels (after its graph optimizations): the ones that read an
#: integer weight (Conv / Gemm / MatMul in QDQ or dynamic form) and the other quantized ops slimkit's
#: QDQ graphs let it form (residual adds, pooling, concatenations); the report lists which ran.
INTEGER_OPS = frozenset({
    "QLinearConv", "NhwcQLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearConcat",
    "QLinearMul", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
})

#: The subset of :data:`INTEGER_OPS` that computes a Conv / Gemm / MatMul from an integer weight.
WEIGHT_INTEGER_OPS = frozenset({
    "QLinearConv", "NhwcQLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger",
    "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
})

#: Ops whose output holds values of their (first) input only: a tensor on the quantization grid stays
#: on it (Pad only with constant 0, MaxPool only without indices; checked by ``keeps_grid``).
GRID_OPS = frozenset({"Transpose", "Reshape", "Flatten", "MaxPool", "Pad", "Squeeze", "Unsqueeze",
                      "Identity", "Dropout"})

#: Ops that only move values (activations such as Relu and Clip commute with them).
MOVE_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})

#: Integer ranges of activation tensors that QuantizeLinear saturates to, and their ONNX types.
ACT_RANGES = {(0, 255): "uint8", (-128, 127): "int8"}
