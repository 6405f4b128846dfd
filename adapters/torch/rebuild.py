"""Rebuilds a PyTorch model with smaller layers from sliced weights (the last step of channel pruning).

The model is deep-copied, its parametrizations (slimkit's masks) are baked into the weights and
removed, and every named layer is replaced, on its parent module, by a fresh module of the same class
whose sizes the new weights imply. Hyperparameters (stride, padding, dilation, padding mode, bias
presence, batch-norm eps / momentum / affine / running statistics, dtype, device, train mode,
``requires_grad``) are copied from the old module; weights not given keep their old values. A
``bias`` given for a convolution or linear layer built without one rebuilds it with a bias, and
dropped batch norms (folded into the convolution before them) become ``nn.Identity``.
"""

from __future__ import annotations

import collections
import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize, skip_init

from slimkit.errors import DataError, UnsupportedModelError
from slimkit.adapters.torch.attention import rebuilt_attention, update_head_counts
from slimkit.adapters.torch.naming import is_transposed_linear, submodule

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: neutral name -> attribute, per module family (``kernel`` is ``weight`` for conv and linear)
_BN_ATTRS = {"gamma": "weight", "beta": "bias", "mean": "running_mean", "var": "running_var"}
_KERNEL_ATTRS = {"kernel": "weight", "bias": "bias"}
_RNN_ATTRS = {"kernel": "weight_ih_l0", "recurrent_kernel": "weight_hh_l0", "bias": "bias_ih_l0",
              "recurrent_bias": "bias_hh_l0"}


def independent_copy(model: nn.Module, share: tuple[torch.Tensor, ...] = ()) -> nn.Module:
    """``copy.deepcopy(model)`` whose parametrized modules get classes of their own.

    ``torch.nn.utils.parametrize`` makes one class per parametrized module and keeps the parametrized
    tensors as properties of that class; ``deepcopy`` shares the class between original and copy, so
    adding or removing a parametrization on the copy would change the original too.

    Args:
        model: the module to copy.
        share: tensors (parameters, buffers) the copy holds as they are instead of copies of them.

    Raises:
        Exception: whatever ``copy.deepcopy`` raises for an uncopyable module.
    """
    clone = copy.deepcopy(model, {id(t): t for t in share})
    for module in clone.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            attrs = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
            module.__class__ = type(cls.__name__, cls.__bases__, attrs)
    return clone


def unparametrize(model: nn.Module) -> None:
    """Bakes every parametrization (mask) into its tensor and removes it, in place."""
    for _, module in list(model.named_modules()):
        if parametrize.is_parametrized(module):
            for pname in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, pname, leave_parametrized=True)


def shrink_model(model: nn.Module, weights: dict[str, dict[str, np.ndarray]],
                 drop: tuple[str, ...] = (), adopt: bool = False) -> nn.Module:
    """A copy of ``model`` whose named layers are rebuilt around ``weights``; ``model`` is not modified.

    Args:
        model: the model to copy.
        weights: layer name -> neutral weight name -> new value (native layout).
        drop: names of batch-norm layers to replace by ``nn.Identity``.
        adopt: the caller hands ``weights``' arrays over: those that can serve as tensor storage as they
            are become the new tensors' memory instead of being copied (a batch-norm fold's new kernels:
            100 MB of fresh memory fewer for a ResNet50).

    Raises:
        KeyError: a named layer does not exist.
        DataError: weights that do not fit, or a layer both given weights and dropped.
        ValueError: a dropped layer is not a batch norm.
    """
    both = sorted(set(weights) & set(drop))
    if both:
        raise DataError(f"layer {both[0]!r} is given new weights and also dropped")
    try:
        clone = independent_copy(model, _replaced_tensors(model, weights, drop))
    except Exception as exc:
        raise UnsupportedModelError(f"cannot copy {type(model).__qualname__} with copy.deepcopy ({exc})") from exc
    unparametrize(clone)
    for name in drop:
        old = submodule(clone, name)
        if not isinstance(old, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"layer {name!r} ({type(old).__name__}) cannot be dropped; only batch norms folded into the "
                "layer before them can"
            )
        _replace(clone, name, nn.Identity())
    for name, new_weights in weights.items():
        old = submodule(clone, name)
        new = rebuilt_module(name, old, new_weights, adopt)
        if new is not old:
            _replace(clone, name, new)
    update_head_counts(clone)  # attention modules that lost heads say how many they have
    return clone


