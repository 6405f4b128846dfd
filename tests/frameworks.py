"""The adapters the tests run against, declared once.

Every contract suite (``tests/contract``) takes its framework from the ``framework`` fixture of
``tests/conftest.py``, which is parametrized over :data:`FRAMEWORKS`; parity and end-to-end tests
take their frameworks and pairs from here too. A new adapter gets the whole contract suite by adding
one :class:`Framework` entry: a builder of the contract MLP in that framework, and flags for what the
framework honestly lacks (each suite then asserts the documented alternative, e.g. ExportError). It
joins the parity and end-to-end tests by naming in ``families`` the model builders it has there
(twins.py, zoo.py, the examples): parity tests compare every pair of frameworks of a family.

The contract MLP is the same network in every framework, with the same layer names and, after
:func:`mlp_twin`, the same weights::

    input (16) -> fc1 (dense 32) -> bn (batch norm, eps 1e-5) -> relu -> fc2 (dense 32) -> relu
               -> logits (dense 5)

No activation is fused into a layer, so each layer's graph node and ``layer_outputs`` are its
pre-activation output in every framework.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

# fake_adapter.py lives beside the core tests; make it importable from every test.
sys.path.insert(0, str(Path(__file__).resolve().parent / "core"))

MLP_IN, MLP_HIDDEN, MLP_CLASSES = 16, 32, 5
BN_EPS = 1e-5


# ------------------------------------------------------------------------------------------- fake
def fake_mlp() -> Any:
    """Built layer by layer: ``make_mlp`` fuses the ReLU into fc2, the contract MLP does not."""
    from fake_adapter import FakeBatchNorm, FakeDense, FakeModel, _Relu

    rng = np.random.default_rng(0)

    def dense(name: str, fan_in: int, fan_out: int) -> Any:
        return FakeDense(name, rng.normal(0.0, fan_in ** -0.5, (fan_in, fan_out)), np.zeros(fan_out), relu=False)

    return FakeModel([dense("fc1", MLP_IN, MLP_HIDDEN), FakeBatchNorm("bn", MLP_HIDDEN, rng), _Relu("relu1"),
                      dense("fc2", MLP_HIDDEN, MLP_HIDDEN), _Relu("relu2"), dense("logits", MLP_HIDDEN, MLP_CLASSES)])


@contextlib.contextmanager
def _fake_registered() -> Iterator[None]:
    from fake_adapter import FakeAdapter
    from slimkit.registry import register_adapter, unregister_adapter

    register_adapter(FakeAdapter)
    try:
        yield
    finally:
        unregister_adapter(FakeAdapter)


def _fake_plain(model: Any) -> bool:
    return all(layer.mask is None and not getattr(layer, "quant", None) and layer.kind != "fakequant"
               for layer in model.layers)


def _fake_user_fit(model: Any, callback: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int) -> None:
    callback.begin(epochs * -(-len(x) // batch_size))
    for epoch in range(epochs):
        for i in range(0, len(x), batch_size):
            model.train_step(x[i:i + batch_size], y[i:i + batch_size], lr=0.05)
            callback.step()
        callback.epoch_end(epoch + 1, {"loss": 0.0})


# ------------------------------------------------------------------------------------------ keras
def keras_mlp() -> Any:
    import keras

    L = keras.layers
    inp = keras.Input((MLP_IN,))
    x = L.Dense(MLP_HIDDEN, name="fc1")(inp)
    x = L.ReLU(name="relu1")(L.BatchNormalization(epsilon=BN_EPS, name="bn")(x))
    x = L.ReLU(name="relu2")(L.Dense(MLP_HIDDEN, name="fc2")(x))
    return keras.Model(inp, L.Dense(MLP_CLASSES, name="logits")(x), name="contract_mlp")


def _keras_plain(model: Any) -> bool:
    """No mask constraints, no slimkit layers (fake-quant wrappers)."""
    return (all(getattr(v, "constraint", None) is None for v in model.variables)
            and not any(type(layer).__module__.startswith("slimkit") for layer in model.layers))


def _keras_freeze(model: Any, layer: str) -> None:
    model.get_layer(layer).trainable = False


def _keras_user_fit(model: Any, callback: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback])


# ------------------------------------------------------------------------------------------ torch
def torch_mlp() -> Any:
    import torch.nn.functional as F
    from torch import nn

    class ContractMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(MLP_IN, MLP_HIDDEN)
            self.bn = nn.BatchNorm1d(MLP_HIDDEN, eps=BN_EPS)
            self.fc2 = nn.Linear(MLP_HIDDEN, MLP_HIDDEN)
            self.logits = nn.Linear(MLP_HIDDEN, MLP_CLASSES)

        def forward(self, x):
            return self.logits(F.relu(self.fc2(F.relu(self.bn(self.fc1(x))))))

    return ContractMLP().eval()


def _torch_plain(model: Any) -> bool:
    from torch.nn.utils import parametrize

    return not any(parametrize.is_parametrized(m) or type(m).__module__.startswith("slimkit") for m in model.modules())


def _torch_freeze(model: Any, layer: str) -> None:
    model.get_submodule(layer).requires_grad_(False)


def _torch_user_fit(model: Any, callback: Any, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int) -> None:
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for epoch in range(epochs):
        for i in range(0, len(xt), batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i:i + batch_size]), yt[i:i + batch_size]).backward()
            opt.step()
            callback.step()
        callback.epoch_end(epoch + 1, {"loss": 0.0})
    model.eval()


# ------------------------------------------------------------------------------------ declaration
@dataclass(frozen=True, eq=False)
class Framework:
    """One adapter under test.

    Attributes:
        name: the adapter's ``framework`` name; the test id.
        mlp: builds the contract MLP (see the module docstring) with arbitrary weights.
        is_plain: True if a model carries no slimkit wrappers (masks, constraints, parametrizations).
        user_fit: ``user_fit(model, callback, x, y, epochs, batch_size)``: a user's own training loop in
            this framework, driving slimkit's callback as the README tells users to.
        channels_last: image inputs are NHWC (else NCHW).
        families: the other model builders the tests and examples have for this framework:
            ``twins`` (tests/twins.py), ``sequence`` (LSTM, GRU and attention twins,
            tests/sequence_twins.py), ``zoo`` (tests/zoo.py and the other hand-written CNNs of the
            adapter tests), ``examples`` (examples/digits.py, examples/custom_criterion.py),
            ``applications`` (ResNet50 and MobileNetV2, benchmarks/structured.py).
        exports_onnx: ``export_onnx`` writes a file (else it raises ExportError).
        saves: the adapter has the saving capability (``result.save`` / ``slimkit.load``; else save raises
            UnsupportedModelError naming it).
        learns_lsq: training updates lsq scales (else an lsq site keeps its scale).
        freeze: makes a layer non-trainable, where the framework can.
        registered: context in which ``slimkit.registry.adapter_for`` knows the adapter.
        known_bugs: contract test name -> the adapter bug it shows; those tests run as strict xfails.
    """

    name: str
    mlp: Callable[[], Any]
    is_plain: Callable[[Any], bool]
    user_fit: Callable[..., None]
    channels_last: bool = False
    families: frozenset[str] = frozenset()
    exports_onnx: bool = True
    saves: bool = True
    learns_lsq: bool = True
    freeze: Callable[[Any, str], None] | None = None
    registered: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    known_bugs: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


_ALL_FAMILIES = frozenset({"twins", "sequence", "zoo", "examples", "applications"})

FRAMEWORKS: tuple[Framework, ...] = (
    Framework("fake", fake_mlp, _fake_plain, _fake_user_fit, exports_onnx=False, saves=False, learns_lsq=False,
              registered=_fake_registered),
    Framework("keras", keras_mlp, _keras_plain, _keras_user_fit, channels_last=True, families=_ALL_FAMILIES,
              freeze=_keras_freeze),
    Framework("torch", torch_mlp, _torch_plain, _torch_user_fit, families=_ALL_FAMILIES, freeze=_torch_freeze),
)

BY_NAME: dict[str, Framework] = {fw.name: fw for fw in FRAMEWORKS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def having(flag: str) -> tuple[Framework, ...]:
    """The frameworks whose attribute ``flag`` is truthy (a capability some adapters lack)."""
    return tuple(fw for fw in FRAMEWORKS if getattr(fw, flag))


def members(family: str) -> tuple[Framework, ...]:
    """The frameworks that have builders of a model family (see ``Framework.families``)."""
    return tuple(fw for fw in FRAMEWORKS if family in fw.families)


def building(family: str) -> tuple[str, ...]:
    """Names of :func:`members`."""
    return tuple(fw.name for fw in members(family))


def pairs(family: str) -> list[tuple[str, str]]:
    """Every pair of frameworks that both build ``family``: what parity tests compare."""
    return list(itertools.combinations(building(family), 2))


def pair_ids(family: str) -> list[str]:
    """Test ids of :func:`pairs`: ``keras-torch``."""
    return ["-".join(pair) for pair in pairs(family)]


# ---------------------------------------------------------------------------------- shared helpers
def mlp_weights(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Canonical-order weights of the contract MLP, the same in every framework: He-scaled kernels,
    small biases, batch norm with non-trivial statistics (so that no layer is an identity)."""
    rng = np.random.default_rng(seed)
    sizes = {"fc1": (MLP_HIDDEN, MLP_IN), "fc2": (MLP_HIDDEN, MLP_HIDDEN), "logits": (MLP_CLASSES, MLP_HIDDEN)}
    out = {name: {"kernel": rng.normal(0.0, (2.0 / shape[1]) ** 0.5, shape).astype(np.float32),
                  "bias": rng.normal(0.0, 0.1, shape[0]).astype(np.float32)} for name, shape in sizes.items()}
    out["bn"] = {"gamma": rng.uniform(0.5, 1.5, MLP_HIDDEN).astype(np.float32),
                 "beta": rng.normal(0.0, 0.2, MLP_HIDDEN).astype(np.float32),
                 "mean": rng.normal(0.0, 0.3, MLP_HIDDEN).astype(np.float32),
                 "var": rng.uniform(0.5, 2.0, MLP_HIDDEN).astype(np.float32)}
    return out


