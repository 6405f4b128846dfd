"""Commented starter recipes for ``slimkit recipe init``: a header, one stage per method asked for, the
export section. Every combination parses (tests/cli check each method)."""

from __future__ import annotations

HEADER = """\
# slimkit recipe (README, section Recipe): the same file serves Keras and PyTorch models.
version: 1
seed: 0                        # batch order, initial masks, random criteria: the same run twice
layers:                        # default selector for every stage (a stage's own `layers` overrides keys)
  kinds: [conv, dense]         # dense, conv, conv1d/2d/3d, depthwise_conv, embedding, attention, recurrent
  exclude: ["*logits*"]        # fnmatch globs on layer names: keep the classifier dense
"""

FINE_TUNE = """\
fine_tune:                     # default training of every stage; `fine_tune: null` in a stage = one-shot
  epochs: 10
  batch_size: 32
  optimizer: adam              # adam | adamw | sgd | rmsprop, or {name: sgd, momentum: 0.9}
  learning_rate: 1.0e-3
  loss: sparse_categorical_crossentropy   # | categorical_crossentropy | binary_crossentropy | mse
  from_logits: true            # the model outputs logits (no softmax)
"""

NO_FINE_TUNE = """\
# fine_tune: {epochs: 10, batch_size: 32, optimizer: adam, learning_rate: 1.0e-3}   # for stages that train
"""

STAGES = {
    "magnitude": """\
  - prune:                     # unstructured: the smallest weights of each kernel set to zero
      method: magnitude
      sparsity: 0.8            # fraction of each kernel zeroed (scope: layer) or of all kernels (global)
      scope: layer
      schedule: {kind: polynomial, begin: 0.0, end: 0.6, every: 5}   # gradual, over fine-tuning
""",
    "channel": """\
  - prune:                     # structured: whole channels removed; the model is rebuilt smaller
      method: channel
      sparsity: 0.5            # fraction of the channels of each group removed
      criterion: l2            # l1 | l2 | fpgm | bn_scale | taylor | apoz | mean_activation | random
      round_to: 1              # kept channels rounded to a multiple (8 suits fast kernels)
      schedule: {kind: polynomial, begin: 0.0, end: 0.5, every: 10}
""",
    "n:m": """\
  - prune:                     # semi-structured: N of every M consecutive input weights kept (2:4)
      method: n:m
      n: 2
      m: 4
""",
    "lottery": """\
  - prune:                     # iterative magnitude pruning with weight rewinding (lottery tickets)
      method: lottery
      sparsity: 0.8
      rounds: 3                # prune events, each followed by training
      rewind: 0.05             # rewind to this fraction of the first round's steps
""",
    "admm": """\
  - prune:                     # ADMM: weights pulled towards the sparsity target while training
      method: admm
      target: magnitude        # magnitude (masks) | channel (removed, smaller model)
      sparsity: 0.5
      every: 10                # optimizer steps between the auxiliary variables' updates
      retrain: 0.3             # share of the steps after the hard projection
""",
    "static": """\
  - quantize:                  # post-training static int8: calibrated activation ranges, no training
      method: static
      weights: {bits: 8, per_channel: true, symmetric: true}
      activations: {bits: 8, calibration: minmax, samples: 256}   # minmax | percentile | entropy | mse
      fine_tune: null
""",
    "dynamic": """\
  - quantize:                  # dynamic int8: weights int8, activation ranges computed at run time
      method: dynamic
      fine_tune: null
""",
    "qat": """\
  - quantize:                  # quantization-aware training: fake-quant while fine-tuning
      method: qat
      weights: {bits: 8, learn: minmax}
      activations: {bits: 8, learn: ema}
      fine_tune: {epochs: 2, learning_rate: 1.0e-4}
""",
    "distill": """\
  - distill:                   # knowledge distillation from a teacher
      teacher: teacher.onnx    # an ONNX file (either framework), a .keras file, or a folder slimkit saved
      temperature: 4.0
      alpha: 0.7               # weight of the teacher's softened outputs against the labels
""",
}

FOOTER = """\
export:
  onnx: {opset: 17, verify: true}   # the exported file is checked in onnxruntime against the framework
"""

#: Methods whose stage trains with the default fine_tune (the others are post-training).
TRAINING = ("magnitude", "channel", "lottery", "admm", "qat", "distill")


def starter(methods: tuple[str, ...]) -> str:
    """The recipe text with a stage per method, in order (``magnitude`` when none)."""
    methods = methods or ("magnitude",)
    training = FINE_TUNE if any(m in TRAINING for m in methods) else NO_FINE_TUNE
    return HEADER + training + "stages:\n" + "".join(STAGES[m] for m in methods) + FOOTER
