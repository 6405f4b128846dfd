"""PyTorch attention blocks: finding them, and holding fewer heads after head pruning.

Two shapes of block are recognised:

- ``nn.MultiheadAttention`` with one fused ``in_proj_weight`` (key and value widths equal to the
  embedding width, no ``bias_k``/``bias_v``, no ``add_zero_attn``): queries, keys and values are rows
  ``[0, E)``, ``[E, 2E)``, ``[2E, 3E)`` of the fused matrix; the output projection is ``out_proj``.
- Modules written as Hugging Face transformers writes attention (BERT, RoBERTa, DistilBERT, ViT, and
  the many models built the same way, with no other weights or buffers, which could be per head): three
  Linear children ``query``/``key``/``value``,
  ``q_proj``/``k_proj``/``v_proj`` or ``q_lin``/``k_lin``/``v_lin`` of equal width, a head count
  (``num_attention_heads``, ``num_heads`` or ``n_heads``) and head size (``attention_head_size`` or
  ``head_dim``) attribute, and an output Linear that is a child (``out_proj``, ``o_proj``,
  ``out_lin``) or the parent's ``output.dense`` (BERT's ``BertSelfOutput``). These modules split heads
  with ``view(..., -1, head_size)``, so they run with fewer heads once their Linear layers are
  smaller; :func:`update_head_counts` keeps their head-count attributes true.

``nn.MultiheadAttention`` ties its inner width to ``embed_dim`` and cannot hold fewer heads; the
rebuild swaps in :class:`HeadPrunedMultiheadAttention`, a subclass that computes the same attention
with ``heads * head_dim`` inner width (it never takes PyTorch's fused fast path, which assumes
``embed_dim`` wide heads).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.attention import AttentionBlock, HeadWeights
from slimkit.errors import DataError, UnsupportedModelError

from slimkit.adapters.torch.naming import is_transposed_linear

_PROJECTIONS = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))
_OUTPUTS = ("out_proj", "o_proj", "out_lin")
_HEAD_COUNTS = ("num_attention_heads", "num_heads", "n_heads")
_HEAD_SIZES = ("attention_head_size", "head_dim")


def _linear(module: Any) -> bool:
    return isinstance(module, nn.Linear) and type(module).__module__.startswith("torch.nn")


def _fused_mha(module: nn.Module) -> bool:
    """An nn.MultiheadAttention whose heads slimkit can remove (fused in_proj, no extra key/value bias)."""
    return (isinstance(module, nn.MultiheadAttention) and getattr(module, "in_proj_weight", None) is not None
            and module.bias_k is None and module.bias_v is None and not module.add_zero_attn
            and _linear(module.out_proj))


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> int | None:
    """The first of ``names`` that the module holds as an int."""
    return next((getattr(module, a) for a in names if isinstance(getattr(module, a, None), int)), None)


def _projections(module: nn.Module) -> tuple[str, str, str] | None:
    """The names of a transformers-style module's query, key and value Linear children, else None."""
    return next((n for n in _PROJECTIONS if all(_linear(getattr(module, c, None)) for c in n)), None)


def _hf_parts(path: str, module: nn.Module, modules: dict[str, nn.Module]) -> tuple[list[str], str, int, int] | None:
    """(q/k/v paths, output path, heads, head size) of a transformers-style attention module, else None."""
    names, heads, size = _projections(module), _int_attr(module, _HEAD_COUNTS), _int_attr(module, _HEAD_SIZES)
    if names is None or not heads or not size:
        return None
    prefix = f"{path}." if path else ""
    linears = [getattr(module, c) for c in names]
    if any(lin.out_features != heads * size for lin in linears):
        return None  # grouped key/value heads (GQA) or another layout: left whole
    output = next((f"{prefix}{c}" for c in _OUTPUTS if _linear(getattr(module, c, None))), None)
    if output is None:
        parent = path.rpartition(".")[0]
        candidate = f"{parent}.output.dense" if parent else "output.dense"
        if parent and modules.get(parent) is not None and getattr(modules[parent], "self", None) is module \
                and _linear(modules.get(candidate)):
            output = candidate
    if output is None or modules[output].in_features != heads * size:
        return None
    # anything else the module holds (Swin's per-head relative position bias table, say) might be per head
    known = {id(t) for lin in linears + [modules[output]] for t in lin.parameters()}
    if any(id(t) not in known for t in module.parameters()) or any(True for _ in module.buffers()):
        return None
    return [f"{prefix}{c}" for c in names], output, heads, size


