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


def test_bert_loses_whole_heads_and_feed_forward_units_and_reloads(tmp_path):
    from slimkit.pruning.structured import ChannelPruner
    from slimkit.recipe import Recipe
    from slimkit.registry import adapter_for_copy

    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l1"}}]}
    model, x = _bert(), _text()
    x["attention_mask"][::2, -3:] = 0  # padded samples: the mask must still reach every head
    work = adapter_for_copy(model)
    layers = [layer for layer in work.layers() if layer.kind == "dense" and layer.name != "classifier"]
    pruner = ChannelPruner(work, layers, Recipe.load(recipe).stages[0], "stages[0].prune.layers", x, None, seed=0)
    pruner._mask(pruner.choose(0.5), pruner.choose_heads(0.5))
    masked = work.predict(x)
    rebuilt = pruner.shrunk()
    np.testing.assert_allclose(rebuilt.predict(x), masked, atol=1e-4)
    attention = rebuilt.model.bert.encoder.layer[0].attention
    assert attention.self.query.out_features == 16 and attention.self.num_attention_heads == 2
    assert attention.output.dense.in_features == 16
    assert rebuilt.model.bert.encoder.layer[1].intermediate.dense.out_features == 32
    assert [b.heads for b in rebuilt.attention_blocks()] == [2, 2]

    result = slimkit.compress(model, dict(recipe, layers={"exclude": ["classifier"]}), calib_data=x, verbose=False)
    np.testing.assert_allclose(adapter_for(result.model).predict(x), rebuilt.predict(x), atol=1e-5)
    assert result.report.stages[0].params_removed > 0.2  # embeddings, norms and pooler stay whole
    assert result.export_onnx(tmp_path / "bert.onnx").max_abs_diff <= 1e-4
    loaded = slimkit.load(result.save(tmp_path / "saved"), model=_bert())
    np.testing.assert_allclose(adapter_for(loaded).predict(x), rebuilt.predict(x), atol=1e-6)


def test_gpt2_fused_attention_loses_whole_heads_and_mlp_units():
    from slimkit.pruning.structured import ChannelPruner
    from slimkit.recipe import Recipe
    from slimkit.registry import adapter_for_copy

    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, use_cache=False)
    model = transformers.GPT2LMHeadModel(config).eval()
    x = {"input_ids": np.random.default_rng(0).integers(0, VOCAB, (8, SEQ))}
    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5}}]}
    work = adapter_for_copy(model)
    pruner = ChannelPruner(work, work.layers(), Recipe.load(recipe).stages[0], "stages[0].prune.layers", x, None, 0)
    pruner._mask(pruner.choose(0.5), pruner.choose_heads(0.5))
    masked = work.predict(x)
    rebuilt = pruner.shrunk()
    np.testing.assert_allclose(rebuilt.predict(x), masked, atol=1e-4)
    block = rebuilt.model.transformer.h[0]
    assert block.attn.num_heads == 2 and block.attn.split_size == 16 and block.attn.c_attn.weight.shape == (32, 48)
    assert block.mlp.c_fc.weight.shape == (32, 64) and block.mlp.c_proj.weight.shape == (64, 32)
