"""The neutral layer graph that adapters build, and the channel spaces and dependency groups on it.

An adapter describes its model as :class:`Node` objects: one per layer or op, each with one output
tensor whose channel count is ``channels``. Channel *spaces* are classes of tensors that must keep
the same channel indices: a conv's output, the batch-norm and activations after it, the residual
add that joins it to another branch, the depthwise conv that maps channel c to channel c. Pruning a
space removes the same indices from every member: the producers' output channels and the consumers'
input channels (through concatenation offsets and flatten blocks where those lie between).

Spaces that touch the model's inputs or outputs, or any op the adapter could not describe
(``opaque``), are *blocked*: they are reported and left whole, never broken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slimkit.errors import UnsupportedModelError

#: Node ops an adapter may emit.
#:
#: - ``input`` / ``output``: model boundary (``output`` takes the final tensor as its input).
#: - ``conv`` / ``dense``: weighted, groups == 1: input channels consumed, output channels produced.
#: - ``depthwise_conv``: weighted, channel c in -> channel c out (multiplier 1).
#: - ``batchnorm``: weighted, per-channel.
#: - ``elementwise``: unary, keeps channels (activations, dropout, pooling, padding, global pooling).
#: - ``add`` / ``multiply``: n-ary elementwise; inputs with 1 channel broadcast and do not tie.
#: - ``concat``: along the channel axis, inputs in order.
#: - ``flatten``: channels x spatial -> features; attrs ``spatial`` (int) and ``order``
#:   (``channels_last``: feature = s * C + c; ``channels_first``: feature = c * S + s).
#: - ``opaque``: anything else; its inputs' and output's spaces are blocked.
OPS = ("input", "output", "conv", "dense", "depthwise_conv", "batchnorm", "elementwise", "add",
       "multiply", "concat", "flatten", "opaque")
_PRODUCERS = ("conv", "dense")
_CHANNELWISE = ("depthwise_conv", "batchnorm", "elementwise")


@dataclass(frozen=True)
class Node:
    """One op of the model with a single output tensor.

    Attributes:
        name: unique node name.
        op: one of :data:`OPS`.
        inputs: names of the nodes whose outputs this node reads, in order.
        channels: size of the output's channel axis (features for dense/flatten outputs).
        layer: the adapter's layer name for weighted nodes (conv, dense, depthwise_conv, batchnorm).
        attrs: op details (``flatten``: ``spatial``, ``order``; conv/dense layers that apply a ReLU or
            ReLU6 themselves: ``fused: relu``); ``type_name`` for messages.
    """

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    channels: int | None = None
    layer: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LayerGraph:
    """Nodes in topological order."""

    nodes: list[Node]

    def __post_init__(self) -> None:
        self.by_name = {n.name: n for n in self.nodes}
        if len(self.by_name) != len(self.nodes):
            raise ValueError("LayerGraph: node names must be unique")
        for node in self.nodes:
            if node.op not in OPS:
                raise ValueError(f"LayerGraph: node {node.name!r} has unknown op {node.op!r}")
            for inp in node.inputs:
                if inp not in self.by_name:
                    raise ValueError(f"LayerGraph: node {node.name!r} reads unknown node {inp!r}")


@dataclass(frozen=True)
class Member:
    """How a layer takes part in a group: which of its axes carry the group's channels.

    ``role``: ``out`` (producer: kernel out-channels and bias), ``channel`` (batch-norm or depthwise:
    every weight is per channel), or ``in`` (consumer: kernel in-channels). ``index`` maps the group's
    channel c to the layer's own channels (``channel``) or input features (``in``), through
    concatenation offsets and flatten blocks: removing channels R removes ``index[R].ravel()``.
    """

    layer: str
    role: str
    index: np.ndarray | None = None  # (channels, positions per channel), for roles "channel" and "in"


@dataclass
class Group:
    """Channels that must be pruned together, with every layer that carries them."""

    id: int
    channels: int
    members: list[Member]

    @property
    def producers(self) -> list[str]:
        return [m.layer for m in self.members if m.role == "out"]


@dataclass
class GroupAnalysis:
    """Prunable groups and the spaces left whole, with why."""

    groups: list[Group]
    blocked: list[tuple[tuple[str, ...], str]]  # (node names in the space, reason)


class _Spaces:
    """Union-find over node outputs."""

    def __init__(self, names: list[str]) -> None:
        self.parent = {n: n for n in names}

    def find(self, a: str) -> str:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def analyse(graph: LayerGraph) -> GroupAnalysis:
    """Channel-dependency groups of a model graph.

    Raises:
        UnsupportedModelError: the graph is inconsistent (channel counts that cannot match).
    """
    nodes = graph.nodes
    spaces = _Spaces([n.name for n in nodes])
    blocked: dict[str, str] = {}  # node name -> reason (resolved to spaces below)

    def block(name: str, reason: str) -> None:
        blocked.setdefault(name, reason)

    for node in nodes:
        ins = [graph.by_name[i] for i in node.inputs]
        if node.op in _CHANNELWISE:
            _expect_inputs(node, ins, 1)
            _same_channels(node, ins[0])
            spaces.union(node.name, ins[0].name)
        elif node.op in ("add", "multiply"):
            for inp in ins:
                if inp.channels == 1 and node.channels != 1:
                    continue  # broadcast operand (a scalar gate) does not constrain channels
                _same_channels(node, inp)
                spaces.union(node.name, inp.name)
        elif node.op == "input":
            block(node.name, f"model input {node.name!r}")
        elif node.op == "output":
            for inp in ins:
                block(inp.name, f"model output (through {node.name!r})")
        elif node.op == "opaque":
            kind = node.attrs.get("type_name", "op")
            for inp in ins:
                block(inp.name, f"feeds {kind} {node.name!r}, which slimkit cannot prune through")
            block(node.name, f"comes from {kind} {node.name!r}, which slimkit cannot prune through")
        elif node.op == "concat":
            if sum(i.channels or 0 for i in ins) != node.channels:
                raise UnsupportedModelError(f"concat {node.name!r}: input channels do not add up to {node.channels}")
        elif node.op == "flatten":
            _expect_inputs(node, ins, 1)
    return _groups(graph, spaces, blocked)


def _expect_inputs(node: Node, ins: list[Node], count: int) -> None:
    if len(ins) != count:
        raise UnsupportedModelError(f"{node.op} {node.name!r} has {len(ins)} inputs, expected {count}")


def _same_channels(node: Node, inp: Node) -> None:
    if node.channels != inp.channels:
        raise UnsupportedModelError(
            f"{node.op} {node.name!r} has {node.channels} channels but its input {inp.name!r} has {inp.channels}"
        )


class _Resolver:
    """Answers where a space's channels appear in any node's output features."""

    def __init__(self, graph: LayerGraph, spaces: _Spaces) -> None:
        self.graph, self.spaces = graph, spaces
        self.members: dict[str, list[Node]] = {}
        for node in graph.nodes:
            self.members.setdefault(spaces.find(node.name), []).append(node)
        # A derived space is defined by the concat or flatten whose output it is.
        self.definer: dict[str, Node] = {}
        self.mixed: dict[str, str] = {}
        for root, members in self.members.items():
            derived = [n for n in members if n.op in ("concat", "flatten")]
            producers = [n for n in members if n.op in _PRODUCERS]
            if len(derived) > 1 or (derived and producers):
                self.mixed[root] = f"{derived[0].op} {derived[0].name!r} joins channels of different origin"
            elif derived:
                self.definer[root] = derived[0]

    def index(self, name: str, space: str) -> np.ndarray | None:
        """(channels of ``space``, features per channel) indices into node ``name``'s output, or None."""
        root = self.spaces.find(name)
        if root == space:
            return np.arange(self.graph.by_name[name].channels or 0).reshape(-1, 1)
        node = self.definer.get(root)
        if node is None:
            return None
        if node.op == "concat":
            offset, found = 0, None
            for inp in node.inputs:
                sub = self.index(inp, space)
                if sub is not None:
                    found = sub + offset if found is None else np.concatenate([found, sub + offset], axis=1)
                offset += self.graph.by_name[inp].channels or 0
            return found
        sub = self.index(node.inputs[0], space)  # flatten
        if sub is None:
            return None
        width = self.graph.by_name[node.inputs[0]].channels or 0
        spatial = int(node.attrs["spatial"])
        s = np.arange(spatial)
        if node.attrs.get("order") == "channels_first":
            feats = sub[:, :, None] * spatial + s[None, None, :]
        else:
            feats = s[None, None, :] * width + sub[:, :, None]
        return feats.reshape(sub.shape[0], -1)


