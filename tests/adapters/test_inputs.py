"""Data as users have it: integer token ids stay integers, models take several inputs as a tuple
(positional) or a dict (named), on every framework, through fine-tuning, prediction and export."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy.runtime import run
from slimkit.registry import adapter_for
from frameworks import building

VOCAB, SEQ, FEATURES, CLASSES = 50, 6, 4, 3


def two_input_model(framework):
    """Token ids (embedded, averaged) and float features, concatenated, then two dense layers.
    Inputs are named ``tokens`` and ``extra`` in both frameworks."""
    if framework == "keras":
        import keras

        tokens = keras.Input((SEQ,), dtype="int32", name="tokens")
        extra = keras.Input((FEATURES,), name="extra")
        h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 8, name="emb")(tokens))
        h = keras.layers.Dense(16, activation="relu", name="fc")(keras.layers.Concatenate()([h, extra]))
        return keras.Model([tokens, extra], keras.layers.Dense(CLASSES, name="head")(h))
    import torch
    from torch import nn

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.fc, self.head = nn.Embedding(VOCAB, 8), nn.Linear(8 + FEATURES, 16), nn.Linear(16, CLASSES)

        def forward(self, tokens: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
            h = torch.cat([self.emb(tokens).mean(dim=1), extra], dim=1)
            return self.head(torch.relu(self.fc(h)))

    return TwoInputs()


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    # int64 ids and float64 features: as numpy produces them, not as the frameworks want them
    return {"tokens": rng.integers(0, VOCAB, (n, SEQ)), "extra": rng.random((n, FEATURES))}, \
        rng.integers(0, CLASSES, n)


@pytest.mark.parametrize("form", ["dict", "tuple"])
@pytest.mark.parametrize("framework", building("zoo"))
def test_two_inputs_train_predict_and_export_with_named_inputs(framework, form, tmp_path):
    x, y = data()
    if form == "tuple":
        x = (x["tokens"], x["extra"])
    model = two_input_model(framework)
    recipe = {"fine_tune": {"epochs": 1, "batch_size": 16}, "stages": [{"prune": {"sparsity": 0.5}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), eval_data=(x, y), verbose=False)
    assert {row.name: round(row.sparsity, 2) for row in result.report.layers if row.target} == \
        {"emb": 0.5, "fc": 0.5, "head": 0.5}
    path = tmp_path / "m.onnx"
    row = result.export_onnx(path)
    assert row.max_abs_diff < 1e-4
    import onnx

    graph_inputs = {i.name: i.type.tensor_type for i in onnx.load(str(path)).graph.input}
    assert list(graph_inputs) == ["tokens", "extra"]
    assert graph_inputs["tokens"].elem_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    assert graph_inputs["tokens"].shape.dim[0].dim_param  # a dynamic batch axis
    other, _ = data(n=5, seed=7)
    feed = other if form == "dict" else (other["tokens"], other["extra"])
    np.testing.assert_allclose(run(str(path), feed), adapter_for(result.model).predict(feed), atol=1e-4)


@pytest.mark.parametrize("framework", building("zoo"))
def test_wrong_input_names_and_counts_are_data_errors(framework):
    adapter = adapter_for(two_input_model(framework))
    x, _ = data(n=4)
    with pytest.raises(slimkit.DataError, match="sample"):
        adapter.check_input({"tokens": x["tokens"], "other": x["extra"]}, "sample")
    with pytest.raises(slimkit.DataError, match="sample"):
        adapter.check_input(x["tokens"], "sample")
    with pytest.raises(slimkit.DataError, match="different numbers of samples"):
        adapter.check_input({"tokens": x["tokens"], "extra": x["extra"][:2]}, "sample")


def test_a_transformers_classifier_takes_the_tokenizer_dict(tmp_path):
    """Hugging Face BERT, small config: fine-tuned and exported with input_ids and attention_mask."""
    import transformers

    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=CLASSES)
    model = transformers.BertForSequenceClassification(config).eval()
    rng = np.random.default_rng(0)
    x = {"input_ids": rng.integers(0, VOCAB, (32, SEQ)), "attention_mask": np.ones((32, SEQ), np.int64)}
    y = rng.integers(0, CLASSES, 32)
    recipe = {"fine_tune": {"epochs": 1, "batch_size": 8}, "stages": [{"prune": {"sparsity": 0.5, "scope": "global"}}]}
    result = slimkit.compress(model, recipe, train_data=(x, y), verbose=False)
    targeted = [row for row in result.report.layers if row.target]
    assert len(targeted) == 17  # 3 embeddings, 2 x (q, k, v, attention output, intermediate, output), pooler, classifier
    path = tmp_path / "bert.onnx"
    assert result.export_onnx(path).max_abs_diff < 1e-4
    import onnx

    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_ids", "attention_mask"]
    longer = {"input_ids": rng.integers(0, VOCAB, (3, 11)), "attention_mask": np.ones((3, 11), np.int64)}
    np.testing.assert_allclose(run(str(path), longer), adapter_for(result.model).predict(longer), atol=1e-4)
