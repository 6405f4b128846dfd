"""Saving a PyTorch model as safetensors plus an architecture record, and loading it onto an architecture.

PyTorch modules are Python code, which a safe file cannot hold, so nothing of the model's code is saved
and nothing is unpickled at load (no ``torch.load`` at all). The folder keeps:

* the weights, ``model.safetensors`` (tied tensors stored once), under the model's own state-dict keys,
  fake-quant parametrizations and modules included (``fc.parametrizations.weight.original``,
  ``slimkit_quant.relu.scale``, ...);
* the architecture record slimkit writes itself, in the manifest: each layer's weight shapes, the
  class of every submodule (``bn: Identity`` where a batch norm was folded away), and for a
  fake-quantized model the quantization plan it was built from (every site: node or layer, bits,
  integer range, symmetry, per-channel axis, mode) and the form of the sample it was traced on.

Loading takes the architecture as it was before compression (an instance, not modified) and replays
what slimkit did, with the code slimkit did it with: layers whose shapes differ are rebuilt (the
rebuild channel and head pruning use), folded batch norms become ``nn.Identity``, and a quantized
model is fake-quantized again from its plan (``quant.fake_quant_model``: the same trace, the same
modules and parametrizations). Then every tensor is loaded, strictly: site parameters (scales, zero
points, current modes, integer ranges, ema ranges) are buffers of the fake-quant modules, so the
reloaded model computes what the saved one did. Any mismatch between the record and the architecture
given is a DataError naming the layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.nn.utils import parametrize

from slimkit.errors import DataError, ExportError, UnsupportedModelError
from slimkit.quant.plan_record import plan_from_record, plan_to_record

from slimkit.adapters.torch import naming, quant
from slimkit.adapters.torch.rebuild import independent_copy, shrink_model

WEIGHTS = "model.safetensors"
_BN_NATIVE = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}
#: Most elements one input of the sample replayed for tracing may have (a damaged record cannot ask for more).
_MAX_SAMPLE_ELEMENTS = 1 << 26


# ------------------------------------------------------------------------------------------------ saving
def save_files(model: nn.Module, layers: dict[str, dict[str, tuple[int, ...]]], folder: Path) -> dict[str, Any]:
    """Writes ``model``'s tensors into ``folder``; returns the manifest entry (file and architecture record).

    Raises:
        ExportError: safetensors cannot write a tensor of the model.
    """
    from safetensors.torch import save_model

    source = _masks_baked(model)
    entry: dict[str, Any] = {
        "weights": WEIGHTS, "class": type(model).__name__,
        "layers": {name: {k: [int(d) for d in v] for k, v in shapes.items()} for name, shapes in layers.items()},
        "modules": module_classes(source),
    }
    plan = quant.planned(source)
    if plan is not None:
        entry["quant"] = {"plan": plan_to_record(plan), "traced_on": quant.traced_on(source)}
    try:
        save_model(source, str(folder / WEIGHTS), metadata={"saved_by": "slimkit"})
    except Exception as exc:  # safetensors refuses non-contiguous views, exotic dtypes and the like
        raise ExportError(f"save: writing {WEIGHTS} of {type(model).__name__} failed: {exc}") from exc
    return entry


def _masks_baked(model: nn.Module) -> nn.Module:
    """``model``, or a copy with pruning masks (parametrizations other than fake-quant) baked into the
    weights: the fresh architecture at load has no masks to load them into."""
    has_masks = any(not isinstance(p, quant.FakeQuant) for m in model.modules() if parametrize.is_parametrized(m)
                    for plist in m.parametrizations.values() for p in plist)
    if not has_masks:
        return model
    copy = independent_copy(model)
    quant.bake_masks(copy)
    return copy


def module_classes(model: nn.Module) -> dict[str, str]:
    """Module path -> class name of every submodule, leaving out slimkit's own (fake-quant modules, their
    container, parametrization lists); a parametrized module under its own class (``Linear``)."""
    out = {}
    for path, module in model.named_modules():
        if not path or isinstance(module, quant.FakeQuant) or _is_slimkit_part(path):
            continue
        cls = type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)
        out[path] = cls.__qualname__
    return out


def _is_slimkit_part(path: str) -> bool:
    parts = path.split(".")
    return parts[0] == quant.CONTAINER or "parametrizations" in parts


# ------------------------------------------------------------------------------------------------ loading
def load_files(folder: Path, entry: dict[str, Any], model: nn.Module | None,
               layers: dict[str, dict[str, tuple[int, ...]]]) -> nn.Module:
    """The saved model rebuilt on a copy of ``model`` (whose current layer shapes are ``layers``).

    Raises:
        DataError: no ``model`` given, a damaged record or weights file, or an architecture that does
            not fit them; the message names the file, field or layer.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if model is None:
        raise DataError(
            f"load: {folder} holds a PyTorch model ({entry.get('class', '?')}); PyTorch architectures are code, "
            "so pass an instance of it as it was before compression (or a function returning one): "
            "slimkit.load(path, model=MyModel())"
        )
    record = _Record(folder, entry)
    name = type(model).__name__
    unknown = sorted(set(record.layers) - set(layers))
    if unknown:
        raise DataError(f"load: {folder} has layer {unknown[0]!r}, which {name} lacks; "
                        "pass the architecture the model was compressed from")
    try:
        tensors = load_file(str(record.weights))
    except (OSError, SafetensorError) as exc:
        raise DataError(f"load: {record.weights} cannot be read: {exc}") from None
    drop = _dropped_batch_norms(model, record)
    changed = {layer: _layer_weights(model, layer, shapes, tensors, record.weights)
               for layer, shapes in record.layers.items() if shapes != layers[layer]}
    try:
        new = shrink_model(model, changed, tuple(drop))
    except (KeyError, ValueError) as exc:
        raise DataError(f"load: {record.weights}: the saved layer shapes do not fit {name}: {exc}") from None
    if record.plan is not None:
        try:
            new = quant.fake_quant_model(new, record.plan, record.sample)
        except (UnsupportedModelError, ValueError, KeyError) as exc:
            raise DataError(f"load: {record.manifest} field model.quant: the quantization saved does not fit "
                            f"{name}: {exc}") from None
    _load_tensors(new, record, name)
    _check_classes(new, record, name)
    return new.eval()


