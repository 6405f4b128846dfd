"""Keras compress runs under tf.distribute, in a process of their own, for tests/adapters/test_distributed_keras.py.

``python keras_distributed_worker.py mirrored OUT``: two logical CPU devices (configured before TensorFlow
starts, which the pytest process cannot do any more), MirroredStrategy over them; runs the magnitude and
QAT scenarios and saves each result as ``OUT/mirrored_<scenario>.npz``.

``python keras_distributed_worker.py mwms OUT``: one worker of a MultiWorkerMirroredStrategy (TF_CONFIG
from the environment); runs the magnitude and QAT scenarios (exporting ONNX and report.json into
``OUT/files``) and calibration on its half of the data, saving ``OUT/mwms<rank>_<scenario>.npz``.

The model, data and recipes are defined here so that the test computes the single-process reference
from the same ones. Prints one JSON line at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

N = 37  # 16 + 16 + 5: the last global batch splits 3 / 2 over two replicas
FINE_TUNE = {"epochs": 2, "batch_size": 16, "learning_rate": 0.05, "shuffle": True, "sync_batchnorm": True}
RECIPES = {
    "magnitude": {"version": 1, "seed": 0, "fine_tune": FINE_TUNE, "stages": [{"prune": {
        "method": "magnitude", "sparsity": 0.5, "schedule": {"begin": 0.0, "end": 1.0, "every": 1}}}]},
    "qat": {"version": 1, "seed": 0, "fine_tune": FINE_TUNE,
            "stages": [{"quantize": {"method": "qat", "activations": {"learn": "ema"}}}]},
    "calibration": {"version": 1, "seed": 0, "fine_tune": None,
                    "stages": [{"quantize": {"method": "static", "activations": {"calibration": "minmax"}}}]},
}


def build_model():
    """Conv2D - BatchNormalization - ReLU - Dense on 8x8x3 inputs, weights from a fixed seed."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 3), name="pixels")  # named: default names count the models built before
    # no bias ahead of the batch norm: its gradient is zero up to rounding, which Adam would turn into
    # steps of the learning rate's size in whichever direction the rounding points
    h = keras.layers.Conv2D(6, 3, use_bias=False, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Flatten(name="flat")(h)
    return keras.Model(inputs, keras.layers.Dense(5, name="fc")(h))


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.normal(size=(N, 8, 8, 3)).astype(np.float32), rng.integers(0, 5, N)


def state(result) -> dict[str, np.ndarray]:
    """Every weight of the compressed model (masks are its zeros), its quantizer state, its steps."""
    from slimkit.registry import adapter_for

    out = {f"w:{v.path}": np.asarray(v, np.float32) for v in result.model.weights}
    for site, values in adapter_for(result.model).quant_state().items():
        for key, value in values.items():
            out[f"q:{site}:{key}"] = np.asarray(value, np.float32)
    out["steps"] = np.array([row.steps for row in result.report.stages])
    return out


def run(scenario: str, model, calib=None):
    import slimkit

    x, y = data()
    return slimkit.compress(model, RECIPES[scenario], train_data=(x, y), calib_data=calib, verbose=False)


def mirrored(out: Path) -> dict:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():  # a model built under the strategy: model.distribute_strategy
        model = build_model()
    result = run("magnitude", model)
    np.savez(out / "mirrored_magnitude.npz", **state(result))
    with strategy.scope():  # a plain model, compressed while the strategy is in scope
        plain = build_model()
    result = run("qat", plain)
    np.savez(out / "mirrored_qat.npz", **state(result))
    return {"replicas": strategy.num_replicas_in_sync, "rank": result.collective.rank,
            "size": result.collective.size}


def multi_worker(out: Path) -> dict:
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    files = out / "files"
    files.mkdir(exist_ok=True)
    done: dict = {}
    with strategy.scope():
        model = build_model()
    result = run("magnitude", model)
    rank = result.collective.rank
    done.update(rank=rank, size=result.collective.size, replicas=strategy.num_replicas_in_sync)
    np.savez(out / f"mwms{rank}_magnitude.npz", **state(result))
    row = result.export_onnx(files / "magnitude.onnx")
    result.report.to_json(files / "magnitude.json")
    done["onnx_row"] = row is not None
    with strategy.scope():
        model = build_model()
    result = run("qat", model)
    np.savez(out / f"mwms{rank}_qat.npz", **state(result))
    result.report.to_json(files / "qat.json")
    x, _ = data()
    half = x[:N // 2] if rank == 0 else x[N // 2:]  # each worker calibrates on its own half
    with strategy.scope():
        model = build_model()
    result = run("calibration", model, calib=half)
    np.savez(out / f"mwms{rank}_calibration.npz", **state(result))
    return done


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    start = time.perf_counter()
    done = mirrored(out) if mode == "mirrored" else multi_worker(out)
    done["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(done))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