def _fused_conv1d(module: nn.Module) -> bool:
    """GPT-2's self-attention: one transformers Conv1D ``c_attn`` (embed -> 3 * embed: queries, keys,
    values) and ``c_proj``, heads of ``head_dim`` split off by ``view(..., -1, head_dim)``."""
    attn, proj = getattr(module, "c_attn", None), getattr(module, "c_proj", None)
    heads, dim, split = (getattr(module, a, None) for a in ("num_heads", "head_dim", "split_size"))
    return (is_transposed_linear(attn) and is_transposed_linear(proj) and not getattr(module, "is_cross_attention", False)
            and all(isinstance(v, int) and v > 0 for v in (heads, dim, split)) and split == heads * dim
            and attn.weight.shape[1] == 3 * split and proj.weight.shape[0] == split)


def attention_blocks(model: nn.Module, tied: set[str] = frozenset()) -> list[AttentionBlock]:
    """The attention blocks of ``model`` whose heads can be removed; layers in ``tied`` (weights shared
    with another layer) exclude their block."""
    modules = dict(model.named_modules())
    blocks = []
    for path, module in modules.items():
        if _fused_mha(module):
            embed, heads = module.embed_dim, module.num_heads
            dim = getattr(module, "head_dim", embed // heads)
            out = f"{path}.out_proj" if path else "out_proj"
            parts = [HeadWeights(path, "in_proj_kernel", "in_proj_bias" if module.in_proj_bias is not None else None,
                                 offset=i * heads * dim) for i in range(3)]
            block = AttentionBlock(path, heads, dim, dim, *parts, HeadWeights(out, "kernel"))
        elif _fused_conv1d(module):
            prefix = f"{path}." if path else ""
            heads, dim = module.num_heads, module.head_dim
            parts = [HeadWeights(f"{prefix}c_attn", "kernel", "bias", (1, 0), offset=i * heads * dim) for i in range(3)]
            block = AttentionBlock(path, heads, dim, dim, *parts, HeadWeights(f"{prefix}c_proj", "kernel", None, (1, 0)))
        else:
            found = _hf_parts(path, module, modules)
            if found is None:
                continue
            (q, k, v), out, heads, dim = found
            proj = [HeadWeights(p, "kernel", "bias" if modules[p].bias is not None else None) for p in (q, k, v)]
            block = AttentionBlock(path, heads, dim, dim, *proj, HeadWeights(out, "kernel"))
        if not set(block.layers) & set(tied):
            blocks.append(block)
    return blocks


def update_head_counts(model: nn.Module) -> None:
    """After a rebuild, sets each transformers-style block's head-count attributes (and
    ``all_head_size``) from its now smaller query projection."""
    for module in model.modules():
        if is_transposed_linear(getattr(module, "c_attn", None)) and isinstance(getattr(module, "split_size", None), int) \
                and isinstance(getattr(module, "head_dim", None), int):
            module.split_size = module.c_attn.weight.shape[1] // 3
            module.num_heads = module.split_size // module.head_dim
            continue
        names, size = _projections(module), _int_attr(module, _HEAD_SIZES)
        if names is None or not size:
            continue
        heads = getattr(module, names[0]).out_features // size
        for attr in _HEAD_COUNTS:
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, heads)
        if isinstance(getattr(module, "all_head_size", None), int):
            module.all_head_size = heads * size


class HeadPrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with ``num_heads`` heads of ``head_dim`` each, where ``num_heads *
    head_dim`` need not be ``embed_dim`` (heads were removed). Same call and results as its parent."""

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, bias: bool = True, dropout: float = 0.0,
                 batch_first: bool = False, device: Any = None, dtype: Any = None) -> None:
        nn.Module.__init__(self)
        inner = num_heads * head_dim
        self.embed_dim, self.kdim, self.vdim = embed_dim, embed_dim, embed_dim
        self.num_heads, self.head_dim, self.dropout, self.batch_first = num_heads, head_dim, dropout, batch_first
        # False keeps nn.TransformerEncoderLayer off its fused kernel, which assumes embed_dim-wide heads
        self._qkv_same_embed_dim = False
        kw = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, **kw))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner, **kw)) if bias else None
        self.register_parameter("q_proj_weight", None)
        self.register_parameter("k_proj_weight", None)
        self.register_parameter("v_proj_weight", None)
        self.out_proj = nn.modules.linear.NonDynamicallyQuantizableLinear(inner, embed_dim, bias=bias, **kw)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        if not self.batch_first or not batched:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, length, source = query.shape[0], query.shape[1], key.shape[1]
        inner = self.num_heads * self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        parts = [F.linear(x, w[i * inner:(i + 1) * inner], None if b is None else b[i * inner:(i + 1) * inner])
                 for i, x in enumerate((query, key, value))]
        q, k, v = (p.view(n, -1, self.num_heads, self.head_dim).transpose(1, 2) for p in parts)
        bias = _additive_mask(attn_mask, key_padding_mask, n, self.num_heads, length, source, q.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / (self.head_dim ** 0.5)
            if bias is not None:
                scores = scores + bias
            elif is_causal:
                scores = scores.masked_fill(torch.ones(length, source, dtype=torch.bool, device=q.device)
                                            .triu(1), float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            weights = probs.mean(dim=1) if average_attn_weights else probs
            out = F.dropout(probs, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout,
                                                 is_causal=is_causal and bias is None)
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, inner))
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
            weights = weights.squeeze(0) if weights is not None else None
        return out, weights


def _additive_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, n: int, heads: int,
                   length: int, source: int, dtype: torch.dtype) -> torch.Tensor | None:
    """nn.MultiheadAttention's boolean (True: masked) or additive masks as one additive (N, H, L, S) mask."""
    def additive(mask: torch.Tensor) -> torch.Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
        return mask.to(dtype)

    total = None
    if attn_mask is not None:
        if attn_mask.dim() == 3:  # (N * heads, L, S): per-head masks of the original head count
            if attn_mask.shape[0] != n * heads:
                raise UnsupportedModelError(
                    f"a per-head attn_mask of {attn_mask.shape[0]} rows reached an attention block pruned to "
                    f"{heads} heads; pass a 2-D (L, S) mask")
            total = additive(attn_mask).view(n, heads, length, source)
        else:
            total = additive(attn_mask).view(1, 1, length, source)
    if key_padding_mask is not None:
        pad = additive(key_padding_mask).view(n, 1, 1, source)
        total = pad if total is None else total + pad
    return total


def rebuilt_attention(name: str, old: nn.MultiheadAttention, weights: dict[str, np.ndarray]) -> nn.Module:
    """``old`` with the head-sliced ``in_proj_kernel``/``in_proj_bias`` of ``weights`` (its out_proj is kept
    as it is now: rebuilt on its own as a layer)."""
    if set(weights) - {"in_proj_kernel", "in_proj_bias"}:
        raise DataError(f"layer {name!r}: head pruning gives in_proj_kernel and in_proj_bias, got {sorted(weights)}")
    kernel = np.asarray(weights.get("in_proj_kernel", old.in_proj_weight.detach().numpy()))
    if kernel.shape[0] % 3 or kernel.shape[1] != old.embed_dim:
        raise DataError(f"layer {name!r}: in_proj_kernel of shape {kernel.shape} is not (3 * heads * head_dim, "
                        f"{old.embed_dim})")
    head_dim = getattr(old, "head_dim", old.embed_dim // old.num_heads)
    inner = kernel.shape[0] // 3
    if inner % head_dim:
        raise DataError(f"layer {name!r}: {inner} rows per projection are no whole number of {head_dim}-wide heads")
    ref = old.in_proj_weight
    new = HeadPrunedMultiheadAttention(old.embed_dim, inner // head_dim, head_dim, bias=old.in_proj_bias is not None,
                                       dropout=old.dropout, batch_first=old.batch_first, device=ref.device,
                                       dtype=ref.dtype)
    new.out_proj = old.out_proj  # the output projection is a layer of its own, rebuilt separately
    with torch.no_grad():
        new.in_proj_weight.copy_(torch.as_tensor(kernel, dtype=ref.dtype))
        if new.in_proj_bias is not None:
            bias = weights.get("in_proj_bias", old.in_proj_bias.detach().numpy())
            new.in_proj_bias.copy_(torch.as_tensor(np.asarray(bias), dtype=ref.dtype))
    new.train(old.training)
    return new
