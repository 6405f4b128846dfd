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

import re
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from slimkit.data import as_inputs
from slimkit.errors import UnsupportedModelError
from slimkit.quant import fake_quant
from slimkit.quant.plan import MODES, ActSite, FakeQuantSpec, LayerSite, QuantPlan, SiteParams
from slimkit.quant.specs import bias_spec

from slimkit.adapters.torch.capture import captured_from
from slimkit.adapters.torch.graph import unshaped_node_names
from slimkit.adapters.torch.naming import is_transposed_linear
from slimkit.adapters.torch.tracing import trace
from slimkit.adapters.torch.ops import TORCH_OPS
from slimkit.adapters.torch.rebuild import independent_copy

#: Attribute of the traced model holding the activation fake-quant modules (a ``nn.ModuleDict``).
CONTAINER = "slimkit_quant"
#: Key of a fake-quant model's ``__dict__`` (outside the module tree, like the captured-from model): the
#: form of the sample it was traced on, which saving.py needs to trace a fresh instance the same way.
TRACED_ON = "_slimkit_traced_on"
_QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# ---------------------------------------------------------------------------------------------- the module
class FakeQuant(nn.Module):
    """Fake-quantizes one tensor (an activation, a kernel or a bias) as its site's mode says.

    The arithmetic and the modes are core's (:mod:`slimkit.quant.fake_quant`,
    :mod:`slimkit.quant.modes`); this module holds one site's state as a
    :class:`~slimkit.quant.fake_quant.SiteState`: the current mode and integer range as buffers (so
    that a switch to ``fixed`` survives ``state_dict``), ``scale`` (a parameter for ``lsq``),
    ``zero_point``, the ema ``range_min``/``range_max`` and ``ready``.

    Attributes:
        site: the site key (activation node name, ``<layer>/kernel`` or ``<layer>/bias``).
        spec: the planned spec.
        role: ``activation``, ``kernel`` or ``bias``.
        layer_site: the plan's layer site (kernel role only).
        method: the plan's method.
        order: position of the site in the plan.
        rank: rank of the quantized tensor when known (kernels, biases), for parameter checks.
    """

    #: Marks the class for graph.py: traced as one call, mapped to an elementwise node.
    slimkit_fake_quant = True

    def __init__(self, site: str, spec: FakeQuantSpec, role: str, channels: int | None = None,
                 layer_site: LayerSite | None = None, method: str = "static", order: int = 0,
                 rank: int | None = None) -> None:
        super().__init__()
        if spec.axis is not None and channels is None:
            raise ValueError(f"fake-quant site {site!r}: per-channel spec (axis={spec.axis}) needs the channel count")
        self.site, self.spec, self.role = site, spec, role
        self.layer_site, self.method, self.order, self.rank = layer_site, method, order, rank
        shape = () if spec.axis is None else (int(channels),)
        nan = torch.full(shape, float("nan"))
        self.register_buffer("mode_index", torch.tensor(MODES.index(spec.mode), dtype=torch.int64))
        self.register_buffer("int_range", torch.tensor([spec.qmin, spec.qmax], dtype=torch.int64))
        self.register_buffer("ready", torch.tensor(0.0))
        if fake_quant.mode_of(spec.mode).learns_scale:
            self.scale = nn.Parameter(torch.ones(shape))
        else:
            self.register_buffer("scale", torch.ones(shape))
        self.register_buffer("zero_point", torch.zeros(shape))
        self.register_buffer("range_min", nan.clone())
        self.register_buffer("range_max", nan.clone())

    def extra_repr(self) -> str:
        return f"site={self.site!r}, mode={self.mode}, qmin={self.qmin}, qmax={self.qmax}, axis={self.axis}"

    # -- SiteState --------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """The mode now: the planned one, or what setting parameters made it."""
        return MODES[int(self.mode_index)]

    @property
    def qmin(self) -> int:
        return int(self.int_range[0])

    @property
    def qmax(self) -> int:
        return int(self.int_range[1])

    @property
    def symmetric(self) -> bool:
        return self.spec.symmetric

    @property
    def axis(self) -> int | None:
        return self.spec.axis

    @property
    def momentum(self) -> float:
        return self.spec.momentum

    @property
    def current_spec(self) -> FakeQuantSpec:
        """The planned spec with the current mode and integer range."""
        return replace(self.spec, mode=self.mode, qmin=self.qmin, qmax=self.qmax)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise UnsupportedModelError(f"fake-quant site {self.site!r} receives {type(x).__name__}, not a tensor")
        if self.axis is not None and x.shape[self.axis % x.dim()] != self.zero_point.shape[0]:
            raise UnsupportedModelError(
                f"fake-quant site {self.site!r}: tensor has {x.shape[self.axis % x.dim()]} channels on axis "
                f"{self.axis}, its parameters have {self.zero_point.shape[0]}"
            )
        y = fake_quant.forward(TORCH_OPS, self, x.float(), self.training)
        return y.to(x.dtype)

    # -- parameters ------------------------------------------------------------------------------------
    def _channels(self) -> int | None:
        return None if self.axis is None else int(self.zero_point.shape[0])

    def checked(self, p: SiteParams) -> tuple[np.ndarray, np.ndarray]:
        """``p``'s scale and zero point as arrays, or ValueError naming the site if they do not fit it."""
        return fake_quant.check_params(self, self._channels(), p, self.rank)

    def set_params(self, p: SiteParams) -> None:
        """Sets the scale and zero point; the mode changes as
        :func:`slimkit.quant.fake_quant.mode_after_params` says."""
        scale, zp = self.checked(p)
        with torch.no_grad():
            self.scale.copy_(torch.as_tensor(scale))
            self.zero_point.copy_(torch.as_tensor(zp))
            if fake_quant.range_follows_params(self.mode):
                self.int_range.copy_(torch.tensor([int(p.qmin), int(p.qmax)]))
            self.mode_index.fill_(MODES.index(fake_quant.mode_after_params(self.mode)))
            self.ready.fill_(1.0)

    def state(self) -> dict[str, np.ndarray]:
        """What the site holds (:meth:`slimkit.quant.modes.Mode.state`)."""
        names = ("scale", "zero_point", "range_min", "range_max", "ready")
        return fake_quant.state_of(self.mode, {n: _numpy(getattr(self, n), np.float32) for n in names})


