"""A Keras optimizer that runs slimkit's update rules (``slimkit.optim``) inside the compiled step.

Keras' own Adam and RMSprop compute other formulas than the ones slimkit documents (PyTorch's), so
fine-tuning uses this driver: the rule is written once in core and applied here through
:class:`KerasOps`. One class serves Keras 3 and tf_keras (whose optimizer base has another
signature for ``update_step`` and ``add_variable_from_reference``); it is defined per keras module
on first use, like the training callback.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from slimkit.optim import OPTIMIZERS, UpdateRule, make_rule
from slimkit.plugins import options_dict, parse_options

_CLASSES: dict[str, type] = {}


def make_optimizer(k: ModuleType, rule: UpdateRule, learning_rate: float) -> Any:
    """A ``k.optimizers.Optimizer`` applying ``rule`` with ``learning_rate``."""
    return optimizer_class(k)(rule.name, options_dict(rule.options), learning_rate=learning_rate)


def optimizer_class(k: ModuleType) -> type:
    """``SlimkitOptimizer`` for the keras module ``k`` (``keras`` or ``tf_keras``), defined once."""
    cls = _CLASSES.get(k.__name__)
    if cls is None:
        cls = _define(k, legacy=k.__name__ == "tf_keras")
        _CLASSES[k.__name__] = cls
    return cls


def _define(k: ModuleType, legacy: bool) -> type:
    import tensorflow as tf

    class SlimkitOptimizer(k.optimizers.Optimizer):  # type: ignore[misc, name-defined]
        """Applies a slimkit update rule; ``rule`` and ``options`` make it serializable."""

        def __init__(self, rule: str, options: dict[str, Any] | None = None, learning_rate: Any = 1e-3,
                     name: str | None = None, **kwargs: Any) -> None:
            entry = OPTIMIZERS.get(rule)
            if legacy:  # tf_keras subclasses build their learning rate themselves
                super().__init__(name=name or f"slimkit_{rule}", **kwargs)
                self._learning_rate = self._build_learning_rate(learning_rate)
            else:
                super().__init__(learning_rate=learning_rate, name=name or f"slimkit_{rule}", **kwargs)
            self.rule_name = rule
            self.rule_options = dict(options or {})
            self._rule = make_rule(rule, parse_options(entry.options, self.rule_options, "optimizer"))
            from .ops import KerasOps

            self._ops = KerasOps(self._assign_value)
            self._state: list[dict[str, Any]] = []

        def _assign_value(self, target: Any, value: Any) -> None:
            if legacy:
                target.assign(value)
            else:
                self.assign(target, value)

        def build(self, variables: list[Any]) -> None:
            if legacy:
                super().build(variables)
                if getattr(self, "_built", False):
                    return
                self._state = [{s: self.add_variable_from_reference(model_variable=v, variable_name=s)
                                for s in self._rule.slot_names()} for v in variables]
                self._built = True
                return
            if self.built:
                return
            super().build(variables)
            self._state = [{s: self.add_variable_from_reference(v, s) for s in self._rule.slot_names()}
                           for v in variables]

        def _slots(self, variable: Any) -> dict[str, Any]:
            if legacy:
                return self._state[self._index_dict[self._var_key(variable)]]
            return self._state[self._get_variable_index(variable)]

        def _apply(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            if isinstance(gradient, tf.IndexedSlices):  # embeddings: the rules are dense
                gradient = tf.convert_to_tensor(gradient)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            self._rule.update(self._ops, variable, tf.cast(gradient, dtype), self._slots(variable), step,
                              tf.cast(learning_rate, dtype))

        if legacy:
            def update_step(self, gradient: Any, variable: Any) -> None:
                self._apply(gradient, variable, self.learning_rate)
        else:
            def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
                self._apply(gradient, variable, learning_rate)

        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            config.update({"rule": self.rule_name, "options": dict(self.rule_options)})
            if legacy:
                config["learning_rate"] = self._serialize_hyperparameter(self._learning_rate)
            return config

    SlimkitOptimizer.__module__ = __name__
    SlimkitOptimizer.__qualname__ = "SlimkitOptimizer"
    register = getattr(getattr(k, "saving", None), "register_keras_serializable", None) or \
        k.utils.register_keras_serializable
    return register(package="slimkit")(SlimkitOptimizer)
