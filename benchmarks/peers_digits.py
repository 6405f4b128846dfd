"""The digits jobs of ``benchmarks/peers.py``: slimkit and a peer from one trained baseline each.

Each framework's digits CNN (examples/digits.py) is trained once (30 epochs, Adam, batch 32); both sides of
a comparison start from those weights and every result is exported to ONNX and measured by the caller
in onnxruntime (test accuracy on the 450 held-out images, file size, latency):

* Keras magnitude pruning: slimkit's ``examples/recipes/prune_80.yaml`` (80% per layer, polynomial over
  the first 60% of 10 epochs, masks every 5 steps, logits dense) against tensorflow-model-optimization's
  ``prune_low_magnitude`` on the tf_keras twin with the same schedule, epochs, batch and optimizer
  (``PolynomialDecay``, ``UpdatePruningStep``, ``strip_pruning``); the pruned tf_keras weights are put into
  the Keras 3 model and exported by the same exporter.
* PyTorch magnitude pruning: the same recipe against ``torch.nn.utils.prune.l1_unstructured`` (80% of
  conv1, conv2, fc1 at once, the tutorial flow), fine-tuned 10 epochs with its masks, then ``prune.remove``.
* Keras QAT: slimkit's ``qat`` stage against tfmot's ``quantize_model``, both ``quantization.py``'s
  settings (QAT_EPOCHS, QAT_BATCH, QAT_LR); tfmot's model goes to ONNX through tf2onnx (QDQ).
* Keras 3's own ``model.quantize("int8")`` (Dense layers only: Conv2D has no int8 mode) against
  slimkit's ``dynamic`` int8 of the same Dense layers (int8 weights, activations quantized per run, the
  nearest slimkit method); Keras' quantized model is exported by ``model.export(format="onnx")``.

The tfmot parts run in one fresh interpreter with ``TF_USE_LEGACY_KERAS=1`` (:func:`tf_keras_worker`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))

import machine  # noqa: E402
from quantization import QAT_BATCH, QAT_EPOCHS, QAT_LR, short_error  # noqa: E402

PRUNE_RECIPE = HERE.parent / "examples" / "recipes" / "prune_80.yaml"
PRUNED = ("conv1", "conv2", "fc1")  # the recipe's layers: conv and dense, logits excluded
SPARSITY, EPOCHS, BATCH, LR, END, EVERY = 0.8, 10, 32, 1e-3, 0.6, 5  # prune_80.yaml, read back in check_recipe
BASE_EPOCHS = 30
WORKER_FLAG = "--tf-keras-worker"
RESULT_TAG = "PEERS_TF_RESULT "


def check_recipe() -> None:
    """Fails loudly when prune_80.yaml no longer says what the tfmot and torch sides are set up to match."""
    import yaml

    doc = yaml.safe_load(PRUNE_RECIPE.read_text())
    prune = doc["stages"][0]["prune"]
    got = (prune["sparsity"], doc["fine_tune"]["epochs"], doc["fine_tune"]["batch_size"],
           doc["fine_tune"]["learning_rate"], prune["schedule"]["end"], prune["schedule"]["every"])
    if got != (SPARSITY, EPOCHS, BATCH, LR, END, EVERY):
        raise SystemExit(f"{PRUNE_RECIPE} changed: {got}; update peers_digits.py to match")


def sparsity(arrays: list[np.ndarray]) -> float:
    return float(sum(int(np.sum(a == 0)) for a in arrays) / sum(a.size for a in arrays))


# ------------------------------------------------------------------------------------- tf_keras side
def tf_keras_worker(job: dict[str, Any]) -> dict[str, Any]:
    """tfmot pruning and QAT of the tf_keras twin, from the Keras 3 baseline's weights (fresh process)."""
    import tensorflow as tf
    import tf_keras

    sys.modules["keras"] = tf_keras  # digits.build's ``import keras`` gets the Keras 2 API tfmot needs
    import digits
    import tensorflow_model_optimization as tfmot

    train, _ = digits.load("keras")
    base = [np.asarray(a) for a in np.load(job["weights"]).values()]
    out: dict[str, Any] = {"tfmot": tfmot.__version__, "tf_keras": tf_keras.__version__}
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    steps = EPOCHS * -(-len(train[1]) // BATCH)

    def tfmot_prune() -> Any:
        model = digits.build("keras")
        model.set_weights(base)
        tf_keras.utils.set_random_seed(0)
        sched = tfmot.sparsity.keras.PolynomialDecay(0.0, SPARSITY, begin_step=0, end_step=int(END * steps),
                                                     frequency=EVERY)
        wrap = lambda layer: (tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=sched)  # noqa: E731
                              if layer.name in PRUNED else layer)
        pruned = tf_keras.models.clone_model(model, clone_function=wrap)
        pruned.compile(optimizer=tf_keras.optimizers.Adam(LR), loss=loss)
        pruned.fit(*train, batch_size=BATCH, epochs=EPOCHS, verbose=0, shuffle=True,
                   callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
        return tfmot.sparsity.keras.strip_pruning(pruned)

    def tfmot_qat() -> Any:  # quantize_model + compile + fit, as slimkit's compress() does all three
        model = digits.build("keras")
        model.set_weights(base)
        tf_keras.utils.set_random_seed(0)
        qat = tfmot.quantization.keras.quantize_model(model)
        qat.compile(optimizer=tf_keras.optimizers.Adam(QAT_LR), loss=loss)
        qat.fit(*train, batch_size=QAT_BATCH, epochs=QAT_EPOCHS, verbose=0, shuffle=True)
        return qat

    final, out["prune_seconds"], out["prune_other_cores"], out["prune_all_seconds"] = fastest(tfmot_prune, job["runs"])
    np.savez(job["pruned"], *final.get_weights())
    qat, out["qat_seconds"], out["qat_other_cores"], out["qat_all_seconds"] = fastest(tfmot_qat, job["runs"])
    try:  # tf2onnx turns tfmot's FakeQuant ops into QuantizeLinear/DequantizeLinear
        import tf2onnx

        start = time.perf_counter()
        spec = (tf.TensorSpec((None, 8, 8, 1), tf.float32, name="x"),)
        proto, _ = tf2onnx.convert.from_keras(qat, input_signature=spec, opset=17)
        Path(job["qat_onnx"]).write_bytes(proto.SerializeToString())
        out["qat_export_seconds"] = time.perf_counter() - start
    except Exception as exc:
        out["qat_error"] = short_error(exc)
    return out


def run_tf_keras(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(HERE / "peers.py"), WORKER_FLAG, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-300:]
    return {"error": f"tf_keras worker exit {proc.returncode}: {tail}"}


# -------------------------------------------------------------------------------- in-process parts
class Clock:
    """Seconds of the compression step alone (exports and accuracy checks are not timed)."""

    def __enter__(self) -> "Clock":
        self.start, self.load = time.perf_counter(), machine.OtherLoad()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds, self.other_cores = time.perf_counter() - self.start, self.load.cores()

    def record(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "other_cores": self.other_cores}


def attempt(path: Path, fn: Any, runs: int = 1) -> dict[str, Any]:
    """The fastest of ``runs`` calls of ``fn`` (its dict: ``seconds`` and extras) with the ONNX ``path`` it
    wrote (by the last call; every call computes the same, seeded), or the error.

    On a shared machine one run can be slowed several-fold by other work; the fastest is the least disturbed."""
    try:
        done = [fn() for _ in range(max(1, runs))]
    except Exception as exc:
        return {"error": short_error(exc)}
    return {"onnx": str(path), **min(done, key=lambda r: r["seconds"]), "all_seconds": [r["seconds"] for r in done]}


def fastest(fn: Any, runs: int) -> tuple[Any, float, float | None, list[float]]:
    """``fn()``'s value, seconds and other processes' cores of the fastest of ``runs`` calls, all seconds."""
    best, times = None, []
    for _ in range(max(1, runs)):
        start, load = time.perf_counter(), machine.OtherLoad()
        value = fn()
        seconds = time.perf_counter() - start
        times.append(seconds)
        if best is None or seconds < best[1]:
            best = (value, seconds, load.cores())
    return (*best, times)


def keras_jobs(work: Path, runs: int = 1) -> dict[str, Any]:
    """Keras 3 baseline, slimkit's three Keras jobs, Keras' own int8, then the tfmot worker.

    Returns ``{job: {"slimkit"|"peer": {"onnx": path, "seconds": s, ...} or {"error": text}}}``, the fp32
    file under ``"fp32"`` and versions under ``"info"``."""
    import warnings

    import keras

    import digits
    import slimkit

    train, test = digits.load("keras")
    base = digits.build("keras")
    digits.train("keras", base, train, epochs=BASE_EPOCHS)
    np.savez(work / "keras_base.npz", *base.get_weights())
    slimkit.export_onnx(base, work / "keras_fp32.onnx", sample=test[0][:16])
    jobs: dict[str, Any] = {"fp32": {"onnx": str(work / "keras_fp32.onnx")}}

    def slim_prune() -> dict[str, Any]:
        with Clock() as clock:
            res = slimkit.compress(base, slimkit.Recipe.load(PRUNE_RECIPE), train_data=train, verbose=False)
        res.export_onnx(work / "keras_prune_slimkit.onnx")
        return {**clock.record(),
                "sparsity": sparsity([res.model.get_layer(n).kernel.numpy() for n in PRUNED])}

    def slim_qat() -> dict[str, Any]:
        recipe = {"version": 1, "seed": 0, "stages": [{"quantize": {"method": "qat"}}],
                  "fine_tune": {"epochs": QAT_EPOCHS, "batch_size": QAT_BATCH, "learning_rate": QAT_LR}}
        with Clock() as clock:
            res = slimkit.compress(base, recipe, train_data=train, verbose=False)
        res.export_onnx(work / "keras_qat_slimkit.onnx")
        return clock.record()

    def slim_dynamic() -> dict[str, Any]:
        recipe = {"version": 1, "stages": [{"quantize": {"method": "dynamic", "layers": {"kinds": ["dense"]}}}]}
        with Clock() as clock:
            res = slimkit.compress(base, recipe, calib_data=train[0][:64], verbose=False)
        res.export_onnx(work / "keras_int8_slimkit.onnx")
        return clock.record()

    def keras_int8() -> dict[str, Any]:
        with Clock() as clock:  # the copy is part of it: quantize() changes the model in place
            copy = keras.models.clone_model(base)
            copy.set_weights(base.get_weights())
            with warnings.catch_warnings():  # "Layer Conv2D does not have a `quantize` method": expected
                warnings.simplefilter("ignore")
                copy.quantize("int8")
        copy(test[0][:1])  # export needs a model that has been called
        copy.export(str(work / "keras_int8_keras.onnx"), format="onnx", verbose=False)
        return clock.record()

    jobs["prune"] = {"slimkit": attempt(work / "keras_prune_slimkit.onnx", slim_prune, runs)}
    jobs["qat"] = {"slimkit": attempt(work / "keras_qat_slimkit.onnx", slim_qat, runs)}
    jobs["int8"] = {"slimkit": attempt(work / "keras_int8_slimkit.onnx", slim_dynamic, runs),
                    "peer": attempt(work / "keras_int8_keras.onnx", keras_int8, runs)}

    tf_job = {"weights": str(work / "keras_base.npz"), "pruned": str(work / "keras_prune_tfmot.npz"),
              "qat_onnx": str(work / "keras_qat_tfmot.onnx"), "runs": runs}
    tf_res = run_tf_keras(tf_job)
    jobs["info"] = {"keras": keras.__version__, **{k: v for k, v in tf_res.items() if k in ("tfmot", "tf_keras")}}
    if "error" in tf_res:
        jobs["prune"]["peer"] = jobs["qat"]["peer"] = {"error": tf_res["error"]}
        return jobs

    def tfmot_pruned() -> dict[str, Any]:
        model = digits.build("keras")  # tfmot's stripped weights, exported by the same exporter as slimkit's
        model.set_weights([np.asarray(a) for a in np.load(tf_job["pruned"]).values()])
        slimkit.export_onnx(model, work / "keras_prune_tfmot.onnx", sample=test[0][:16])
        return {"seconds": tf_res["prune_seconds"], "other_cores": tf_res["prune_other_cores"],
                "all_seconds": tf_res["prune_all_seconds"],
                "sparsity": sparsity([model.get_layer(n).kernel.numpy() for n in PRUNED])}

    def tfmot_qat() -> dict[str, Any]:
        if "qat_error" in tf_res:
            raise RuntimeError(tf_res["qat_error"])
        return {"seconds": tf_res["qat_seconds"], "other_cores": tf_res["qat_other_cores"],
                "all_seconds": tf_res["qat_all_seconds"]}

    jobs["prune"]["peer"] = attempt(work / "keras_prune_tfmot.onnx", tfmot_pruned)
    jobs["qat"]["peer"] = attempt(Path(tf_job["qat_onnx"]), tfmot_qat)
    return jobs


def torch_jobs(work: Path, runs: int = 1) -> dict[str, Any]:
    """PyTorch baseline; slimkit's prune_80 recipe against torch.nn.utils.prune, from the same weights."""
    import copy

    import torch
    from torch.nn.utils import prune

    import digits
    import slimkit

    train, test = digits.load("torch")
    base = digits.build("torch")
    digits.train("torch", base, train, epochs=BASE_EPOCHS)
    slimkit.export_onnx(base, work / "torch_fp32.onnx", sample=test[0][:16])

    def slim() -> dict[str, Any]:
        with Clock() as clock:
            res = slimkit.compress(base, slimkit.Recipe.load(PRUNE_RECIPE), train_data=train, verbose=False)
        res.export_onnx(work / "torch_prune_slimkit.onnx")
        return {**clock.record(),
                "sparsity": sparsity([getattr(res.model, n).weight.detach().numpy() for n in PRUNED])}

    def theirs() -> dict[str, Any]:
        with Clock() as clock:
            model = copy.deepcopy(base)
            for name in PRUNED:
                prune.l1_unstructured(getattr(model, name), "weight", amount=SPARSITY)
            digits.train("torch", model, train, epochs=EPOCHS)  # the masks' hooks keep pruned weights at zero
            for name in PRUNED:
                prune.remove(getattr(model, name), "weight")
        slimkit.export_onnx(model, work / "torch_prune_torch.onnx", sample=test[0][:16])
        return {**clock.record(),
                "sparsity": sparsity([getattr(model, n).weight.detach().numpy() for n in PRUNED])}

    return {"fp32": {"onnx": str(work / "torch_fp32.onnx")},
            "prune": {"slimkit": attempt(work / "torch_prune_slimkit.onnx", slim, runs),
                      "peer": attempt(work / "torch_prune_torch.onnx", theirs, runs)},
            "info": {"torch": torch.__version__}}
