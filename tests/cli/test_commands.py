"""What each command prints when it succeeds, on the digits CNN twins (in this process; the compress
tests run the real entry point): inspect's layers, MACs and groups, export's verified file, bench's rows
(a Keras and a PyTorch file of the same weights agree), recipe init's starters and recipe check."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import slimkit
from slimkit.cli.starters import STAGES

from cli.cli_run import invoke

#: MACs of the twin CNN per sample: conv1 8x8x8x9, dw 8x8x8x9, pw 8x8x16x8, fc1 16x32, logits 32x10
CNN_MACS = 4608 + 4608 + 8192 + 512 + 320


@pytest.mark.parametrize("model, extra", [("cnn.keras", []), ("cnn.pt", ["--factory", "twins:torch_cnn",
                                                                         "--input-shape", "1,8,8"])],
                         ids=["keras", "torch"])
def test_inspect_reports_layers_macs_groups_and_int8(files, model, extra):
    code, out, err = invoke("inspect", files / model, *extra, "--json")
    assert code == 0, err
    summary = json.loads(out)
    layers = {row["name"]: row for row in summary["layers"]}
    assert summary["params"] == 1210 and summary["macs"] == CNN_MACS
    assert layers["pw"]["macs"] == 8192 and layers["dw"]["kind"] == "depthwise_conv"
    assert layers["bn1"]["sparsity"] is None and layers["conv1"]["sparsity"] == 0.0
    assert [g["producers"] for g in summary["groups"]] == [["conv1"], ["pw"], ["fc1"]]
    assert summary["blocked"] == [{"layers": ["logits"], "reason": "model output (through '__output__')"}]
    assert {n for n, r in layers.items() if r["quant"] == "int8"} == {"conv1", "dw", "pw", "fc1", "logits"}
    code, text, _ = invoke("inspect", files / model, *extra, "--macs", "onnx")
    assert code == 0 and "18.24 k MACs per sample" in text and "channels left whole" in text


def test_inspect_reads_legacy_h5_and_trusted_pickles(files):
    code, out, err = invoke("inspect", files / "cnn.h5", "--json")
    assert code == 0, err
    assert json.loads(out)["params"] == 1210
    code, out, err = invoke("inspect", files / "whole.pt", "--trust-model-file", "--input-shape", "1,8,8", "--json")
    assert code == 0, err
    assert json.loads(out)["macs"] == 640
    code, _, err = invoke("inspect", files / "whole.pt", "--input-shape", "1,8,8")  # never unpickled untrusted
    assert code == 4 and "--factory" in err and "--trust-model-file" in err


def test_export_writes_a_verified_file(files, tmp_path):
    code, out, err = invoke("export", files / "cnn.pt", "--factory", "twins:torch_cnn", "--onnx",
                            tmp_path / "sub" / "cnn.onnx", "--data", "cli.cli_data:digits_arrays")
    assert code == 0, err
    assert (tmp_path / "sub" / "cnn.onnx").is_file() and "max |onnxruntime - framework|" in out


def test_bench_compares_files_side_by_side(files):
    code, out, err = invoke("bench", files / "keras.onnx", files / "torch.onnx", "--data",
                            files / "digits_nhwc.npz", "--batch", "16", "--repeats", "5", "--threads", "1", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["macs"] for r in rows] == [CNN_MACS, CNN_MACS]
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["bytes"] > 0 for r in rows)
    # the PyTorch file takes the images transposed to NCHW and computes what the Keras twin does
    assert rows[0]["max_abs_diff"] is None and rows[1]["max_abs_diff"] < 1e-4
    assert rows[1]["top1_agreement"] == 1.0
    code, out, _ = invoke("bench", files / "torch.onnx", files / "torch.onnx", "--repeats", "3")
    assert code == 0 and "median ms" in out and "(reference)" in out


@pytest.mark.parametrize("method", list(STAGES))
def test_recipe_init_writes_a_recipe_that_parses(tmp_path, method):
    code, out, err = invoke("recipe", "init", "--method", method)
    assert code == 0, err
    with warnings.catch_warnings():
        warnings.simplefilter("error", slimkit.SlimkitWarning)  # no key without effect either
        recipe = slimkit.Recipe.load(out)
    assert len(recipe.stages) == 1 and method in recipe.stages[0].name  # prune:magnitude, distill, ...


def test_recipe_init_to_a_file_and_check_against_a_model(files, tmp_path):
    path = tmp_path / "recipe.yaml"
    code, _, err = invoke("recipe", "init", "-m", "channel", "-m", "static", "-o", path)
    assert code == 0, err
    assert [s.name for s in slimkit.Recipe.load(path).stages][0].startswith("prune")
    assert invoke("recipe", "init", "-o", path)[0] == 2  # an existing file is kept
    code, out, err = invoke("recipe", "check", path, "--model", files / "cnn.keras")
    assert code == 0, err
    assert "valid recipe, 2 stage(s)" in out and "3 layer(s): conv1, pw, fc1" in out
    assert "stages[1] quantize:static: 3 layer(s): conv1, pw, fc1" in out  # the default selector: conv, dense


def test_recipe_check_without_a_model(files):
    code, out, _ = invoke("recipe", "check", files / "recipe.yaml")
    assert code == 0 and "stages[0] prune:magnitude" in out


def test_compress_seed_and_quiet(files, tmp_path):
    """--seed replaces the recipe's seed; --quiet prints nothing on success (and leaves the process's
    verbosity as it was)."""
    from slimkit.progress import get_verbosity

    before = get_verbosity()
    code, out, err = invoke("compress", "--model", files / "cnn.pt", "--factory", "twins:torch_cnn", "--recipe",
                            files / "recipe.yaml", "--data", files / "inputs_nchw.npy", "--out", tmp_path,
                            "--seed", "7", "--quiet")
    assert code == 0, err
    assert out == "" and get_verbosity() == before
    report = json.loads((tmp_path / "report.json").read_text())
    assert any("reads back" in note for note in report["notes"])
    assert np.isclose({r["name"]: r["sparsity"] for r in report["layers"]}["fc1"], 0.5, atol=0.01)
