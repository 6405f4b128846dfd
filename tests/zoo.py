"""Small architectures in every framework of the ``zoo`` family (``tests/frameworks.py``) with equal
layer names, for structured-pruning and quantization tests.

plain (conv-bn-relu x2, max-pool, flatten, dense), residual (identity and projection shortcuts),
inverted (MobileNetV2-style expand / depthwise / project with a residual add), concat (two branches
concatenated, batch norm after the concat), and mlp. Downsampling uses pooling or 1x1 stride-2
convs so that Keras' "same" padding and PyTorch's padding agree exactly.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from frameworks import BY_NAME
from twins import load_canonical, random_canonical_weights

ARCHS = ("plain", "residual", "inverted", "concat", "mlp")
INPUT = {"plain": (8, 8, 3), "residual": (8, 8, 3), "inverted": (8, 8, 3), "concat": (8, 8, 3), "mlp": (16,),
         "binary": (16,)}
# INPUT also has ``binary``, built like ARCHS but not in the sweeps over them: dense layers without
# activations between them (BinaryNet's sign is the nonlinearity; ReLU outputs cannot be binarized).


# ---------------------------------------------------------------------------------------------- keras
def _keras(arch: str) -> Any:
    import keras

    L = keras.layers
    inp = keras.Input(INPUT[arch])

    def cbr(x, filters, name, kernel=3, act="relu", stride=1):
        x = L.Conv2D(filters, kernel, strides=stride, padding="same" if kernel > 1 else "valid", name=name)(x)
        x = L.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
        return L.Activation(act)(x) if act else x

    if arch == "plain":
        x = cbr(inp, 8, "conv1")
        x = cbr(x, 16, "conv2")
        x = L.MaxPooling2D(2)(x)
        x = L.Flatten()(x)
        x = L.Dense(32, activation="relu", name="fc1")(x)
    elif arch == "residual":
        stem = cbr(inp, 16, "stem")
        x = cbr(stem, 8, "b1_conv1")
        x = cbr(x, 16, "b1_conv2", act=None)
        x = L.Activation("relu")(L.Add()([stem, x]))
        y = cbr(x, 24, "b2_conv1", kernel=1, stride=2)
        y = cbr(y, 24, "b2_conv2", act=None)
        s = cbr(x, 24, "b2_short", kernel=1, stride=2, act=None)
        x = L.Activation("relu")(L.Add()([s, y]))
        x = L.GlobalAveragePooling2D()(x)
    elif arch == "inverted":
        stem = cbr(inp, 16, "stem", act="relu6")
        x = cbr(stem, 48, "ir1_expand", kernel=1, act="relu6")
        x = L.DepthwiseConv2D(3, padding="same", name="ir1_dw")(x)
        x = L.Activation("relu6")(L.BatchNormalization(epsilon=1e-3, name="ir1_dw_bn")(x))
        x = cbr(x, 16, "ir1_project", kernel=1, act=None)
        x = L.Add()([stem, x])
        x = cbr(x, 32, "head", kernel=1, act="relu6")
        x = L.GlobalAveragePooling2D()(x)
    elif arch == "concat":
        a = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_a")(inp)
        b = L.Conv2D(6, 1, activation="relu", name="branch_b")(inp)
        x = L.Concatenate()([a, b])
        x = L.Activation("relu")(L.BatchNormalization(epsilon=1e-3, name="cat_bn")(x))
        x = L.Conv2D(16, 3, padding="same", activation="relu", name="merge")(x)
        x = L.GlobalAveragePooling2D()(x)
    elif arch == "binary":
        x = L.Dense(32, name="fc3")(L.Dense(32, name="fc2")(L.Dense(32, name="fc1")(inp)))
    else:
        x = L.Dense(32, activation="relu", name="fc1")(inp)
        x = L.Dense(32, activation="relu", name="fc2")(x)
        x = L.Dropout(0.1)(x)
    out = L.Dense(10 if arch not in ("mlp", "binary") else 5, name="logits")(x)
    return keras.Model(inp, out, name=f"zoo_{arch}")


# ---------------------------------------------------------------------------------------------- torch
def _torch(arch: str) -> Any:
    import torch
    from torch import nn
    import torch.nn.functional as F

    def conv(cin, cout, k=3, stride=1):
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)

    def bn(c):
        return nn.BatchNorm2d(c, eps=1e-3)

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv1_bn = conv(3, 8), bn(8)
            self.conv2, self.conv2_bn = conv(8, 16), bn(16)
            self.fc1, self.logits = nn.Linear(16 * 16, 32), nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.conv1_bn(self.conv1(x)))
            x = F.relu(self.conv2_bn(self.conv2(x)))
            x = torch.flatten(F.max_pool2d(x, 2), 1)
            return self.logits(F.relu(self.fc1(x)))

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.stem_bn = conv(3, 16), bn(16)
            self.b1_conv1, self.b1_conv1_bn = conv(16, 8), bn(8)
            self.b1_conv2, self.b1_conv2_bn = conv(8, 16), bn(16)
            self.b2_conv1, self.b2_conv1_bn = conv(16, 24, 1, 2), bn(24)
            self.b2_conv2, self.b2_conv2_bn = conv(24, 24), bn(24)
            self.b2_short, self.b2_short_bn = conv(16, 24, 1, 2), bn(24)
            self.logits = nn.Linear(24, 10)

        def forward(self, x):
            stem = F.relu(self.stem_bn(self.stem(x)))
            y = F.relu(self.b1_conv1_bn(self.b1_conv1(stem)))
            x = F.relu(stem + self.b1_conv2_bn(self.b1_conv2(y)))
            y = F.relu(self.b2_conv1_bn(self.b2_conv1(x)))
            y = self.b2_conv2_bn(self.b2_conv2(y))
            x = F.relu(self.b2_short_bn(self.b2_short(x)) + y)
            return self.logits(x.mean(dim=(2, 3)))

    class Inverted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.stem_bn = conv(3, 16), bn(16)
            self.ir1_expand, self.ir1_expand_bn = conv(16, 48, 1), bn(48)
            self.ir1_dw, self.ir1_dw_bn = nn.Conv2d(48, 48, 3, padding=1, groups=48), bn(48)
            self.ir1_project, self.ir1_project_bn = conv(48, 16, 1), bn(16)
            self.head, self.head_bn = conv(16, 32, 1), bn(32)
            self.logits = nn.Linear(32, 10)

        def forward(self, x):
            stem = F.relu6(self.stem_bn(self.stem(x)))
            y = F.relu6(self.ir1_expand_bn(self.ir1_expand(stem)))
            y = F.relu6(self.ir1_dw_bn(self.ir1_dw(y)))
            x = stem + self.ir1_project_bn(self.ir1_project(y))
            x = F.relu6(self.head_bn(self.head(x)))
            return self.logits(x.mean(dim=(2, 3)))

    class Concat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch_a, self.branch_b = conv(3, 8), conv(3, 6, 1)
            self.cat_bn = bn(14)
            self.merge = conv(14, 16)
            self.logits = nn.Linear(16, 10)

        def forward(self, x):
            x = torch.cat([F.relu(self.branch_a(x)), F.relu(self.branch_b(x))], dim=1)
            x = F.relu(self.merge(F.relu(self.cat_bn(x))))
            return self.logits(x.mean(dim=(2, 3)))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.logits = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 5)
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            return self.logits(self.drop(F.relu(self.fc2(F.relu(self.fc1(x))))))

    class Binary(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 32)
            self.logits = nn.Linear(32, 5)

        def forward(self, x):
            return self.logits(self.fc3(self.fc2(self.fc1(x))))

    return {"plain": Plain, "residual": Residual, "inverted": Inverted, "concat": Concat, "mlp": MLP,
            "binary": Binary}[arch]()


BUILD: dict[str, Callable[[str], Any]] = {"keras": _keras, "torch": _torch}


def sample(arch: str, framework: str, n: int = 16, seed: int = 0) -> np.ndarray:
    """Inputs of ``arch`` in ``framework``'s layout; equal values across frameworks."""
    x = np.random.default_rng(seed).normal(size=(n,) + INPUT[arch]).astype(np.float32)
    return x.transpose(0, 3, 1, 2).copy() if not BY_NAME[framework].channels_last and x.ndim == 4 else x


def twins(arch: str, seed: int = 0, frameworks: tuple[str, ...] | None = None) -> dict[str, Any]:
    """framework -> ``arch`` with identical weights (flatten feature order converted for ``fc1``), for
    every framework with a builder or those named in ``frameworks``."""
    models = {fw: build(arch) for fw, build in BUILD.items() if frameworks is None or fw in frameworks}
    weights = random_canonical_weights(next(iter(models.values())), seed)  # every framework: the same draw
    if arch == "plain":
        # Channels-last frameworks flatten (h, w, c), channels-first ones (c, h, w): fc1's input
        # features (canonical (out, in)) are drawn in (h, w, c) order and reordered for the others.
        kernel = weights["fc1"]["kernel"]
        c, hw = 16, 16
        chw = kernel.reshape(-1, hw, c).transpose(0, 2, 1).reshape(kernel.shape[0], -1)
    for fw, model in models.items():
        if arch == "plain" and not BY_NAME[fw].channels_last:
            load_canonical(model, dict(weights, fc1=dict(weights["fc1"], kernel=chw)))
        else:
            load_canonical(model, weights)
    return models
