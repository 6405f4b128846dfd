"""The structure capability (``slimkit.adapter.StructureAdapter``), the same contract for every adapter.

Guarantees, checked on the contract MLP (``tests/frameworks.py``) against a float64 numpy forward
and backward pass of the same weights: ``graph`` describes the MLP as a chain of neutral nodes;
``shrink`` rebuilds a smaller model that computes what the masked model computes (channels removed
through a batch norm) and turns dropped batch norms into identities; ``layer_outputs`` gives every
node's inference output (the logits layer's equals ``predict``; channels on axis 1 for images, on the
twin CNN) and ``stream_outputs`` hands the same values over as the pass computes them; ``weight_gradients`` gives the loss gradient of every learned weight, batch-norm
statistics never, frozen layers too, averaged over the requested batches, without changing a weight.
"""

from __future__ import annotations

import numpy as np
import pytest

from slimkit.adapter import MODEL_OUTPUT
from slimkit.graph import analyse
from slimkit.recipe import FineTune
from slimkit.registry import adapter_for, adapter_for_copy

import frameworks
from frameworks import BN_EPS, MLP_CLASSES, MLP_HIDDEN, MLP_IN, canonical, mlp_data, mlp_forward, mlp_twin, mlp_weights

LAYER_NODES = [("dense", "fc1"), ("batchnorm", "bn"), ("relu", None), ("dense", "fc2"), ("relu", None),
               ("dense", "logits")]


def _chain(graph) -> list:
    """The graph's nodes between input and output, checking that each reads the one before."""
    nodes = graph.nodes
    assert nodes[0].op == "input" and nodes[0].inputs == () and nodes[0].channels == MLP_IN
    assert nodes[-1].op == "output" and nodes[-1].inputs == (nodes[-2].name,)
    for prev, node in zip(nodes, nodes[1:]):
        assert node.inputs == (prev.name,), f"{node.name} reads {node.inputs}, not {prev.name!r}"
    return nodes[1:-1]


def _kind(node) -> str:
    return "relu" if node.op == "elementwise" and node.attrs.get("quant") == "relu" else node.op


# -------------------------------------------------------------------------------------------- graph
def test_graph_is_the_mlp_as_a_chain_of_neutral_nodes(framework):
    adapter = adapter_for(framework.mlp())
    x, _ = mlp_data(4)
    graph = adapter.graph(x)
    body = _chain(graph)
    assert [(_kind(n), n.layer) for n in body] == LAYER_NODES
    assert [n.channels for n in body] == [MLP_HIDDEN] * 5 + [MLP_CLASSES]
    assert len({n.name for n in graph.nodes}) == len(graph.nodes)
    assert all(graph.by_name[n.name] is n for n in graph.nodes)
    assert {n.layer for n in body if n.layer} == {layer.name for layer in adapter.layers()}
    # fc1's channels are one prunable group: fc1's outputs, the batch norm's features, fc2's inputs
    groups = sorted((g.channels, sorted((m.layer, m.role) for m in g.members)) for g in analyse(graph).groups)
    assert groups == [(MLP_HIDDEN, [("bn", "channel"), ("fc1", "out"), ("fc2", "in")]),
                      (MLP_HIDDEN, [("fc2", "out"), ("logits", "in")])]


# ------------------------------------------------------------------------------------------- shrink
def test_shrink_removes_channels_and_computes_the_masked_output(framework):
    model = mlp_twin(framework)
    adapter = adapter_for(model)
    infos = {layer.name: layer for layer in adapter.layers()}
    keep = np.arange(0, MLP_HIDDEN, 2)
    drop = np.setdiff1d(np.arange(MLP_HIDDEN), keep)
    fc1, bn, fc2 = adapter.get_weights("fc1"), adapter.get_weights("bn"), adapter.get_weights("fc2")
    out1, in2 = infos["fc1"].out_axis, infos["fc2"].kernel_perm[1]
    small = adapter.shrink({"fc1": {"kernel": np.take(fc1["kernel"], keep, axis=out1), "bias": fc1["bias"][keep]},
                            "bn": {k: v[keep] for k, v in bn.items()},
                            "fc2": {"kernel": np.take(fc2["kernel"], keep, axis=in2), "bias": fc2["bias"]}})
    masked = adapter_for_copy(model)  # the dropped channels no longer reach fc2
    kernel = fc2["kernel"].copy()
    index = [slice(None)] * 2
    index[in2] = drop
    kernel[tuple(index)] = 0.0
    masked.set_weights("fc2", {"kernel": kernel})
    x, _ = mlp_data(32)
    np.testing.assert_allclose(small.predict(x), masked.predict(x), atol=1e-5, rtol=0)
    assert np.abs(masked.predict(x) - adapter.predict(x)).max() > 1e-2  # the channels mattered
    half = MLP_HIDDEN // 2
    shapes = {layer.name: layer.shapes for layer in small.layers()}
    assert tuple(shapes["fc1"]["kernel"][i] for i in infos["fc1"].kernel_perm) == (half, MLP_IN)
    assert shapes["bn"] == {key: (half,) for key in ("gamma", "beta", "mean", "var")}
    assert tuple(shapes["fc2"]["kernel"][i] for i in infos["fc2"].kernel_perm) == (MLP_HIDDEN, half)
    assert [n.channels for n in _chain(small.graph(x))] == [half, half, half, MLP_HIDDEN, MLP_HIDDEN, MLP_CLASSES]
    np.testing.assert_allclose(adapter.predict(x), mlp_forward(mlp_weights(), x)["logits"], atol=1e-4)  # untouched


