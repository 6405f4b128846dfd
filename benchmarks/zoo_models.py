"""The models of the coverage sweep (benchmarks/zoo.py), each with the data it is swept on.

Every builder returns a fresh model with random weights (nothing is downloaded) and its inputs in the
framework's own layout: Keras applications take 16 images in [0, 255] (they include their own
preprocessing), the Keras and PyTorch sequence models int token ids, Hugging Face vision models
``{"pixel_values": float32 NCHW}`` and text models a tokenizer-like ``{"input_ids", "attention_mask"}``
dict (int64). Batch-norm statistics are re-estimated on those inputs before the model is handed out:
random weights with the default statistics (mean 0, variance 1) make deep networks degenerate (logits
of 1e-10, or overflowing), and nothing could then be compared.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SAMPLES = 16  # inputs per model: calibration, export sample and comparison data at once
VOCAB, SEQ, WIDTH, CLASSES = 100, 16, 32, 10
IMAGE = 64  # Keras applications' side (or their minimum); Hugging Face vision models use 32
HF_IMAGE = 32

#: Keras application -> its minimum input side where that is above IMAGE.
KERAS_APPS = {"EfficientNetB0": IMAGE, "MobileNetV3Small": IMAGE, "ConvNeXtTiny": IMAGE, "DenseNet121": IMAGE,
              "ResNet50V2": IMAGE, "InceptionV3": 75, "Xception": 71, "NASNetMobile": IMAGE,
              "EfficientNetV2B0": IMAGE, "RegNetX002": IMAGE}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the sweep.

    Attributes:
        name: row name in the table (``--only`` matches it).
        framework: ``keras`` or ``torch``.
        family: ``keras-app``, ``keras-seq``, ``hf-vision``, ``hf-text`` or ``torch-seq``.
        build: returns ``(model, inputs)``: a fresh model, batch-norm statistics re-estimated.
        tokens: True for token inputs (sequence models), which also get the ``dynamic`` operation.
        available: None, or why the model cannot be built in this environment (the case is listed, not counted).
    """

    name: str
    framework: str
    family: str
    build: Callable[[], tuple[Any, Any]]
    tokens: bool = False
    available: str | None = None


# ------------------------------------------------------------------------------------------------ data
def images_nhwc(side: int, seed: int = 0) -> np.ndarray:
    """Images in [0, 255] (the Keras applications rescale them themselves)."""
    return np.random.default_rng(seed).uniform(0.0, 255.0, (SAMPLES, side, side, 3)).astype(np.float32)


def token_ids(dtype: Any, seed: int = 0) -> np.ndarray:
    """Token ids in [2, VOCAB) (0 and 1 are pad tokens of some configs)."""
    return np.random.default_rng(seed).integers(2, VOCAB, (SAMPLES, SEQ)).astype(dtype)


def tokenized(seed: int = 0) -> dict[str, np.ndarray]:
    """What a tokenizer returns for a padded batch: every other sample ends with 4 padded positions."""
    ids = token_ids(np.int64, seed)
    mask = np.ones_like(ids)
    mask[1::2, -4:] = 0
    ids[mask == 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pixel_values(seed: int = 0) -> dict[str, np.ndarray]:
    """Normalised images as a Hugging Face image processor returns them (NCHW, standard normal)."""
    x = np.random.default_rng(seed).standard_normal((SAMPLES, 3, HF_IMAGE, HF_IMAGE)).astype(np.float32)
    return {"pixel_values": x}


# ----------------------------------------------------------------------------------------------- keras
def _keras_layers(layer: Any) -> list[Any]:
    """Every layer inside ``layer``, nested models included."""
    out = []
    for sub in getattr(layer, "layers", []):
        out.append(sub)
        out.extend(_keras_layers(sub))
    return out


def keras_reestimate_bn(model: Any, x: Any) -> None:
    """Sets every BatchNormalization's moving statistics to its batch statistics on ``x``.

    momentum 0 makes one training-mode call overwrite the moving averages; dropout is switched off
    for that call so that the statistics are those of the inference-time activations.
    """
    import keras

    layers = _keras_layers(model)
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return
    drops = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    saved = [(layer, layer.momentum) for layer in norms], [(layer, layer.rate) for layer in drops]
    for layer in norms:
        layer.momentum = 0.0
    for layer in drops:
        layer.rate = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in saved[0]:
            layer.momentum = momentum
        for layer, rate in saved[1]:
            layer.rate = rate


def keras_app(name: str) -> tuple[Any, np.ndarray]:
    """A keras.applications model: random weights, 10 classes, logits out."""
    import keras

    keras.utils.set_random_seed(0)
    side = KERAS_APPS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3), classes=10,
                                              classifier_activation=None)
    x = images_nhwc(side)
    keras_reestimate_bn(model, x)
    return model, x


