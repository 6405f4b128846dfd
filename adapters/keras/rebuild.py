"""Rebuilds a Keras 3 graph model with smaller layers: the Keras side of structured pruning.

``keras.models.clone_model`` walks the model and asks :class:`_Cloner` for each layer's copy. A layer
given new weights is re-created from its config with the sizes the weights imply (``filters`` of a
convolution, ``units`` of a dense layer); batch norms and depthwise convolutions take their channel
count from their (smaller) input when built, as do the input features of every layer. A nested
Sequential/Functional model is cloned recursively on an ``Input`` of its new shape, worked out by
propagating channel counts over the neutral graph. Then every variable is filled: the given
weights where given, the original's otherwise.

Two more changes serve batch-norm folding: a layer built without a bias that is given one is
rebuilt with ``use_bias=True``, and the layers named in ``drop`` become ``keras.layers.Identity``
layers of the same name, so the graph keeps its node names (the node turns ``elementwise``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from slimkit.errors import UnsupportedModelError
from slimkit.graph import LayerGraph

from .layer_copy import ZeroInit
from .graph import Trace, is_graph_model
from .layers import LayerEntry, walk


def new_channels(graph: LayerGraph, weights: dict[str, dict[str, np.ndarray]]) -> dict[str, int | None]:
    """Each node's channel count once the given layers hold ``weights`` (Keras layouts)."""
    out: dict[str, int | None] = {}
    for node in graph.nodes:
        ins = [out[i] for i in node.inputs]
        old_ins = [graph.by_name[i].channels for i in node.inputs]
        if node.op in ("conv", "dense"):
            given = weights.get(node.layer or "", {})
            kernel, recurrent = given.get("kernel"), given.get("recurrent_kernel")
            if recurrent is not None:  # LSTM/GRU: (units, gates * units)
                out[node.name] = int(recurrent.shape[0])
            else:
                out[node.name] = int(kernel.shape[-1]) if kernel is not None else node.channels
        elif node.op in ("depthwise_conv", "batchnorm", "elementwise", "output"):
            out[node.name] = ins[0]
        elif node.op in ("add", "multiply"):
            # Operands of one channel broadcast (when the result has more); the others agree.
            wide = [c for c, old in zip(ins, old_ins) if not (old == 1 and node.channels != 1)]
            out[node.name] = wide[0] if wide else node.channels
        elif node.op == "concat":
            out[node.name] = int(sum(c or 0 for c in ins))
        elif node.op == "flatten":
            out[node.name] = int(node.attrs["spatial"]) * int(ins[0] or 0)
        else:  # input, opaque: as they were
            out[node.name] = node.channels
    return out


def _input_name(tensor: Any) -> str:
    return tensor._keras_history.operation.name