def test_shrink_drops_a_folded_batch_norm(framework):
    adapter = adapter_for(mlp_twin(framework))
    infos = {layer.name: layer for layer in adapter.layers()}
    fc1, bn = adapter.get_weights("fc1"), adapter.get_weights("bn")
    factor = bn["gamma"] / np.sqrt(bn["var"] + np.float32(infos["bn"].eps))
    shape = [1, 1]
    shape[infos["fc1"].out_axis] = -1
    folded = adapter.shrink({"fc1": {"kernel": fc1["kernel"] * factor.reshape(shape),
                                     "bias": (fc1["bias"] - bn["mean"]) * factor + bn["beta"]}}, drop=("bn",))
    x, _ = mlp_data(32)
    np.testing.assert_allclose(folded.predict(x), adapter.predict(x), atol=1e-5, rtol=0)
    assert [layer.name for layer in folded.layers()] == ["fc1", "fc2", "logits"]
    node = folded.graph(x).by_name["bn"]
    assert node.op == "elementwise" and node.attrs["quant"] == "same" and node.layer is None
    assert "bn" in {layer.name for layer in adapter.layers()}


def test_shrink_refuses_to_drop_what_is_not_a_batch_norm(framework):
    adapter = adapter_for(framework.mlp())
    with pytest.raises(KeyError, match="'nope'"):
        adapter.shrink({}, drop=("nope",))
    with pytest.raises(ValueError, match="'fc1'"):
        adapter.shrink({}, drop=("fc1",))


# ------------------------------------------------------------------------------------ layer outputs
def test_layer_outputs_are_each_nodes_inference_output(framework):
    adapter = adapter_for(mlp_twin(framework))
    x, _ = mlp_data(40)
    graph = adapter.graph(x)
    body = _chain(graph)
    names = [graph.nodes[0].name] + [n.name for n in body]
    outs = adapter.layer_outputs(x, names, batch_size=16)
    assert list(outs) == names
    reference = mlp_forward(mlp_weights(), x)
    expected = [x, reference["fc1"], reference["bn"], reference["relu1"], reference["fc2"], reference["relu2"],
                reference["logits"]]
    for name, want in zip(names, expected):
        assert outs[name].dtype == np.float32, name
        np.testing.assert_allclose(outs[name], want, atol=1e-4, rtol=0, err_msg=name)
    np.testing.assert_allclose(outs[body[-1].name], adapter.predict(x), atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match="'nope'"):
        adapter.layer_outputs(x, ["fc1", "nope"])


def test_the_models_output_is_read_in_the_same_pass_as_predict_gives_it(framework):
    """Calibration asks for MODEL_OUTPUT beside its sites to get the float reference without another
    pass: every adapter here reads it, with layer names only and with every graph node (the torch fx
    path), and it equals predict over several batches."""
    adapter = adapter_for(mlp_twin(framework))
    x, _ = mlp_data(40)
    graph = adapter.graph(x)
    for names in (["fc1"], [n.name for n in _chain(graph)]):
        outs = adapter.layer_outputs(x, [*names, MODEL_OUTPUT], batch_size=16)
        assert list(outs) == [*names, MODEL_OUTPUT]
        assert outs[MODEL_OUTPUT].dtype == np.float32
        np.testing.assert_allclose(outs[MODEL_OUTPUT], adapter.predict(x), atol=1e-6, rtol=0, err_msg=str(names))


def test_stream_outputs_hands_over_what_layer_outputs_gives(framework):
    """Calibration consumes tensors as the pass computes them: the same values (copied by the consumer,
    as a view may be reused after the call), every name in every batch, the model's output included."""
    adapter = adapter_for(mlp_twin(framework))
    x, _ = mlp_data(40)
    graph = adapter.graph(x)
    for names in (["fc1", "logits"], [n.name for n in _chain(graph)]):
        wanted = [*names, MODEL_OUTPUT]
        expected = adapter.layer_outputs(x, wanted, batch_size=16)
        got: dict[str, list[np.ndarray]] = {}
        adapter.stream_outputs(x, wanted, lambda n, v: got.setdefault(n, []).append(np.array(v)), batch_size=16)
        assert sorted(got) == sorted(expected)
        for name, want in expected.items():
            np.testing.assert_allclose(np.concatenate(got[name]), want, atol=1e-6, rtol=0, err_msg=name)


def _conv_nchw(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """'same' stride-1 convolution in float64: NCHW inputs, canonical (out, in, kh, kw) kernel."""
    k = w.shape[-1]
    h, wd = x.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j].astype(np.float64))
    return out + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("framework", frameworks.members("twins"), ids=str, indirect=True)
