"""Quantized export of models whose kernels are not unique: copies of one block (as
``nn.TransformerEncoder`` makes them, which torch.onnx deduplicates into one initializer) and all-zero
kernels. Each layer must land on its own ONNX node, named after it."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.deploy.runtime import run
from slimkit.registry import adapter_for
from frameworks import building

WIDTH = 16
STATIC = {"stages": [{"quantize": {"method": "static", "activations": {"samples": 32}}}]}
DYNAMIC = {"stages": [{"quantize": {"method": "dynamic"}}]}


def _keras_repeated():
    import keras

    inp = keras.Input((WIDTH,))
    h = keras.layers.Dense(WIDTH, activation="relu", name="first")(inp)
    h = keras.layers.Dense(WIDTH, activation="relu", name="second")(h)  # the same kernel as first
    z = keras.layers.Dense(WIDTH, name="zero")(h)  # all-zero kernel
    h = keras.layers.Add()([h, z])
    return keras.Model(inp, keras.layers.Dense(4, name="logits")(h))


def _torch_repeated():
    import torch
    from torch import nn

    class Repeated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
            self.zero, self.logits = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.second(torch.relu(self.first(x))))
            return self.logits(h + self.zero(h))

    return Repeated().eval()


BUILDERS = {"keras": _keras_repeated, "torch": _torch_repeated}


def _repeated(framework: str):
    model = BUILDERS[framework]()
    adapter = adapter_for(model)
    rng = np.random.default_rng(0)
    kernel = {"kernel": None}
    for layer in adapter.layers():
        shape = layer.shapes["kernel"]
        if layer.name in ("first", "second"):
            kernel["kernel"] = kernel["kernel"] if kernel["kernel"] is not None else rng.normal(0, 0.4, shape)
            weights = {"kernel": kernel["kernel"], "bias": np.full(layer.shapes["bias"], 0.1)}
        elif layer.name == "zero":
            weights = {"kernel": np.zeros(shape), "bias": rng.normal(0, 0.1, layer.shapes["bias"])}
        else:  # logits: seeded here so the test does not depend on the framework's initialiser
            weights = {"kernel": rng.normal(0, 0.4, shape), "bias": np.zeros(layer.shapes["bias"])}
        adapter.set_weights(layer.name, {k: v.astype(np.float32) for k, v in weights.items()})
    return model


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("framework", [fw for fw in building("twins") if fw in BUILDERS])
@pytest.mark.parametrize("recipe", [STATIC, DYNAMIC], ids=["static", "dynamic"])
def test_identical_and_zero_kernels_map_to_their_own_nodes(framework, recipe, tmp_path):
    model = _repeated(framework)
    x = np.random.default_rng(1).normal(size=(64, WIDTH)).astype(np.float32)
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    assert sorted(result.report.quantized) == ["first", "logits", "second", "zero"]
    path = tmp_path / "repeated.onnx"
    result.export_onnx(path)
    assert _correlation(adapter_for(model).predict(x), run(str(path), x)) > 0.99


def _encoder():
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)  # deep copies: equal layers
            self.head = nn.Linear(32, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.enc(self.embed(ids)).mean(dim=1))

    torch.manual_seed(0)
    return Encoder().eval()


@pytest.mark.parametrize("recipe", [STATIC, DYNAMIC], ids=["static", "dynamic"])
def test_torch_transformer_encoder_quantizes_every_feed_forward_layer(recipe, tmp_path):
    model = _encoder()
    ids = np.random.default_rng(0).integers(0, 100, (32, 12))
    result = slimkit.compress(model, recipe, calib_data=ids, verbose=False)
    ffn = [f"enc.layers.{i}.linear{j}" for i in range(2) for j in (1, 2)]
    assert set(ffn) <= set(result.report.quantized)
    path = tmp_path / "encoder.onnx"
    result.export_onnx(path)
    assert _correlation(adapter_for(model).predict(ids), run(str(path), ids)) > 0.98
