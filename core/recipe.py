"""Recipe: YAML file, YAML string or dict -> frozen, validated dataclasses.

Every validation error names the exact field path (``stages[0].prune.sparsity``) and the bad value.
The format is the one in the project's API contract; keys are fixed, new keys are additions.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from slimkit import recipe_source
from slimkit.errors import RecipeError
from slimkit.optim import UpdateRule, make_rule
from slimkit.plugins import bounded
from slimkit.reprs import short_repr

#: Neutral layer kinds a selector may name. ``conv1d``/``conv2d``/``conv3d`` narrow ``conv`` by rank.
LAYER_KINDS = (
    "dense", "conv", "conv1d", "conv2d", "conv3d",
    "depthwise_conv", "depthwise_conv1d", "depthwise_conv2d",
    "embedding", "batchnorm", "layernorm", "recurrent", "attention",
)
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy", "mse")
SCOPES = ("global", "layer")
SCHEDULE_KINDS = ("constant", "polynomial")

#: ONNX opsets ``export.onnx.opset`` may name: 13 is the first with per-channel DequantizeLinear (QDQ
#: export needs it); 23 is the highest torch.onnx (torch 2.13) writes. tf2onnx 1.17 writes up to 18 and
#: the Keras adapter raises its graphs to 19..23 with onnx's version converter.
MIN_OPSET, MAX_OPSET = 13, 23

_UNSET: Any = object()  # marks "key absent" where None is a meaningful value (fine_tune: null)


@dataclass(frozen=True)
class LayerSelector:
    """Which layers a stage touches: name globs and kinds, minus exclude globs."""

    names: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] | None = None  # None: every kind the algorithm supports
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class FineTune:
    """Training settings shared by every stage that fine-tunes.

    ``optimizer`` names a registered update rule (:mod:`slimkit.optim`); ``optimizer_options`` is
    its options dataclass, None for its defaults. Both adapters run the same rule, so twins train
    alike. Batches are drawn in an order core computes (``slimkit.batches``), the last one partial.
    """

    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "sparse_categorical_crossentropy"
    from_logits: bool = True
    shuffle: bool = True
    optimizer_options: Any = None
    #: in a distributed job, batch norms compute their batch statistics over the global batch (every
    #: replica's share) instead of each replica's own; no effect in a single process
    sync_batchnorm: bool = False

    def rule(self) -> UpdateRule:
        """The optimizer's update rule with its options."""
        return make_rule(self.optimizer, self.optimizer_options)


@dataclass(frozen=True)
class Distributed:
    """How slimkit's collectives behave in a distributed job (ignored in a single process).

    Attributes:
        timeout_s: how long a rank waits for the others in one collective (a gradient all-reduce, a
            calibration merge, the wait for the writer's files) before it stops with DistributedError:
            a rank that failed or hangs stops the job in bounded time.
    """

    timeout_s: float = 300.0


@dataclass(frozen=True)
class Schedule:
    """How sparsity grows over fine-tuning; ``begin``/``end`` are fractions of all fine-tuning steps."""

    kind: str = "polynomial"
    begin: float = 0.0
    end: float = 0.8
    every: int = 10
    initial: float = 0.0
    power: float = 3.0


@dataclass(frozen=True)
class Hint:
    """A feature (hint) loss: ``weight`` times the mean squared difference between the student layer's
    output and the teacher layer's, through a learned 1x1/linear projection when their widths differ."""

    teacher: str
    student: str
    weight: float = 1.0


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation settings (Hinton et al., 2015).

    The loss is ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * task loss`` plus
    the hints; for an ``mse`` task the soft term is the mean squared difference of the outputs.

    Attributes:
        teacher: a file (ONNX, a framework model file such as ``.keras``, or a folder slimkit saved);
            None: the object passed as ``compress(..., teacher=model)``.
        temperature: T, softening both distributions.
        alpha: the soft term's share of the loss.
        hints: feature losses between named layers.
        teacher_outputs: ``logits`` or ``probabilities``; None: as the student's (``fine_tune.from_logits``).
    """

    teacher: str | None = None
    temperature: float = 4.0
    alpha: float = 0.7
    hints: tuple[Hint, ...] = ()
    teacher_outputs: str | None = None


@dataclass(frozen=True)
class Regularize:
    """Penalties a prune stage adds to its fine-tuning (``regularize:``), each applied as a decoupled
    step after every optimizer step, so the training loops stay untouched.

    ``bn_l1`` is network slimming's L1 strength on the batch-norm scales of the channel groups being
    pruned: after each optimizer step ``gamma <- sign(gamma) * max(|gamma| - lr * bn_l1, 0)`` (the
    proximal step of ``bn_l1 * |gamma|``), until the channels are chosen. Absent (0): off.
    """

    bn_l1: float = bounded(0.0, 0.0, lo_open=True)

    @property
    def active(self) -> bool:
        return self.bn_l1 > 0


@dataclass(frozen=True)
class PruneOverride:
    """A sparsity (or channel ratio) for the layers a selector picks, over the stage's own
    (``overrides:``); picked layers are pruned to it one by one, whatever the stage's ``scope``."""

    layers: LayerSelector
    sparsity: float


