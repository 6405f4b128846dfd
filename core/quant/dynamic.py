"""Post-training dynamic quantization: int8 kernels; activations quantized per batch at run time.

Only kernels get fixed parameters. Each quantized layer's input is quantized on every call with
the range of the whole batch, as onnxruntime's ``DynamicQuantizeLinear`` does, so nothing is
calibrated: this suits dense/linear-heavy models whose activation ranges vary between inputs.
"""

from __future__ import annotations

from slimkit.adapter import ModelAdapter
from slimkit.errors import RecipeError
from slimkit.plugins import NoOptions
from slimkit.quant.methods import QUANT_METHODS, QuantContext, QuantMethod, QuantOutcome, check_post_training_bits
from slimkit.quant.plan import FakeQuantSpec
from slimkit.quant.stage import Prepared, finish, weight_params
from slimkit.recipe import ActivationQuant, QuantizeStage


def quantize_dynamic(prepared: Prepared) -> tuple[ModelAdapter, dict, dict]:
    """The fake-quant model with fixed kernels and dynamic activation sites.

    Returns:
        ``(model, params, ranges)`` as :func:`slimkit.quant.static.quantize_static` (no ranges).
    """
    params = weight_params(prepared.adapter, prepared.plan, {})
    return finish(prepared.adapter, prepared.plan, params), params, {}


@QUANT_METHODS.register("dynamic", NoOptions)
class Dynamic(QuantMethod):
    """``method: dynamic``: int8 kernels; each layer's input quantized per batch at run time
    (onnxruntime's ``DynamicQuantizeLinear``: uint8, asymmetric). Dense layers by default."""

    kinds = ("dense",)
    quantizes_outputs = False

    def check(self, stage: QuantizeStage, path: str) -> None:
        check_post_training_bits(stage, path, "dynamic")
        if stage.activations.signed or stage.activations.symmetric:
            raise RecipeError(f"{path}.activations: dynamic quantization uses uint8 asymmetric activations "
                              "(onnxruntime's DynamicQuantizeLinear); drop signed/symmetric")

    def activation_spec(self, acts: ActivationQuant) -> FakeQuantSpec:
        return FakeQuantSpec(0, 255, False, None, "dynamic", bits=8, signed=False)

    def run(self, prepared: Prepared, stage: QuantizeStage, ctx: QuantContext) -> QuantOutcome:
        model, params, ranges = quantize_dynamic(prepared)
        return QuantOutcome(model, params, ranges)
