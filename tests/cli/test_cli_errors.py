"""Every command's failures: missing, corrupt and unsupported files, recipe errors and data that does not
fit the model end with one ``slimkit: error:`` line naming the file or field, no traceback, and the exit
code of the error's class (2 usage/recipe, 3 data, 4 model, 5 export). Run in this process through
Click's runner (``test_entry_point.py`` runs the real entry point)."""

from __future__ import annotations

import re

import pytest

from cli.cli_run import invoke

K, T = "cnn.keras", "cnn.pt"
FACTORY = ("--factory", "twins:torch_cnn")

#: (id, arguments with {file} placeholders, exit code, text the message contains)
CASES = [
    # compress
    ("compress-missing-model", ["compress", "--model", "{absent.keras}", "--recipe", "{recipe.yaml}", "--data",
                                "{digits_nhwc.npz}", "--out", "{out}"], 4, "no such file"),
    ("compress-corrupt-model", ["compress", "--model", "{corrupt.keras}", "--recipe", "{recipe.yaml}", "--data",
                                "{digits_nhwc.npz}", "--out", "{out}"], 4, "corrupt.keras"),
    ("compress-unsupported-model", ["compress", "--model", "{model.txt}", "--recipe", "{recipe.yaml}", "--data",
                                    "{digits_nhwc.npz}", "--out", "{out}"], 4, "does not read .txt"),
    ("compress-onnx-model", ["compress", "--model", "{keras.onnx}", "--recipe", "{recipe.yaml}", "--data",
                             "{digits_nhwc.npz}", "--out", "{out}"], 4, "ONNX file"),
    ("compress-saved-model", ["compress", "--model", "{saved_model}", "--recipe", "{recipe.yaml}", "--data",
                              "{digits_nhwc.npz}", "--out", "{out}"], 4, "model.save('model.keras')"),
    ("compress-state-dict-without-factory", ["compress", "--model", "{cnn.pt}", "--recipe", "{recipe.yaml}",
                                             "--data", "{digits_nchw.npz}", "--out", "{out}"], 4, "--factory"),
    ("compress-pt2-without-trust", ["compress", "--model", "{cnn.pt2}", "--recipe", "{recipe.yaml}", "--data",
                                    "{digits_nchw.npz}", "--out", "{out}"], 4, "--trust-model-file"),
    ("compress-corrupt-state-dict", ["compress", "--model", "{corrupt.pt}", *FACTORY, "--recipe", "{recipe.yaml}",
                                     "--data", "{digits_nchw.npz}", "--out", "{out}"], 4, "not a readable PyTorch"),
    ("compress-not-a-state-dict", ["compress", "--model", "{pickled.pt}", *FACTORY, "--recipe", "{recipe.yaml}",
                                   "--data", "{digits_nchw.npz}", "--out", "{out}"], 4, "not tensors"),
    ("compress-weights-not-fitting", ["compress", "--model", "{wrong_weights.pt}", *FACTORY, "--recipe",
                                      "{recipe.yaml}", "--data", "{digits_nchw.npz}", "--out", "{out}"], 4,
     "do not fit TwinCNN"),
    ("compress-corrupt-pt2", ["compress", "--model", "{corrupt.pt2}", "--trust-model-file", "--recipe",
                              "{recipe.yaml}", "--data", "{digits_nchw.npz}", "--out", "{out}"], 4, "corrupt.pt2"),
    ("compress-bad-factory", ["compress", "--model", "{cnn.pt}", "--factory", "twins:no_such_model", "--recipe",
                              "{recipe.yaml}", "--data", "{digits_nchw.npz}", "--out", "{out}"], 4, "no_such_model"),
    ("compress-missing-recipe", ["compress", "--model", "{cnn.keras}", "--recipe", "{absent.yaml}", "--data",
                                 "{digits_nhwc.npz}", "--out", "{out}"], 2, "no such file"),
    ("compress-recipe-error", ["compress", "--model", "{cnn.keras}", "--recipe", "{bad_recipe.yaml}", "--data",
                               "{digits_nhwc.npz}", "--out", "{out}"], 2, "sparsity"),
    ("compress-selector-matches-nothing", ["compress", "--model", "{cnn.pt}", *FACTORY, "--recipe",
                                           "{no_match.yaml}", "--data", "{digits_nchw.npz}", "--out", "{out}"], 2,
     "stages[0].prune.layers"),
    ("compress-missing-data", ["compress", "--model", "{cnn.pt}", *FACTORY, "--recipe", "{recipe.yaml}", "--data",
                               "{absent.npz}", "--out", "{out}"], 3, "no such file"),
    ("compress-corrupt-data", ["compress", "--model", "{cnn.pt}", *FACTORY, "--recipe", "{recipe.yaml}", "--data",
                               "{corrupt.npz}", "--out", "{out}"], 3, "not a readable .npz"),
    ("compress-data-shape", ["compress", "--model", "{cnn.pt}", *FACTORY, "--recipe", "{recipe.yaml}", "--data",
                             "{wrong_shape.npz}", "--out", "{out}"], 3, "train_data"),
    ("compress-eval-without-labels", ["compress", "--model", "{cnn.pt}", *FACTORY, "--recipe", "{recipe.yaml}",
                                      "--data", "{digits_nchw.npz}", "--eval-data", "{inputs_nchw.npy}", "--out",
                                      "{out}"], 3, "needs labels"),
    ("compress-out-is-a-file", ["compress", "--model", "{cnn.keras}", "--recipe", "{recipe.yaml}", "--data",
                                "{digits_nhwc.npz}", "--out", "{model.txt}"], 5, "cannot create the folder"),
    ("compress-usage", ["compress", "--model", "{cnn.keras}", "--recipe", "{recipe.yaml}", "--data",
                        "{digits_nhwc.npz}"], 2, "--out"),
    ("compress-loader-without-samples", ["compress", "--model", "{cnn.pt}", *FACTORY, "--recipe", "{recipe.yaml}",
                                         "--data", "cli.cli_data:digits_loader", "--out", "{out}"], 3, "--eval-data"),
    # inspect
    ("inspect-missing", ["inspect", "{absent.keras}"], 4, "no such file"),
    ("inspect-corrupt", ["inspect", "{corrupt.keras}"], 4, "corrupt.keras"),
    ("inspect-unsupported", ["inspect", "{model.txt}"], 4, "does not read .txt"),
    ("inspect-data-shape", ["inspect", "{cnn.pt}", *FACTORY, "--data", "{wrong_shape.npz}"], 3, "wrong_shape"),
    ("inspect-bad-shape-option", ["inspect", "{cnn.keras}", "--input-shape", "a,b"], 2, "--input-shape"),
    # export
    ("export-missing", ["export", "{absent.keras}", "--onnx", "{out}/m.onnx"], 4, "no such file"),
    ("export-corrupt", ["export", "{corrupt.pt}", *FACTORY, "--onnx", "{out}/m.onnx"], 4, "not a readable"),
    ("export-unsupported", ["export", "{model.txt}", "--onnx", "{out}/m.onnx"], 4, "does not read .txt"),
    ("export-data-shape", ["export", "{cnn.keras}", "--onnx", "{out}/m.onnx", "--data", "{wrong_shape.npz}"], 3,
     "shape"),
    ("export-target-is-a-folder", ["export", "{cnn.pt}", *FACTORY, "--onnx", "{saved_model}", "--data",
                                   "{inputs_nchw.npy}"], 5, "saved_model"),
    ("export-no-sample", ["export", "{cnn.pt}", *FACTORY, "--onnx", "{out}/m.onnx"], 3, "--input-shape"),
    # bench
    ("bench-missing", ["bench", "{absent.onnx}"], 4, "no such file"),
    ("bench-corrupt", ["bench", "{corrupt.onnx}"], 4, "onnxruntime cannot load"),
    ("bench-data-shape", ["bench", "{torch.onnx}", "--data", "{wrong_shape.npz}"], 3, "does not fit"),
    ("bench-corrupt-data", ["bench", "{torch.onnx}", "--data", "{corrupt.npz}"], 3, "corrupt.npz"),
    # recipe
    ("recipe-check-missing", ["recipe", "check", "{absent.yaml}"], 2, "no such file"),
    ("recipe-check-error", ["recipe", "check", "{bad_recipe.yaml}"], 2, "stages[0].prune.sparsity"),
    ("recipe-check-against-model", ["recipe", "check", "{no_match.yaml}", "--model", "{cnn.keras}"], 2,
     "stages[0].prune.layers"),
    ("recipe-check-corrupt-model", ["recipe", "check", "{recipe.yaml}", "--model", "{corrupt.keras}"], 4,
     "corrupt.keras"),
    ("recipe-init-unknown-method", ["recipe", "init", "--method", "magic"], 2, "magic"),
]


@pytest.mark.parametrize("args, code, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_errors_exit_with_their_code_and_one_message(files, tmp_path, args, code, text):
    def path(found: re.Match) -> str:  # {name}: the shared file of that name (absent names do not exist)
        return str(tmp_path / "out") if found.group(1) == "out" else str(files / found.group(1))

    exit_code, out, err = invoke(*[re.sub(r"\{([^}]+)\}", path, a) for a in args])
    assert exit_code == code, (out, err)
    assert text in err, err
    assert "Traceback" not in out + err
    assert err.count("slimkit: error:") <= 1


def test_debug_shows_the_traceback(files):
    exit_code, _, err = invoke("inspect", str(files / "corrupt.keras"), "--debug")
    assert exit_code == 4
    assert "Traceback" in err and "slimkit: error:" in err