@dataclass(frozen=True)
class PruneStage:
    """A pruning stage. ``fine_tune`` is None for one-shot pruning.

    ``method`` names a registered pruning method (:data:`slimkit.pruning.methods.PRUNING_METHODS`)
    and ``options`` is that method's options dataclass (``criterion``, ``round_to``, ``samples`` of
    ``channel``; ``n``, ``m`` of ``n:m``). ``sparsity`` is the fraction of weights (magnitude) or of
    channels (channel) removed; for ``n:m`` it is implied: ``1 - n / m``. ``regularize`` holds the
    penalties fine-tuning adds (methods that take them: ``takes_regularize``). ``overrides`` give the
    layers they pick their own sparsity, later ones winning (methods that take them: ``takes_overrides``);
    a schedule brings each layer to its own value.
    """

    method: str
    sparsity: float
    scope: str
    schedule: Schedule
    layers: LayerSelector
    fine_tune: FineTune | None
    options: Any = None
    regularize: Regularize = Regularize()
    distill: Distill | None = None
    overrides: tuple[PruneOverride, ...] = ()

    @property
    def name(self) -> str:
        return f"prune:{self.method}"




@dataclass(frozen=True)
class WeightQuant:
    """How kernels are quantized.

    ``reduce_range`` (on by default) uses 7-bit weights ([-64, 64]): onnxruntime's u8s8 kernels on
    x86 CPUs without VNNI add pairs of u8 x s8 products in int16 and saturate with full-range
    weights, so the deployed model would silently differ from the simulated one. ``learn`` is the
    QAT weight quantizer: ``minmax`` (range of the current weights), ``lsq`` (learned step size),
    ``dorefa`` (DoReFa-Net, 1 to 8 bits) or ``bnn`` (sign times mean|w|, 1 bit).
    """

    bits: int = 8
    per_channel: bool = True
    symmetric: bool = True
    reduce_range: bool = True
    learn: str = "minmax"


@dataclass(frozen=True)
class ActivationQuant:
    """How activations are quantized: uint8 asymmetric by default (onnxruntime's default).

    ``calibration`` picks the observer for post-training ranges over ``samples`` inputs;
    ``percentile`` is the coverage of the percentile observer. ``learn`` is the QAT activation
    quantizer: ``ema`` (moving average of batch ranges), ``lsq`` (learned step size), ``dorefa``
    (clip to [0, 1], k bits; ReLU outputs only) or ``bnn`` (sign, 1 bit; not exportable).
    """

    bits: int = 8
    symmetric: bool = False
    signed: bool = False
    calibration: str = "minmax"
    samples: int = 256
    percentile: float = 99.99
    learn: str = "ema"
    momentum: float = 0.9
    calibration_options: Any = None


@dataclass(frozen=True)
class QuantOverride:
    """Weight settings for the layers a selector picks, over the stage's own."""

    layers: LayerSelector
    weights: WeightQuant


