"""Write your own channel-importance criterion once and prune Keras and PyTorch models with it.

A criterion sees numpy arrays only (every member of a channel group, kernels in canonical
(out, in, ...) order), so registering it is all it takes to run on every framework. This one ranks
a channel by the largest magnitude among its weights, over every layer of its group. Twin models
(the same MLP in Keras and PyTorch, identical weights) keep exactly the same channels.

Run:  python examples/custom_criterion.py
"""

from __future__ import annotations

from typing import Any

import numpy as np

import slimkit


@slimkit.register_criterion("max_abs")
class MaxAbs(slimkit.Criterion):
    """A channel is as important as its largest weight, in any layer of its group."""

    def scores(self, group: Any, data: slimkit.CriterionData) -> np.ndarray:
        per_member = [np.abs(slimkit.member_slices(m, data.weights[m.layer])).max(axis=1) for m in group.members]
        return np.max(per_member, axis=0)


RECIPE = {
    "fine_tune": None,  # one-shot: choose and rebuild
    "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "max_abs"}}],
}
SIZES = (64, 48, 32, 10)


def keras_mlp() -> Any:
    import keras

    inp = keras.Input((SIZES[0],))
    x = keras.layers.Dense(SIZES[1], activation="relu", name="fc1")(inp)
    x = keras.layers.Dense(SIZES[2], activation="relu", name="fc2")(x)
    return keras.Model(inp, keras.layers.Dense(SIZES[3], name="logits")(x))


def torch_mlp() -> Any:
    from torch import nn

    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(SIZES[0], SIZES[1]))
    model.add_module("relu1", nn.ReLU())
    model.add_module("fc2", nn.Linear(SIZES[1], SIZES[2]))
    model.add_module("relu2", nn.ReLU())
    model.add_module("logits", nn.Linear(SIZES[2], SIZES[3]))
    return model


def twins(seed: int = 0) -> dict[str, Any]:
    """The MLP in both frameworks with the same random weights (Keras kernels are PyTorch's transposed)."""
    import torch

    rng = np.random.default_rng(seed)
    keras_model, torch_model = keras_mlp(), torch_mlp()
    for name, (fan_in, fan_out) in zip(("fc1", "fc2", "logits"), zip(SIZES, SIZES[1:])):
        kernel = rng.normal(0, np.sqrt(2 / fan_in), (fan_out, fan_in)).astype(np.float32)
        bias = rng.normal(0, 0.05, fan_out).astype(np.float32)
        keras_model.get_layer(name).set_weights([kernel.T, bias])
        with torch.no_grad():
            layer = getattr(torch_model, name)
            layer.weight.copy_(torch.from_numpy(kernel))
            layer.bias.copy_(torch.from_numpy(bias))
    return {"keras": keras_model, "torch": torch_model}


def kept_channels(original: Any, pruned: Any, layers: tuple[str, ...] = ("fc1", "fc2")) -> dict[str, list[int]]:
    """Which output channels of each layer the pruned model kept: rows of the original's canonical
    kernel, whose inputs were sliced as the previous layer's outputs were."""
    from slimkit.pruning.masks import to_canonical
    from slimkit.registry import adapter_for

    def kernel(model: Any, layer: str) -> np.ndarray:
        adapter = adapter_for(model)
        info = next(i for i in adapter.layers() if i.name == layer)
        return to_canonical(adapter.get_weights(layer)["kernel"], info.kernel_perm)

    kept: dict[str, list[int]] = {}
    inputs: list[int] | None = None
    for layer in layers:
        before, after = kernel(original, layer), kernel(pruned, layer)
        if inputs is not None:
            before = before[:, inputs]
        kept[layer] = [int(np.flatnonzero(np.all(before == row, axis=1))[0]) for row in after]
        inputs = kept[layer]
    return kept


def main() -> dict[str, dict[str, list[int]]]:
    """Prunes both twins with the custom criterion; returns framework -> layer -> kept channels."""
    x = np.random.default_rng(1).random((32, SIZES[0]), dtype=np.float32)
    kept: dict[str, dict[str, list[int]]] = {}
    for framework, model in twins().items():
        result = slimkit.compress(model, RECIPE, calib_data=x, verbose=False)
        kept[framework] = kept_channels(model, result.model)
        print(f"{framework}: " + "; ".join(f"{layer} keeps {len(ch)} of its channels: {ch}"
                                          for layer, ch in kept[framework].items()))
    same = kept["keras"] == kept["torch"]
    print("Keras and PyTorch kept the same channels" if same else "the frameworks kept different channels")
    return kept


if __name__ == "__main__":
    main()
