"""Layer selection: globs, kinds (with conv rank), excludes, and the errors a bad selector gets."""

from __future__ import annotations

import pytest

from slimkit.adapter import LayerInfo
from slimkit.errors import RecipeError
from slimkit.pruning.magnitude import SUPPORTED_KINDS
from slimkit.recipe import LayerSelector
from slimkit.selection import select_layers

FIELD = "stages[0].prune.layers"

LAYERS = [
    LayerInfo("stem/conv1", "conv", "Conv1d", 1, {"kernel": (3, 2, 8)}, (2, 1, 0)),
    LayerInfo("block/conv2", "conv", "Conv2D", 2, {"kernel": (3, 3, 8, 16)}, (3, 2, 0, 1)),
    LayerInfo("block/dw", "depthwise_conv", "DepthwiseConv2D", 2, {"kernel": (3, 3, 16, 1)}, (3, 2, 0, 1)),
    LayerInfo("block/bn", "batchnorm", "BatchNormalization", 0, {"gamma": (16,), "beta": (16,)}),
    LayerInfo("block/conv3d", "conv", "Conv3d", 3, {"kernel": (4, 16, 1, 1, 1)}, (0, 1, 2, 3, 4)),
    LayerInfo("embed", "embedding", "Embedding", 0, {"kernel": (100, 4)}, (0, 1)),
    LayerInfo("head/prelu", "other", "PReLU", 0, {"alpha": (4,)}),
    LayerInfo("head/fc", "dense", "Dense", 0, {"kernel": (4, 10), "bias": (10,)}, (1, 0)),
    LayerInfo("head/logits", "dense", "Dense", 0, {"kernel": (10, 3), "bias": (3,)}, (1, 0)),
]


def pick(**selector):
    return [layer.name for layer in select_layers(LAYERS, LayerSelector(**selector), SUPPORTED_KINDS, FIELD)]


def expected(predicate):
    """Names in model order of the layers satisfying ``predicate``, computed without slimkit."""
    return [layer.name for layer in LAYERS if predicate(layer)]


SUPPORTED = ("dense", "conv", "depthwise_conv", "embedding")


def test_default_selector_picks_every_supported_layer_in_model_order():
    assert pick() == expected(lambda l: l.kind in SUPPORTED)
    assert "block/bn" not in pick() and "head/prelu" not in pick()


def test_name_globs():
    assert pick(names=("block/*",)) == ["block/conv2", "block/dw", "block/conv3d"]
    assert pick(names=("head/*", "embed")) == ["embed", "head/fc", "head/logits"]
    assert pick(names=("*conv?",)) == ["stem/conv1", "block/conv2"]
    assert pick(names=("block/conv[23]*",)) == ["block/conv2", "block/conv3d"]


def test_globs_are_case_sensitive():
    with pytest.raises(RecipeError):
        pick(names=("HEAD/*",))


@pytest.mark.parametrize("kind, names", [
    ("conv", ["stem/conv1", "block/conv2", "block/conv3d"]),
    ("conv1d", ["stem/conv1"]),
    ("conv2d", ["block/conv2"]),
    ("conv3d", ["block/conv3d"]),
    ("depthwise_conv", ["block/dw"]),
    ("depthwise_conv2d", ["block/dw"]),
    ("dense", ["head/fc", "head/logits"]),
    ("embedding", ["embed"]),
])
def test_kinds_with_rank(kind, names):
    assert pick(kinds=(kind,)) == names


def test_conv_does_not_match_depthwise_and_vice_versa():
    assert "block/dw" not in pick(kinds=("conv",))
    assert pick(kinds=("depthwise_conv",)) == ["block/dw"]


def test_matches_kind_rank_rules():
    conv2 = LAYERS[1]
    assert conv2.matches_kind("conv") and conv2.matches_kind("conv2d")
    assert not conv2.matches_kind("conv1d") and not conv2.matches_kind("conv3d")
    assert not conv2.matches_kind("depthwise_conv") and not conv2.matches_kind("dense")
    dw = LAYERS[2]
    assert dw.matches_kind("depthwise_conv2d") and not dw.matches_kind("depthwise_conv1d")
    assert not dw.matches_kind("conv") and not dw.matches_kind("conv2d")


def test_several_kinds_union():
    assert pick(kinds=("conv2d", "dense")) == ["block/conv2", "head/fc", "head/logits"]


def test_excludes():
    assert pick(kinds=("dense", "conv"), exclude=("*logits*",)) == expected(
        lambda l: l.kind in ("dense", "conv") and "logits" not in l.name)
    assert pick(exclude=("block/*", "embed")) == ["stem/conv1", "head/fc", "head/logits"]


def test_names_kinds_and_exclude_combine():
    assert pick(names=("head/*", "block/*"), kinds=("dense", "conv2d"), exclude=("*logits",)) == [
        "block/conv2", "head/fc"]


def test_selector_matching_nothing_lists_the_layers_and_names_the_field():
    with pytest.raises(RecipeError) as info:
        pick(names=("decoder/*",))
    msg = str(info.value)
    assert msg.startswith(f"{FIELD}: ")
    assert "decoder/*" in msg and "matches no layer" in msg
    for layer in LAYERS:
        assert f"{layer.name} ({layer.kind})" in msg


def test_exclude_removing_everything_is_an_error():
    with pytest.raises(RecipeError, match=r"matches no layer"):
        pick(kinds=("dense",), exclude=("head/*",))


def test_empty_model_lists_none():
    with pytest.raises(RecipeError, match=r"its layers are: \(none\)"):
        select_layers([], LayerSelector(), SUPPORTED_KINDS, FIELD)


def test_selector_kind_the_stage_cannot_handle():
    with pytest.raises(RecipeError) as info:
        pick(kinds=("dense", "batchnorm"))
    msg = str(info.value)
    assert msg.startswith(f"{FIELD}.kinds: ") and "'batchnorm'" in msg
    assert "dense" in msg  # lists what it can handle


def test_naming_an_unsupported_layer_outright_is_an_error():
    with pytest.raises(RecipeError) as info:
        pick(names=("head/fc", "block/bn"))
    msg = str(info.value)
    assert msg.startswith(f"{FIELD}: layer 'block/bn'")
    assert "BatchNormalization" in msg and "batchnorm" in msg
    with pytest.raises(RecipeError, match=r"layer 'head/prelu' \(PReLU, kind other\)"):
        pick(names=("head/prelu",))


def test_glob_sweeping_over_unsupported_layers_skips_them():
    assert pick(names=("head/*",)) == ["head/fc", "head/logits"]
    assert pick(names=("block/*",)) == ["block/conv2", "block/dw", "block/conv3d"]


def test_glob_matching_only_unsupported_layers_is_an_error():
    with pytest.raises(RecipeError, match="matches no layer"):
        pick(names=("*bn", "*prelu"))


def test_selection_uses_the_supported_kinds_given():
    only_dense = select_layers(LAYERS, LayerSelector(), ("dense",), FIELD)
    assert [l.name for l in only_dense] == ["head/fc", "head/logits"]
