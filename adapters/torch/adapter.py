"""PyTorch implementation of slimkit's adapter over ``torch.nn.Module`` models.

This module imports torch at the top; the registry imports it only once the user has loaded torch.
Masks are ``torch.nn.utils.parametrize`` parametrizations (weight = original * mask), so a masked
weight is exactly zero in every forward pass however the optimizer moves ``original``; the raw
weight is zeroed too so that the parameter itself, like Keras', holds the zeros.
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.adapter import FitFn, LayerInfo, ModelAdapter, StepCallback, TrainHooks
from slimkit.data import as_arrays, is_array_pair
from slimkit.errors import DataError, ExportError, UnsupportedModelError
from slimkit.recipe import FineTune

from slimkit.adapters.torch import probes
from slimkit.adapters.torch.graph import build_graph
from slimkit.adapters.torch.rebuild import shrink_model
from slimkit.adapters.torch.training import make_loss, make_optimizer

if TYPE_CHECKING:
    from slimkit.graph import LayerGraph

_BN_WEIGHTS = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}


class _Mask(nn.Module):
    """Parametrization multiplying a weight by a fixed 0/1 mask buffer."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _describe(module: nn.Module) -> tuple[str, int, tuple[int, ...]]:
    """Neutral kind, spatial rank and canonical kernel permutation of a module."""
    if isinstance(module, nn.Linear):
        return "dense", 0, (0, 1)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        rank = module.weight.dim() - 2
        perm = tuple(range(rank + 2))  # PyTorch's (out, in/groups, *spatial) is canonical already
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return ("depthwise_conv" if depthwise else "conv"), rank, perm
    if isinstance(module, nn.Embedding):
        return "embedding", 0, (0, 1)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batchnorm", 0, ()
    return "other", 0, ()


