"""Fake quantization of PyTorch models: one :class:`FakeQuant` module per site of a quantization plan.

Where the modules go:

* activation sites: the model is traced with ``torch.fx`` (the tracer of ``graph.py``) into a
  ``GraphModule``; one fake-quant module is called right after the node whose output the site names
  and every reader of that tensor reads the fake-quantized value. The modules live in the module
  dict :data:`CONTAINER` of the traced model; every other module keeps its path.
* kernel and bias sites: ``torch.nn.utils.parametrize`` parametrizations on the layer's ``weight`` and
  ``bias``, registered after slimkit's mask parametrization so that masked zeros stay zero (0 is on
  every grid: the zero point lies within the integer range).

The arithmetic is ONNX ``QuantizeLinear`` / ``DequantizeLinear`` in float32, exactly as
:mod:`slimkit.quant.params` computes it in numpy: ``q = clip(rint(x / scale) + zero_point, qmin, qmax)``,
``y = (q - zero_point) * scale``. It is written with plain tensor ops and not with
``torch.fake_quantize_*``, whose ONNX export is troublesome, and rounds straight-through
(``v + (round(v) - v).detach()`` has the exact value ``round(v)`` and gradient 1), so that models
train through it; values clipped to the range get no gradient.

Each module keeps its site key, planned spec and role as attributes and its current mode, whether it
has parameters yet, and the parameters themselves as buffers (or, for ``lsq``, a parameter). The plan
can therefore be read back from the model alone, also after ``load_state_dict`` into a model built
by :func:`fake_quant_model` from the same plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from slimkit.errors import UnsupportedModelError
from slimkit.quant.plan import MODES, ActSite, FakeQuantSpec, LayerSite, QuantPlan, SiteParams
from slimkit.quant.specs import bias_spec

from slimkit.adapters.torch.graph import trace, unshaped_node_names
from slimkit.adapters.torch.rebuild import independent_copy

#: Attribute of the traced model holding the activation fake-quant modules (a ``nn.ModuleDict``).
CONTAINER = "slimkit_quant"
_TINY = float(np.finfo(np.float32).tiny)
_QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_WITH_PARAMS = ("fixed", "lsq")  # modes whose state is a scale and a zero point


# ---------------------------------------------------------------------------------------------- arithmetic
def _along(values: torch.Tensor, axis: int | None, x: torch.Tensor, site: str) -> torch.Tensor:
    """``values`` (0-d, or 1-D per channel of ``axis``) shaped to broadcast against ``x``."""
    if axis is None:
        return values
    dim = axis % x.dim()
    if x.shape[dim] != values.shape[0]:
        raise UnsupportedModelError(
            f"fake-quant site {site!r}: tensor has {x.shape[dim]} channels on axis {axis}, its parameters "
            f"have {values.shape[0]}"
        )
    shape = [1] * x.dim()
    shape[dim] = values.shape[0]
    return values.reshape(shape)


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``(clip(rint(x / scale) + zero_point, qmin, qmax) - zero_point) * scale`` with straight-through rounding.

    ``scale`` and ``zero_point`` broadcast against ``x``. The forward value equals
    :func:`slimkit.quant.params.fake_quantize` bit for bit in float32; the gradient w.r.t. ``x`` is 1
    inside the range and 0 where clipped, and ``scale`` receives the LSQ gradient when it requires one.
    """
    zp = zero_point.to(x.dtype)
    v = x / scale
    q = v + (torch.round(v) - v).detach()  # torch.round is half-to-even, like np.rint
    q = torch.clamp(q + zp, qmin, qmax)
    return (q - zp) * scale


