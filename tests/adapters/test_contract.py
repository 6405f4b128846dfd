"""One contract, every adapter: what core's algorithms rely on, checked per framework."""

from __future__ import annotations

import numpy as np
import pytest

import slimkit
from slimkit.adapter import HookChain, TrainHooks
from slimkit.recipe import FineTune
from slimkit.registry import adapter_for, adapter_for_copy
from twins import BUILDERS, sample_input, twin_pair

FRAMEWORKS = ["keras", "torch"]

EXPECTED_KINDS = {
    "cnn": {"conv1": ("conv", 2), "bn1": ("batchnorm", 0), "dw": ("depthwise_conv", 2),
            "pw": ("conv", 2), "fc1": ("dense", 0), "logits": ("dense", 0)},
    "seq": {"embed": ("embedding", 0), "conv1d": ("conv", 1), "logits": ("dense", 0)},
}


def _labels(n: int, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n).astype(np.int64)


class Recorder(TrainHooks):
    def __init__(self) -> None:
        self.total = None
        self.steps: list[int] = []
        self.epochs: list[int] = []
        self.ended = False

    def begin(self, total_steps: int) -> None:
        self.total = total_steps

    def step_end(self, step: int) -> None:
        self.steps.append(step)

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        assert np.isfinite(logs["loss"])
        self.epochs.append(epoch)

    def end(self) -> None:
        self.ended = True


@pytest.mark.parametrize("framework", FRAMEWORKS)
class TestAdapterContract:
    @pytest.mark.parametrize("arch", ["cnn", "seq"])
    def test_layers_have_neutral_kinds_and_shapes(self, framework, arch):
        adapter = adapter_for(BUILDERS[arch][framework]())
        layers = {layer.name: layer for layer in adapter.layers()}
        assert {n: (l.kind, l.rank) for n, l in layers.items()} == EXPECTED_KINDS[arch]
        for layer in layers.values():
            weights = adapter.get_weights(layer.name)
            assert {k: v.shape for k, v in weights.items()} == layer.shapes
            assert all(v.dtype == np.float32 for v in weights.values())
            if "kernel" in layer.shapes:
                assert sorted(layer.kernel_perm) == list(range(len(layer.shapes["kernel"])))

    def test_set_weights_round_trip_and_copy_independence(self, framework):
        model = BUILDERS["cnn"][framework]()
        original = adapter_for(model)
        before = original.get_weights("fc1")
        work = adapter_for_copy(model)
        new = {k: v + 1.0 for k, v in before.items()}
        work.set_weights("fc1", new)
        for key, value in work.get_weights("fc1").items():
            np.testing.assert_array_equal(value, new[key])
        for key, value in original.get_weights("fc1").items():
            np.testing.assert_array_equal(value, before[key])
        with pytest.raises(Exception, match="no layer named 'nope'"):
            work.get_weights("nope")

    def test_masks_hold_through_training_and_strip_leaves_plain_model(self, framework):
        model = twin_pair("cnn")[framework]
        adapter = adapter_for_copy(model)
        rng = np.random.default_rng(1)
        masks = {}
        for name in ("conv1", "pw", "fc1"):
            shape = adapter.get_weights(name)["kernel"].shape
            masks[name] = (rng.random(shape) > 0.7).astype(np.float32)
            adapter.set_mask(name, masks[name])
        before = {name: adapter.get_weights(name)["kernel"] for name in masks}
        x = sample_input("cnn", framework, n=64)
        recorder = Recorder()
        settings = FineTune(epochs=3, batch_size=16, optimizer="adam", learning_rate=1e-2)
        adapter.fit((x, _labels(64)), settings, HookChain(recorder))
        assert recorder.total == 12 and recorder.steps == list(range(1, 13))
        assert recorder.epochs == [1, 2, 3] and recorder.ended
        for name, mask in masks.items():
            kernel = adapter.get_weights(name)["kernel"]
            assert np.all(kernel[mask == 0] == 0.0), name  # exactly zero, not merely small
            assert not np.allclose(kernel[mask == 1], before[name][mask == 1]), f"{name} did not train"
        masked_out = adapter.predict(x)
        plain = adapter.strip()
        stripped = adapter_for(plain)
        np.testing.assert_allclose(stripped.predict(x), masked_out, atol=1e-5)
        for name, mask in masks.items():
            assert np.all(stripped.get_weights(name)["kernel"][mask == 0] == 0.0)
        _assert_plain(framework, plain)

    def test_user_fit_fn_drives_the_schedule(self, framework):
        model = twin_pair("cnn")[framework]
        x, y = sample_input("cnn", framework, n=64), _labels(64)
        calls = []

        def my_fit(m, callback):
            calls.append(type(m).__name__)
            _user_training_loop(framework, m, callback, x, y, epochs=2, batch_size=16)

        recipe = {"fine_tune": {"epochs": 2, "batch_size": 16},
                  "stages": [{"prune": {"sparsity": 0.5, "layers": {"names": ["fc1"]},
                                        "schedule": {"kind": "polynomial", "begin": 0.0, "end": 0.5, "every": 1}}}]}
        result = slimkit.compress(model, recipe, train_data=(x, y), fit_fn=my_fit, verbose=False)
        assert len(calls) == 1
        assert result.report.layer("fc1").sparsity == pytest.approx(0.5, abs=1 / 512)
        assert result.report.layer("pw").target is None

    def test_wrong_input_shape_is_a_data_error(self, framework):
        adapter = adapter_for(BUILDERS["cnn"][framework]())
        with pytest.raises(slimkit.DataError, match="train_data"):
            adapter.check_input(np.zeros((4, 5, 5), np.float32), "train_data")
        with pytest.raises(slimkit.DataError, match="no samples"):
            adapter.check_input(np.zeros((0, 8, 8, 1), np.float32), "train_data")

    def test_export_runs_in_onnxruntime_with_dynamic_batch(self, framework, tmp_path):
        from slimkit.deploy.runtime import run

        model = twin_pair("cnn")[framework]
        adapter = adapter_for(model)
        x = sample_input("cnn", framework, n=5)
        path = tmp_path / "m.onnx"
        adapter.export_onnx(str(path), x[:1], opset=17)
        for batch in (x[:1], x):
            np.testing.assert_allclose(run(str(path), batch), adapter.predict(batch), atol=1e-4)


def _assert_plain(framework: str, model) -> None:
    """No slimkit wrappers left: no Keras variable constraints, no PyTorch parametrizations."""
    if framework == "keras":
        assert all(getattr(v, "constraint", None) is None for v in model.variables)
    else:
        from torch.nn.utils import parametrize

        assert not any(parametrize.is_parametrized(m) for m in model.modules())


def _user_training_loop(framework, model, callback, x, y, epochs, batch_size):
    """What a user's own training code looks like in each framework, with slimkit's callback."""
    if framework == "keras":
        import keras

        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[callback])
        return
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for epoch in range(epochs):
        for i in range(0, len(xt), batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i:i + batch_size]), yt[i:i + batch_size]).backward()
            opt.step()
            callback.step()
        callback.epoch_end(epoch + 1, {"loss": 0.0})
