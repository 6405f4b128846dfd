"""The model capability (``slimkit.adapter.ModelAdapter``), the same contract for every adapter.

Guarantees, checked with numbers on the contract MLP (``tests/frameworks.py``) in each framework:
neutral layer descriptions and canonical weight order; weights that round-trip and copies that are
independent; KeyError for unknown layers and weights, DataError naming the layer for wrong shapes
(nothing written); masks that hold exactly through the built-in training loop and a user's own loop,
with hooks called for every step, epoch and the end; ``strip`` giving a plain model that computes the
masked output; input checks; repeatable seeded training; ONNX export with a dynamic batch axis
(ExportError where the adapter has no exporter). Conv and embedding kinds are checked on the twin
models of the frameworks that build them.
"""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.adapter import HookChain, TrainHooks
from slimkit.recipe import FineTune
from slimkit.registry import adapter_for, adapter_for_copy

import frameworks
from frameworks import BN_EPS, MLP_CLASSES, MLP_HIDDEN, MLP_IN, canonical, mlp_data, mlp_forward, mlp_twin, mlp_weights

CANONICAL_KERNELS = {"fc1": (MLP_HIDDEN, MLP_IN), "fc2": (MLP_HIDDEN, MLP_HIDDEN), "logits": (MLP_CLASSES, MLP_HIDDEN)}


