"""Twin models: the same architecture in every framework of the ``twins`` family
(``tests/frameworks.py``), and copying weights between them.

Weights travel through slimkit's own adapters in canonical (out, in, *spatial) order, so a twin pair
that computes the same function also checks each adapter's ``kernel_perm``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from slimkit.pruning.masks import from_canonical, to_canonical
from slimkit.registry import adapter_for

from frameworks import BY_NAME


def keras_cnn() -> Any:
    """conv-bn-relu, depthwise, pointwise, global pool, dense: every image kind the adapters know."""
    import keras

    layers = keras.layers
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    x = layers.BatchNormalization(epsilon=1e-3, name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 1, name="pw")(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="twin_cnn")


def torch_cnn() -> Any:
    import torch
    from torch import nn

    class TwinCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8, eps=1e-3)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 16, 1)
            self.fc1 = nn.Linear(16, 32)
            self.logits = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.pw(torch.relu(self.dw(x))))
            x = x.mean(dim=(2, 3))
            return self.logits(torch.relu(self.fc1(x)))

    return TwinCNN()


def keras_seq() -> Any:
    """Embedding - conv1d - global pool - dense, for token sequences of length 12 over 50 ids."""
    import keras

    layers = keras.layers
    inp = keras.Input((12,), dtype="float32")
    x = layers.Embedding(50, 8, name="embed")(inp)
    x = layers.Conv1D(16, 3, padding="same", activation="relu", name="conv1d")(x)
    x = layers.GlobalAveragePooling1D()(x)
    out = layers.Dense(4, name="logits")(x)
    return keras.Model(inp, out, name="twin_seq")


def torch_seq() -> Any:
    import torch
    from torch import nn

    class TwinSeq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.conv1d = nn.Conv1d(8, 16, 3, padding=1)
            self.logits = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x.long()).transpose(1, 2)  # N, C, L as Conv1d expects
            return self.logits(torch.relu(self.conv1d(h)).mean(dim=2))

    return TwinSeq()


def keras_mlp() -> Any:
    """64-32-10 MLP for 8x8 digits flattened (no dropout, no batch norm: nothing random in training)."""
    import keras

    inp = keras.Input((64,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inp)
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="twin_mlp")


def torch_mlp() -> Any:
    import torch
    from torch import nn

    class TwinMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 32)
            self.logits = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits(torch.relu(self.fc1(x)))

    return TwinMLP()


def keras_bn_cnn() -> Any:
    """(conv without bias - batch norm (momentum 0.9) - relu) x2 - global pool - dense, for 8x8x1 images."""
    import keras

    layers = keras.layers
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inp)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="bn1")(x))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2")(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="bn2")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, name="logits")(x), name="twin_bn_cnn")


def torch_bn_cnn() -> Any:
    import torch
    from torch import nn

    class TwinBNCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8, eps=1e-3, momentum=0.1)  # Keras' momentum 0.9 is PyTorch's 0.1
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16, eps=1e-3, momentum=0.1)
            self.logits = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.logits(x.mean(dim=(2, 3)))

    return TwinBNCNN()


BUILDERS: dict[str, dict[str, Callable[[], Any]]] = {
    "cnn": {"keras": keras_cnn, "torch": torch_cnn},
    "seq": {"keras": keras_seq, "torch": torch_seq},
    "mlp": {"keras": keras_mlp, "torch": torch_mlp},
    "bn_cnn": {"keras": keras_bn_cnn, "torch": torch_bn_cnn},
}


def sample_input(arch: str, framework: str, n: int = 32, seed: int = 0) -> np.ndarray:
    """Inputs for ``arch`` in ``framework``'s layout; the same values for both frameworks."""
    rng = np.random.default_rng(seed)
    if arch == "seq":
        return rng.integers(0, 50, size=(n, 12)).astype(np.float32)
    if arch == "mlp":
        return rng.random((n, 64), dtype=np.float32)
    x = rng.random((n, 8, 8, 1), dtype=np.float32)
    return x if BY_NAME[framework].channels_last else x.transpose(0, 3, 1, 2).copy()


def random_canonical_weights(model: Any, seed: int = 0, he: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Random weights for every layer of ``model``, kernels in canonical order (BN variances > 0).

    By default every weight is drawn from N(0, 0.5). ``he`` draws kernels as a trained network's
    are scaled (He: std sqrt(2 / fan_in)), biases and BN shifts near 0, BN scales and variances
    near 1, so that training from them is well conditioned.
    """
    rng = np.random.default_rng(seed)
    adapter = adapter_for(model)
    out = {}
    for layer in adapter.layers():
        weights = {}
        for key, shape in layer.shapes.items():
            if key == "kernel":
                shape = tuple(shape[i] for i in layer.kernel_perm)
            std = 0.5
            if he:
                std = float(np.sqrt(2.0 / np.prod(shape[1:]))) if key == "kernel" else 0.05
            value = rng.normal(0.0, std, size=shape).astype(np.float32)
            if key in ("var", "gamma") and he:
                value = 1.0 + value
            weights[key] = np.abs(value) + 0.5 if key == "var" and not he else value
        out[layer.name] = weights
    return out


def load_canonical(model: Any, weights: dict[str, dict[str, np.ndarray]]) -> None:
    """Writes canonical-order weights into ``model`` through its adapter (layout converted)."""
    adapter = adapter_for(model)
    for layer in adapter.layers():
        native = dict(weights[layer.name])
        if "kernel" in native:
            native["kernel"] = from_canonical(native["kernel"], layer.kernel_perm)
        adapter.set_weights(layer.name, native)


def canonical_kernels(model: Any) -> dict[str, np.ndarray]:
    """Every layer's kernel in canonical order."""
    adapter = adapter_for(model)
    return {
        layer.name: to_canonical(adapter.get_weights(layer.name)["kernel"], layer.kernel_perm)
        for layer in adapter.layers() if "kernel" in layer.shapes
    }


def twin_pair(arch: str, seed: int = 0, he: bool = False, frameworks: tuple[str, ...] | None = None) -> dict[str, Any]:
    """framework -> model of ``arch``, all holding the same random weights (see
    :func:`random_canonical_weights` for ``he``); every framework that builds it, or ``frameworks``."""
    models = {fw: build() for fw, build in BUILDERS[arch].items() if frameworks is None or fw in frameworks}
    weights = random_canonical_weights(next(iter(models.values())), seed, he)
    for model in models.values():
        load_canonical(model, weights)
    return models
