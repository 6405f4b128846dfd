"""Files the command-line tests share: the digits CNN twins saved as a Keras ``.keras`` file, a PyTorch
state dict and a torch.export ``.pt2`` program (the same weights), digits data in both layouts, a
recipe, ONNX exports, and damaged files of every kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cli.cli_data import digits
from cli.cli_run import RECIPE



@dataclass(frozen=True)
class Files:
    root: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    import torch

    import slimkit
    from twins import twin_pair

    root = tmp_path_factory.mktemp("cli")
    x, y = digits()
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.savez(root / "digits_nchw.npz", x=x, y=y)
    np.savez(root / "digits_nhwc.npz", x=nhwc, y=y)
    np.save(root / "inputs_nchw.npy", x[:16])
    np.savez(root / "wrong_shape.npz", x=np.zeros((8, 5, 5, 2), np.float32), y=y[:8])
    models = twin_pair("cnn", he=True)
    models["keras"].save(root / "cnn.keras")
    models["keras"].save(root / "cnn.h5")  # legacy HDF5
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), root / "whole.pt")  # pickled
    torch_model = models["torch"].eval()
    torch.save(torch_model.state_dict(), root / "cnn.pt")
    torch.export.save(torch.export.export(torch_model, (torch.from_numpy(x[:2]),)), root / "cnn.pt2")
    slimkit.export_onnx(models["keras"], root / "keras.onnx", sample=nhwc[:16])
    slimkit.export_onnx(torch_model, root / "torch.onnx", sample=x[:16])
    (root / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    (root / "bad_recipe.yaml").write_text(RECIPE.replace("sparsity: 0.5", "sparsity: 1.5"), encoding="utf-8")
    (root / "no_match.yaml").write_text(RECIPE.replace('exclude: ["*logits*"]', 'names: ["nothing*"]'),
                                        encoding="utf-8")
    for name in ("corrupt.keras", "corrupt.pt", "corrupt.pt2", "corrupt.onnx", "corrupt.npz"):
        (root / name).write_bytes(b"not a model, just bytes" * 8)
    (root / "model.txt").write_text("a model?", encoding="utf-8")
    (root / "saved_model").mkdir()
    (root / "saved_model" / "saved_model.pb").write_bytes(b"")
    torch.save({"weights": [1, 2]}, root / "pickled.pt")  # a list: not a state dict of tensors
    torch.save({"conv1.weight": torch.zeros(3)}, root / "wrong_weights.pt")
    return Files(root)
