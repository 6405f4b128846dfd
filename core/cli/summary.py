"""What ``slimkit inspect`` reports about a model: its layers with kinds, weights, sparsity and MACs, the
channel groups structured pruning can remove (and the channels it must leave whole, with why), and the
layers int8 quantization gives integer kernels.

MACs per sample are counted in one of two ways, which agree on convolutional networks:

* ``layers`` (default): each conv, depthwise conv and dense layer's output elements per sample, read
  from one inference pass (``StructureAdapter.layer_outputs``), times its kernel's weights per output
  channel (``in/groups x kernel size``, or the input features). Framework-neutral and fast (a ResNet50
  in about a second); ops without weights (attention score products, recurrent steps) are not counted.
* ``onnx``: every Conv, Gemm and MatMul of the float ONNX export after shape inference
  (:func:`slimkit.deploy.bench.node_macs`); each node's count goes to the layer its weight's or its own
  name names (the exporters name them after layer paths), else to the layer whose kernel its weight
  holds, else to "other ops" (a MatMul of two activations, say). Exports take seconds on large models.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from slimkit.adapter import LayerInfo, QuantAdapter, StructureAdapter
from slimkit.errors import SlimkitError, UnsupportedModelError

#: The row MACs no layer claims are reported under.
OTHER_OPS = "(other ops)"


@dataclass(frozen=True)
class LayerSummary:
    """One layer that holds weights.

    Attributes:
        sparsity: share of zeros in the matrices pruning acts on (the kernel, or a layer's matrices of
            2 or more dimensions); None for layers with none (batch norms).
        macs: multiply-accumulates per sample (None when not counted).
        group: index into :attr:`ModelSummary.groups` of the channel group it produces, or None.
        quant: ``int8`` (integer kernel), ``weight-only (why)`` (kernel snapped to int8, runs in float),
            ``float``, or ``-`` when unknown (no graph to plan sites on).
    """

    name: str
    kind: str
    type_name: str
    params: int
    sparsity: float | None
    macs: int | None = None
    group: int | None = None
    quant: str = "-"


@dataclass(frozen=True)
class GroupSummary:
    """Channels structured pruning removes together: the layers producing them and their count."""

    producers: tuple[str, ...]
    channels: int
    members: int


@dataclass
class ModelSummary:
    """Everything ``slimkit inspect`` prints (``to_dict`` for ``--json``)."""

    framework: str
    params: int
    macs: int | None
    layers: list[LayerSummary]
    groups: list[GroupSummary] = field(default_factory=list)
    blocked: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    attention_blocks: list[tuple[str, int]] = field(default_factory=list)
    activation_sites: int | None = None
    other_macs: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return {"framework": self.framework, "params": self.params, "macs": self.macs,
                "other_macs": self.other_macs, "layers": [asdict(r) for r in self.layers],
                "groups": [asdict(g) for g in self.groups],
                "blocked": [{"layers": list(names), "reason": why} for names, why in self.blocked],
                "attention_blocks": [{"name": n, "heads": h} for n, h in self.attention_blocks],
                "activation_sites": self.activation_sites, "notes": list(self.notes)}


#: Layer kinds whose MACs the ``layers`` count covers.
MAC_KINDS = ("conv", "depthwise_conv", "dense")


def summarize(model: Any, sample: Any, macs: str | None = "layers", what: str = "sample") -> ModelSummary:
    """The summary of ``model`` (not modified).

    Args:
        model: a model of any adapter.
        sample: input samples for tracing and counting (None: no graph-based parts for frameworks that
            need samples to trace, and no MACs).
        macs: how MACs are counted: ``layers``, ``onnx`` (see the module docstring) or None (not at all).
        what: where the samples came from, for messages.

    Raises:
        DataError: the samples do not fit the model.
        UnsupportedModelError: the model is of no supported framework.
    """
    from slimkit.registry import adapter_for

    adapter = adapter_for(model)
    if sample is not None:
        from slimkit.data import head

        adapter.check_input(head(sample, 1), what)  # a DataError naming the shape, before any tracing
    infos = adapter.layers()
    rows = {info.name: _row(adapter, info) for info in infos}
    summary = ModelSummary(adapter.framework, sum(info.params for info in infos), None, [])
    graph = _graph(adapter, sample, summary)
    if graph is not None:
        _groups(adapter, graph, rows, summary)
        _quant(adapter, graph, infos, rows, summary)
    if macs == "layers" and sample is not None:
        _layer_macs(adapter, sample, infos, rows, summary)
    elif macs == "onnx" and sample is not None:
        _macs(adapter, sample, infos, rows, summary)
    summary.layers = list(rows.values())
    return summary


def _row(adapter: Any, info: LayerInfo) -> LayerSummary:
    weights = adapter.get_weights(info.name)
    keys = [k for k in info.maskable if k in weights] or [k for k, w in weights.items() if w.ndim >= 2]
    size = sum(int(weights[k].size) for k in keys)
    zeros = sum(int(np.sum(weights[k] == 0)) for k in keys)
    return LayerSummary(info.name, info.kind, info.type_name, info.params, zeros / size if size else None)


def _graph(adapter: Any, sample: Any, summary: ModelSummary) -> Any:
    if not isinstance(adapter, StructureAdapter):
        summary.notes.append(f"the {adapter.framework} adapter describes no graph: no channel groups or sites")
        return None
    try:
        return adapter.graph(sample)
    except SlimkitError as exc:
        if sample is not None:  # without samples the caller says what they would give
            summary.notes.append(f"no graph, so no channel groups or quantization sites: {exc}")
        return None


def _groups(adapter: Any, graph: Any, rows: dict[str, LayerSummary], summary: ModelSummary) -> None:
    from dataclasses import replace

    from slimkit.graph import analyse

    try:
        analysis = analyse(graph)
    except UnsupportedModelError as exc:
        summary.notes.append(f"channel groups cannot be analysed: {exc}")
        return
    for index, group in enumerate(analysis.groups):
        summary.groups.append(GroupSummary(tuple(group.producers), group.channels, len(group.members)))
        for producer in group.producers:
            if producer in rows:
                rows[producer] = replace(rows[producer], group=index)
    for node_names, why in analysis.blocked:
        layers = tuple(dict.fromkeys(graph.by_name[n].layer or n for n in node_names if n in graph.by_name))
        summary.blocked.append((layers, why))
    summary.attention_blocks = [(b.name, b.heads) for b in adapter.attention_blocks()]


def _quant(adapter: Any, graph: Any, infos: list[LayerInfo], rows: dict[str, LayerSummary],
           summary: ModelSummary) -> None:
    """Which layers static int8 gives integer kernels (every quantizable kind with a graph node of its
    own), and how many activation tensors it quantizes."""
    from dataclasses import replace

    from slimkit.quant.plan import QUANTIZABLE_KINDS, FakeQuantSpec, plan_sites

    if not isinstance(adapter, QuantAdapter):
        summary.notes.append(f"the {adapter.framework} adapter does not quantize")
        return
    own = {n.layer for n in graph.nodes if n.layer is not None}
    spec = FakeQuantSpec(-128, 127, True)
    chosen = {}
    for info in infos:
        if info.kind in QUANTIZABLE_KINDS and info.name in own:
            chosen[info.name] = spec
            rows[info.name] = replace(rows[info.name], quant="int8")
        elif info.kind in QUANTIZABLE_KINDS or info.kind in ("embedding", "attention", "recurrent"):
            why = "no graph node of its own" if info.kind in QUANTIZABLE_KINDS else "no integer kernel"
            rows[info.name] = replace(rows[info.name], quant=f"weight-only ({why})")
        else:
            rows[info.name] = replace(rows[info.name], quant="float")
    if chosen:
        try:
            summary.activation_sites = len(plan_sites(graph, chosen, FakeQuantSpec(0, 255, False), "static").acts)
        except ValueError as exc:
            summary.notes.append(f"quantization sites cannot be planned: {exc}")


def layer_macs(adapter: Any, sample: Any) -> dict[str, int]:
    """MACs per sample of each conv, depthwise conv and dense layer of ``adapter``'s model, from its
    output size on the first sample of ``sample`` times its kernel's weights per output channel.

    Raises:
        UnsupportedModelError: the adapter reads no layer outputs.
        DataError: the sample does not fit the model.
    """
    from slimkit.adapter import require
    from slimkit.data import head

    require(adapter, StructureAdapter, "counting MACs from layer outputs")
    counted = [i for i in adapter.layers() if i.kind in MAC_KINDS and "kernel" in i.shapes and i.kernel_perm]
    outputs = adapter.layer_outputs(head(sample, 1), [i.name for i in counted])
    counts = {}
    for info in counted:
        out = np.asarray(outputs[info.name])
        kernel = info.shapes["kernel"]
        per_output = int(np.prod(kernel)) // max(1, int(kernel[info.out_axis]))  # in/groups x k, or features
        counts[info.name] = int(out.size // max(1, out.shape[0])) * per_output
    return counts


def _layer_macs(adapter: Any, sample: Any, infos: list[LayerInfo], rows: dict[str, LayerSummary],
                summary: ModelSummary) -> None:
    """MACs of conv, depthwise and dense layers from their output sizes on one sample."""
    from dataclasses import replace

    try:
        counts = layer_macs(adapter, sample)
    except (SlimkitError, KeyError) as exc:
        summary.notes.append(f"MACs not counted: the layers' outputs cannot be read ({exc})")
        return
    for name, count in counts.items():
        rows[name] = replace(rows[name], macs=count)
    summary.macs = sum(counts.values())
    skipped = [i.name for i in infos if i.kind in ("attention", "recurrent")]
    if skipped:
        summary.notes.append(f"MACs of {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''} are not counted "
                             "by layer outputs (inspect --macs onnx counts every MatMul of the ONNX export)")


def _macs(adapter: Any, sample: Any, infos: list[LayerInfo], rows: dict[str, LayerSummary],
          summary: ModelSummary) -> None:
    from dataclasses import replace

    from slimkit.data import head
    from slimkit.deploy import load_bench

    weighted = [i.name for i in infos if i.kind in ("conv", "depthwise_conv", "dense", "attention", "recurrent")]
    fd, path = tempfile.mkstemp(suffix=".onnx", prefix=".slimkit-inspect-")
    os.close(fd)
    try:
        adapter.export_onnx(path, head(sample, 1), 17)
        counts, other = load_bench().macs_by_layer(
            path, weighted, lambda: {i.name: adapter.get_weights(i.name)["kernel"] for i in infos if "kernel" in i.shapes})
    except SlimkitError as exc:
        summary.notes.append(f"MACs not counted: the model does not export to ONNX ({exc})")
        return
    finally:
        os.unlink(path)
    for layer, count in counts.items():
        rows[layer] = replace(rows[layer], macs=count)
    summary.macs = sum(counts.values()) + other
    summary.other_macs = other
