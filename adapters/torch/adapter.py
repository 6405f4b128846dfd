"""PyTorch implementation of slimkit's adapter over ``torch.nn.Module`` models.

This module imports torch at the top; the registry imports it only once the user has loaded torch.
Masks are ``torch.nn.utils.parametrize`` parametrizations (weight = original * mask), so a masked
weight is exactly zero in every forward pass however the optimizer moves ``original``; the raw
weight is zeroed too so that the parameter itself, like Keras', holds the zeros. Fake quantization
(``quant.py``) adds parametrizations after the mask and traces the model into a ``GraphModule`` with
activation fake-quant modules; weights read and written here are the float ones, before fake-quant.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from slimkit.adapters.torch.distilling import Distilling, UserLoopDistilling
from slimkit.adapter import collective
from slimkit.adapter.collective import Collective
from slimkit.adapter import FitFn, LayerInfo, ModelAdapter, QuantAdapter, StructureAdapter, StepCallback, TrainHooks
from slimkit.adapter.saving import SavingAdapter
from slimkit.attention import AttentionBlock
from slimkit.data import as_arrays, as_inputs, head, is_array_pair, leaves, n_samples, take
from slimkit.errors import DataError, UnsupportedModelError
from slimkit.labels import prepare_labels
from slimkit.quant.reuse import remembered_graph
from slimkit.recipe import Distributed, FineTune

from slimkit.adapters.torch import attention, distributed, files, naming, probes, quant, saving, traces
from slimkit.adapters.torch import export as torch_export
from slimkit.adapters.torch.graph import build_graph
from slimkit.adapters.torch.inputs import call, first_tensor, misfit, model_device, to_tensors
from slimkit.adapters.torch.isolation import check_dtype, drop_instrumentation, inference
from slimkit.adapters.torch.epochs import Epoch, LoaderShare
from slimkit.adapters.torch.loaders import CheckedLoader, loader_length
from slimkit.adapters.torch.rebuild import independent_copy, keeps_shapes, shrink_model
from slimkit.adapters.torch.training import (
    BiasedBatchNormStatistics, check_finite_weights, make_loss, make_optimizer,
)

if TYPE_CHECKING:
    from slimkit.graph import LayerGraph
    from slimkit.quant.plan import QuantPlan, SiteParams

_BN_WEIGHTS = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}


class _Mask(nn.Module):
    """Parametrization multiplying a weight by a fixed 0/1 mask buffer."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _refuse_foreign_parametrizations(model: nn.Module, name: str, module: nn.Module) -> None:
    """Raises UnsupportedModelError for a parametrization over several tensors (weight_norm splits the weight
    into ``original0``/``original1``): masks and fake-quant read and write the one tensor under a
    parametrization, which such a tensor does not have. Parametrizations of one tensor (spectral_norm, the
    user's own) are read through, as masks are."""
    if not parametrize.is_parametrized(module):
        return
    for tensor, plist in module.parametrizations.items():
        if not hasattr(plist, "original"):
            foreign = [type(p).__name__ for p in plist if not isinstance(p, (_Mask, quant.FakeQuant))]
            layer = naming.layer_name(model, name) if name else type(module).__name__
            kind = type(module).__bases__[0].__name__  # parametrize subclasses the module's own class
            raise UnsupportedModelError(
                f"layer {layer!r} ({kind}): its {tensor!r} is computed from several tensors by a parametrization "
                f"({', '.join(foreign)}, as torch.nn.utils.parametrizations.weight_norm does), which slimkit's "
                "pruning masks and quantization cannot read or write; bake it into the plain tensor first with "
                f"torch.nn.utils.parametrize.remove_parametrizations(module, {tensor!r}) (the values stay the same)")