@dataclass(frozen=True)
class QuantizeStage:
    """A quantization stage: ``static`` or ``dynamic`` post-training, or ``qat`` (fine-tunes).

    Attributes:
        method: static | dynamic | qat.
        weights: kernel settings; ``overrides`` change them per layer.
        activations: activation settings.
        layers: the layers to quantize; the rest stay float (skip by name or kind with ``exclude``
            and ``kinds``).
        fine_tune: QAT training settings; None for post-training methods.
        fold_batchnorm: fold batch norms into the preceding conv/dense first.
        overrides: per-layer weight settings, later ones win.
    """

    method: str
    weights: WeightQuant
    activations: ActivationQuant
    layers: LayerSelector
    fine_tune: FineTune | None
    fold_batchnorm: bool = True
    overrides: tuple[QuantOverride, ...] = ()
    options: Any = None
    distill: Distill | None = None

    @property
    def name(self) -> str:
        return f"quantize:{self.method}"


@dataclass(frozen=True)
class DistillStage:
    """Fine-tuning of the model as it is, with the distillation loss (the student is the model being
    compressed). ``layers`` is unused; kept so every stage has a selector."""

    distill: Distill
    fine_tune: FineTune
    layers: LayerSelector = LayerSelector()

    @property
    def name(self) -> str:
        return "distill"


@dataclass(frozen=True)
class OnnxExport:
    """ONNX export settings.

    ``tolerance`` bounds max|onnx - framework| relative to max(1, max|framework|) for float models.
    Its default, 1e-3, is float32's own reach in deep networks: keras.applications InceptionV3
    (random weights, logits up to 3.6) computed by TensorFlow in float32 is 8.6e-4 from the same
    network in float64, and onnxruntime's float32 is 6.0e-4 from it.
    A quantized model passes when onnxruntime's output matches its simulation within one step of
    the output's scale or ``quant_tolerance`` of the output's range, or else when onnxruntime's
    int8 output is as faithful to the float model as the simulation is: its error against the float
    model (RMS and max) at most ``quant_error_ratio`` times the simulation's. In deep networks a
    rounding tie that the frameworks' float sums break differently moves later layers by a few
    steps without making the model any worse; a wrong scale, saturation or a mis-mapped tensor
    makes it much worse.
    """

    opset: int = 17
    verify: bool = True
    tolerance: float = 1e-3
    quant_tolerance: float = 0.02
    quant_error_ratio: float = 1.5


@dataclass(frozen=True)
class Recipe:
    """A validated compression recipe; build it with :meth:`Recipe.load`."""

    version: int
    seed: int
    layers: LayerSelector
    fine_tune: FineTune | None
    stages: tuple[PruneStage | QuantizeStage | DistillStage, ...]
    export: OnnxExport
    #: ``analyze:``: per-layer sensitivity settings (:mod:`slimkit.tune.analyze_recipe`); None when absent
    analyze: Any = None
    #: ``tune:``: the search over the stages' settings (:mod:`slimkit.tune.recipe`); None when absent
    tune: Any = None
    #: ``distributed:``: collective settings of a multi-process job
    distributed: Distributed = Distributed()
    #: the file the recipe was read from (relative teacher files are looked up beside it too)
    source: str | None = dataclasses.field(default=None, compare=False)
    #: the mapping it was parsed from (the tuner writes the recipes of its trials as edits of it)
    raw: Any = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def load(cls, source: "Recipe | Mapping[str, Any] | str | os.PathLike[str]") -> "Recipe":
        """Loads a recipe from a dict, a YAML string, or a path to a YAML file.

        Args:
            source: a mapping, a YAML document, or a path ending in .yaml/.yml.

        Returns:
            The validated recipe.

        Raises:
            RecipeError: the recipe is malformed; the message names the field path.
        """
        if isinstance(source, Recipe):
            return source
        path = None
        if recipe_source.is_path(source):
            path = Path(source)
            source = recipe_source.parse_yaml(recipe_source.read_file(path), f"recipe file {path}")
        elif isinstance(source, str):
            source = recipe_source.parse_yaml(source)
        if not isinstance(source, Mapping):
            hint = (" (a recipe file's name must end in .yaml or .yml)" if isinstance(source, str)
                    and "\n" not in source and Path(source).suffix else "")
            raise RecipeError(f"recipe must be a mapping of keys, got {type(source).__name__} "
                              f"{short_repr(source)}{hint}")
        recipe_source.check_size(source)
        from slimkit.recipe_parse import parse_recipe  # the parsers import this module's classes

        recipe = dataclasses.replace(parse_recipe(source), raw=source)
        return dataclasses.replace(recipe, source=str(path)) if path is not None else recipe

