"""compress and export_onnx leave the user's model exactly as it was, for every recipe kind.

The user's model is prepared the way users leave models: PyTorch in train mode with one batch norm
switched to eval (``model.train(); model.bn1.eval()``), a frozen parameter, a parametrization of its
own, and a forward hook and pre-hook that count their calls; Keras with a frozen layer. A snapshot
of everything a user could observe (per-submodule training flags, hook tables, parametrizations,
``requires_grad``, the state dict; Keras trainable flags, weights, layer names and config) must be
identical after ``compress`` and after ``export_onnx``, and the user's hooks must never have fired.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import slimkit
from frameworks import building
from twins import BUILDERS, sample_input

FRAMEWORKS = building("twins")
TUNE = {"epochs": 1, "batch_size": 16}  # one step: the copy trains, the user's model must not move
RECIPES = {
    "magnitude": {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5}}]},  # qat below fine-tunes
    "channel": {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "l1"}}]},
    "n:m": {"fine_tune": None, "stages": [{"prune": {"method": "n:m", "n": 2, "m": 4, "layers": {"exclude": ["conv1"]}}}]},
    # 4 steps: dense training, then prune, rewind every layer of the copy and train again
    "lottery": {"stages": [{"prune": {"method": "lottery", "sparsity": 0.5, "rounds": 1,
                                      "fine_tune": {"epochs": 1, "batch_size": 4}}}]},
    "static": {"stages": [{"quantize": {"method": "static"}}]},
    "dynamic": {"stages": [{"quantize": {"method": "dynamic"}}]},
    "qat": {"stages": [{"quantize": {"method": "qat", "fine_tune": TUNE}}]},
    "slimming": {"stages": [{"prune": {"method": "channel", "sparsity": 0.5, "criterion": "bn_scale",
                                       "regularize": {"bn_l1": 20.0}, "fine_tune": TUNE}}]},
    "admm": {"stages": [{"prune": {"method": "admm", "target": "channel", "sparsity": 0.5, "every": 1,
                                   "retrain": 0.0, "fine_tune": TUNE}}]},
}


# ------------------------------------------------------------------------------------------ torch
def _torch_user_model():
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    class Unit(nn.Module):  # the user's own parametrization: computes the same bias
        def forward(self, b):
            return b * 1.0

    model = BUILDERS["cnn"]["torch"]()
    model.train()
    model.bn1.eval()  # frozen batch-norm statistics: must come back as set
    model.conv1.bias.requires_grad_(False)
    parametrize.register_parametrization(model.logits, "bias", Unit())
    calls = {"forward": 0, "pre": 0}
    model.fc1.register_forward_hook(lambda m, i, o: calls.__setitem__("forward", calls["forward"] + 1))
    model.register_forward_pre_hook(lambda m, i: calls.__setitem__("pre", calls["pre"] + 1))
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
    return model, calls


def _torch_snapshot(model):
    from torch.nn.utils import parametrize

    tables = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return {
        "flags": {name: m.training for name, m in model.named_modules()},
        "hooks": {name: {t: [(k, id(h)) for k, h in getattr(m, t).items()] for t in tables}
                  for name, m in model.named_modules()},
        "parametrizations": {name: {attr: [id(p) for p in m.parametrizations[attr]] for attr in m.parametrizations}
                             for name, m in model.named_modules() if parametrize.is_parametrized(m)},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "classes": {name: type(m).__qualname__ for name, m in model.named_modules()},
        "state": {name: t.detach().clone() for name, t in model.state_dict().items()},
    }


def _torch_same(before, after):
    import torch

    for key in ("flags", "hooks", "parametrizations", "requires_grad", "classes"):
        assert after[key] == before[key], key
    assert list(after["state"]) == list(before["state"])
    for name, tensor in before["state"].items():
        assert torch.equal(after["state"][name], tensor), name


# ------------------------------------------------------------------------------------------ keras
def _keras_user_model():
    model = BUILDERS["cnn"]["keras"]()
    model.get_layer("conv1").trainable = False
    return model, None


def _keras_snapshot(model):
    return {
        "names": [layer.name for layer in model.layers],
        "trainable": [(layer.name, layer.trainable) for layer in model.layers],
        "variables": [(v.path, v.trainable) for v in model.weights],
        "config": json.dumps(model.get_config(), sort_keys=True, default=str),
        "weights": [w.copy() for w in model.get_weights()],
    }


def _keras_same(before, after):
    for key in ("names", "trainable", "variables", "config"):
        assert after[key] == before[key], key
    assert len(after["weights"]) == len(before["weights"])
    for got, want in zip(after["weights"], before["weights"]):
        np.testing.assert_array_equal(got, want)


USER = {"torch": (_torch_user_model, _torch_snapshot, _torch_same),
        "keras": (_keras_user_model, _keras_snapshot, _keras_same)}


@pytest.mark.parametrize("kind", list(RECIPES))
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_compress_and_export_leave_the_users_model_untouched(framework, kind, tmp_path):
    build, snapshot, same = USER[framework]
    model, calls = build()
    x, y = sample_input("cnn", framework, n=16), np.arange(16) % 10
    before = snapshot(model)
    result = slimkit.compress(model, RECIPES[kind], train_data=(x, y), eval_data=(x, y), verbose=False)
    same(before, snapshot(model))
    result.export_onnx(tmp_path / "compressed.onnx")
    same(before, snapshot(model))
    assert (tmp_path / "compressed.onnx").is_file()
    if calls is not None:  # the user's instrumentation never ran, and the result carries none of it
        assert calls == {"forward": 0, "pre": 0}
        result.model(__import__("torch").as_tensor(x[:2]))
        assert calls == {"forward": 0, "pre": 0}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_exporting_the_users_own_model_leaves_it_untouched(framework, tmp_path):
    build, snapshot, same = USER[framework]
    model, calls = build()
    before = snapshot(model)
    slimkit.export_onnx(model, tmp_path / "user.onnx", sample=sample_input("cnn", framework, n=4))
    same(before, snapshot(model))
    assert (tmp_path / "user.onnx").is_file()
    if calls is not None:
        assert calls == {"forward": 0, "pre": 0}