class _Cloner:
    """The ``clone_function`` for ``clone_model``: one new layer per original layer, sized by the weights.

    Records (path, original, copy) for every layer it creates so the weights can be filled after.
    """

    def __init__(self, model: Any, k: ModuleType, graph: LayerGraph, trace: Trace,
                 entries: dict[str, LayerEntry], weights: dict[str, dict[str, np.ndarray]],
                 drop: frozenset[str] = frozenset()) -> None:
        self.k, self.graph, self.trace, self.entries, self.weights = k, graph, trace, entries, weights
        self.drop = drop
        self.identities: set[int] = set()
        self.channels = new_channels(graph, weights)
        self.out_shapes = {c.name: tuple(c.node.outputs[0].shape) for c in trace.calls if c.node.outputs}
        self.paths: dict[int, str] = {}
        self._index_paths(model, "")
        self.cache: dict[int, Any] = {}
        self.pairs: list[tuple[str, Any, Any]] = []
        # layers given no weights get all of theirs copied from the original: no initialising first
        self.zeros = ZeroInit(k)

    def _index_paths(self, model: Any, prefix: str) -> None:
        for layer in getattr(model, "layers", []):
            if id(layer) in self.paths:
                continue
            self.paths[id(layer)] = prefix + layer.name
            if is_graph_model(layer, self.k):
                self._index_paths(layer, prefix + layer.name + "/")

    def clone_top(self, model: Any) -> Any:
        """The rebuilt top-level model (its input keeps its shape and name)."""
        fn_inputs = model._functional.inputs if type(model) is self.k.Sequential else model.inputs
        shapes = [tuple(t.shape) for t in fn_inputs]
        return self._clone_model(model, shapes)

    def _clone_model(self, model: Any, shapes: list[tuple[int | None, ...]]) -> Any:
        k = self.k
        fn = model._functional if type(model) is k.Sequential else model
        if fn is None:
            raise UnsupportedModelError(
                f"cannot rebuild the Sequential model {model.name!r}: it has no functional graph"
            )
        new_inputs = [
            k.Input(batch_shape=shape, dtype=t.dtype, name=_input_name(t)) for shape, t in zip(shapes, fn.inputs)
        ]
        if type(model) is k.Sequential:
            return k.models.clone_model(model, input_tensors=new_inputs[0], clone_function=self)
        structure = k.tree.pack_sequence_as(model._inputs_struct, new_inputs)
        return k.models.clone_model(model, input_tensors=structure, clone_function=self,
                                    call_function=self._call)

    def _call(self, layer: Any, *args: Any, **kwargs: Any) -> Any:
        """Calls a layer as the original was called; a dropped layer's Identity on the tensor alone
        (the batch norm's recorded ``training``/``mask`` arguments are not Identity's)."""
        if id(layer) in self.identities:
            return layer(args[0])
        return layer(*args, **kwargs)

    def __call__(self, layer: Any) -> Any:
        if id(layer) in self.cache:
            return self.cache[id(layer)]
        path = self.paths.get(id(layer), layer.name)
        if is_graph_model(layer, self.k):
            new = self._clone_model(layer, self._nested_shapes(layer, path))
        elif path in self.drop:
            new = self.k.layers.Identity(name=layer.name)
            self.identities.add(id(new))
        elif path in self.weights:
            new = type(layer).from_config(self._config(layer, path))
        else:
            new = self.zeros.copy(layer, self._config(layer, path))
        self.cache[id(layer)] = new
        self.pairs.append((path, layer, new))
        return new

    def _nested_shapes(self, model: Any, path: str) -> list[tuple[int | None, ...]]:
        """A nested model's input shapes, the last axis resized where its feeders shrank."""
        fn = model._functional if type(model) is self.k.Sequential else model
        shapes = [tuple(t.shape) for t in fn.inputs]
        feeders = self.trace.model_inputs.get(path)
        if feeders is None:  # not inlined (called several times): its inputs cannot change
            return shapes
        return [(*s[:-1], self.channels.get(f, s[-1])) for s, f in zip(shapes, feeders)]

    def _config(self, layer: Any, path: str) -> dict[str, Any]:
        config = layer.get_config()
        given = self.weights.get(path)
        entry = self.entries.get(path)
        if given is not None and "bias" in given and config.get("use_bias") is False:
            config["use_bias"] = True  # a folded batch norm leaves a bias behind
        if given is not None and entry is not None and entry.layer is layer and "kernel" in given:
            size = int(np.shape(given["kernel"])[-1])
            if entry.info.kind == "conv" and "filters" in config:
                config["filters"] = size
            elif entry.info.kind == "dense" and "units" in config:
                config["units"] = size
            elif entry.info.kind == "recurrent" and "units" in config and "recurrent_kernel" in given:
                config["units"] = int(np.shape(given["recurrent_kernel"])[0])
        if given is not None and "query_kernel" in given and "num_heads" in config:
            config["num_heads"] = int(np.shape(given["query_kernel"])[1])  # MultiHeadAttention lost heads
        if type(layer) is self.k.layers.Reshape and path in self.graph.by_name:
            node = self.graph.by_name[path]
            new = self.channels.get(path)
            if node.op == "elementwise" and new != node.channels:
                target = [int(d) for d in self.out_shapes[path][1:]]  # resolved: no -1
                target[-1] = int(new)
                config["target_shape"] = tuple(int(d) for d in target)
        return config