def keras_sequence(arch: str) -> tuple[Any, np.ndarray]:
    """Token classifiers written as a user would: int32 ids -> Embedding -> block -> Dense logits."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((SEQ,), dtype="int32", name="tokens")
    h = L.Embedding(VOCAB, WIDTH, name="embed")(inp)
    if arch == "conv1d":
        h = L.Conv1D(WIDTH, 3, padding="same", activation="relu", name="conv1")(h)
        h = L.Conv1D(WIDTH, 3, padding="same", activation="relu", name="conv2")(h)
        h = L.GlobalMaxPooling1D()(h)
    elif arch == "lstm":
        h = L.LSTM(WIDTH, name="lstm")(h)
    elif arch == "gru":
        h = L.GRU(WIDTH, name="gru")(h)
    else:  # one post-norm transformer encoder block
        a = L.MultiHeadAttention(4, WIDTH // 4, name="attn")(h, h)
        h = L.LayerNormalization(name="norm1")(L.Add()([h, a]))
        f = L.Dense(2 * WIDTH, activation="relu", name="ffn1")(h)
        f = L.Dense(WIDTH, name="ffn2")(f)
        h = L.LayerNormalization(name="norm2")(L.Add()([h, f]))
        h = L.GlobalAveragePooling1D()(h)
    out = L.Dense(CLASSES, name="logits")(h)
    return keras.Model(inp, out, name=f"keras_{arch}"), token_ids(np.int32)


# ----------------------------------------------------------------------------------------------- torch
def torch_reestimate_bn(model: Any, x: Any) -> None:
    """Recomputes every batch norm's running statistics on ``x`` (cumulative average of one pass).

    Only the batch norms are put in training mode, so dropout and stochastic depth stay off.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    model.eval()
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        with torch.no_grad():
            call_torch(model, x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.eval()


def call_torch(model: Any, x: Any) -> Any:
    """The model's raw output for numpy inputs (one array or a dict of named arrays)."""
    import torch

    if isinstance(x, dict):
        return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in x.items()})
    return model(torch.from_numpy(np.asarray(x)))