def _numpy(t: torch.Tensor, dtype: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype, copy=True)


# ---------------------------------------------------------------------------------------------- model level
def sites(model: nn.Module) -> dict[str, FakeQuant]:
    """Site key -> fake-quant module of every site in ``model``."""
    return {m.site: m for m in model.modules() if isinstance(m, FakeQuant)}


def has_fake_quant(model: nn.Module) -> bool:
    """True if ``model`` holds any fake-quant module."""
    return any(isinstance(m, FakeQuant) for m in model.modules())


def fake_quant_model(model: nn.Module, plan: QuantPlan, sample: Any = None) -> fx.GraphModule:
    """A traced copy of ``model`` with a fake-quant module at every site of ``plan``; ``model`` is unchanged.

    Fake-quant sites ``model`` already has are removed first (its masks are kept).

    Raises:
        UnsupportedModelError: ``model`` cannot be traced, a site names no node of the trace, or a layer
            site is not a convolution or linear layer called in the trace.
        ValueError: an activation site asks for per-channel parameters.
    """
    base = _copy_without_quant(model, keep_masks=True)
    name = type(model).__qualname__
    gm = trace(base, "fake quantization", sample)
    gm.train(base.training)
    if sample is not None:
        gm.__dict__[TRACED_ON] = sample_form(sample)
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
            container[key] = FakeQuant(site.node, site.spec, "activation", method=plan.method, order=order)
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
    if not (isinstance(module, _QUANTIZABLE) or is_transposed_linear(module)):
        raise UnsupportedModelError(
            f"layer {site.layer!r} ({type(module).__name__}) cannot be quantized; slimkit quantizes Conv1d/2d/3d, "
            "Linear and transformers' Conv1D layers"
        )
    axis = site.kernel.axis
    channels = None if axis is None else int(module.weight.shape[axis])
    kernel = FakeQuant(f"{site.layer}/kernel", site.kernel, "kernel", channels, site, method, order,
                       rank=module.weight.dim())
    # appended after any mask, so the mask's zeros are what gets quantized (and stay zero)
    parametrize.register_parametrization(module, "weight", kernel, unsafe=True)
    if module.bias is not None:
        bias = FakeQuant(f"{site.layer}/bias", bias_spec(site.kernel), "bias",
                         None if axis is None else int(module.bias.shape[0]),
                         method=method, order=order, rank=1)
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
    acts = sorted((m for m in found if m.role == "activation"), key=lambda m: m.order)
    kernels = sorted((m for m in found if m.role == "kernel" and m.layer_site is not None), key=lambda m: m.order)
    return QuantPlan(
        tuple(ActSite(m.site, m.current_spec) for m in acts),
        tuple(replace(m.layer_site, kernel=m.current_spec) for m in kernels),
        found[0].method,
    )