def _groups(graph: LayerGraph, spaces: _Spaces, blocked_nodes: dict[str, str]) -> GroupAnalysis:
    res = _Resolver(graph, spaces)
    reasons: dict[str, str] = dict(res.mixed)
    for name, reason in blocked_nodes.items():
        reasons.setdefault(spaces.find(name), reason)
    # A space that mixes a concat/flatten output with other channels is left whole: so are the spaces
    # feeding that concat/flatten (pruning them would change its width on one side of the mix only).
    for root, reason in res.mixed.items():
        for node in res.members[root]:
            if node.op in ("concat", "flatten"):
                for inp in node.inputs:
                    reasons.setdefault(spaces.find(inp), f"its channels reach {node.op} {node.name!r}, which is "
                                                         f"left whole ({reason})")
    # A space whose channels reach a blocked derived space (a concat feeding the model output, say)
    # cannot shrink without breaking it: block it too, until nothing changes.
    changed = True
    while changed:
        changed = False
        for root in list(res.definer):
            if root not in reasons:
                continue
            for other in res.members:
                if other not in reasons and other != root and res.index(res.definer[root].name, other) is not None:
                    reasons[other] = f"its channels reach {res.definer[root].op} {res.definer[root].name!r}, " \
                                     f"which is left whole ({reasons[root]})"
                    changed = True

    groups, blocked = [], []
    consumers = [n for n in graph.nodes if n.op in _PRODUCERS]
    channelwise = [n for n in graph.nodes if n.op in ("batchnorm", "depthwise_conv")]
    for root, members_nodes in res.members.items():
        producers = [n for n in members_nodes if n.op in _PRODUCERS]
        if not producers:
            continue  # no layer defines these channels: derived, or input-only
        if root in reasons:
            blocked.append((tuple(n.name for n in members_nodes), reasons[root]))
            continue
        members = [Member(n.layer or n.name, "out") for n in producers]
        # Per-channel layers (batch norm, depthwise) anywhere the channels flow: in the space itself
        # (identity index) or after a concatenation (offset index).
        for node in channelwise:
            index = res.index(node.name, root)
            if index is not None:
                members.append(Member(node.layer or node.name, "channel", index))
        for consumer in consumers:
            index = res.index(consumer.inputs[0], root)
            if index is not None:
                members.append(Member(consumer.layer or consumer.name, "in", index))
        groups.append(Group(len(groups), producers[0].channels or 0, members))
    return GroupAnalysis(groups, blocked)
