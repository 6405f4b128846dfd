"""Hugging Face transformers models (PyTorch, small configs, random weights) as users bring them:
captured with torch.export where torch.fx cannot trace them, quantized and exported."""

from __future__ import annotations

import numpy as np
import pytest
import transformers  # the test extra installs it

import slimkit
from slimkit.deploy.runtime import run
from slimkit.registry import adapter_for

VOCAB, SEQ = 100, 8


def _text(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, VOCAB, (n, SEQ)), "attention_mask": np.ones((n, SEQ), np.int64)}


def _bert():
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval()


def test_bert_dynamic_int8_takes_the_tokenizer_dict_and_tracks_the_float_logits(tmp_path):
    model, x = _bert(), _text()
    result = slimkit.compress(model, {"stages": [{"quantize": {"method": "dynamic"}}]}, calib_data=x, verbose=False)
    assert len(result.report.quantized) == 14  # q, k, v, attention output, intermediate, output x 2, pooler, classifier
    path = tmp_path / "bert.onnx"
    result.export_onnx(path)
    import onnx

    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_ids", "attention_mask"]
    q = result.report.quant_exports[-1]
    assert q.integer_ops.get("DynamicQuantizeMatMul", 0) + q.integer_ops.get("MatMulIntegerToFloat", 0) == 14
    other = _text(n=32, seed=5)
    original, int8 = adapter_for(model).predict(other), run(str(path), other)
    assert np.corrcoef(original.ravel(), int8.ravel())[0, 1] > 0.98


def test_gpt2_conv1d_layers_are_dense_layers_to_prune_and_quantize(tmp_path):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, use_cache=False)
    model, x = transformers.GPT2LMHeadModel(config).eval(), _text()
    kinds = {info.name: info.kind for info in adapter_for(model).layers()}
    assert kinds["transformer.h.0.attn.c_attn"] == kinds["transformer.h.0.mlp.c_proj"] == "dense"
    pruned = slimkit.compress(model, {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]}, verbose=False)
    assert pruned.report.layer("transformer.h.0.mlp.c_fc").sparsity == pytest.approx(0.5, abs=1e-3)
    with pytest.warns(slimkit.SlimkitWarning, match="lm_head"):  # tied to the token embedding: left float
        result = slimkit.compress(model, {"stages": [{"quantize": {"method": "dynamic"}}]}, calib_data=x,
                                  verbose=False)
    assert "lm_head" not in result.report.quantized and len(result.report.quantized) == 4
    result.export_onnx(tmp_path / "gpt2.onnx")


def test_vit_static_int8_through_torch_export(tmp_path):
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=64, num_labels=5)
    model = transformers.ViTForImageClassification(config).eval()
    x = {"pixel_values": np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)}
    result = slimkit.compress(model, {"stages": [{"quantize": {"method": "static", "activations": {"samples": 16}}}]},
                              calib_data=x, verbose=False)
    row = result.export_onnx(tmp_path / "vit.onnx")
    assert row.format == "onnx-qdq" and sum(result.report.quant_exports[-1].integer_ops.values()) >= 7