def test_layer_outputs_of_images_have_channels_on_axis_1(framework):
    from twins import sample_input, twin_pair

    model = twin_pair("cnn", seed=2)[framework.name]
    adapter = adapter_for(model)
    x = sample_input("cnn", framework.name, n=6)
    nchw = x.transpose(0, 3, 1, 2) if framework.channels_last else x
    outs = adapter.layer_outputs(x, ["conv1", "logits"])
    conv1 = canonical(adapter, "conv1")
    assert outs["conv1"].shape == (6, 8, 8, 8)
    np.testing.assert_allclose(outs["conv1"], _conv_nchw(nchw, conv1["kernel"], conv1["bias"]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(outs["logits"], adapter.predict(x), atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------------- gradients
def _numpy_gradients(weights: dict, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Gradients of the mean softmax cross-entropy of the MLP (inference-mode batch norm), float64,
    kernels in canonical (out, in) order."""
    f = mlp_forward(weights, x)
    logits = f["logits"] - f["logits"].max(axis=1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    g = (p - np.eye(MLP_CLASSES)[y]) / len(x)  # d loss / d logits
    grads = {"logits": {"kernel": g.T @ f["relu2"], "bias": g.sum(0)}}
    g = (g @ weights["logits"]["kernel"].astype(np.float64)) * (f["fc2"] > 0)
    grads["fc2"] = {"kernel": g.T @ f["relu1"], "bias": g.sum(0)}
    g = (g @ weights["fc2"]["kernel"].astype(np.float64)) * (f["bn"] > 0)
    bn = weights["bn"]
    inv = 1.0 / np.sqrt(bn["var"].astype(np.float64) + BN_EPS)
    grads["bn"] = {"gamma": (g * (f["fc1"] - bn["mean"]) * inv).sum(0), "beta": g.sum(0)}
    g = g * bn["gamma"] * inv
    grads["fc1"] = {"kernel": g.T @ x, "bias": g.sum(0)}
    return grads


def _canonical_gradients(adapter, grads: dict) -> dict:
    from slimkit.pruning.masks import to_canonical

    infos = {layer.name: layer for layer in adapter.layers()}
    return {name: {k: to_canonical(v, infos[name].kernel_perm) if k == "kernel" else v for k, v in g.items()}
            for name, g in grads.items()}


def test_weight_gradients_are_the_loss_gradients_and_change_nothing(framework):
    adapter = adapter_for(mlp_twin(framework))
    x, y = mlp_data(48)
    before = {layer.name: adapter.get_weights(layer.name) for layer in adapter.layers()}
    grads = adapter.weight_gradients((x, y), FineTune(batch_size=16), batches=2)
    infos = {layer.name: layer for layer in adapter.layers()}
    assert {n: set(g) for n, g in grads.items()} == {"fc1": {"kernel", "bias"}, "bn": {"gamma", "beta"},
                                                     "fc2": {"kernel", "bias"}, "logits": {"kernel", "bias"}}
    for name, g in grads.items():
        for key, value in g.items():
            assert value.shape == infos[name].shapes[key] and value.dtype == np.float32, (name, key)
    # the mean over the first two batches of 16, each the batch's mean loss gradient
    weights = mlp_weights()
    expected = [_numpy_gradients(weights, x[i:i + 16], y[i:i + 16]) for i in (0, 16)]
    got = _canonical_gradients(adapter, grads)
    for name, g in got.items():
        for key, value in g.items():
            want = (expected[0][name][key] + expected[1][name][key]) / 2
            np.testing.assert_allclose(value, want, atol=1e-5, rtol=1e-4, err_msg=f"{name}/{key}")
    # d loss / d logits-bias is the mean of softmax(predict(x)) - onehot(y), from the adapter's own output
    out = adapter.predict(x[:32]).astype(np.float64)
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(grads["logits"]["bias"], (p - np.eye(MLP_CLASSES)[y[:32]]).mean(0), atol=1e-6)
    for name, weights_before in before.items():
        for key, value in adapter.get_weights(name).items():
            np.testing.assert_array_equal(value, weights_before[key], err_msg=f"{name}/{key}")


@pytest.mark.parametrize("framework", frameworks.having("freeze"), ids=str, indirect=True)
def test_frozen_layers_get_gradients_too(framework):
    x, y = mlp_data(32)
    settings = FineTune(batch_size=32)
    free = adapter_for(mlp_twin(framework)).weight_gradients((x, y), settings, batches=1)
    model = mlp_twin(framework)
    framework.freeze(model, "fc1")
    framework.freeze(model, "bn")
    frozen = adapter_for(model).weight_gradients((x, y), settings, batches=1)
    assert {n: set(g) for n, g in frozen.items()} == {n: set(g) for n, g in free.items()}
    for name, g in free.items():
        for key, value in g.items():
            np.testing.assert_allclose(frozen[name][key], value, atol=1e-7, err_msg=f"{name}/{key}")
    assert np.abs(frozen["fc1"]["kernel"]).max() > 1e-3