class Recorder(TrainHooks):
    """Every hook call, in order: ``("begin", total)``, ``("step", n)``, ``("epoch", n)``, ``("end",)``."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.losses: list[float] = []

    def begin(self, total_steps: int) -> None:
        self.events.append(("begin", total_steps))

    def step_end(self, step: int) -> None:
        self.events.append(("step", step))

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self.events.append(("epoch", epoch))
        self.losses.append(logs["loss"])

    def end(self) -> None:
        self.events.append(("end",))


def _random_masks(adapter, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.random(adapter.get_weights(name)["kernel"].shape) > 0.6).astype(np.float32)
            for name in CANONICAL_KERNELS}


# ------------------------------------------------------------------------------------------ layers
def test_layers_are_described_neutrally(framework):
    adapter = adapter_for(framework.mlp())
    layers = adapter.layers()
    assert [(layer.name, layer.kind, layer.rank) for layer in layers] == [
        ("fc1", "dense", 0), ("bn", "batchnorm", 0), ("fc2", "dense", 0), ("logits", "dense", 0)]
    for layer in layers:
        weights = adapter.get_weights(layer.name)
        assert {k: v.shape for k, v in weights.items()} == layer.shapes
        assert all(v.dtype == np.float32 for v in weights.values())
        if layer.kind == "dense":
            assert set(layer.shapes) == {"kernel", "bias"} and sorted(layer.kernel_perm) == [0, 1]
            native = layer.shapes["kernel"]
            assert tuple(native[i] for i in layer.kernel_perm) == CANONICAL_KERNELS[layer.name]
            assert native[layer.out_axis] == CANONICAL_KERNELS[layer.name][0] == layer.shapes["bias"][0]
            assert layer.activation == "linear" and layer.eps is None
    bn = layers[1]
    assert bn.shapes == {key: (MLP_HIDDEN,) for key in ("gamma", "beta", "mean", "var")}
    assert bn.eps == pytest.approx(BN_EPS, rel=1e-3)
    assert sum(layer.params for layer in layers) == 16 * 32 + 32 + 4 * 32 + 32 * 32 + 32 + 32 * 5 + 5


TWIN_KINDS = {
    "cnn": {"conv1": ("conv", 2), "bn1": ("batchnorm", 0), "dw": ("depthwise_conv", 2),
            "pw": ("conv", 2), "fc1": ("dense", 0), "logits": ("dense", 0)},
    "seq": {"embed": ("embedding", 0), "conv1d": ("conv", 1), "logits": ("dense", 0)},
}


@pytest.mark.parametrize("framework", frameworks.members("twins"), ids=str, indirect=True)
@pytest.mark.parametrize("arch", list(TWIN_KINDS))
def test_conv_and_embedding_layers_have_neutral_kinds(framework, arch):
    from twins import BUILDERS

    adapter = adapter_for(BUILDERS[arch][framework.name]())
    layers = {layer.name: layer for layer in adapter.layers()}
    assert {n: (layer.kind, layer.rank) for n, layer in layers.items()} == TWIN_KINDS[arch]
    for layer in layers.values():
        assert {k: v.shape for k, v in adapter.get_weights(layer.name).items()} == layer.shapes
        if "kernel" in layer.shapes:
            assert sorted(layer.kernel_perm) == list(range(len(layer.shapes["kernel"])))


# ----------------------------------------------------------------------------------------- weights
def test_weights_round_trip_and_copies_are_independent(framework):
    model = mlp_twin(framework)
    original = adapter_for(model)
    expected = mlp_weights()
    for name, weights in expected.items():  # canonical in, canonical out: kernel_perm is right
        got = canonical(original, name)
        assert got.keys() == weights.keys(), name
        for key, value in weights.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name}/{key}")
    x, _ = mlp_data(8)
    reference = mlp_forward(expected, x)["logits"]
    np.testing.assert_allclose(original.predict(x), reference, atol=1e-4, rtol=0)

    work = adapter_for_copy(model)
    before = original.get_weights("fc1")
    new = {k: v + 1.0 for k, v in before.items()}
    work.set_weights("fc1", new)
    work.set_weights("bn", {"mean": np.zeros(MLP_HIDDEN, np.float32)})  # a subset of the keys
    for key, value in work.get_weights("fc1").items():
        np.testing.assert_array_equal(value, new[key])
    np.testing.assert_array_equal(work.get_weights("bn")["mean"], 0.0)
    np.testing.assert_array_equal(work.get_weights("bn")["var"], expected["bn"]["var"])
    for key, value in original.get_weights("fc1").items():
        np.testing.assert_array_equal(value, before[key])
    np.testing.assert_allclose(original.predict(x), reference, atol=1e-4, rtol=0)
    assert np.abs(work.predict(x) - reference).max() > 0.1


def test_read_weights_are_get_weights_values_that_cannot_change_the_model(framework):
    """``read_weights`` may share the model's memory: the same float32 values as ``get_weights``, and a
    write through them either fails or leaves the model as it was."""
    adapter = adapter_for_copy(mlp_twin(framework))
    before = adapter.get_weights("fc1")["kernel"]
    for layer in adapter.layers():
        copies, read = adapter.get_weights(layer.name), adapter.read_weights(layer.name)
        assert read.keys() == copies.keys(), layer.name
        for key, value in read.items():
            assert value.dtype == np.float32, (layer.name, key)
            np.testing.assert_array_equal(value, copies[key], err_msg=f"{layer.name}/{key}")
    kernel = adapter.read_weights("fc1")["kernel"]
    try:
        kernel += 1.0
    except ValueError as exc:
        assert "read-only" in str(exc)
    np.testing.assert_array_equal(adapter.get_weights("fc1")["kernel"], before)


def test_predict_in_small_batches_gives_every_output_once(framework):
    """slimkit predicts its probes 4 inputs at a time; a last short batch (Keras fills it up so that
    the predict function is not traced again) still gives exactly one output per input."""
    adapter = adapter_for(mlp_twin(framework))
    x, _ = mlp_data(10)
    whole = adapter.predict(x)
    small = adapter.predict(x, 4)
    assert small.shape == whole.shape == (10, MLP_CLASSES)
    np.testing.assert_allclose(small, whole, atol=1e-6, rtol=0)


def test_state_arrays_hold_every_weight_and_statistic_and_see_any_change(framework):
    """What core digests to tell whether a model changed: every weight (batch-norm statistics too),
    under unique names, the same on a copy; a change of one weight or of a mask shows."""
    from slimkit.quant.known_outputs import model_digest

    adapter = adapter_for_copy(mlp_twin(framework))
    names = [name for name, _ in adapter.state_arrays()]
    assert len(names) == len(set(names)), names
    held = sum(int(np.size(v)) for _, v in adapter.state_arrays())
    weights = sum(int(np.size(v)) for w in mlp_weights().values() for v in w.values())
    assert held >= weights, (held, weights)
    digest = model_digest(adapter)
    assert model_digest(adapter_for_copy(mlp_twin(framework))) == digest
    adapter.set_weights("bn", {"var": adapter.get_weights("bn")["var"] * 2})
    changed = model_digest(adapter)
    assert changed != digest
    kernel = adapter.get_weights("fc2")["kernel"]
    adapter.set_mask("fc2", (np.abs(kernel) > np.median(np.abs(kernel))).astype(np.float32))
    assert model_digest(adapter) not in (digest, changed)


def test_unknown_layers_and_weights_are_key_errors(framework):
    adapter = adapter_for_copy(framework.mlp())
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        adapter.get_weights("nope")
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        adapter.set_weights("nope", {"bias": np.zeros(MLP_HIDDEN, np.float32)})
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        adapter.set_mask("nope", np.ones((MLP_IN, MLP_HIDDEN), np.float32))
    with pytest.raises(KeyError, match="'fc1'.*'gamma'|'gamma'.*'fc1'"):
        adapter.set_weights("fc1", {"gamma": np.ones(MLP_HIDDEN, np.float32)})


def test_wrong_shapes_are_data_errors_naming_the_layer(framework):
    adapter = adapter_for_copy(mlp_twin(framework))
    before = adapter.get_weights("fc1")
    with pytest.raises(slimkit.DataError, match="'fc1'"):
        adapter.set_mask("fc1", np.ones((3, 3), np.float32))
    with pytest.raises(slimkit.DataError, match="'fc1'"):
        adapter.set_weights("fc1", {"kernel": np.ones((3, 3), np.float32)})
    with pytest.raises(slimkit.DataError, match="'fc1'"):
        adapter.set_weights("fc1", {"bias": np.ones(3, np.float32)})
    for key, value in adapter.get_weights("fc1").items():  # nothing written, no mask set
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_a_rejected_set_weights_writes_none_of_its_weights(framework):
    adapter = adapter_for_copy(mlp_twin(framework))
    before = adapter.get_weights("fc1")
    with pytest.raises(slimkit.DataError, match="'fc1'"):
        adapter.set_weights("fc1", {"bias": before["bias"] + 1.0, "kernel": np.ones((3, 3), np.float32)})
    with pytest.raises(KeyError, match="'gamma'"):
        adapter.set_weights("fc1", {"bias": before["bias"] + 1.0, "gamma": np.ones(MLP_HIDDEN, np.float32)})
    for key, value in adapter.get_weights("fc1").items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_a_mask_for_a_layer_without_kernel_is_a_data_error(framework):
    adapter = adapter_for_copy(mlp_twin(framework))
    gamma = adapter.get_weights("bn")["gamma"]
    with pytest.raises(slimkit.DataError, match="'bn'"):
        adapter.set_mask("bn", np.zeros(MLP_HIDDEN, np.float32))
    np.testing.assert_array_equal(adapter.get_weights("bn")["gamma"], gamma)


# ------------------------------------------------------------------------------- masks and training
def test_masks_hold_exactly_through_fit_and_strip_bakes_them(framework):
    model = mlp_twin(framework)
    adapter = adapter_for_copy(model)
    masks = _random_masks(adapter)
    for name, mask in masks.items():
        adapter.set_mask(name, mask)
    before = {name: adapter.get_weights(name)["kernel"] for name in masks}
    for name, mask in masks.items():
        assert np.all(before[name][mask == 0] == 0.0), f"{name}: set_mask did not zero the kernel"
    x, y = mlp_data(64)
    recorder = Recorder()
    adapter.fit((x, y), FineTune(epochs=3, batch_size=16, optimizer="adam", learning_rate=1e-2), HookChain(recorder))
    per_epoch = [[("step", 4 * (epoch - 1) + i) for i in range(1, 5)] + [("epoch", epoch)] for epoch in (1, 2, 3)]
    assert recorder.events == [("begin", 12), *sum(per_epoch, []), ("end",)]
    assert all(np.isfinite(recorder.losses)) and recorder.losses[-1] < recorder.losses[0]
    for name, mask in masks.items():
        kernel = adapter.get_weights(name)["kernel"]
        assert np.all(kernel[mask == 0] == 0.0), name  # exactly zero, not merely small
        assert np.mean(kernel[mask == 1] != before[name][mask == 1]) > 0.5, f"{name} did not train"
    masked_out = adapter.predict(x)
    plain = adapter.strip()
    assert framework.is_plain(plain)
    stripped = adapter_for(plain)
    np.testing.assert_allclose(stripped.predict(x), masked_out, atol=1e-5, rtol=0)
    for name, mask in masks.items():
        assert np.all(stripped.get_weights(name)["kernel"][mask == 0] == 0.0), name
    trained = {name: canonical(stripped, name) for name in ("fc1", "bn", "fc2", "logits")}
    np.testing.assert_allclose(masked_out, mlp_forward(trained, x)["logits"], atol=1e-4, rtol=0)
    assert framework.is_plain(model) and np.all(adapter_for(model).get_weights("fc1")["kernel"] != 0)


def test_a_users_own_training_loop_drives_the_schedule(framework):
    x, y = mlp_data(64)
    calls = []

    def my_fit(model, callback):
        calls.append(model)
        framework.user_fit(model, callback, x, y, epochs=2, batch_size=16)

    recipe = {"fine_tune": {"epochs": 2, "batch_size": 16},
              "stages": [{"prune": {"sparsity": 0.5, "layers": {"names": ["fc1"]},
                                    "schedule": {"kind": "polynomial", "begin": 0.0, "end": 0.5, "every": 1}}}]}
    model = mlp_twin(framework)
    result = slimkit.compress(model, recipe, train_data=(x, y), fit_fn=my_fit, verbose=False)
    assert len(calls) == 1 and calls[0] is not model
    assert result.report.layer("fc1").sparsity == pytest.approx(0.5, abs=1 / (MLP_IN * MLP_HIDDEN))
    assert result.report.layer("fc2").target is None and result.report.layer("fc2").sparsity == 0.0
    kernel = adapter_for(result.model).get_weights("fc1")["kernel"]
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=1 / kernel.size)
    assert framework.is_plain(result.model)


def test_inputs_that_do_not_fit_are_data_errors(framework):
    adapter = adapter_for(framework.mlp())
    with pytest.raises(slimkit.DataError, match=r"train_data.*\(4, 5\)"):
        adapter.check_input(np.zeros((4, 5), np.float32), "train_data")
    with pytest.raises(slimkit.DataError, match="calib_data.*no samples"):
        adapter.check_input(np.zeros((0, MLP_IN), np.float32), "calib_data")
    adapter.check_input(np.zeros((3, MLP_IN), np.float32), "train_data")  # fits: no error
    with pytest.raises(slimkit.DataError, match="train_data"):
        adapter.fit((np.zeros((8, 5), np.float32), np.zeros(8, np.int64)), FineTune(epochs=1), TrainHooks())


def test_seeded_training_is_repeatable_and_the_seed_orders_batches(framework):
    x, y = mlp_data(64)
    settings = FineTune(epochs=2, batch_size=16, optimizer="sgd", learning_rate=0.05, shuffle=True)

    def trained(seed):
        adapter = adapter_for_copy(mlp_twin(framework))
        adapter.seed(seed)
        adapter.fit((x, y), settings, TrainHooks())
        return adapter.get_weights("fc1")["kernel"]

    first, again, other = trained(3), trained(3), trained(4)
    np.testing.assert_allclose(again, first, atol=1e-7, rtol=0)
    assert np.abs(other - first).max() > 1e-4  # another batch order


# ------------------------------------------------------------------------------------------- export
def test_export_runs_in_onnxruntime_with_a_dynamic_batch(framework, tmp_path):
    adapter = adapter_for(mlp_twin(framework))
    x, _ = mlp_data(5)
    path = tmp_path / "mlp.onnx"
    if not framework.exports_onnx:
        with pytest.raises(slimkit.ExportError):
            adapter.export_onnx(str(path), x[:1], 17)
        assert not path.exists()
        return
    from slimkit.deploy.runtime import run

    adapter.export_onnx(str(path), x[:1], opset=17)
    for batch in (x[:1], x):
        np.testing.assert_allclose(run(str(path), batch), adapter.predict(batch), atol=1e-5, rtol=0)
