"""The digits task shared by the examples: data split and the same small CNN in Keras and PyTorch.

``sklearn.datasets.load_digits`` ships with scikit-learn (8x8 grey images, 10 classes), so nothing is
downloaded. Keras takes images as NHWC, PyTorch as NCHW; the split is identical for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FRAMEWORKS = ("keras", "torch")


def load(framework: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(x_train, y_train), (x_test, y_test) in the framework's image layout, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, :, :, None]  # N, 8, 8, 1
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    if framework == "torch":
        x_train, x_test = x_train.transpose(0, 3, 1, 2).copy(), x_test.transpose(0, 3, 1, 2).copy()
    return (x_train, y_train), (x_test, y_test)


def build(framework: str, seed: int = 0, width: float = 1.0) -> Any:
    """The CNN: conv16-conv32-maxpool-flatten-fc64-logits10, layer names equal in both frameworks;
    ``width`` scales every hidden layer (0.5: a half-width student)."""
    c1, c2, f1 = (max(1, int(round(n * width))) for n in (16, 32, 64))
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(seed)
        layers = keras.layers
        return keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2D(c1, 3, padding="same", activation="relu", name="conv1"),
            layers.Conv2D(c2, 3, padding="same", activation="relu", name="conv2"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(f1, activation="relu", name="fc1"),
            layers.Dense(10, name="logits"),
        ], name="digits_cnn")
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
            self.fc1 = nn.Linear(c2 * 4 * 4, f1)
            self.logits = nn.Linear(f1, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            x = torch.flatten(nn.functional.max_pool2d(x, 2), 1)
            return self.logits(torch.relu(self.fc1(x)))

    return DigitsCNN()


def train(framework: str, model: Any, data: tuple[np.ndarray, np.ndarray], epochs: int = 30, seed: int = 0) -> None:
    """Trains the dense baseline in place with Adam (lr 1e-3, batch 32), as a user would."""
    x, y = data
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
        return
    import torch

    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=32, shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
