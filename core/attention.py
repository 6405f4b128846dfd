"""Attention blocks in neutral terms, and the arithmetic of removing whole heads from them.

A multi-head attention block projects its input to queries, keys and values (``heads`` x ``key_dim``
rows for queries and keys, ``heads`` x ``value_dim`` for values), attends per head, and maps the
concatenated heads back with an output projection whose input columns are those heads. Removing head
h removes its rows from the three projections (and their biases) and its columns from the output
projection; nothing else in the model sees the head, so the block's output keeps its width.

Adapters describe their blocks (:meth:`slimkit.adapter.StructureAdapter.attention_blocks`); the layout
of each projection is given in canonical terms (the layer's ``kernel_perm``-style permutation to
``(out, in)`` order), so core slices and masks heads the same way on every framework:

- Keras ``MultiHeadAttention``: query/key/value kernels ``(embed, heads, dim)``, canonical
  ``(heads, dim, embed)``; output kernel ``(heads, dim, embed)``, canonical ``(embed, heads, dim)``.
- PyTorch ``nn.MultiheadAttention``: one ``in_proj_weight`` ``(3 * embed, embed)`` holding queries,
  keys and values at row offsets 0, embed, 2 * embed; ``out_proj`` a Linear.
- Hugging Face attention modules: query/key/value and output Linear layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimkit.pruning.masks import from_canonical, to_canonical


@dataclass(frozen=True)
class HeadWeights:
    """Where one projection's heads lie in a layer's matrix.

    Attributes:
        layer: the layer holding the matrix.
        kernel: the matrix's neutral weight name (``kernel``, ``query_kernel``, ``in_proj_kernel``).
        bias: the neutral name of the bias with the same rows, or None (output projections: none).
        perm: native -> canonical permutation of the matrix (empty: already canonical).
        head_axes: canonical axes that index heads and their dims: 1 for ``(heads * dim, ...)``,
            2 for ``(heads, dim, ...)``.
        offset: first row (flattened over ``head_axes``) of this projection in the matrix.
    """

    layer: str
    kernel: str
    bias: str | None = None
    perm: tuple[int, ...] = ()
    head_axes: int = 1
    offset: int = 0


@dataclass(frozen=True)
class AttentionBlock:
    """One multi-head attention block: its head count and where its heads' weights are.

    Attributes:
        name: the block's layer name (reports).
        heads: number of heads.
        key_dim: rows per head of the query and key projections.
        value_dim: rows per head of the value projection (= columns per head of the output).
        query, key, value: the projections (rows are heads).
        output: the output projection (input columns are heads).
    """

    name: str
    heads: int
    key_dim: int
    value_dim: int
    query: HeadWeights
    key: HeadWeights
    value: HeadWeights
    output: HeadWeights

    @property
    def projections(self) -> tuple[tuple[HeadWeights, int], ...]:
        """(projection, rows per head) for query, key and value."""
        return ((self.query, self.key_dim), (self.key, self.key_dim), (self.value, self.value_dim))

    @property
    def layers(self) -> tuple[str, ...]:
        """Every layer that holds weights of the block."""
        names = [w.layer for w, _ in self.projections] + [self.output.layer]
        return tuple(dict.fromkeys(names))


def head_rows(heads: np.ndarray, dim: int, offset: int = 0) -> np.ndarray:
    """Flattened row (or column) indices of ``heads`` in a projection with ``dim`` rows per head."""
    heads = np.asarray(heads, dtype=np.int64)
    return (offset + heads[:, None] * dim + np.arange(dim)[None, :]).ravel()


def _as_rows(canon: np.ndarray, head_axes: int) -> np.ndarray:
    """A canonical matrix as (flattened head rows, rest)."""
    rows = int(np.prod(canon.shape[:head_axes]))
    return canon.reshape(rows, -1)


def _as_columns(canon: np.ndarray, head_axes: int) -> np.ndarray:
    """A canonical output matrix as (out, flattened head columns, rest)."""
    cols = int(np.prod(canon.shape[1:1 + head_axes]))
    return canon.reshape(canon.shape[0], cols, -1)


def head_scores(block: AttentionBlock, weights: dict[str, dict[str, np.ndarray]], order: int = 2) -> np.ndarray:
    """Importance of each head: the L-``order`` norm of every weight that belongs to it (its query, key
    and value rows with their biases, and its output-projection columns)."""
    total = np.zeros(block.heads)
    for proj, dim in block.projections:
        layer = weights[proj.layer]
        rows = _as_rows(to_canonical(layer[proj.kernel], proj.perm), proj.head_axes)
        part = np.abs(rows[proj.offset:proj.offset + block.heads * dim]) ** order
        total += part.reshape(block.heads, -1).sum(axis=1)
        if proj.bias is not None and proj.bias in layer:
            bias = np.asarray(layer[proj.bias]).reshape(-1)[proj.offset:proj.offset + block.heads * dim]
            total += (np.abs(bias) ** order).reshape(block.heads, dim).sum(axis=1)
    out = weights[block.output.layer]
    cols = _as_columns(to_canonical(out[block.output.kernel], block.output.perm), block.output.head_axes)
    part = np.abs(cols[:, block.output.offset:block.output.offset + block.heads * block.value_dim]) ** order
    total += part.reshape(cols.shape[0], block.heads, -1).sum(axis=(0, 2))
    return total ** (1.0 / order)


def _removed(block: AttentionBlock, keep: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(block.heads), keep)


def head_masks(block: AttentionBlock, keep: np.ndarray,
               shapes: dict[tuple[str, str], tuple[int, ...]]) -> dict[tuple[str, str], np.ndarray]:
    """0/1 native-layout masks, per (layer, matrix), silencing the removed heads' rows and columns.

    Args:
        block: the attention block.
        keep: the heads it keeps.
        shapes: native shape of each (layer, matrix) of the block.
    """
    removed = _removed(block, keep)
    masks: dict[tuple[str, str], np.ndarray] = {}

    def canonical_ones(w: HeadWeights) -> np.ndarray:
        key = (w.layer, w.kernel)
        if key not in masks:
            masks[key] = to_canonical(np.ones(shapes[key], dtype=np.float32), w.perm).copy()
        return masks[key]

    for proj, dim in block.projections:
        canon = canonical_ones(proj)
        _as_rows(canon, proj.head_axes)[head_rows(removed, dim, proj.offset)] = 0.0
    canon = canonical_ones(block.output)
    _as_columns(canon, block.output.head_axes)[:, head_rows(removed, block.value_dim, block.output.offset)] = 0.0
    perms = {(w.layer, w.kernel): w.perm for w, _ in block.projections}
    perms[(block.output.layer, block.output.kernel)] = block.output.perm
    return {key: from_canonical(mask, perms[key]) for key, mask in masks.items()}


def slice_heads(block: AttentionBlock, keep: np.ndarray,
                weights: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """The block's weights with only the kept heads: projection rows (and bias entries) and output columns.

    Args:
        block: the attention block.
        keep: the heads it keeps (sorted).
        weights: layer -> neutral name -> native array, for every layer of the block.

    Returns:
        layer -> the sliced weights (native layout) of the matrices and biases the block owns.
    """
    removed = _removed(block, keep)
    drop_rows: dict[tuple[str, str], list[np.ndarray]] = {}
    meta: dict[tuple[str, str], HeadWeights] = {}
    for proj, dim in block.projections:
        for name in (proj.kernel, proj.bias):
            if name is not None and name in weights[proj.layer]:
                drop_rows.setdefault((proj.layer, name), []).append(head_rows(removed, dim, proj.offset))
                meta[(proj.layer, name)] = proj
    out: dict[str, dict[str, np.ndarray]] = {}
    for (layer, name), rows in drop_rows.items():
        proj = meta[(layer, name)]
        value = np.asarray(weights[layer][name])
        gone = np.concatenate(rows)
        if name == proj.kernel:
            canon = to_canonical(value, proj.perm)
            flat = _as_rows(canon, proj.head_axes)
            kept = np.delete(flat, gone, axis=0)
            lead = canon.shape[:proj.head_axes]
            new_lead = (kept.shape[0],) if proj.head_axes == 1 else (kept.shape[0] // int(np.prod(lead[1:])), *lead[1:])
            sliced = from_canonical(kept.reshape(*new_lead, *canon.shape[proj.head_axes:]), proj.perm)
        else:
            # a bias has the head rows on its own leading axes: (3 * embed,) or (heads, dim)
            sliced = np.delete(value.reshape(-1), gone).reshape(-1, *value.shape[1:])
        out.setdefault(layer, {})[name] = sliced
    o = block.output
    canon = to_canonical(np.asarray(weights[o.layer][o.kernel]), o.perm)
    cols = _as_columns(canon, o.head_axes)
    kept = np.delete(cols, head_rows(removed, block.value_dim, o.offset), axis=1)
    mid = canon.shape[1:1 + o.head_axes]
    new_mid = (kept.shape[1],) if o.head_axes == 1 else (kept.shape[1] // int(np.prod(mid[1:])), *mid[1:])
    out.setdefault(o.layer, {})[o.kernel] = from_canonical(
        kept.reshape(canon.shape[0], *new_mid, *canon.shape[1 + o.head_axes:]), o.perm)
    return out
