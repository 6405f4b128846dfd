"""Keras and PyTorch twins of recurrent and attention models, with the layout mapping between them.

Each model is token ids (12 of 50) -> ``embed`` -> block -> ``logits`` (4); the block is an LSTM, a
GRU (16 units, last state) or self-attention (2 heads of 4 over width 8, mean over the sequence).
Layer names are the same in both frameworks except where a framework splits a block differently.

How the layouts map (native Keras -> native PyTorch):

- LSTM: ``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T`` (gates i, f, c, o in both),
  ``bias_ih = bias``, ``bias_hh = 0``.
- GRU (Keras ``reset_after=True``, PyTorch's formula): gates are z, r, h in Keras and r, z, n in
  PyTorch, so gate blocks swap: ``weight_ih = swap(kernel.T)``, ``weight_hh =
  swap(recurrent_kernel.T)``, ``bias_ih = swap(bias[0])``, ``bias_hh = swap(bias[1])``.
- MultiHeadAttention: Keras query/key/value kernels are (embed, heads, head_dim); flattened to
  (embed, heads * head_dim) and transposed they are the three row blocks of ``in_proj_weight``.
  Keras' output kernel (heads, head_dim, embed) flattened to (heads * head_dim, embed) and transposed
  is ``out_proj.weight``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEQ, VOCAB, WIDTH, UNITS, HEADS, CLASSES = 12, 50, 8, 16, 2, 4
ARCHS = ("lstm", "gru", "mha")


def tokens(n: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(n, SEQ)).astype(np.int64)


def reference_weights(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights in the reference layout (PyTorch's ``state_dict`` names and layouts), N(0, 0.3)."""
    hidden = WIDTH if arch == "mha" else UNITS
    shapes = {"embed.weight": (VOCAB, WIDTH), "logits.weight": (CLASSES, hidden), "logits.bias": (CLASSES,)}
    if arch == "mha":
        shapes.update({"attn.in_proj_weight": (3 * WIDTH, WIDTH), "attn.in_proj_bias": (3 * WIDTH,),
                       "attn.out_proj.weight": (WIDTH, WIDTH), "attn.out_proj.bias": (WIDTH,)})
    else:
        gates = (4 if arch == "lstm" else 3) * UNITS
        shapes.update({"rnn.weight_ih_l0": (gates, WIDTH), "rnn.weight_hh_l0": (gates, UNITS),
                       "rnn.bias_ih_l0": (gates,), "rnn.bias_hh_l0": (gates,)})
    rng = np.random.default_rng(seed)
    out = {name: rng.normal(0.0, 0.3, shape).astype(np.float32) for name, shape in shapes.items()}
    if arch == "lstm":  # Keras' LSTM has one bias
        out["rnn.bias_hh_l0"] = np.zeros_like(out["rnn.bias_hh_l0"])
    return out