def _torch_sequence_classes() -> dict[str, type]:
    """Defined on first use so that importing this module does not import torch."""
    import torch
    from torch import nn

    class TokenTransformer(nn.Module):
        """Embedding + learned positions -> 2 nn.TransformerEncoder layers -> mean -> Linear."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.pos = nn.Parameter(0.02 * torch.randn(1, SEQ, WIDTH))  # learned positions
            layer = nn.TransformerEncoderLayer(WIDTH, 4, 2 * WIDTH, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(WIDTH, CLASSES)

        def forward(self, tokens):
            h = self.encoder(self.embed(tokens) + self.pos[:, :tokens.shape[1]])
            return self.head(h.mean(dim=1))

    class TokenRNN(nn.Module):
        """Embedding -> one nn.LSTM / nn.GRU layer -> last step -> Linear."""

        def __init__(self, cell: type) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, WIDTH)
            self.rnn = cell(WIDTH, WIDTH, batch_first=True)
            self.head = nn.Linear(WIDTH, CLASSES)

        def forward(self, tokens):
            out, _ = self.rnn(self.embed(tokens))
            return self.head(out[:, -1])

    return {"transformer": TokenTransformer, "rnn": TokenRNN}


_TORCH_CLASSES: dict[str, type] = {}


def torch_sequence(arch: str) -> tuple[Any, np.ndarray]:
    """PyTorch token classifiers (int64 ids): ``transformer``, ``lstm`` or ``gru``."""
    import torch

    if not _TORCH_CLASSES:
        _TORCH_CLASSES.update(_torch_sequence_classes())
    torch.manual_seed(0)
    if arch == "transformer":
        model = _TORCH_CLASSES["transformer"]()
    else:
        model = _TORCH_CLASSES["rnn"](torch.nn.LSTM if arch == "lstm" else torch.nn.GRU)
    return model.eval(), token_ids(np.int64)


# ---------------------------------------------------------------------------------------- transformers
def _hf_config(name: str) -> tuple[str, Any]:
    """The model class name and a small config: 2 layers/stages, width 32 (or 16 per stage), 4 heads."""
    import transformers as t

    text = dict(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=2 * WIDTH, max_position_embeddings=64, num_labels=CLASSES)
    stages = dict(hidden_sizes=[16, 32], depths=[1, 1], num_labels=CLASSES)
    configs = {
        "ResNet": ("ResNetForImageClassification", lambda: t.ResNetConfig(
            embedding_size=16, layer_type="basic", **stages)),
        "MobileNetV2": ("MobileNetV2ForImageClassification", lambda: t.MobileNetV2Config(
            image_size=HF_IMAGE, depth_multiplier=0.35, num_labels=CLASSES)),
        "ConvNeXt": ("ConvNextForImageClassification", lambda: t.ConvNextConfig(num_stages=2, **stages)),
        "EfficientNet": ("EfficientNetForImageClassification", lambda: t.EfficientNetConfig(
            image_size=HF_IMAGE, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320,
            num_labels=CLASSES)),
        "RegNet": ("RegNetForImageClassification", lambda: t.RegNetConfig(
            embedding_size=16, groups_width=8, layer_type="x", **stages)),
        "ViT": ("ViTForImageClassification", lambda: t.ViTConfig(
            image_size=HF_IMAGE, patch_size=8, **{k: v for k, v in text.items()
                                                   if k not in ("vocab_size", "max_position_embeddings")})),
        "Swin": ("SwinForImageClassification", lambda: t.SwinConfig(
            image_size=HF_IMAGE, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4,
            num_labels=CLASSES)),
        "BERT": ("BertForSequenceClassification", lambda: t.BertConfig(**text)),
        "DistilBERT": ("DistilBertForSequenceClassification", lambda: t.DistilBertConfig(
            vocab_size=VOCAB, dim=WIDTH, n_layers=2, n_heads=4, hidden_dim=2 * WIDTH, max_position_embeddings=64,
            num_labels=CLASSES)),
        "RoBERTa": ("RobertaForSequenceClassification", lambda: t.RobertaConfig(pad_token_id=1, **text)),
        "GPT-2": ("GPT2LMHeadModel", lambda: t.GPT2Config(
            vocab_size=VOCAB, n_embd=WIDTH, n_layer=2, n_head=4, n_positions=64, use_cache=False)),
    }
    cls, make = configs[name]
    return cls, make()


HF_VISION = ("ResNet", "MobileNetV2", "ConvNeXt", "EfficientNet", "RegNet", "ViT", "Swin")
HF_TEXT = ("BERT", "DistilBERT", "RoBERTa", "GPT-2")


def hf_model(name: str) -> tuple[Any, dict[str, np.ndarray]]:
    """A Hugging Face transformers model from a small config (random weights), in eval mode."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    cls, config = _hf_config(name)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).eval()
    if name == "EfficientNet":
        # its _init_weights draws batch-norm scales from N(0, 0.02) (trained ones are ~1): every block
        # then shrinks activations 50-fold and the logits end at 1e-35, so set them as a trained net has them
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.fill_(1.0)
    x = pixel_values() if name in HF_VISION else tokenized()
    torch_reestimate_bn(model, x)
    return model, x


# -------------------------------------------------------------------------------------------- registry
def _keras_app_available(name: str) -> str | None:
    import keras

    return None if hasattr(keras.applications, name) else f"not available in this Keras ({keras.__version__})"


def model_specs() -> list[ModelSpec]:
    """Every model of the sweep, in table order (Keras applications checked for availability)."""
    specs = [ModelSpec(name, "keras", "keras-app", (lambda n=name: keras_app(n)),
                       available=_keras_app_available(name)) for name in KERAS_APPS]
    specs += [ModelSpec(f"keras-{arch}", "keras", "keras-seq", (lambda a=arch: keras_sequence(a)), tokens=True)
              for arch in ("conv1d", "lstm", "gru", "mha")]
    specs += [ModelSpec(f"hf-{name}", "torch", "hf-vision", (lambda n=name: hf_model(n))) for name in HF_VISION]
    specs += [ModelSpec(f"hf-{name}", "torch", "hf-text", (lambda n=name: hf_model(n)), tokens=True)
              for name in HF_TEXT]
    specs += [ModelSpec(f"torch-{arch}", "torch", "torch-seq", (lambda a=arch: torch_sequence(a)), tokens=True)
              for arch in ("transformer", "lstm", "gru")]
    return specs


def framework_logits(model: Any, x: Any) -> np.ndarray:
    """The model's logits on ``x`` computed by its framework, in float64.

    PyTorch: the tensor output, or ``.logits`` of a transformers output. Keras: the output of an
    inference-mode call. Written here rather than taken from slimkit so that the sweep checks slimkit
    against the frameworks, not against itself.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        return np.asarray(model(x, training=False), dtype=np.float64)
    with torch.no_grad():
        out = call_torch(model, x)
    if not isinstance(out, torch.Tensor):
        out = out["logits"] if "logits" in out else out[0]
    return out.detach().numpy().astype(np.float64)