def _minmax(x: torch.Tensor, axis: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum and maximum of ``x``, overall or per channel of ``axis``."""
    if axis is None:
        return x.min(), x.max()
    flat = x.movedim(axis % x.dim(), 0).reshape(x.shape[axis], -1)
    return flat.amin(dim=1), flat.amax(dim=1)


def range_params(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int,
                 symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (float32 integers) covering ``[lo, hi]``, as ``params_from_range``.

    The range is extended to include 0; the scale is computed in float64 and stored as float32; a
    degenerate range (``lo == hi == 0``) gets scale 1 and zero point 0.
    """
    lo = torch.clamp(lo.float(), max=0.0).double()
    hi = torch.clamp(hi.float(), min=0.0).double()
    if symmetric:
        absmax = torch.maximum(lo.abs(), hi.abs())
        lo, hi = -absmax, absmax
    # a tensor divisor: dividing by a Python scalar may multiply by its reciprocal (CUDA), which is not exact
    scale64 = (hi - lo) / torch.tensor(float(qmax - qmin), dtype=torch.float64, device=lo.device)
    degenerate = scale64 < _TINY
    safe = torch.where(degenerate, torch.ones_like(scale64), scale64)
    if symmetric:
        zp = torch.full_like(safe, float(round((qmin + qmax) / 2.0)))  # round() is half-to-even, like np.round
    else:
        zp = torch.round(qmin - lo / safe)
    zp = torch.where(degenerate, torch.zeros_like(zp), torch.clamp(zp, qmin, qmax))
    scale = torch.where(degenerate, torch.ones_like(scale64), scale64).float()
    return scale, zp.float()


def dynamic_params(x: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of ONNX ``DynamicQuantizeLinear`` for ``x``, in float32 as onnxruntime computes
    them: the range of ``x`` extended to 0, ``scale = (max - min) / (qmax - qmin)``, ``zero_point =
    round(clip(qmin - min / scale, qmin, qmax))``; scale 1 for an all-zero tensor."""
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    scale = (hi - lo) / torch.tensor(float(qmax - qmin), dtype=x.dtype, device=x.device)
    scale = torch.where(hi == lo, torch.ones_like(scale), scale)
    zp = torch.round(torch.clamp(qmin - lo / scale, qmin, qmax))
    return scale, zp


# ---------------------------------------------------------------------------------------------- the module
class FakeQuant(nn.Module):
    """Fake-quantizes one tensor (an activation, a kernel or a bias) as its site's mode says.

    Modes (:data:`slimkit.quant.plan.MODES`): ``fixed`` uses the scale and zero point given by
    :meth:`set_params` and passes values through until then; ``ema`` tracks a moving min/max in
    training mode (the first batch sets it) and quantizes with the range's parameters, passing values
    through before its first update; ``lsq`` learns its scale (starting from :meth:`set_params`, else
    from the first training batch; gradient scaled by ``1 / sqrt(numel_per_channel * qmax)``; kept
    positive) with a fixed zero point, passing values through in eval mode before it has a scale;
    ``minmax`` takes the range of the current tensor (per channel on ``spec.axis``); ``dynamic`` is
    ONNX ``DynamicQuantizeLinear`` on the current tensor.

    Attributes:
        site: the site key (activation node name, ``<layer>/kernel`` or ``<layer>/bias``).
        spec: the planned spec.
        role: ``act``, ``kernel`` or ``bias``.
        layer_site: the plan's layer site (kernel role only).
        method: the plan's method.
        order: position of the site in the plan.
    """

    #: Marks the class for graph.py: traced as one call, mapped to an elementwise node.
    slimkit_fake_quant = True

    def __init__(self, site: str, spec: FakeQuantSpec, role: str, channels: int | None = None,
                 layer_site: LayerSite | None = None, method: str = "static", order: int = 0) -> None:
        super().__init__()
        if spec.axis is not None and channels is None:
            raise ValueError(f"fake-quant site {site!r}: per-channel spec (axis={spec.axis}) needs the channel count")
        self.site, self.spec, self.role = site, spec, role
        self.layer_site, self.method, self.order = layer_site, method, order
        shape = () if spec.axis is None else (int(channels),)
        nan = torch.full(shape, float("nan"))
        # Mode and readiness are buffers, not attributes, so that a switch to fixed survives save and load.
        self.register_buffer("mode", torch.tensor(MODES.index(spec.mode), dtype=torch.int64))
        self.register_buffer("ready", torch.tensor(False))
        self.register_buffer("qmin", torch.tensor(spec.qmin, dtype=torch.int64))
        self.register_buffer("qmax", torch.tensor(spec.qmax, dtype=torch.int64))
        if spec.mode == "lsq":
            self.scale = nn.Parameter(nan.clone())
        else:
            self.register_buffer("scale", nan.clone())
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32))
        self.register_buffer("min_val", nan.clone())
        self.register_buffer("max_val", nan.clone())

    def extra_repr(self) -> str:
        return f"site={self.site!r}, mode={self.current_mode}, qmin={int(self.qmin)}, qmax={int(self.qmax)}, " \
               f"axis={self.spec.axis}"

    @property
    def current_mode(self) -> str:
        """The mode now: the planned one, or ``fixed`` once parameters were set."""
        return MODES[int(self.mode)]

    @property
    def current_spec(self) -> FakeQuantSpec:
        """The planned spec with the current mode and integer range."""
        return replace(self.spec, mode=self.current_mode, qmin=int(self.qmin), qmax=int(self.qmax))

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise UnsupportedModelError(f"fake-quant site {self.site!r} receives {type(x).__name__}, not a tensor")
        mode = self.current_mode
        qmin, qmax, axis = int(self.qmin), int(self.qmax), self.spec.axis
        if mode == "fixed":
            if not bool(self.ready):
                return x
            return fake_quantize(x, _along(self.scale.detach(), axis, x, self.site),
                                 _along(self.zero_point, axis, x, self.site), qmin, qmax)
        if mode == "ema":
            if self.training:
                self._observe(x)
            if not bool(self.ready):
                return x
            scale, zp = range_params(self.min_val, self.max_val, qmin, qmax, self.spec.symmetric)
        elif mode == "lsq":
            if not bool(self.ready):
                if not self.training:
                    return x
                self._init_lsq(x)
            return fake_quantize(x, _along(self._lsq_scale(x), axis, x, self.site),
                                 _along(self.zero_point, axis, x, self.site), qmin, qmax)
        elif mode == "minmax":
            lo, hi = _minmax(x.detach(), axis)
            scale, zp = range_params(lo, hi, qmin, qmax, self.spec.symmetric)
        else:  # dynamic
            scale, zp = dynamic_params(x, qmin, qmax)
            axis = None
        scale, zp = scale.to(x.dtype), zp.to(x.dtype)
        return fake_quantize(x, _along(scale, axis, x, self.site), _along(zp, axis, x, self.site), qmin, qmax)

    def _observe(self, x: torch.Tensor) -> None:
        """ema: moves the stored range towards this batch's (the first batch sets it)."""
        with torch.no_grad():
            lo, hi = _minmax(x.detach().float(), self.spec.axis)
            if not bool(self.ready):
                self.min_val.copy_(lo)
                self.max_val.copy_(hi)
                self.ready.fill_(True)
            else:
                m = float(self.spec.momentum)
                self.min_val.copy_(self.min_val * m + lo * (1.0 - m))
                self.max_val.copy_(self.max_val * m + hi * (1.0 - m))

    def _init_lsq(self, x: torch.Tensor) -> None:
        """lsq: scale ``2 * mean|x| / sqrt(qmax)`` from the first batch; zero point from its range."""
        qmin, qmax, axis = int(self.qmin), int(self.qmax), self.spec.axis
        with torch.no_grad():
            data = x.detach().float()
            if axis is None:
                mean_abs = data.abs().mean()
            else:
                mean_abs = data.movedim(axis % data.dim(), 0).reshape(data.shape[axis], -1).abs().mean(dim=1)
            scale = 2.0 * mean_abs / math.sqrt(max(qmax, 1))
            scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
            if self.spec.symmetric:
                zp = torch.full_like(scale, float(round((qmin + qmax) / 2.0)))
            else:
                lo, _ = _minmax(data, axis)
                zp = torch.round(torch.clamp(qmin - torch.clamp(lo, max=0.0) / scale, qmin, qmax))
            self.scale.copy_(scale)
            self.zero_point.copy_(zp.to(torch.int32))
            self.ready.fill_(True)

    def _positive_scale(self) -> torch.Tensor:
        return self.scale.abs().clamp_min(_TINY)

    def _lsq_scale(self, x: torch.Tensor) -> torch.Tensor:
        """The scale with LSQ's gradient scale ``g``: value exactly the scale, gradient times ``g``."""
        s = self._positive_scale()
        per_channel = x.numel() // (1 if self.spec.axis is None else max(1, x.shape[self.spec.axis]))
        g = 1.0 / math.sqrt(max(1, per_channel) * max(1, int(self.qmax)))
        return s.detach() + (s * g - (s * g).detach())

    # -- parameters ------------------------------------------------------------------------------------
    def checked(self, p: SiteParams) -> tuple[np.ndarray, np.ndarray]:
        """``p``'s scale and zero point as arrays, or ValueError naming the site if they do not fit it."""
        scale = np.asarray(p.scale, dtype=np.float32)
        zp_raw = np.asarray(p.zero_point)
        shape = tuple(self.scale.shape)
        if (p.axis is None) != (self.spec.axis is None) or scale.shape != shape or zp_raw.shape != shape:
            raise ValueError(
                f"fake-quant site {self.site!r} takes {'per-tensor' if not shape else f'{shape[0]} per-channel'} "
                f"parameters; got scale of shape {scale.shape}, zero_point of shape {zp_raw.shape}, axis={p.axis}"
            )
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"fake-quant site {self.site!r}: scale must be finite and > 0, got {scale!r}")
        if not np.all(zp_raw == np.round(zp_raw)) or not int(p.qmin) < int(p.qmax) or \
                np.any(zp_raw < p.qmin) or np.any(zp_raw > p.qmax):
            raise ValueError(f"fake-quant site {self.site!r}: zero_point {zp_raw!r} must be integers in "
                             f"[{p.qmin}, {p.qmax}]")
        return scale, zp_raw.astype(np.int64)

    def set_params(self, p: SiteParams) -> None:
        """Sets the scale and zero point: an ``lsq`` site starts learning from them, any other site
        switches to ``fixed``."""
        scale, zp = self.checked(p)
        with torch.no_grad():
            self.scale.copy_(torch.as_tensor(scale))
            self.zero_point.copy_(torch.as_tensor(zp.astype(np.int32)))
            self.qmin.fill_(int(p.qmin))
            self.qmax.fill_(int(p.qmax))
            if self.current_mode != "lsq":
                self.mode.fill_(MODES.index("fixed"))
            self.ready.fill_(True)

    def state(self) -> dict[str, np.ndarray]:
        """``scale``/``zero_point`` (fixed, lsq; nothing before they have one), ``min``/``max`` (ema; NaN
        before the first update) or nothing (minmax, dynamic)."""
        mode = self.current_mode
        with torch.no_grad():
            if mode in _WITH_PARAMS and not bool(self.ready):
                return {}
            if mode in _WITH_PARAMS:
                return {"scale": _numpy(self._positive_scale() if mode == "lsq" else self.scale, np.float32),
                        "zero_point": _numpy(self.zero_point, np.int32)}
            if mode == "ema":
                return {"min": _numpy(self.min_val, np.float32), "max": _numpy(self.max_val, np.float32)}
        return {}


def _numpy(t: torch.Tensor, dtype: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype, copy=True)


# ---------------------------------------------------------------------------------------------- model level
def sites(model: nn.Module) -> dict[str, FakeQuant]:
    """Site key -> fake-quant module of every site in ``model``."""
    return {m.site: m for m in model.modules() if isinstance(m, FakeQuant)}


def has_fake_quant(model: nn.Module) -> bool:
    """True if ``model`` holds any fake-quant module."""
    return any(isinstance(m, FakeQuant) for m in model.modules())


def fake_quant_model(model: nn.Module, plan: QuantPlan) -> fx.GraphModule:
    """A traced copy of ``model`` with a fake-quant module at every site of ``plan``; ``model`` is unchanged.

    Fake-quant sites ``model`` already has are removed first (its masks are kept).

    Raises:
        UnsupportedModelError: ``model`` cannot be traced, a site names no node of the trace, or a layer
            site is not a convolution or linear layer called in the trace.
        ValueError: an activation site asks for per-channel parameters.
    """
    base = _copy_without_quant(model, keep_masks=True)
    name = type(model).__qualname__
    gm = trace(base, needed_for="fake quantization")
    gm.train(base.training)
    _keep_unused_modules(gm, base)
    if plan.acts:
        if hasattr(gm, CONTAINER):
            raise UnsupportedModelError(f"{name} has an attribute {CONTAINER!r}, which slimkit needs for fake-quant")
        container = nn.ModuleDict()
        gm.add_module(CONTAINER, container)
        nodes = unshaped_node_names(base, gm)
        for order, site in enumerate(plan.acts):
            if site.spec.axis is not None:
                raise ValueError(f"activation site {site.node!r}: per-channel activation fake-quant (axis="
                                 f"{site.spec.axis}) is not supported; activations are quantized per tensor")
            node = nodes.get(site.node)
            if node is None or node.op == "get_attr":
                raise UnsupportedModelError(
                    f"activation site {site.node!r}: the torch.fx trace of {name} has no tensor node of that name"
                )
            key = _free_key(site.node, container)
            container[key] = FakeQuant(site.node, site.spec, "act", method=plan.method, order=order)
            with gm.graph.inserting_after(node):
                fq = gm.graph.call_module(f"{CONTAINER}.{key}", (node,))
            node.replace_all_uses_with(fq, delete_user_cb=lambda user, fq=fq: user is not fq)
    for order, site in enumerate(plan.layers):
        _quantize_layer(gm, site, plan.method, order, name)
    gm.graph.lint()
    gm.recompile()
    return gm


def _keep_unused_modules(gm: fx.GraphModule, base: nn.Module) -> None:
    """Adds the modules of ``base`` the trace does not call to ``gm``, at their paths.

    Graph node names avoid module paths (see graph.py), so a model that lost an unused module would
    name some nodes differently from the plan; its layers would differ from the float model's too.
    """
    for path, module in base.named_modules():
        if path and not _has_submodule(gm, path):
            gm.add_submodule(path, module)


def _has_submodule(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
    except AttributeError:
        return False
    return True


def _quantize_layer(gm: fx.GraphModule, site: LayerSite, method: str, order: int, model_name: str) -> None:
    """Registers the kernel (and bias) fake-quant parametrizations of one layer site."""
    try:
        module = gm.get_submodule(site.layer)
    except AttributeError:
        raise UnsupportedModelError(f"{model_name} has no layer {site.layer!r} to quantize") from None
    if not isinstance(module, _QUANTIZABLE):
        raise UnsupportedModelError(
            f"layer {site.layer!r} ({type(module).__name__}) cannot be quantized; slimkit quantizes Conv1d/2d/3d "
            "and Linear layers"
        )
    axis = site.kernel.axis
    channels = None if axis is None else int(module.weight.shape[axis])
    kernel = FakeQuant(f"{site.layer}/kernel", site.kernel, "kernel", channels, site, method, order)
    # appended after any mask, so the mask's zeros are what gets quantized (and stay zero)
    parametrize.register_parametrization(module, "weight", kernel, unsafe=True)
    if module.bias is not None:
        bias = FakeQuant(f"{site.layer}/bias", bias_spec(site.kernel), "bias",
                         None if axis is None else int(module.bias.shape[0]),
                         method=method, order=order)
        parametrize.register_parametrization(module, "bias", bias, unsafe=True)


def _free_key(node: str, container: nn.ModuleDict) -> str:
    """A module-dict key (an identifier) for the site of ``node`` not used yet."""
    base = re.sub(r"\W", "_", node)
    if not base or base[0].isdigit():
        base = f"n_{base}"
    key, k = base, 1
    while key in container:
        k += 1
        key = f"{base}_{k}"
    return key


def set_params(model: nn.Module, params: dict[str, SiteParams]) -> None:
    """Sets the named sites' parameters (all checked before any is set); see :meth:`FakeQuant.set_params`.

    A ``<layer>/bias`` key of a planned layer without a bias is accepted and has nothing to set.

    Raises:
        KeyError: a key names no site of the model.
        ValueError: parameters that do not fit their site.
    """
    found = sites(model)
    layers = {m.layer_site.layer for m in found.values() if m.role == "kernel" and m.layer_site is not None}
    no_bias = {f"{layer}/bias" for layer in layers} - set(found)
    for key in params:
        if key not in found and key not in no_bias:
            known = ", ".join(repr(k) for k in sorted(found)) or "none: the model has no fake-quant sites"
            raise KeyError(f"no fake-quant site {key!r}; the sites are {known}")
    for key, p in params.items():
        if key in found:
            found[key].checked(p)
    for key, p in params.items():
        if key in found:
            found[key].set_params(p)


def state(model: nn.Module) -> dict[str, dict[str, np.ndarray]]:
    """What each site holds (see :meth:`FakeQuant.state`), by site key."""
    return {key: m.state() for key, m in sites(model).items()}


def plan_of(model: nn.Module) -> QuantPlan | None:
    """The plan of the model's sites with their current modes; None if it has none."""
    found = list(sites(model).values())
    if not found:
        return None
    acts = sorted((m for m in found if m.role == "act"), key=lambda m: m.order)
    kernels = sorted((m for m in found if m.role == "kernel" and m.layer_site is not None), key=lambda m: m.order)
    return QuantPlan(
        tuple(ActSite(m.site, m.current_spec) for m in acts),
        tuple(replace(m.layer_site, kernel=m.current_spec) for m in kernels),
        found[0].method,
    )


def float_model(model: nn.Module) -> nn.Module:
    """A float copy of ``model``: fake-quant modules and parametrizations gone, masks baked into weights."""
    return _copy_without_quant(model, keep_masks=False)


def bake_masks(model: nn.Module) -> None:
    """Multiplies masks into the weights and removes them, in place, keeping fake-quant parametrizations."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                _rebuild_parametrizations(module, tensor_name, keep_masks=False, keep_quant=True)


def float_value(module: nn.Module, tensor_name: str) -> torch.Tensor:
    """A parametrized tensor through its masks only: the float weight training moves, before fake-quant."""
    plist = module.parametrizations[tensor_name]
    value = plist.original
    for p in plist:
        if not isinstance(p, FakeQuant):
            value = p(value)
    return value


def _copy_without_quant(model: nn.Module, keep_masks: bool) -> nn.Module:
    """A deep copy with the fake-quant modules and parametrizations removed; masks kept or baked in."""
    try:
        clone = independent_copy(model)
    except Exception as exc:  # arbitrary user modules can hold uncopyable state
        raise UnsupportedModelError(f"cannot copy {type(model).__qualname__} with copy.deepcopy ({exc})") from exc
    for module in list(clone.modules()):
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                _rebuild_parametrizations(module, tensor_name, keep_masks=keep_masks, keep_quant=False)
    if isinstance(clone, fx.GraphModule):
        changed = False
        for node in list(clone.graph.nodes):
            if node.op == "call_module" and isinstance(clone.get_submodule(node.target), FakeQuant):
                node.replace_all_uses_with(node.args[0])
                clone.graph.erase_node(node)
                changed = True
        if changed:
            clone.graph.lint()
            clone.recompile()
    container = getattr(clone, CONTAINER, None)
    if isinstance(container, nn.Module) and all(isinstance(m, FakeQuant) for m in container.children()):
        delattr(clone, CONTAINER)
    return clone


def _rebuild_parametrizations(module: nn.Module, tensor_name: str, keep_masks: bool, keep_quant: bool) -> None:
    """Re-registers one tensor's parametrizations keeping masks and/or fake-quant; dropped masks are baked in."""
    plist = module.parametrizations[tensor_name]
    quant = [p for p in plist if isinstance(p, FakeQuant)]
    masks = [p for p in plist if not isinstance(p, FakeQuant)]
    if (keep_masks or not masks) and (keep_quant or not quant):
        return
    with torch.no_grad():
        baked = None if keep_masks else float_value(module, tensor_name).detach().clone()
    parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=False)
    if baked is not None:
        with torch.no_grad():
            getattr(module, tensor_name).copy_(baked)
    for p in (masks if keep_masks else []) + (quant if keep_quant else []):
        parametrize.register_parametrization(module, tensor_name, p, unsafe=True)