class TorchAdapter(ModelAdapter):
    """Adapter for ``torch.nn.Module``; data is numpy in PyTorch's layout (NCHW for images)."""

    framework = "torch"

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self._generator = torch.Generator().manual_seed(0)

    @classmethod
    def accepts(cls, model: Any) -> bool:
        return "torch" in sys.modules and isinstance(model, nn.Module)

    @classmethod
    def copy_of(cls, model: Any) -> "TorchAdapter":
        try:
            clone = copy.deepcopy(model)
        except Exception as exc:  # arbitrary user modules can hold uncopyable state
            raise UnsupportedModelError(
                f"cannot copy {type(model).__qualname__} with copy.deepcopy ({exc}); slimkit never "
                "modifies the user's model, so it needs a copyable module"
            ) from exc
        return cls(clone)

    # -- discovery -------------------------------------------------------------------------
    def _module(self, name: str) -> nn.Module:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            raise KeyError(f"no layer named {name!r}") from None

    def layers(self) -> list[LayerInfo]:
        infos = []
        for name, module in self.model.named_modules():
            if isinstance(module, (parametrize.ParametrizationList, _Mask)) or ".parametrizations" in name:
                continue
            own = self._own_weights(module)
            if not own:
                continue
            kind, rank, perm = _describe(module)
            shapes = {key: tuple(t.shape) for key, t in own.items()}
            infos.append(LayerInfo(name or type(module).__name__, kind, type(module).__name__, rank,
                                   shapes, perm if "kernel" in shapes else ()))
        return infos

    @staticmethod
    def _own_weights(module: nn.Module) -> dict[str, torch.Tensor]:
        """Neutral name -> tensor for the module's own weights (masked value for masked kernels)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            pairs = {k: getattr(module, v) for k, v in _BN_WEIGHTS.items()}
            return {k: t for k, t in pairs.items() if isinstance(t, torch.Tensor)}
        out = {}
        for pname, param in module.named_parameters(recurse=False):
            out["kernel" if pname == "weight" else pname] = param
        if parametrize.is_parametrized(module, "weight"):
            out["kernel"] = module.weight
        return out

    # -- weights and masks ----------------------------------------------------------------
    def get_weights(self, name: str) -> dict[str, np.ndarray]:
        with torch.no_grad():
            own = self._own_weights(self._module(name))
            return {k: t.detach().cpu().numpy().astype(np.float32, copy=True) for k, t in own.items()}

    def set_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        module = self._module(name)
        own = self._own_weights(module)
        for key, value in weights.items():
            if key not in own:
                raise KeyError(f"layer {name!r} has no weight {key!r}; it has {sorted(own)}")
            target = own[key]
            if key == "kernel" and parametrize.is_parametrized(module, "weight"):
                target = module.parametrizations.weight.original
            if tuple(target.shape) != tuple(np.shape(value)):
                raise DataError(f"layer {name!r} weight {key!r}: shape {np.shape(value)} != {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(torch.as_tensor(np.asarray(value), dtype=target.dtype))

    def set_mask(self, name: str, mask: np.ndarray) -> None:
        module = self._module(name)
        weight = module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") \
            else module.weight
        if tuple(mask.shape) != tuple(weight.shape):
            raise DataError(f"layer {name!r}: mask shape {mask.shape} != kernel shape {tuple(weight.shape)}")
        mask_t = torch.as_tensor(mask, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            weight.mul_(mask_t)
        if parametrize.is_parametrized(module, "weight"):
            module.parametrizations.weight[0].mask.copy_(mask_t)
        else:
            parametrize.register_parametrization(module, "weight", _Mask(mask_t.clone()))

    def strip(self) -> Any:
        for _, module in list(self.model.named_modules()):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self.model

    # -- running ---------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)
        self._generator = torch.Generator().manual_seed(seed)

    def _run(self, x: np.ndarray) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        finally:
            self.model.train(was_training)

    def check_input(self, x: np.ndarray, what: str) -> None:
        x = np.asarray(x)
        if x.ndim == 0 or len(x) == 0:
            raise DataError(f"{what}: no samples (shape {x.shape})")
        try:
            out = self._run(x[:2])
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            first = str(exc).splitlines()[0]
            raise DataError(
                f"{what}: input of shape {x.shape} does not fit {type(self.model).__name__} ({first})"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise UnsupportedModelError(
                f"{type(self.model).__name__} returns {type(out).__name__}; slimkit supports models "
                "with one tensor input and one tensor output"
            )

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        outs = [self._run(x[i:i + batch_size]).cpu().numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def num_batches(self, data: Any, batch_size: int) -> int:
        if is_array_pair(data):
            return math.ceil(len(data[0]) / batch_size)
        if isinstance(data, torch.utils.data.DataLoader):
            return len(data)
        raise DataError(
            f"train_data: expected an (x, y) tuple of arrays or a torch DataLoader, got {type(data).__name__}"
        )

    def _loader(self, data: Any, settings: FineTune) -> Any:
        if isinstance(data, torch.utils.data.DataLoader):
            return data
        x, y = as_arrays(data, "train_data", need_labels=True)
        self.check_input(x, "train_data")
        y_t = torch.as_tensor(y, dtype=torch.long if np.issubdtype(y.dtype, np.integer) else torch.float32)
        dataset = torch.utils.data.TensorDataset(torch.as_tensor(np.asarray(x, dtype=np.float32)), y_t)
        return torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size,
                                           shuffle=settings.shuffle, generator=self._generator)

    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None) -> None:
        callback = self.training_callback(hooks)
        if fit_fn is not None:
            total = None if data is None else settings.epochs * self.num_batches(data, settings.batch_size)
            callback.run_user_fit(fit_fn, self.model, total)
            return
        loader = self._loader(data, settings)
        optimizer = make_optimizer(settings, self.model.parameters())
        loss_fn, is_classification = make_loss(settings)
        callback.begin(settings.epochs * len(loader))
        self.model.train()
        for epoch in range(1, settings.epochs + 1):
            total, correct, seen = 0.0, 0, 0
            for xb, yb in loader:
                optimizer.zero_grad()
                out = self.model(xb)
                loss = loss_fn(out, yb)
                loss.backward()
                optimizer.step()
                callback.step()
                total += float(loss.detach()) * len(xb)
                seen += len(xb)
                if is_classification and yb.dim() == 1:
                    correct += int((out.detach().argmax(-1) == yb).sum())
            logs = {"loss": total / max(1, seen)}
            if is_classification and correct:
                logs["accuracy"] = correct / seen
            callback.epoch_end(epoch, logs)
        self.model.eval()
        callback.close()

    def training_callback(self, hooks: TrainHooks) -> StepCallback:
        return StepCallback(hooks)

    # -- structure (structured pruning) ----------------------------------------------------
    def graph(self, sample: np.ndarray | None = None) -> "LayerGraph":
        """The model traced with ``torch.fx`` and shaped on ``sample`` (required); see ``graph.py``."""
        return build_graph(self.model, sample)

    def shrink(self, weights: dict[str, dict[str, np.ndarray]]) -> "TorchAdapter":
        """An adapter over a mask-free copy of the model with the named layers rebuilt; see ``rebuild.py``."""
        small = type(self)(shrink_model(self.model, weights))
        small._generator.set_state(self._generator.get_state())
        return small

    def layer_outputs(self, x: np.ndarray, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Eval-mode outputs of modules (by path) or graph nodes (by node name), NCHW already."""
        return probes.layer_outputs(self.model, x, names, batch_size)

    def weight_gradients(self, data: Any, settings: FineTune, batches: int) -> dict[str, dict[str, np.ndarray]]:
        """Mean loss gradients over the first ``batches`` unshuffled batches, in eval mode (batch norm
        uses its running statistics, dropout is off); ``.grad`` fields and weights are left untouched."""
        names = [info.name for info in self.layers()]
        return probes.weight_gradients(self.model, names, data, settings, batches)

    # -- export ----------------------------------------------------------------------------
    def export_onnx(self, path: str, sample: np.ndarray, opset: int) -> None:
        was_training = self.model.training
        self.model.eval()
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter is deprecated in favour of torch.export; it is kept because
                # it needs no onnxscript and handles every module the adapter supports.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.model, (torch.as_tensor(np.asarray(sample, dtype=np.float32)),), path,
                    dynamo=False, input_names=["input"], output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=opset,
                )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {type(self.model).__name__}: {exc}") from exc
        finally:
            self.model.train(was_training)