def _replaced_tensors(model: nn.Module, weights: dict[str, dict[str, np.ndarray]],
                      drop: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """The tensors of layers the copy replaces by new modules (dropped batch norms; convolutions and
    torch's linear layers, which :func:`rebuilt_module` always builds anew and only reads the old tensors
    of): the copy need not copy them, as nothing writes them (a batch-norm fold of a ResNet50: 100 MB).
    A module or tensor the model holds in more than one place is copied as ever: the copy keeps it
    elsewhere."""
    uses = collections.Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    uses.update(id(t) for _, t in model.named_parameters(remove_duplicate=False))
    uses.update(id(t) for _, t in model.named_buffers(remove_duplicate=False))
    shared: list[torch.Tensor] = []
    for name in (*drop, *weights):
        try:
            module = submodule(model, name)
        except (KeyError, AttributeError):
            continue  # shrink_model names it in its own error
        replaced = isinstance(module, nn.modules.batchnorm._BatchNorm) if name in drop else \
            type(module) in _CONV or (isinstance(module, nn.Linear) and type(module).__module__.startswith("torch.nn"))
        if replaced and uses[id(module)] == 1 and not parametrize.is_parametrized(module):
            tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            shared += [t for t in tensors if uses[id(t)] == 1]
    return tuple(shared)


def rebuilt_module(name: str, old: nn.Module, weights: dict[str, np.ndarray], adopt: bool = False) -> nn.Module:
    """A module like ``old`` sized by ``weights`` and holding them (``old`` itself if no size changes);
    ``adopt`` as in :func:`shrink_model`.

    Convolutions and linear layers are made without running their initializers
    (``skip_init``: a ResNet50's 25M weights drawn at random only to be overwritten): :func:`_load`
    writes every parameter and buffer of the new module, or raises."""
    if type(old) in _CONV:
        new, attrs = _conv(name, old, weights), _KERNEL_ATTRS
    elif isinstance(old, nn.RNNBase) and old.num_layers == 1 and not old.bidirectional and \
            type(old).__module__.startswith("torch.nn") and not getattr(old, "proj_size", 0):
        kernel = _given(name, weights, "kernel", old.weight_ih_l0)  # (gates * units, in)
        units = _given(name, weights, "recurrent_kernel", old.weight_hh_l0)[1]
        kwargs = dict(num_layers=1, bias=old.bias, batch_first=old.batch_first, bidirectional=False,
                      device=old.weight_ih_l0.device, dtype=old.weight_ih_l0.dtype)
        if old.mode in ("RNN_TANH", "RNN_RELU"):
            kwargs["nonlinearity"] = old.nonlinearity
        new, attrs = type(old)(kernel[1], units, **kwargs), _RNN_ATTRS
    elif is_transposed_linear(old):  # transformers' Conv1D(nf=out, nx=in), weight (in, out)
        kernel = _given(name, weights, "kernel", old.weight)
        new = type(old)(kernel[1], kernel[0])
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        attrs = _KERNEL_ATTRS
    elif isinstance(old, nn.MultiheadAttention) and any(key.startswith("in_proj") for key in weights):
        return rebuilt_attention(name, old, weights)
    elif isinstance(old, nn.Linear) and type(old).__module__.startswith("torch.nn.modules"):
        kernel = _given(name, weights, "kernel", old.weight)
        new = skip_init(nn.Linear, kernel[1], kernel[0], bias=old.bias is not None or "bias" in weights,
                        device=old.weight.device, dtype=old.weight.dtype)
        attrs = _KERNEL_ATTRS
    elif isinstance(old, nn.modules.batchnorm._BatchNorm) and type(old).__module__.startswith("torch.nn"):
        new, attrs = _batchnorm(name, old, weights), _BN_ATTRS
    else:
        attrs = _BN_ATTRS if isinstance(old, nn.modules.batchnorm._BatchNorm) else _KERNEL_ATTRS
        _load(name, old, old, weights, attrs, resize=False, adopt=adopt)
        return old
    new.train(old.training)
    _load(name, new, old, weights, attrs, resize=True, adopt=adopt)
    return new


def _given(name: str, weights: dict[str, np.ndarray], key: str, fallback: torch.Tensor | None) -> tuple[int, ...]:
    if key in weights:
        return tuple(np.shape(weights[key]))
    if fallback is None:
        raise DataError(f"layer {name!r}: no {key!r} given and the layer has none")
    return tuple(fallback.shape)


def _conv(name: str, old: nn.Conv1d | nn.Conv2d | nn.Conv3d, weights: dict[str, np.ndarray]) -> nn.Module:
    kernel = _given(name, weights, "kernel", old.weight)
    if kernel[2:] != tuple(old.weight.shape[2:]):
        raise DataError(f"layer {name!r}: kernel size {kernel[2:]} differs from {tuple(old.weight.shape[2:])}")
    out_channels = kernel[0]
    if old.groups == 1:
        groups, in_channels = 1, kernel[1]
    elif old.groups == old.in_channels == old.out_channels:  # depthwise: channel c in -> channel c out
        if kernel[1] != 1:
            raise DataError(f"layer {name!r}: depthwise kernel needs 1 input channel per group, got {kernel[1]}")
        groups = in_channels = out_channels
    elif kernel == tuple(old.weight.shape):
        groups, in_channels = old.groups, old.in_channels
    else:
        raise UnsupportedModelError(
            f"layer {name!r}: cannot resize a grouped convolution (groups={old.groups}) to kernel {kernel}"
        )
    return skip_init(
        type(old), in_channels, out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, groups=groups, bias=old.bias is not None or "bias" in weights,
        padding_mode=old.padding_mode,
        device=old.weight.device, dtype=old.weight.dtype,
    )


def _batchnorm(name: str, old: nn.modules.batchnorm._BatchNorm, weights: dict[str, np.ndarray]) -> nn.Module:
    sizes = {np.shape(v)[0] for v in weights.values()}
    if len(sizes) > 1:
        raise DataError(f"layer {name!r}: batch-norm weights disagree on the feature count ({sorted(sizes)})")
    features = sizes.pop() if sizes else old.num_features
    ref = next((t for t in (old.weight, old.running_mean) if t is not None), None)
    kwargs = dict(eps=old.eps, momentum=old.momentum, affine=old.affine,
                  track_running_stats=old.track_running_stats,
                  device=ref.device if ref is not None else None, dtype=ref.dtype if ref is not None else None)
    if isinstance(old, nn.SyncBatchNorm):
        return nn.SyncBatchNorm(features, process_group=old.process_group, **kwargs)
    return type(old)(features, **kwargs)


def _load(name: str, new: nn.Module, old: nn.Module, weights: dict[str, np.ndarray], attrs: dict[str, str],
          resize: bool, adopt: bool = False) -> None:
    """Copies given weights into ``new``, and ``old``'s other tensors where their shapes still fit;
    ``adopt``: a given array that owns its memory, is writable and needs no conversion becomes the
    tensor's storage instead of being copied (see :func:`shrink_model`)."""
    unknown = set(weights) - set(attrs)
    if unknown:
        raise KeyError(f"layer {name!r} has no weight {sorted(unknown)[0]!r}; it has {sorted(attrs)}")
    given = {attrs[k]: v for k, v in weights.items()}
    present = {attr for attr, _ in list(new.named_parameters(recurse=False)) + list(new.named_buffers(recurse=False))}
    absent = sorted(set(given) - present)
    if absent:  # a weight the layer has no place for would otherwise be dropped silently
        raise DataError(f"layer {name!r} ({type(new).__name__}) has no {absent[0]!r} to load the given weight into")
    with torch.no_grad():
        for attr, target in list(new.named_parameters(recurse=False)) + list(new.named_buffers(recurse=False)):
            source = getattr(old, attr, None)
            if attr in given:
                value = torch.as_tensor(np.asarray(given[attr]), dtype=target.dtype, device=target.device)
            elif isinstance(source, torch.Tensor) and (source.shape == target.shape or source.dim() == 0):
                value = source.detach()
            else:
                raise DataError(f"layer {name!r}: {attr} of shape {tuple(target.shape)} was not given and the old "
                                f"one does not fit")
            if tuple(value.shape) != tuple(target.shape):
                raise DataError(f"layer {name!r} weight {attr!r}: shape {tuple(value.shape)} != "
                                f"{tuple(target.shape)} implied by the other weights")
            if adopt and attr in given and _adoptable(given[attr], value):
                target.data = value  # the array's own memory, which torch.as_tensor shared
            else:
                target.copy_(value)
            if resize and isinstance(source, nn.Parameter) and isinstance(target, nn.Parameter):
                target.requires_grad_(source.requires_grad)


def _adoptable(array: Any, tensor: torch.Tensor) -> bool:
    """True when ``tensor`` (``torch.as_tensor`` of ``array`` in the target's dtype and device) is
    ``array``'s own memory, contiguous, and ``array`` owns that memory and may be written: the tensor
    can then be the new weight as it is."""
    return (isinstance(array, np.ndarray) and array.flags.owndata and array.flags.writeable
            and tensor.is_contiguous() and tensor.device.type == "cpu"
            and tensor.data_ptr() == array.__array_interface__["data"][0])


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if not child:
        raise UnsupportedModelError("the model itself is a single layer; shrink needs a container around it")
    setattr(parent, child, new)


def keeps_shapes(before: nn.Module, after: nn.Module, weights: dict[str, dict[str, np.ndarray]]) -> bool:
    """True when every rebuilt layer of ``after`` has the type and kernel shape it had in ``before``:
    its outputs keep their shapes (a batch-norm fold); the dropped batch norms keep them by nature."""
    for name in weights:
        old, new = before.get_submodule(name), after.get_submodule(name)
        kernel_old, kernel_new = getattr(old, "weight", None), getattr(new, "weight", None)
        if type(old) is not type(new) or not isinstance(kernel_old, torch.Tensor) or \
                not isinstance(kernel_new, torch.Tensor) or kernel_old.shape != kernel_new.shape:
            return False
    return True
