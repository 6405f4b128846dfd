"""HeadPrunedMultiheadAttention (what nn.MultiheadAttention becomes after head pruning) computes what
nn.MultiheadAttention computes, for every way PyTorch code calls it: batch first or not, unbatched,
key padding masks, boolean and additive attention masks, causal masks, with and without weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slimkit.adapters.torch.attention import HeadPrunedMultiheadAttention, rebuilt_attention

E, H, L = 16, 4, 6


def _pair(batch_first: bool):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first).eval()
    same = rebuilt_attention("attn", mha, {"in_proj_kernel": mha.in_proj_weight.detach().numpy(),
                                           "in_proj_bias": mha.in_proj_bias.detach().numpy()}).eval()
    assert isinstance(same, HeadPrunedMultiheadAttention) and same.num_heads == H
    return mha, same


CALLS = {
    "plain": lambda q: {},
    "weights per head": lambda q: {"need_weights": True, "average_attn_weights": False},
    "no weights": lambda q: {"need_weights": False},
    "padding": lambda q: {"key_padding_mask": torch.tensor([[False] * (L - 2) + [True] * 2, [False] * L])},
    "bool mask": lambda q: {"attn_mask": torch.ones(L, L, dtype=torch.bool).triu(1)},
    "additive causal": lambda q: {"attn_mask": torch.zeros(L, L).masked_fill(torch.ones(L, L, dtype=torch.bool)
                                                                              .triu(1), float("-inf")),
                                  "is_causal": True, "need_weights": False},
}


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_same_results_as_nn_multihead_attention(batch_first, call):
    mha, same = _pair(batch_first)
    x = torch.randn(2, L, E) if batch_first else torch.randn(L, 2, E)
    kwargs = CALLS[call](x)
    with torch.no_grad():
        want, want_w = mha(x, x, x, **kwargs)
        got, got_w = same(x, x, x, **kwargs)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert (got_w is None) == (want_w is None)
    if want_w is not None:
        np.testing.assert_allclose(got_w.numpy(), want_w.numpy(), atol=1e-5)


def test_unbatched_input_and_fewer_heads():
    mha, same = _pair(batch_first=True)
    x = torch.randn(L, E)
    with torch.no_grad():
        np.testing.assert_allclose(same(x, x, x)[0].numpy(), mha(x, x, x)[0].numpy(), atol=1e-5)
        kept = np.concatenate([np.arange(4, 12), np.arange(20, 28), np.arange(36, 44)])  # heads 1 and 2
        pruned = rebuilt_attention("attn", mha, {"in_proj_kernel": mha.in_proj_weight.numpy()[kept],
                                                 "in_proj_bias": mha.in_proj_bias.numpy()[kept]})
    assert pruned.num_heads == 2 and pruned.in_proj_weight.shape == (24, E)
    assert pruned.out_proj is mha.out_proj  # rebuilt separately, as a layer of its own
