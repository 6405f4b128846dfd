"""PyTorch data as Keras checks it: DataLoader batches split, converted and checked (labels against the
loss per batch, the first batch run once, NaN refused); dtype and form conversions rather than
refusals; layouts and model dtypes that cannot run named outright."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import slimkit
from twins import BUILDERS, sample_input

PRUNE = {"stages": [{"prune": {"sparsity": 0.5}}]}


def tune(loss: str = "sparse_categorical_crossentropy", **extra) -> dict:
    return {"fine_tune": {"epochs": 1, "batch_size": 4, "loss": loss, **extra}, **PRUNE}


def mlp() -> nn.Module:
    return BUILDERS["mlp"]["torch"]()  # 64 -> 32 -> 10


X = sample_input("mlp", "torch", n=8)
IDS = np.arange(8) % 10


def loader(*arrays, batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(*(torch.as_tensor(a) for a in arrays)), batch_size=batch_size)


def compress(data, recipe=None, model=None, **kw):
    return slimkit.compress(model or mlp(), recipe or tune(), train_data=data, verbose=False, **kw)


# --------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("labels, recipe, batch_size, message", [
    # class ids out of range, in a later batch: every batch is checked, the message names it
    (np.array([0, 1, 2, 3, 4, 5, 17, 1]), tune(), 4,
     r"train_data \(DataLoader batch 1\): y class labels must lie in \[0, 10\).*17"),
    (np.linspace(0.1, 0.9, 8, dtype=np.float32), tune(), 4,
     r"train_data \(DataLoader batch 0\): y must hold integer class labels for sparse_categorical_crossentropy"),
    # mse with class ids, a batch as large as the class count (PyTorch would broadcast silently)
    (np.arange(10), tune("mse"), 10,
     r"train_data \(DataLoader batch 0\): y for mse on model outputs of shape \(batch, 10\) must have shape "
     r"\(batch, 10\), got \(10,\)"),
    (np.zeros(8, np.float32), tune("binary_crossentropy", from_logits=True), 4,
     r"train_data \(DataLoader batch 0\): y for binary_crossentropy .* must have shape \(batch, 10\), got \(4,\)"),
], ids=["out-of-range", "float-ids", "mse-broadcast", "bce-shape"])
def test_loader_labels_are_checked_against_the_loss(labels, recipe, batch_size, message):
    n = len(labels)
    x = sample_input("mlp", "torch", n=n)
    with pytest.raises(slimkit.DataError, match=message):
        compress(loader(x, labels, batch_size=batch_size), recipe)


# --------------------------------------------------------------------------------------- conversions
class _Dicts(Dataset):
    """Items as a tokenizer-style dict: the model's keyword input and ``labels``."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.as_tensor(X[i]), "labels": torch.tensor(int(IDS[i]))}


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.logits = nn.Linear(32, 10)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.logits(torch.cat([self.fc1(a), self.fc1(b)], dim=1))


@pytest.mark.parametrize("form", ["float64", "uint8", "dict", "tuple"])
def test_loader_batches_of_other_dtypes_and_forms_are_converted(form):
    model = _TwoInputs() if form == "tuple" else mlp()
    data = {
        "float64": lambda: loader(X.astype(np.float64), IDS),
        "uint8": lambda: loader((X * 255).astype(np.uint8), IDS),  # pixels: the model's float type, unscaled
        "dict": lambda: DataLoader(_Dicts(), batch_size=4),
        "tuple": lambda: loader(X, X[::-1].copy(), IDS),  # (a, b, labels): positional inputs, then labels
    }[form]()
    result = compress(data, model=model)
    assert result.report.stages[0].fine_tuned and result.report.stages[0].steps == 2
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


# ------------------------------------------------------------------------------------------- refusals
class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.as_tensor(X[0]), torch.tensor(0)


@pytest.mark.parametrize("make, message", [
    (lambda: loader(X), r"train_data \(DataLoader batch 0\): the DataLoader yields batches of inputs only "
                        r"\(list of 1\); fine-tuning needs \(inputs, labels\) batches"),
    (lambda: DataLoader([{"x": torch.as_tensor(X[i]), "target": 1} for i in range(8)], batch_size=4),
     r"train_data \(DataLoader batch 0\): a dict batch with keys \['target', 'x'\] and no labels"),
    (lambda: loader(np.where(X > 0.9, np.nan, X), IDS),
     r"train_data \(DataLoader batch 0\): the inputs hold \d+ NaN or infinite value"),
    (lambda: loader(X[:, :60].copy(), IDS),
     r"train_data \(DataLoader batch 0\): input of shape \(4, 60\) does not fit TwinMLP"),
    (lambda: DataLoader(_Stream(), batch_size=None),
     r"train_data: the DataLoader has no length .*IterableDataset"),
], ids=["x-only", "dict-without-labels", "nan", "wrong-shape", "no-length"])
def test_loaders_that_cannot_be_fed_are_data_errors(make, message):
    with pytest.raises(slimkit.DataError, match=message):
        compress(make())


@pytest.mark.parametrize("wrap", [lambda x, y: (x, y), loader], ids=["arrays", "loader"])
def test_channels_last_images_are_named_as_such(wrap):
    x = sample_input("cnn", "torch", n=8).transpose(0, 2, 3, 1).copy()  # NHWC for the NCHW TwinCNN
    with pytest.raises(slimkit.DataError, match=r"train_data.*\(\d, 8, 8, 1\) does not fit TwinCNN.*channels-last "
                                                r"\(N, H, W, C\).*x.transpose\(0, 3, 1, 2\)"):
        compress(wrap(x, IDS), model=BUILDERS["cnn"]["torch"]())


def test_taylor_scores_read_loaders_through_the_same_checks():
    recipe = {"fine_tune": None, "stages": [{"prune": {"method": "channel", "criterion": "taylor", "sparsity": 0.5}}]}
    with pytest.raises(slimkit.DataError, match=r"train_data \(DataLoader batch 0\): y class labels must lie"):
        x = sample_input("cnn", "torch", n=8)
        compress(loader(x, np.full(8, 12)), recipe, model=BUILDERS["cnn"]["torch"](), calib_data=x)


# --------------------------------------------------------------------------------------- model dtypes
def test_half_precision_models_are_refused_by_dtype():
    with pytest.raises(slimkit.UnsupportedModelError, match=r"holds float16 parameters; slimkit supports float32 "
                                                            r"and float64 PyTorch models: convert a copy with .float\(\)"):
        compress((X, IDS), model=mlp().half())


def test_float64_models_train_on_cast_data_and_quantization_names_the_dtype():
    result = compress((X, IDS), model=mlp().double())
    assert next(result.model.parameters()).dtype == torch.float64
    with pytest.raises(slimkit.UnsupportedModelError, match=r"holds float64 parameters; quantization supports float32"):
        slimkit.compress(mlp().double(), {"stages": [{"quantize": {"method": "static"}}]}, calib_data=X, verbose=False)