def _dropped_batch_norms(model: nn.Module, record: "_Record") -> list[str]:
    """Batch norms of ``model`` the record has as ``Identity`` (folded into the layer before them)."""
    out = []
    for path, cls in record.modules.items():
        if cls != "Identity":
            continue
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue  # reported by the class check after loading
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            out.append(path)
    return out


def _native(module: nn.Module, key: str) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _BN_NATIVE.get(key, key)
    return naming.native(module, key)


def _layer_weights(model: nn.Module, layer: str, shapes: dict[str, tuple[int, ...]], tensors: dict[str, Any],
                   path: Path) -> dict[str, np.ndarray]:
    """The saved tensors of one layer whose shapes changed, by neutral name (a fake-quantized tensor under
    its parametrization's ``original``)."""
    module = naming.submodule(model, layer)
    prefix = "" if module is model else f"{layer}."
    weights = {}
    for key, shape in shapes.items():
        native = _native(module, key)
        found = [k for k in (f"{prefix}{native}", f"{prefix}parametrizations.{native}.original") if k in tensors]
        if not found:
            raise DataError(f"load: {path} has no tensor {prefix}{native} for layer {layer!r}")
        value = tensors[found[0]].numpy()
        if tuple(value.shape) != shape:
            raise DataError(f"load: {path}: tensor {found[0]} of layer {layer!r} has shape {tuple(value.shape)}, "
                            f"the record says {shape}")
        weights[key] = value
    return weights


def _load_tensors(new: nn.Module, record: "_Record", name: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(new, str(record.weights), strict=False)
    except (RuntimeError, OSError, SafetensorError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0])
        raise DataError(f"load: {record.weights} does not fit {name} after its saved layer shapes were applied: "
                        f"{detail}") from None
    if missing or unexpected:
        key = sorted(missing)[0] if missing else sorted(unexpected)[0]
        what = f"lacks tensor {key!r}" if missing else f"has tensor {key!r}, which the model rebuilt on {name} lacks"
        raise DataError(f"load: {record.weights} {what} (layer {_layer_of(key)!r}); pass the architecture the model "
                        "was compressed from")


