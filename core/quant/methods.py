"""Quantization methods as registered plugins (``static``, ``dynamic``, ``qat``, or a user's own).

The stage runner folds, selects and plans the same way for every method (``stage.prepare``), asking
the method which modes its sites start in and whether it quantizes layer outputs; then it calls
:meth:`QuantMethod.run`, which returns the fixed fake-quant model and its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from slimkit.adapter import FitFn, ModelAdapter, TrainHooks
from slimkit.plugins import Registry
from slimkit.quant.plan import QUANTIZABLE_KINDS, FakeQuantSpec, QuantPlan, SiteParams

if TYPE_CHECKING:
    from slimkit.quant.moments import Moments
    from slimkit.quant.stage import Prepared
    from slimkit.recipe import ActivationQuant, QuantizeStage, WeightQuant


@dataclass(frozen=True)
class QuantContext:
    """What a method may use besides the prepared model: the stage's recipe path (for messages),
    sample inputs (calibration), training data and a user's ``fit_fn``, progress hooks."""

    field: str
    sample: np.ndarray
    train_data: Any = None
    fit_fn: FitFn | None = None
    progress: TrainHooks | None = None
    verbose: bool = True
    #: the stage's distillation objective (``slimkit.distill.objective``), for methods that train
    objective: Any = None


@dataclass
class QuantOutcome:
    """A method's result: the fixed fake-quant model, every site's parameters, the calibrated or
    learned activation ranges (for the report) and the optimizer steps run.

    A method that keeps some of the prepared plan's layers float returns the ``plan`` it used and the
    ``floated`` layers; ``warnings`` are messages for the user (the stage runner prefixes the recipe path,
    reports and warns). ``outputs``: the float and the returned model's outputs on the first
    ``FIDELITY_SAMPLES`` calibration inputs, when the method computed them (the fidelity check reuses them);
    ``reference``: the float model's outputs on the first of those inputs (calibration read them), when
    only those are known; ``site_moments``: the float model's activation sites' moments on the first
    ``MAPPING_SAMPLES`` calibration inputs, when calibration took them (export maps sites with them).
    """

    model: ModelAdapter
    params: dict[str, SiteParams]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    steps: int = 0
    plan: "QuantPlan | None" = None
    floated: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    outputs: tuple[np.ndarray, np.ndarray] | None = None
    reference: np.ndarray | None = None
    site_moments: "dict[str, Moments] | None" = None


class QuantMethod:
    """One quantization method; subclasses register with :data:`QUANT_METHODS`.

    Attributes:
        trains: the method fine-tunes (the stage needs ``fine_tune``); post-training otherwise.
        kinds: layer kinds it quantizes when the selector names none.
        quantizes_outputs: layer outputs get activation sites too (static, qat), not only inputs.
    """

    trains: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = QUANTIZABLE_KINDS
    quantizes_outputs: ClassVar[bool] = True

    def __init__(self, options: Any) -> None:
        self.options = options

    def check(self, stage: "QuantizeStage", path: str) -> None:
        """Raises RecipeError (naming the field under ``path``) for settings the method cannot honour."""

    def kernel_mode(self, weights: "WeightQuant") -> str:
        """The fake-quant mode kernels start in."""
        return "fixed"

    def activation_spec(self, acts: "ActivationQuant") -> FakeQuantSpec:
        """The spec of every activation site."""
        from slimkit.quant.specs import activation_spec

        return activation_spec(acts, "fixed")

    def run(self, prepared: "Prepared", stage: "QuantizeStage", ctx: QuantContext) -> QuantOutcome:
        """Quantizes the prepared model; every site of the returned model holds fixed parameters."""
        raise NotImplementedError


#: Calibration inputs (the first ones) on which a quantized model's outputs are compared with the float model's.
FIDELITY_SAMPLES = 64

#: name -> quantization method class; recipe validation (``quantize.method``) reads it.
QUANT_METHODS: Registry[type[QuantMethod]] = Registry(
    "quantization method", builtins=("slimkit.quant.static", "slimkit.quant.dynamic", "slimkit.quant.qat"))


def method_of(stage: "QuantizeStage") -> QuantMethod:
    """The registered method of ``stage`` with the stage's options."""
    return QUANT_METHODS.get(stage.method).impl(stage.options)


def check_post_training_bits(stage: "QuantizeStage", path: str, method: str) -> None:
    """Post-training methods export what they produce: 8-bit weights and activations only."""
    from slimkit.errors import RecipeError

    for where, w in [(f"{path}.weights", stage.weights)] + [
            (f"{path}.overrides[{i}].weights", o.weights) for i, o in enumerate(stage.overrides)]:
        if w.bits != 8:
            raise RecipeError(f"{where}.bits: {method} quantization exports 8-bit weights, got {w.bits}; "
                              "lower bit widths are simulated by method qat")
    if stage.activations.bits != 8:
        raise RecipeError(f"{path}.activations.bits: {method} quantization uses 8-bit activations, "
                          f"got {stage.activations.bits}")
