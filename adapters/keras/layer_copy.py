"""Layer copies from configs whose variables start as zeros, for copies whose values are set right after.

Every model copy slimkit makes (the working copy, the batch-norm-folded model, the fake-quant model
and its float twin) rebuilds layers from their configs and then assigns every variable from the
original. Building a layer runs its initializers first: random draws for every kernel, about half of
a ResNet50 clone's time, thrown away a moment later. A :class:`ZeroInit` copies layers with their
``*_initializer`` entries set to zeros and, once the model is built and filled, puts the original
initializers back on the layers, so the copy's ``get_config()`` is the original's (retraining it from
its config initialises as the user's model would).

A layer whose initializers are not assignable attributes of the same names (a custom layer storing
them differently, a recurrent layer whose are read-only properties of its cell's) cannot have them put
back; it is copied from its config unchanged.
"""

from __future__ import annotations

from typing import Any


def named_config(layer: Any) -> dict[str, Any]:
    """``layer.get_config()`` with the layer's name: Keras's base config of a custom layer that does
    not override ``get_config`` leaves the name out, and its copy would get a generated one."""
    config = layer.get_config()
    return config if "name" in config else {**config, "name": layer.name}


class ZeroInit:
    """Copies layers with zero initializers and restores the originals with :meth:`restore`."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self._pending: list[tuple[Any, dict[str, Any]]] = []

    def copy(self, layer: Any, config: dict[str, Any] | None = None) -> Any:
        """``type(layer).from_config(config)`` (``layer.get_config()`` by default), built later with
        zero-initialised variables when its initializers can be put back."""
        config = named_config(layer) if config is None else config
        keys = [key for key, value in config.items() if key.endswith("_initializer") and value is not None]
        if not keys:
            return type(layer).from_config(config)
        new = type(layer).from_config({**config, **{key: "zeros" for key in keys}})
        if not all(self._settable(new, key) for key in keys):
            return type(layer).from_config(config)
        self._pending.append((new, {key: config[key] for key in keys}))
        return new

    def _settable(self, layer: Any, key: str) -> bool:
        """The layer keeps ``key`` as an initializer attribute that can be assigned (a GRU's is a
        read-only property of its cell's)."""
        value = getattr(layer, key, None)
        if not isinstance(value, self.k.initializers.Initializer):
            return False
        try:  # a new object: assigning the same one is skipped by TensorFlow's attribute tracking
            setattr(layer, key, self.k.initializers.get("zeros"))
        except (AttributeError, TypeError):
            return False
        return True

    def restore(self) -> None:
        """Puts the original initializers back on every layer copied so far (call once they are built
        and their variables assigned)."""
        for layer, initializers in self._pending:
            for key, value in initializers.items():
                setattr(layer, key, self.k.initializers.get(value))
        self._pending.clear()