def shrink_model(model: Any, k: ModuleType, graph: LayerGraph, trace: Trace, entries: dict[str, LayerEntry],
                 weights: dict[str, dict[str, np.ndarray]], drop: tuple[str, ...] = ()) -> Any:
    """A new model like ``model`` in which the named layers hold ``weights`` (``model`` is untouched).

    Args:
        model: the Sequential or Functional model.
        k: the keras module.
        graph: the model's neutral graph.
        trace: the walk that built ``graph``.
        entries: the model's layers by path.
        weights: layer path -> neutral weight name -> new value (a ``bias`` for a layer built
            without one rebuilds it with one).
        drop: paths of batch-norm layers to replace by ``Identity`` layers of the same name.

    Raises:
        KeyError: a name in ``weights`` or ``drop`` is no layer of the model.
        ValueError: a weight name or shape does not fit the rebuilt layer, a layer not given
            weights would change shape, or ``drop`` names a layer that is not a batch norm or is
            also given weights.
        UnsupportedModelError: Keras cannot rebuild the model from its layers' configs.
    """
    for name in weights:
        if name not in entries:
            raise KeyError(f"shrink: no layer named {name!r}")
    for name in drop:
        entry = entries.get(name)
        if entry is None:
            raise KeyError(f"shrink: cannot drop {name!r}: no layer has that name")
        if entry.info.kind != "batchnorm":
            # Only a batch norm can be folded away; anything else would change what the model computes.
            raise ValueError(
                f"shrink: cannot drop layer {name!r} ({entry.info.type_name}): only batch "
                "normalization layers (folded into the layer before them) can be dropped"
            )
        if name in weights:
            raise ValueError(f"shrink: layer {name!r} is both dropped and given weights")
    cloner = _Cloner(model, k, graph, trace, entries, weights, frozenset(drop))
    try:
        new_model = cloner.clone_top(model)
    except (UnsupportedModelError, KeyError):
        raise
    except Exception as exc:  # Keras raises many types when a rebuilt layer does not fit its input
        raise UnsupportedModelError(
            f"shrink: rebuilding Keras model {model.name!r} with the smaller layers failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    new_entries = {e.info.name: e for e in walk(new_model, k)}
    done: set[str] = set()
    for path, old, new in cloner.pairs:
        if is_graph_model(old, k) or path in cloner.drop:
            continue
        given = weights.get(path)
        if given is not None and path in new_entries and new_entries[path].layer is new:
            _assign_named(path, entries[path], new_entries[path], given)
            done.add(path)
        else:
            _copy_all(path, old, new)
    for path in sorted(set(weights) - done):
        # a sub-layer of a rebuilt layer (MultiHeadAttention's output projection): filled in its new parent
        parent = path.rsplit("/", 1)[0]
        if "/" in path and parent in done and path in new_entries and path in entries:
            _assign_named(path, entries[path], new_entries[path], weights[path])
            done.add(path)
    cloner.zeros.restore()
    missing = set(weights) - done
    missing |= {name for name in drop if not any(p == name for p, _, _ in cloner.pairs)}
    if missing:
        raise KeyError(f"shrink: layer {sorted(missing)[0]!r} is not part of the rebuilt model's graph")
    return new_model


def _assign_named(path: str, old: LayerEntry, new: LayerEntry, given: dict[str, np.ndarray]) -> None:
    unknown = set(given) - set(new.variables)
    if unknown:
        raise ValueError(
            f"shrink: layer {path!r} ({new.info.type_name}) has no weight {sorted(unknown)[0]!r}; "
            f"it has {', '.join(new.variables)}"
        )
    for key, var in new.variables.items():
        value = np.asarray(given[key]) if key in given else old.variables[key].numpy()
        expected = tuple(int(d) for d in var.shape)
        if value.shape != expected:
            raise ValueError(
                f"shrink: layer {path!r} weight {key!r} has shape {value.shape}, but the rebuilt layer "
                f"needs {expected} (the sizes of its other weights and of its input decide it)"
            )
        var.assign(value)


def _copy_all(path: str, old: Any, new: Any) -> None:
    src, dst = getattr(old, "weights", []), getattr(new, "weights", [])  # ops called on tensors have none
    shapes_src = [tuple(int(d) for d in v.shape) for v in src]
    shapes_dst = [tuple(int(d) for d in v.shape) for v in dst]
    if shapes_src != shapes_dst:
        raise ValueError(
            f"shrink: layer {path!r} ({type(old).__name__}) would change its weights from {shapes_src} to "
            f"{shapes_dst} (its input shrank), but no weights were given for it"
        )
    for s, d in zip(src, dst):
        d.assign(s.numpy())