def keras_model(arch: str, weights: dict[str, np.ndarray]) -> Any:
    import keras

    layers = keras.layers
    inp = keras.Input((SEQ,), dtype="int32")
    h = layers.Embedding(VOCAB, WIDTH, name="embed")(inp)
    if arch == "lstm":
        h = layers.LSTM(UNITS, name="rnn")(h)
    elif arch == "gru":
        h = layers.GRU(UNITS, name="rnn")(h)
    else:
        h = layers.MultiHeadAttention(HEADS, WIDTH // HEADS, name="attn")(h, h)
        h = layers.GlobalAveragePooling1D()(h)
    out = layers.Dense(CLASSES, name="logits")(h)
    model = keras.Model(inp, out, name=f"twin_{arch}")
    _load_keras(model, arch, weights)
    return model


def _load_keras(model: Any, arch: str, w: dict[str, np.ndarray]) -> None:
    """Writes reference-layout weights into the Keras twin (the inverse of :func:`reference_layout`)."""
    layer = model.get_layer
    layer("embed").set_weights([w["embed.weight"]])
    layer("logits").set_weights([w["logits.weight"].T, w["logits.bias"]])
    if arch == "lstm":
        layer("rnn").set_weights([w["rnn.weight_ih_l0"].T, w["rnn.weight_hh_l0"].T, w["rnn.bias_ih_l0"]])
    elif arch == "gru":
        layer("rnn").set_weights([_swap_gates(w["rnn.weight_ih_l0"]).T, _swap_gates(w["rnn.weight_hh_l0"]).T,
                                  np.stack([_swap_gates(w["rnn.bias_ih_l0"]), _swap_gates(w["rnn.bias_hh_l0"])])])
    else:
        attn = layer("attn")
        heads = (WIDTH, HEADS, WIDTH // HEADS)
        for role, rows, bias in zip(("query", "key", "value"), np.split(w["attn.in_proj_weight"], 3),
                                    np.split(w["attn.in_proj_bias"], 3)):
            getattr(attn, f"_{role}_dense").set_weights([rows.T.reshape(heads), bias.reshape(heads[1:])])
        attn._output_dense.set_weights([w["attn.out_proj.weight"].T.reshape(HEADS, WIDTH // HEADS, WIDTH),
                                        w["attn.out_proj.bias"]])


def torch_model(arch: str, weights: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            if arch == "mha":
                self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
                self.logits = nn.Linear(WIDTH, CLASSES)
            else:
                self.rnn = (nn.LSTM if arch == "lstm" else nn.GRU)(WIDTH, UNITS, batch_first=True)
                self.logits = nn.Linear(UNITS, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            if arch == "mha":
                h = self.attn(h, h, h, need_weights=False)[0].mean(dim=1)
            else:
                h = self.rnn(h)[0][:, -1]
            return self.logits(h)

    model = Twin()
    model.load_state_dict({name: torch.from_numpy(v.copy()) for name, v in weights.items()}, strict=True)
    return model.eval()


def _swap_gates(a: np.ndarray) -> np.ndarray:
    """Keras GRU gate blocks (z, r, h) along axis 0 -> PyTorch's (r, z, n); the map is its own inverse."""
    z, r, h = np.split(a, 3, axis=0)
    return np.concatenate([r, z, h], axis=0)


def _keras_layout(keras_model: Any, arch: str) -> dict[str, np.ndarray]:
    """The Keras model's weights in the reference layout."""
    layer = keras_model.get_layer
    out = {"embed.weight": layer("embed").get_weights()[0]}
    kernel, bias = layer("logits").get_weights()
    out.update({"logits.weight": kernel.T, "logits.bias": bias})
    if arch == "lstm":
        k, rk, b = layer("rnn").get_weights()
        out.update({"rnn.weight_ih_l0": k.T, "rnn.weight_hh_l0": rk.T, "rnn.bias_ih_l0": b,
                    "rnn.bias_hh_l0": np.zeros_like(b)})
    elif arch == "gru":
        k, rk, b = layer("rnn").get_weights()
        out.update({"rnn.weight_ih_l0": _swap_gates(k.T), "rnn.weight_hh_l0": _swap_gates(rk.T),
                    "rnn.bias_ih_l0": _swap_gates(b[0]), "rnn.bias_hh_l0": _swap_gates(b[1])})
    else:
        attn = layer("attn")
        parts = {role: getattr(attn, f"_{role}_dense").get_weights() for role in ("query", "key", "value", "output")}
        out["attn.in_proj_weight"] = np.concatenate(
            [parts[r][0].reshape(WIDTH, WIDTH).T for r in ("query", "key", "value")])
        out["attn.in_proj_bias"] = np.concatenate([parts[r][1].reshape(-1) for r in ("query", "key", "value")])
        out["attn.out_proj.weight"] = parts["output"][0].reshape(WIDTH, WIDTH).T
        out["attn.out_proj.bias"] = parts["output"][1]
    return {name: np.asarray(v, np.float32) for name, v in out.items()}


def _torch_layout(model: Any, arch: str) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


BUILDERS = {"keras": keras_model, "torch": torch_model}
_LAYOUTS = {"keras": _keras_layout, "torch": _torch_layout}


def build(arch: str, framework: str, seed: int = 0) -> Any:
    """The ``arch`` twin in ``framework`` holding :func:`reference_weights`."""
    return BUILDERS[framework](arch, reference_weights(arch, seed))


def reference_layout(model: Any, framework: str, arch: str) -> dict[str, np.ndarray]:
    """A twin's weights (masks baked in) in the reference layout, whichever framework holds them."""
    return _LAYOUTS[framework](model, arch)


def matrices(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weight matrices among reference-layout weights (what magnitude pruning masks)."""
    return {name: v for name, v in weights.items() if v.ndim == 2}
