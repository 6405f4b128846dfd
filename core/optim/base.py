"""What an optimizer plugin is: an update rule written once, run by every framework's driver.

An :class:`UpdateRule` holds its frozen options and updates one parameter from its gradient through
:class:`slimkit.ops.TensorOps`, so the same formulas run in Keras (inside the compiled train step),
in PyTorch (a ``torch.optim.Optimizer`` driver) and in numpy. Twins therefore train alike however
each framework's own optimizers differ (Keras adds epsilon to the uncorrected ``sqrt(v)`` in Adam
and uses ``sqrt(v + eps)`` in RMSprop; PyTorch does neither). The documented formulas are
PyTorch's (``torch.optim``), so a PyTorch user sees what they know.
"""

from __future__ import annotations

from typing import Any, ClassVar

from slimkit.ops import TensorOps
from slimkit.plugins import Registry


class UpdateRule:
    """One optimizer's update of one parameter; subclasses register with :data:`OPTIMIZERS`.

    ``step`` counts from 1 (a Python number, or a float tensor inside a compiled step) and ``lr``
    is the learning rate; ``slots`` are the parameter's state variables, zero-initialised, named by
    :meth:`slot_names`.
    """

    name: ClassVar[str] = ""

    def __init__(self, options: Any) -> None:
        self.options = options

    def slot_names(self) -> tuple[str, ...]:
        """State kept per parameter, each a zero tensor of the parameter's shape at the start."""
        return ()

    def update(self, ops: TensorOps, param: Any, grad: Any, slots: dict[str, Any], step: Any, lr: Any) -> None:
        """Updates ``param`` (and ``slots``) in place through ``ops.assign``."""
        raise NotImplementedError


#: name -> update-rule class; recipe validation (``fine_tune.optimizer``) reads it.
OPTIMIZERS: Registry[type[UpdateRule]] = Registry(
    "optimizer", builtins=("slimkit.optim.sgd", "slimkit.optim.adam", "slimkit.optim.rmsprop"))


def make_rule(name: str, options: Any = None) -> UpdateRule:
    """The update rule registered as ``name`` with ``options`` (its defaults when None)."""
    entry = OPTIMIZERS.get(name)
    return entry.impl(options if options is not None else entry.options())
