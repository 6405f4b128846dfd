"""Weight-only int8 for layers onnxruntime runs in float: LSTM/GRU kernels, fused attention projections,
embeddings. Their matrices are snapped to an int8 grid in the model and stored as int8 +
DequantizeLinear in the file; the report says which layers run integer kernels and which weight-only."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import slimkit
from slimkit.deploy.qdq_weight_only import grid_scale
from slimkit.deploy.runtime import run
from slimkit.registry import adapter_for
from frameworks import building
from sequence_twins import build, tokens

RECIPES = {"static": {"stages": [{"quantize": {"method": "static"}}]},
           "dynamic": {"stages": [{"quantize": {"method": "dynamic"}}]}}
ARCH_LAYERS = {"lstm": ["embed", "rnn"], "gru": ["embed", "rnn"], "mha": ["attn", "embed"]}


@pytest.mark.parametrize("framework", building("sequence"))
@pytest.mark.parametrize("arch", sorted(ARCH_LAYERS))
@pytest.mark.parametrize("method", sorted(RECIPES))
def test_recurrent_attention_and_embedding_matrices_are_stored_int8(framework, arch, method, tmp_path):
    model, x = build(arch, framework, seed=2), tokens()
    result = slimkit.compress(model, RECIPES[method], calib_data=x, verbose=False)
    assert set(ARCH_LAYERS[arch]) <= set(result.report.weight_only)
    assert "logits" in result.report.quantized and "logits" not in result.report.weight_only
    assert "weight-only int8 (run in float): " in result.report.to_markdown()
    for name in result.report.weight_only:  # the model holds the grid values the file stores
        for key, value in adapter_for(result.model).get_weights(name).items():
            if "kernel" in key or name == "embed":
                assert grid_scale(value) is not None, (name, key)
    path = tmp_path / "int8.onnx"
    result.export_onnx(path)
    graph = onnx.load(str(path)).graph
    stored = [n for n in graph.node if n.name.endswith("_weight_only")]
    assert len(stored) >= 2
    left = sum(int(np.prod(i.dims)) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    params = sum(int(np.prod(shape)) for n in adapter_for(model).layers() for shape in n.shapes.values())
    assert left < 0.15 * params  # biases, norms and scales stay float; no weight matrix does
    simulated, int8 = adapter_for(result.model).predict(x), run(str(path), x)
    assert np.corrcoef(simulated.ravel(), int8.ravel())[0, 1] > 0.999
