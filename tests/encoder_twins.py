"""One post-norm transformer encoder block as Keras and PyTorch twins with identical weights.

Keras: Embedding -> MultiHeadAttention(4 heads of 4) -> Add -> LayerNormalization -> Dense(32, relu)
-> Dense(16) -> Add -> LayerNormalization -> mean over tokens -> Dense(4). PyTorch: the same with
``nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)``. Weights are drawn in PyTorch's layout
(``state_dict`` names) and written into the Keras twin: ``in_proj_weight`` rows are the query, key and
value kernels (transposed to (embed, heads, dim)); ``out_proj.weight`` is the output kernel transposed
to (heads, dim, embed); Linear weights are Dense kernels transposed; LayerNorm weight/bias are
gamma/beta (epsilon 1e-5 in both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEQ, VOCAB, WIDTH, HEADS, FFN, CLASSES = 10, 40, 16, 4, 32, 4
DIM = WIDTH // HEADS


def tokens(n: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, SEQ)).astype(np.int64)


def reference_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch state_dict of the torch twin (prefix ``enc.`` for the encoder layer), N(0, 0.3) draws."""
    shapes = {"embed.weight": (VOCAB, WIDTH),
              "enc.self_attn.in_proj_weight": (3 * WIDTH, WIDTH), "enc.self_attn.in_proj_bias": (3 * WIDTH,),
              "enc.self_attn.out_proj.weight": (WIDTH, WIDTH), "enc.self_attn.out_proj.bias": (WIDTH,),
              "enc.linear1.weight": (FFN, WIDTH), "enc.linear1.bias": (FFN,),
              "enc.linear2.weight": (WIDTH, FFN), "enc.linear2.bias": (WIDTH,),
              "enc.norm1.weight": (WIDTH,), "enc.norm1.bias": (WIDTH,),
              "enc.norm2.weight": (WIDTH,), "enc.norm2.bias": (WIDTH,),
              "logits.weight": (CLASSES, WIDTH), "logits.bias": (CLASSES,)}
    rng = np.random.default_rng(seed)
    out = {name: rng.normal(0.0, 0.3, shape).astype(np.float32) for name, shape in shapes.items()}
    for norm in ("enc.norm1.weight", "enc.norm2.weight"):
        out[norm] = (1.0 + 0.1 * rng.standard_normal(WIDTH)).astype(np.float32)
    return out


def keras_encoder(weights: dict[str, np.ndarray]) -> Any:
    import keras

    L = keras.layers
    inp = keras.Input((SEQ,), dtype="int32")
    h = L.Embedding(VOCAB, WIDTH, name="embed")(inp)
    a = L.MultiHeadAttention(HEADS, DIM, name="attn")(h, h)
    h = L.LayerNormalization(epsilon=1e-5, name="norm1")(L.Add()([h, a]))
    f = L.Dense(FFN, activation="relu", name="ffn1")(h)
    f = L.Dense(WIDTH, name="ffn2")(f)
    h = L.LayerNormalization(epsilon=1e-5, name="norm2")(L.Add()([h, f]))
    out = L.Dense(CLASSES, name="logits")(L.GlobalAveragePooling1D()(h))
    model = keras.Model(inp, out, name="encoder_twin")
    w = weights
    model.get_layer("embed").set_weights([w["embed.weight"]])
    attn = model.get_layer("attn")
    for role, rows, bias in zip(("query", "key", "value"), np.split(w["enc.self_attn.in_proj_weight"], 3),
                                np.split(w["enc.self_attn.in_proj_bias"], 3)):
        getattr(attn, f"_{role}_dense").set_weights([rows.T.reshape(WIDTH, HEADS, DIM), bias.reshape(HEADS, DIM)])
    attn._output_dense.set_weights([w["enc.self_attn.out_proj.weight"].T.reshape(HEADS, DIM, WIDTH),
                                    w["enc.self_attn.out_proj.bias"]])
    for keras_name, torch_name in (("ffn1", "linear1"), ("ffn2", "linear2")):
        model.get_layer(keras_name).set_weights([w[f"enc.{torch_name}.weight"].T, w[f"enc.{torch_name}.bias"]])
    for norm in ("norm1", "norm2"):
        model.get_layer(norm).set_weights([w[f"enc.{norm}.weight"], w[f"enc.{norm}.bias"]])
    model.get_layer("logits").set_weights([w["logits.weight"].T, w["logits.bias"]])
    return model


def torch_encoder(weights: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.enc = nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.0, batch_first=True)
            self.logits = nn.Linear(WIDTH, CLASSES)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.logits(self.enc(self.embed(ids)).mean(dim=1))

    model = Encoder()
    model.load_state_dict({name: torch.from_numpy(v.copy()) for name, v in weights.items()}, strict=True)
    return model.eval()


BUILDERS = {"keras": keras_encoder, "torch": torch_encoder}


def build(framework: str, seed: int = 0) -> Any:
    return BUILDERS[framework](reference_weights(seed))