def mlp_twin(fw: Framework, seed: int = 0) -> Any:
    """The contract MLP in ``fw`` holding :func:`mlp_weights` (loaded through its adapter)."""
    from twins import load_canonical

    model = fw.mlp()
    load_canonical(model, mlp_weights(seed))
    return model


def mlp_data(n: int = 64, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` inputs of the MLP and learnable labels (the class of the strongest of 5 projections)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, MLP_IN)).astype(np.float32)
    y = np.argmax(x @ np.random.default_rng(99).normal(size=(MLP_IN, MLP_CLASSES)), axis=1).astype(np.int64)
    return x, y


def canonical(adapter: Any, name: str) -> dict[str, np.ndarray]:
    """A layer's weights with the kernel in canonical (out, in, ...) order."""
    from slimkit.pruning.masks import to_canonical

    info = next(layer for layer in adapter.layers() if layer.name == name)
    weights = adapter.get_weights(name)
    if "kernel" in weights:
        weights["kernel"] = to_canonical(weights["kernel"], info.kernel_perm)
    return weights


def mlp_forward(weights: dict[str, dict[str, np.ndarray]], x: np.ndarray) -> dict[str, np.ndarray]:
    """The contract MLP in numpy (float64) from canonical weights: every layer's output by name,
    ``relu1``/``relu2`` for the activations."""
    def dense(name: str, h: np.ndarray) -> np.ndarray:
        w = weights[name]
        return h @ w["kernel"].astype(np.float64).T + w["bias"]

    bn = {k: v.astype(np.float64) for k, v in weights["bn"].items()}
    out = {"fc1": dense("fc1", x.astype(np.float64))}
    out["bn"] = (out["fc1"] - bn["mean"]) / np.sqrt(bn["var"] + BN_EPS) * bn["gamma"] + bn["beta"]
    out["relu1"] = np.maximum(out["bn"], 0.0)
    out["fc2"] = dense("fc2", out["relu1"])
    out["relu2"] = np.maximum(out["fc2"], 0.0)
    out["logits"] = dense("logits", out["relu2"])
    return out