def _layer_of(key: str) -> str:
    """The module path of a state-dict key (``fc1`` of ``fc1.parametrizations.weight.original``)."""
    parts = key.split(".")
    if "parametrizations" in parts:
        return ".".join(parts[:parts.index("parametrizations")]) or "<model>"
    return ".".join(parts[:-1]) or "<model>"


def _check_classes(new: nn.Module, record: "_Record", name: str) -> None:
    if not record.modules:  # folders of format 1 have no class record
        return
    rebuilt = module_classes(new)
    for path in sorted(set(record.modules) | set(rebuilt)):
        saved, got = record.modules.get(path), rebuilt.get(path)
        if saved != got:
            raise DataError(
                f"load: {record.manifest} records layer {path!r} as {saved or 'absent'}, but {name} rebuilt from it "
                f"has {got or 'no such layer'}; pass the architecture the model was compressed from"
            )


# ------------------------------------------------------------------------------------------------ record
class _Record:
    """The manifest entry, checked: every malformed field is a DataError naming it."""

    def __init__(self, folder: Path, entry: dict[str, Any]) -> None:
        self.manifest = folder / "slimkit.json"
        self.weights = folder / self._file(entry.get("weights", WEIGHTS), "model.weights")
        self.layers = {layer: {key: self._shape(v, f"model.layers.{layer}.{key}")
                               for key, v in self._mapping(shapes, f"model.layers.{layer}").items()}
                       for layer, shapes in self._mapping(entry.get("layers", {}), "model.layers").items()}
        modules = self._mapping(entry.get("modules", {}), "model.modules")
        bad = next((p for p, c in modules.items() if not isinstance(c, str)), None)
        if bad is not None:
            raise self._error(f"model.modules.{bad}", "must be a class name")
        self.modules: dict[str, str] = modules
        self.plan, self.sample = None, None
        if entry.get("quant") is not None:
            q = self._mapping(entry["quant"], "model.quant")
            try:
                self.plan = plan_from_record(q.get("plan"), "model.quant.plan")
            except ValueError as exc:
                raise DataError(f"load: {self.manifest} is damaged: {exc}") from None
            self.sample = self._sample(q.get("traced_on"))

    def _error(self, field: str, what: str) -> DataError:
        return DataError(f"load: {self.manifest} is damaged: field {field} {what}")

    def _mapping(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._error(field, f"must be an object, not {type(value).__name__}")
        return value

    def _file(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value or Path(value).name != value or value in (".", ".."):
            raise self._error(field, f"must name a file in the folder, not {value!r}")
        return value

    def _shape(self, value: Any, field: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
            raise self._error(field, f"must be a list of sizes, not {value!r}")
        return tuple(value)

    def _sample(self, form: Any) -> Any:
        """Zeros in the form of the sample the model was traced on (tracing reads shapes, not values)."""
        if form is None:
            return None
        field = "model.quant.traced_on"
        f = self._mapping(form, field)
        kind, inputs = f.get("form"), f.get("inputs")
        if kind not in ("array", "tuple", "dict") or not isinstance(inputs, list) or not inputs \
                or (kind == "array" and len(inputs) != 1):
            raise self._error(field, "must be {form: array|tuple|dict, inputs: [[key, shape, dtype], ...]}")
        arrays = {}
        for i, item in enumerate(inputs):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], (str, int))):
                raise self._error(f"{field}.inputs[{i}]", "must be [key, shape, dtype]")
            shape = self._shape(item[1], f"{field}.inputs[{i}]")
            try:
                dtype = np.dtype(str(item[2]))
            except TypeError:
                dtype = np.dtype(object)
            if dtype.kind not in "biuf" or int(np.prod(shape, dtype=np.float64)) * 2 > _MAX_SAMPLE_ELEMENTS:
                raise self._error(f"{field}.inputs[{i}]", f"is no input slimkit traced ({item[1]}, {item[2]!r})")
            arrays[item[0]] = np.zeros((2, *shape), dtype)
        if kind == "dict":
            return {str(k): v for k, v in arrays.items()}
        values = tuple(arrays.values())
        return values if kind == "tuple" else values[0]
