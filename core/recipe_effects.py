"""Recipe keys that would have no effect where they are written: refused, or warned about.

A key that cannot act in its context is a misunderstanding the user should hear about: a run that
silently ignores ``schedule`` trains something other than what was asked. The rule:

* **RecipeError** for a key written in a stage that cannot use it (the stage is the whole context,
  so the key can only be a mistake): ``schedule`` in a prune stage that does not fine-tune (or
  whose method has no schedule); ``regularize`` in a prune stage that does not fine-tune, whose
  method applies no penalty (all but ``channel``) or that names none; a method's options that its
  other options make moot (``criterion``/``round_to``/``samples`` of ``admm`` with ``target:
  magnitude``: ``PruningMethod.idle_options``); ``weights.learn``, ``activations.learn`` and
  ``activations.momentum`` in a post-training quantize stage; ``activations.calibration``/
  ``samples``/``percentile`` where nothing is calibrated (``dynamic``; ``qat`` whose activations do
  not learn their step size); ``activations.momentum`` in ``qat`` when activations are not ``ema``;
  ``activations.percentile`` with another calibration than ``percentile``;
  ``weights.reduce_range`` with bits other than 8; ``weights.symmetric``/``reduce_range`` and
  ``activations.symmetric``/``signed`` in ``qat`` whose ``learn`` mode sets its own grid (dorefa, bnn).
* **SlimkitWarning** for defaults written at the top level, which a later change of stages may
  make useful again: a top-level ``fine_tune`` mapping when no stage fine-tunes;
  ``export.onnx.tolerance``/``quant_tolerance``/``quant_error_ratio`` with ``verify: false``;
  ``quant_tolerance``/``quant_error_ratio`` in a recipe without a quantize stage; ``from_logits``
  with ``loss: mse``; and for schedule details that ``kind: constant`` makes moot
  (``schedule.end``/``every``/``initial``/``power``).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from slimkit.errors import RecipeError, SlimkitWarning
from slimkit.recipe import FineTune, PruneStage, QuantizeStage, Recipe

_CONSTANT_UNUSED = ("end", "every", "initial", "power")


def check_effects(raw: Mapping[str, Any], recipe: Recipe) -> None:
    """Refuses or warns about keys of ``raw`` (the validated mapping ``recipe`` came from) that have
    no effect in their context; see the module doc for which.

    Raises:
        RecipeError: a stage holds a key it cannot use; the message names the key's path and why.
    """
    for i, (stage_raw, stage) in enumerate(zip(raw["stages"], recipe.stages)):
        (kind, body), = stage_raw.items()
        path = f"stages[{i}].{kind}"
        if isinstance(stage, PruneStage):
            _prune(body, stage, path)
        elif isinstance(stage, QuantizeStage):
            _quantize(body, stage, path)
    _top_level(raw, recipe)


def _given(raw: Any, *keys: str) -> bool:
    """Whether the nested key ``keys`` is written in mapping ``raw``."""
    for key in keys:
        if not isinstance(raw, Mapping) or key not in raw:
            return False
        raw = raw[key]
    return True


def _refuse(path: str, why: str) -> RecipeError:
    return RecipeError(f"{path}: has no effect here: {why}; remove it")


def _prune(body: Mapping[str, Any], stage: PruneStage, path: str) -> None:
    from slimkit.pruning.methods import PRUNING_METHODS, method_of

    trains = stage.fine_tune is not None and stage.fine_tune.epochs > 0
    for key, why in method_of(stage).idle_options().items():
        if _given(body, key):
            raise _refuse(f"{path}.{key}", why)
    if _given(body, "regularize"):
        where = f"{path}.regularize"
        if not getattr(PRUNING_METHODS.get(stage.method).impl, "takes_regularize", False):
            raise _refuse(where, f"method {stage.method} applies no penalty (channel pruning does: network "
                                 "slimming's bn_l1)")
        if not trains:
            raise _refuse(where, "the penalties act during fine-tuning, and the stage does not fine-tune "
                                 "(fine_tune is null or epochs is 0)")
        if not stage.regularize.active:
            raise _refuse(where, "it names no penalty (bn_l1)")
    if not _given(body, "schedule"):
        return
    where = f"{path}.schedule"
    if not getattr(PRUNING_METHODS.get(stage.method).impl, "takes_schedule", True):
        raise _refuse(where, f"method {stage.method} follows no schedule")
    if not trains:
        raise _refuse(where, "the stage does not fine-tune (fine_tune is null or epochs is 0), so the target "
                             "sparsity is applied at once; a schedule spreads it over fine-tuning steps")
    if stage.schedule.kind == "constant":
        for key in _CONSTANT_UNUSED:
            if _given(body, "schedule", key):
                _warn(f"{where}.{key}", "with kind constant the target sparsity holds from begin on")


def _quantize(body: Mapping[str, Any], stage: QuantizeStage, path: str) -> None:
    from slimkit.quant.methods import method_of

    trains = method_of(stage).trains
    if not trains:
        why = f"{stage.method} quantization is post-training; only training methods (qat) learn"
        if _given(body, "weights", "learn"):
            raise _refuse(f"{path}.weights.learn", why)
        for j, item in enumerate(body.get("overrides") or []):
            if _given(item, "weights", "learn"):
                raise _refuse(f"{path}.overrides[{j}].weights.learn", why)
        for key in ("learn", "momentum"):
            if _given(body, "activations", key):
                raise _refuse(f"{path}.activations.{key}", why)
    calibrated = stage.method != "dynamic" and (stage.method != "qat" or _learns(stage.activations.learn))
    if not calibrated:
        why = ("dynamic quantization calibrates nothing (activation ranges are taken per batch at run time)"
               if stage.method == "dynamic" else
               f"qat with activations.learn {stage.activations.learn} calibrates nothing (only a learned step "
               "size, lsq, starts from calibration)")
        for key in ("calibration", "samples", "percentile"):
            if _given(body, "activations", key):
                raise _refuse(f"{path}.activations.{key}", why)
    if trains and stage.method == "qat" and stage.activations.learn != "ema" and _given(body, "activations", "momentum"):
        raise _refuse(f"{path}.activations.momentum", f"momentum is the moving average's (learn: ema), not "
                                                      f"{stage.activations.learn}'s")
    if _given(body, "activations", "percentile") and stage.activations.calibration != "percentile":
        raise _refuse(f"{path}.activations.percentile",
                      f"it sets the percentile observer's coverage, and calibration is {stage.activations.calibration}")
    weights = [(f"{path}.weights", body.get("weights"), stage.weights)] + [
        (f"{path}.overrides[{j}].weights", item.get("weights"), o.weights)
        for j, (item, o) in enumerate(zip(body.get("overrides") or [], stage.overrides))]
    for where, raw_w, w in weights:
        if _given(raw_w, "reduce_range") and w.bits != 8:
            raise _refuse(f"{where}.reduce_range", f"the reduced range is for 8-bit weights (onnxruntime's u8s8 "
                                                   f"kernels), these have {w.bits} bits")
    if not trains:
        return
    grids = [(where, raw_w, w.learn, ("symmetric", "reduce_range")) for where, raw_w, w in weights] + \
            [(f"{path}.activations", body.get("activations"), stage.activations.learn, ("symmetric", "signed"))]
    for where, raw, learn, keys in grids:
        if not _own_grid(learn):
            continue
        for key in keys:
            if _given(raw, key):
                raise _refuse(f"{where}.{key}", f"learn {learn} defines its grid itself, from bits alone")


def _own_grid(mode: str) -> bool:
    from slimkit.quant.fake_quant import mode_of

    return mode_of(mode).own_grid


def _learns(mode: str) -> bool:
    from slimkit.quant.fake_quant import mode_of

    return mode_of(mode).learns_scale


def _warn(path: str, why: str) -> None:
    warnings.warn(f"{path}: has no effect: {why}", SlimkitWarning, stacklevel=5)


def _top_level(raw: Mapping[str, Any], recipe: Recipe) -> None:
    stages = recipe.stages
    if isinstance(raw.get("fine_tune"), Mapping) and all(s.fine_tune is None for s in stages):
        _warn("fine_tune", "no stage fine-tunes (each is post-training or sets fine_tune: null)")
    for path, ft_raw, ft in _fine_tunes(raw, recipe):
        if _given(ft_raw, "from_logits") and ft.loss == "mse":
            _warn(f"{path}.from_logits", "loss mse compares outputs with targets directly")
    onnx = raw.get("export", {}).get("onnx", {}) if isinstance(raw.get("export"), Mapping) else {}
    quantized = any(isinstance(s, QuantizeStage) for s in stages)
    for key in ("tolerance", "quant_tolerance", "quant_error_ratio"):
        if not _given(onnx, key):
            continue
        if not recipe.export.verify:
            _warn(f"export.onnx.{key}", "verify is false, so the exported file is not compared")
        elif key != "tolerance" and not quantized:
            _warn(f"export.onnx.{key}", "it bounds quantized exports, and the recipe has no quantize stage")


def _fine_tunes(raw: Mapping[str, Any], recipe: Recipe) -> list[tuple[str, Any, FineTune]]:
    """``(path, raw mapping, resolved settings)`` of every fine_tune mapping the recipe writes."""
    out = []
    if isinstance(raw.get("fine_tune"), Mapping) and recipe.fine_tune is not None:
        out.append(("fine_tune", raw["fine_tune"], recipe.fine_tune))
    for i, (stage_raw, stage) in enumerate(zip(raw["stages"], recipe.stages)):
        (kind, body), = stage_raw.items()
        if isinstance(body.get("fine_tune"), Mapping) and stage.fine_tune is not None:
            out.append((f"stages[{i}].{kind}.fine_tune", body["fine_tune"], stage.fine_tune))
    return out