def planned(model: nn.Module) -> QuantPlan | None:
    """The plan the model's sites were built from (the specs as planned, before parameters or training changed
    their modes): :func:`fake_quant_model` with it rebuilds the same modules. None if it has no sites."""
    found = list(sites(model).values())
    if not found:
        return None
    acts = sorted((m for m in found if m.role == "activation"), key=lambda m: m.order)
    kernels = sorted((m for m in found if m.role == "kernel" and m.layer_site is not None), key=lambda m: m.order)
    return QuantPlan(tuple(ActSite(m.site, m.spec) for m in acts), tuple(m.layer_site for m in kernels),
                     found[0].method)


def sample_form(sample: Any) -> dict[str, Any]:
    """The form of a sample: ``{"form": "array" | "tuple" | "dict", "inputs": [[key, shape, dtype], ...]}``
    with each input's shape without the batch axis (JSON values)."""
    x = as_inputs(sample, "sample")
    if isinstance(x, dict):
        form, items = "dict", list(x.items())
    elif isinstance(x, tuple):
        form, items = "tuple", list(enumerate(x))
    else:
        form, items = "array", [(0, x)]
    return {"form": form, "inputs": [[k, [int(d) for d in np.shape(a)[1:]], str(np.asarray(a).dtype)]
                                     for k, a in items]}


def traced_on(model: nn.Module) -> dict[str, Any] | None:
    """The :func:`sample_form` of the sample ``model`` was traced on by :func:`fake_quant_model`, if known."""
    return model.__dict__.get(TRACED_ON)


def float_model(model: nn.Module, read_only: bool = False) -> nn.Module:
    """A float copy of ``model``: fake-quant modules and parametrizations gone, masks baked into weights.

    A model captured with ``torch.export`` comes back as the eager model it was captured from (the
    same modules, so the same weights), which the exporters take and which captures to the same
    graph node names.

    ``read_only``: the copy holds ``model``'s own parameter and buffer tensors wherever it needs them
    unchanged (not those a mask is baked into), instead of copies (100 MB for a ResNet50); for a copy
    that is only read (exported, run) while ``model`` stays as it is.
    """
    eager = captured_from(model)
    source = eager if eager is not None else model
    return _copy_without_quant(source, keep_masks=False, share=_unchanged_tensors(source) if read_only else ())


def _unchanged_tensors(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """Every parameter and buffer of ``model`` that removing its fake-quant and baking its masks leaves
    as it is: all but the originals of parametrized tensors with masks."""
    baked = {id(plist.original) for module in model.modules() if parametrize.is_parametrized(module)
             for plist in module.parametrizations.values() if any(not isinstance(p, FakeQuant) for p in plist)}
    tensors = list(model.parameters()) + list(model.buffers())
    return tuple(t for t in tensors if id(t) not in baked)


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


def _copy_without_quant(model: nn.Module, keep_masks: bool, share: tuple[torch.Tensor, ...] = ()) -> nn.Module:
    """A deep copy with the fake-quant modules and parametrizations removed; masks kept or baked in;
    ``share``: tensors the copy holds as they are (see :func:`independent_copy`)."""
    try:
        clone = independent_copy(model, share)
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