class TorchAdapter(ModelAdapter, StructureAdapter, QuantAdapter, SavingAdapter):
    """Adapter for ``torch.nn.Module``; data is numpy in PyTorch's layout (NCHW for images)."""

    framework = "torch"
    #: True for adapters over slimkit's working copies (no user hooks to suspend, see ``isolation.py``);
    #: an adapter over a model it was handed runs it with the user's instrumentation hooks suspended.
    _owned = False

    @classmethod
    def accepts(cls, model: Any) -> bool:
        return "torch" in sys.modules and isinstance(model, nn.Module)

    @classmethod
    def copy_of(cls, model: Any) -> "TorchAdapter":
        """An adapter over a deep copy without the user's instrumentation hooks (``isolation.py``).

        Raises:
            UnsupportedModelError: the model cannot be copied, or holds half-precision weights.
        """
        check_dtype(model, "slimkit")
        try:
            clone = independent_copy(model)
        except Exception as exc:  # arbitrary user modules can hold uncopyable state
            raise UnsupportedModelError(
                f"cannot copy {type(model).__qualname__} with copy.deepcopy ({exc}); slimkit never "
                "modifies the user's model, so it needs a copyable module"
            ) from exc
        adapter = cls(drop_instrumentation(clone))
        adapter._owned = True
        job = collective.current()
        if isinstance(job, distributed.TorchCollective):  # every rank starts from rank 0's weights
            job.broadcast_module(adapter.model, "copying the model")
        return adapter

    def collective(self, settings: Distributed) -> Collective:
        """The ``torch.distributed`` job this process is a rank of (``distributed.py``), or LOCAL."""
        return distributed.job(settings)

    # -- discovery -------------------------------------------------------------------------
    def _module(self, name: str) -> nn.Module:
        return naming.submodule(self.model, name)

    def layers(self) -> list[LayerInfo]:
        infos = []
        for name, module in self.model.named_modules():
            if isinstance(module, (parametrize.ParametrizationList, _Mask, quant.FakeQuant)) or \
                    ".parametrizations" in name:
                continue
            _refuse_foreign_parametrizations(self.model, name, module)
            own = self._own_weights(module)
            if not own:
                continue
            kind, rank, perm = naming.describe(module)
            shapes = {key: tuple(t.shape) for key, t in own.items()}
            # a batch norm's eps lets core fold it; PyTorch layers never fuse an activation ("linear")
            eps = float(module.eps) if kind == "batchnorm" else None
            infos.append(LayerInfo(naming.layer_name(self.model, name), kind, type(module).__name__, rank,
                                   shapes, perm if "kernel" in shapes else (), eps=eps,
                                   matrices=naming.matrices(module, kind)))
        return infos

    @staticmethod
    def _own_weights(module: nn.Module) -> dict[str, torch.Tensor]:
        """Neutral name -> tensor for the module's own weights (masked value for masked kernels, and the
        float value, before fake-quant, of fake-quantized ones)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            pairs = {k: getattr(module, v) for k, v in _BN_WEIGHTS.items()}
            return {k: t for k, t in pairs.items() if isinstance(t, torch.Tensor)}
        out = {}
        for pname, param in module.named_parameters(recurse=False):
            out[naming.neutral(module, pname)] = param
        if parametrize.is_parametrized(module):
            for pname in module.parametrizations.keys():
                out[naming.neutral(module, pname)] = quant.float_value(module, pname)
        return out

    # -- weights and masks ----------------------------------------------------------------
    def get_weights(self, name: str) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.read_weights(name).items()}  # writable copies

    def read_weights(self, name: str) -> dict[str, np.ndarray]:
        """:meth:`get_weights`' values as read-only arrays over the tensors' own memory (float32 ones;
        others are converted), valid until the model next changes."""
        with torch.no_grad():
            own = self._own_weights(self._module(name))
            out = {}
            for key, t in own.items():
                value = t.detach().cpu().numpy()
                value = value if value.dtype == np.float32 else value.astype(np.float32)
                value.flags.writeable = False  # the model's memory: a reader must not write it
                out[key] = value
            return out

    def set_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        module = self._module(name)
        own = self._own_weights(module)
        targets = {}
        for key, value in weights.items():  # every weight is checked before any is written
            if key not in own:
                raise KeyError(f"layer {name!r} has no weight {key!r}; it has {sorted(own)}")
            target = own[key]
            attr = naming.native(module, key)
            if parametrize.is_parametrized(module, attr):
                target = module.parametrizations[attr].original
            if tuple(target.shape) != tuple(np.shape(value)):
                raise DataError(f"layer {name!r} weight {key!r}: shape {np.shape(value)} != {tuple(target.shape)}")
            targets[key] = target
        with torch.no_grad():
            for key, target in targets.items():
                target.copy_(torch.as_tensor(np.asarray(weights[key]), dtype=target.dtype))

    def set_mask(self, name: str, mask: np.ndarray, weight: str = "kernel") -> None:
        module = self._module(name)
        kind, _, _ = naming.describe(module)
        own = self._own_weights(module)
        maskable = (["kernel"] if "kernel" in own else []) + list(naming.matrices(module, kind))
        if weight not in maskable:
            raise DataError(f"layer {name!r} ({type(module).__name__}) has no {weight} to mask; "
                            f"its maskable weights: {', '.join(maskable) or 'none'}")
        attr = naming.native(module, weight)
        parametrized = parametrize.is_parametrized(module, attr)
        tensor = module.parametrizations[attr].original if parametrized else getattr(module, attr)
        if tuple(mask.shape) != tuple(tensor.shape):
            raise DataError(f"layer {name!r}: mask shape {mask.shape} != {weight} shape {tuple(tensor.shape)}")
        mask_t = torch.as_tensor(mask, dtype=tensor.dtype, device=tensor.device)
        with torch.no_grad():
            tensor.mul_(mask_t)
        existing = [p for p in module.parametrizations[attr] if isinstance(p, _Mask)] if parametrized else []
        if existing:
            existing[0].mask.copy_(mask_t)
        elif parametrized:
            # a fake-quantized kernel: the mask goes first, so that what is quantized is the masked kernel
            module.parametrizations[attr].insert(0, _Mask(mask_t.clone()))
        else:
            parametrize.register_parametrization(module, attr, _Mask(mask_t.clone()))

    def state_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """The state dict (parameters and buffers, masks and fake-quant state included) as numpy."""
        for name, tensor in self.model.state_dict().items():
            t = tensor.detach().cpu()
            yield name, (t.float() if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2) else t).numpy()

    def strip(self) -> Any:
        """The model with masks baked into the weights; a fake-quant model keeps its fake-quant sites."""
        if quant.has_fake_quant(self.model):
            quant.bake_masks(self.model)
            return self.model
        for _, module in list(self.model.named_modules()):
            if parametrize.is_parametrized(module):
                for attr in list(module.parametrizations.keys()):
                    parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        return self.model

    # -- running ---------------------------------------------------------------------------
    def seed_framework(self, seed: int) -> None:
        torch.manual_seed(seed)

    def _run(self, x: Any) -> torch.Tensor:
        """The output slimkit reads (:func:`.inputs.first_tensor`) for numpy inputs, in eval mode; every
        submodule's flag and hook is as it was afterwards (:func:`.isolation.inference`)."""
        with inference(self.model, suspend_hooks=not self._owned), torch.no_grad():
            return first_tensor(call(self.model, to_tensors(x, self.model)), type(self.model).__name__)

    def check_input(self, x: Any, what: str) -> None:
        """Raises DataError naming ``what`` if the inputs cannot be fed to the model (a failed run on
        two samples, with the framework's first line of the error)."""
        x = as_inputs(x, what)
        # one run per input form: calibration, planning and export each check the same samples
        form = traces.input_form(x)
        accepted = self.__dict__.setdefault("_accepted_inputs", set())
        if form in accepted:
            return
        try:
            self._run(head(x, 2))
            accepted.add(form)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            raise misfit(what, [tuple(np.shape(a)) for a in leaves(x)], self.model, exc) from exc

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        x = as_inputs(x, "inputs")
        n = n_samples(x)
        # Parametrized weights (masks, fake-quant kernels) are computed once per call, not once per batch:
        # a fake-quant ResNet50 spends most of a small-batch predict re-quantizing 25M weights.
        with parametrize.cached():
            outs = [self._run(take(x, slice(i, i + batch_size))).float().cpu().numpy()
                    for i in range(0, n, batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def num_batches(self, data: Any, batch_size: int) -> int:
        if is_array_pair(data):
            return math.ceil(n_samples(as_inputs(data[0], "train_data")) / batch_size)
        if isinstance(data, torch.utils.data.DataLoader):
            return loader_length(data)
        raise DataError(
            f"train_data: expected an (x, y) tuple of arrays or a torch DataLoader, got {type(data).__name__}"
        )

    def _batches(self, data: Any, settings: FineTune, job: distributed.TorchCollective | None = None) -> Any:
        """A DataLoader's batches converted and checked (``loaders.py``), or (x, y) arrays as one list of
        tensor batches per epoch, drawn in core's order (``slimkit.batches``); labels in core's form
        (``slimkit.labels``) either way. In a distributed job (``job``), this rank's share of each."""
        if isinstance(data, torch.utils.data.DataLoader):
            checked = CheckedLoader(data, self.model, settings.loss)
            return [checked if job is None else LoaderShare(checked, data, job)] * settings.epochs
        x, y = as_arrays(data, "train_data", need_labels=True)
        self.check_input(x, "train_data")
        n = n_samples(x)
        y = prepare_labels(np.asarray(y), settings.loss, tuple(self._run(head(x, 2)).shape[1:]), n)
        x_t, y_t = to_tensors(x, self.model), torch.from_numpy(y).to(model_device(self.model))
        return [Epoch(x_t, y_t, epoch, job) for epoch in self.batches(n, settings).epochs(settings.epochs)]

    def fit(self, data: Any, settings: FineTune, hooks: TrainHooks, fit_fn: FitFn | None = None,
            objective: Any = None) -> None:
        callback = self._training_callback(hooks)
        job = self._job()
        if fit_fn is not None:
            user = None if objective is None else UserLoopDistilling(self.model, objective)
            try:
                with distributed.training_step_group(job.group if job else None):
                    callback.run_user_fit(fit_fn, self.model, self.total_steps(data, settings))
            finally:
                if user is not None:
                    user.close()
            check_finite_weights(self.model, "after fit_fn")
            return
        epochs = self._batches(data, settings, job)
        distill = None if objective is None else Distilling(self.model, objective, data)
        extras = list(distill.parameters()) if distill else []
        optimizer = make_optimizer(settings, [*self.model.parameters(), *extras])
        loss_fn, is_classification = make_loss(settings)
        callback.begin(sum(len(batches) for batches in epochs))
        self.model.train()
        try:
            if job is None:
                with BiasedBatchNormStatistics(self.model) as statistics:
                    self._train(epochs, optimizer, loss_fn, is_classification, callback, statistics, distill)
            else:
                self._train_job(job, settings, epochs, optimizer, loss_fn, is_classification, callback, distill)
        finally:
            if distill is not None:
                distill.close()
        self.model.eval()
        callback.close()

    def _job(self) -> distributed.TorchCollective | None:
        """The distributed job of the running compress call, if it is a torch.distributed one."""
        job = collective.current()
        return job if isinstance(job, distributed.TorchCollective) else None

    def _train_job(self, job: distributed.TorchCollective, settings: FineTune, epochs: list[Any], optimizer: Any,
                   loss_fn: Any, is_classification: bool, callback: StepCallback, distill: Any) -> None:
        """:meth:`_train` on this rank's share of every global batch, the model wrapped in DDP over slimkit's
        group; batch norms synchronised when ``fine_tune.sync_batchnorm`` asks, else their running
        statistics averaged over the ranks at the end (what a mirrored variable holds in Keras)."""
        synced = settings.sync_batchnorm
        ddp = distributed.DDPRunner(self.model, job)
        with (distributed.SyncedBatchNorm(self.model, job) if synced else contextlib.nullcontext()) as sync, \
                BiasedBatchNormStatistics(self.model, skip=sync.modules if sync else ()) as statistics, \
                distributed.training_step_group(job.group), job.failures("fine-tuning"):
            self._train(epochs, optimizer, loss_fn, is_classification, callback, statistics, distill,
                        runner=ddp.current, job=job)
        if not synced:
            distributed.average_batchnorm_statistics(self.model, job)
        distributed.check_agreement(self.model, job, "fine-tuning")

    def _train(self, epochs: list[Any], optimizer: Any, loss_fn: Any, is_classification: bool,
               callback: StepCallback, statistics: BiasedBatchNormStatistics, distill: Any = None,
               runner: Any = None, job: distributed.TorchCollective | None = None) -> None:
        """The training loop; ``runner(inputs)`` gives the module a step calls (DDP over the model), else
        the model itself."""
        extras = [p for p in (distill.parameters() if distill else []) if p.requires_grad]
        for epoch, batches in enumerate(epochs, start=1):
            total, correct, seen = 0.0, 0, 0
            for xb, yb in batches:
                optimizer.zero_grad()
                inputs = to_tensors(xb, self.model)
                module = self.model if runner is None else runner(inputs)
                out = first_tensor(call(module, inputs), type(self.model).__name__)
                loss = loss_fn(out, yb)
                if distill is not None:
                    loss = distill.loss(loss, out, xb, getattr(batches, "last_index", None))
                weight = 1.0 if job is None else distributed.loss_weight(len(yb), batches.global_count, job)
                (loss * weight if job is not None else loss).backward()  # DDP averages: weigh by share
                if job is not None:
                    distributed.average_gradients(extras, job)
                statistics.apply()
                optimizer.step()
                callback.step()
                total += float(loss.detach()) * len(yb)
                seen += len(yb)
                if is_classification and yb.dim() == 1:
                    correct += int((out.detach().argmax(-1) == yb).sum())
            logs = {"loss": total / max(1, seen)}
            if is_classification and correct:
                logs["accuracy"] = correct / seen
            # once per epoch, not per step: a diverged run stops here instead of returning NaN weights
            check_finite_weights(self.model, f"after epoch {epoch} (mean loss {logs['loss']:.4g})")
            callback.epoch_end(epoch, logs)

    def _training_callback(self, hooks: TrainHooks) -> StepCallback:
        return StepCallback(hooks)

    # -- structure (structured pruning) ----------------------------------------------------
    def graph(self, sample: Any = None) -> "LayerGraph":
        """The model captured (``torch.fx``, else ``torch.export`` on the sample) and shaped on ``sample``
        (required); see ``graph.py`` and ``capture.py``. The sample is kept for :meth:`with_fake_quant`,
        which must capture the same graph."""
        if sample is None:
            return build_graph(self.model, sample)  # refuses, naming why
        sample = head(as_inputs(sample, "graph: sample"), 2)  # all the capture reads
        # a tuning run's trials capture the same float model again: once per run inside reusing()
        graph = remembered_graph(self, sample, lambda: build_graph(self.model, sample))
        self._sample = sample
        # the capture ran the model on these inputs (or on the model it was rebuilt from): check_input
        # need not run it on this form again
        self.__dict__.setdefault("_accepted_inputs", set()).add(traces.input_form(sample))
        return graph

    # -- saving ----------------------------------------------------------------------------
    def save_files(self, folder: Path) -> dict[str, Any]:
        """safetensors weights plus every layer's shapes; see ``saving.py``."""
        return saving.save_files(self.model, {i.name: dict(i.shapes) for i in self.layers()}, folder)

    @classmethod
    def load_files(cls, folder: Path, entry: dict[str, Any], model: Any = None) -> nn.Module:
        """The saved weights and layer shapes applied to a copy of the architecture ``model``."""
        layers = {i.name: dict(i.shapes) for i in cls(model).layers()} if model is not None else {}
        return saving.load_files(folder, entry, model, layers)

    weights_file_suffixes = files.WEIGHTS_SUFFIXES
    trusted_file_suffixes = files.TRUSTED_SUFFIXES

    @classmethod
    def load_weights_file(cls, path: Path, model: Any) -> nn.Module:
        """A copy of ``model`` holding the state dict in ``path``, read with ``weights_only=True``."""
        return files.load_weights_file(Path(path), model)

    @classmethod
    def load_trusted_file(cls, path: Path) -> nn.Module:
        """A torch.export ``.pt2`` program rebuilt as modules, or a pickled module (runs the file's code)."""
        return files.load_trusted_file(Path(path))

    def attention_blocks(self) -> list[AttentionBlock]:
        """nn.MultiheadAttention layers and transformers-style attention modules; see ``attention.py``."""
        return attention.attention_blocks(self.model)

    def shrink(self, weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = (),
               adopt: bool = False) -> "TorchAdapter":
        """An adapter over a mask-free copy of the model with the named layers rebuilt and the batch norms
        in ``drop`` replaced by ``nn.Identity``; ``adopt`` lets new tensors hold the given arrays'
        memory; see ``rebuild.py``."""
        if quant.has_fake_quant(self.model):
            raise UnsupportedModelError(
                f"cannot rebuild the fake-quantized {type(self.model).__name__}; shrink the float model (or the "
                "one without_fake_quant() returns) and quantize again"
            )
        model = shrink_model(self.model, weights, tuple(drop), adopt)
        if not keeps_shapes(self.model, model, weights):
            return self._like(model)
        traces.inherit(model, self.model)  # capturing it again needs no shape propagation
        like = self._like(model)
        # every input this model accepted, the rebuilt one accepts: check_input need not run it again
        like.__dict__["_accepted_inputs"] = set(self.__dict__.get("_accepted_inputs", ()))
        return like

    def _like(self, model: nn.Module) -> "TorchAdapter":
        """An adapter over ``model`` that continues this one's batch order."""
        other = type(self)(model)
        other._owned = True
        self.derived(other)
        other._sample = getattr(self, "_sample", None)
        return other

    def layer_outputs(self, x: np.ndarray, names: list[str], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Eval-mode outputs of modules (by path) or graph nodes (by node name), NCHW already."""
        return probes.layer_outputs(self.model, x, names, batch_size)

    def stream_outputs(self, x: np.ndarray, names: list[str], consume: Callable[[str, np.ndarray], None],
                       batch_size: int = 256) -> None:
        """Each tensor handed over from its forward hook (or fx node) as computed: no copy, none held."""
        probes.stream_outputs(self.model, x, names, consume, batch_size)

    def weight_gradients(self, data: Any, settings: FineTune, batches: int) -> dict[str, dict[str, np.ndarray]]:
        """Mean loss gradients over the first ``batches`` unshuffled batches, in eval mode (batch norm
        uses its running statistics, dropout is off); ``.grad`` fields and weights are left untouched."""
        names = [info.name for info in self.layers()]
        return probes.weight_gradients(self.model, names, data, settings, batches)

    # -- quantization ----------------------------------------------------------------------
    def with_fake_quant(self, plan: "QuantPlan") -> "TorchAdapter":
        """An adapter over a ``torch.fx`` trace of a copy of the model with fake-quant at every site of
        ``plan``; see ``quant.py``. The model here is unchanged."""
        check_dtype(self.model, "quantization", (torch.float32,))
        return self._like(quant.fake_quant_model(self.model, plan, getattr(self, "_sample", None)))

    def set_quant_params(self, params: dict[str, "SiteParams"]) -> None:
        """Sets the named sites' scales and zero points; ``lsq`` sites keep learning from them, every other
        site switches to ``fixed``. Unknown keys raise KeyError naming them; nothing is set then."""
        quant.set_params(self.model, params)

    def quant_state(self) -> dict[str, dict[str, np.ndarray]]:
        return quant.state(self.model)

    def quant_plan(self) -> "QuantPlan | None":
        return quant.plan_of(self.model)

    def without_fake_quant(self, read_only: bool = False) -> "TorchAdapter":
        """An adapter over a float copy: the traced model without its fake-quant modules, whose graph has the
        original node names (module paths and fx names are kept), masks baked into the weights;
        ``read_only``: the copy holds this model's unmasked parameters and buffers themselves."""
        return self._like(quant.float_model(self.model, read_only))

    # -- export ----------------------------------------------------------------------------
    def export_onnx(self, path: str, sample: Any, opset: int) -> None:
        """Writes the float model as ONNX through the TorchScript exporter; see ``export.py``."""
        torch_export.export_onnx(self.model, path, sample, opset, self._owned)
