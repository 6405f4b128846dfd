"""Int8 quantization benchmark: onnxruntime quantize_static vs slimkit, and tfmot QAT vs slimkit QAT.

Post-training (ResNet50- and MobileNetV2-shaped models, Keras and PyTorch, untrained weights): each
model is exported once to fp32 ONNX with ``slimkit.export_onnx``; that same file is quantized by
onnxruntime (``quant_pre_process``, then ``quantize_static``: QDQ, per-channel int8 weights, uint8
activations, MinMax on fixed random images; for ResNet50 with reduce_range off and on), and slimkit
quantizes the model through ``slimkit.compress`` (a static ``quantize`` stage) and ``export_onnx``.
Every file is measured in onnxruntime in the same process: size, median latency at batch 1, and
agreement with the fp32 file on a fixed batch (max abs diff, top-1 agreement). Weights are random, so
agreement is all that can be compared. Agreement is taken on the logits (before the final softmax of
the Keras applications: an untrained softmax is flat and quantizes to ties).

QAT (digits CNN of examples/digits.py): tensorflow_model_optimization's ``quantize_model`` on the
tf_keras copy of the model (run in a subprocess, which needs ``TF_USE_LEGACY_KERAS=1`` before
tensorflow is imported) vs slimkit's ``qat`` stage on the Keras 3 model: accuracy fp32 vs QAT and
mean fine-tune step time.

Anything slimkit cannot do yet is printed as ``n/a (error: ...)`` and the other columns still run.

Run:  python benchmarks/quantization.py [--models resnet50,mobilenet_v2] [--frameworks keras,torch]
          [--runs 30] [--skip-qat] [--quick] [--wait-idle 120] [--out benchmarks/results/quantization.md]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

import numpy as np  # noqa: E402

import slimkit  # noqa: E402
from slimkit.deploy.bench import latency_ms  # noqa: E402

from structured import MODELS, build  # noqa: E402  (same models, seeds and layouts as the pruning benchmark)
import machine  # noqa: E402  (OtherLoad: other processes' CPU during a timing)

FRAMEWORKS = ("keras", "torch")
# slimkit's post-training recipe; ORT's quantize_static below is configured to match it.
PTQ_RECIPE = {"version": 1, "stages": [{"quantize": {
    "method": "static", "weights": {"bits": 8, "per_channel": True},
    "activations": {"bits": 8, "calibration": "minmax", "samples": 32}}}]}
QAT_EPOCHS = 2
QAT_BATCH = 64  # slimkit's fine_tune default batch size; tfmot is fine-tuned with the same
QAT_LR = 1e-3
IDLE_CORES = 0.3  # other processes' CPU use (in cores) below which the machine counts as quiet
WORKER_FLAG = "--tfmot-worker"  # internal: runs the tf_keras/tfmot part in a fresh interpreter
RESULT_TAG = "QUANT_BENCH_RESULT "


# ------------------------------------------------------------------------------------------- helpers
def short_error(exc: BaseException, limit: int = 90) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return f"n/a (error: {text[:limit] + '...' if len(text) > limit else text})"


def cpu_info() -> dict[str, Any]:
    flags: set[str] = set()
    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"name": name, "cores": os.cpu_count(), "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags}


def versions() -> dict[str, str]:
    out = {}
    for dist in ("onnxruntime", "onnx", "torch", "tensorflow", "keras", "tf_keras", "tf2onnx",
                 "tensorflow-model-optimization"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def header(args: argparse.Namespace, cpu: dict[str, Any]) -> str:
    isa = ", ".join(k for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if cpu[k]) or "no AVX2"
    vers = ", ".join(f"{k} {v}" for k, v in versions().items())
    return (f"# benchmarks/quantization.py, {datetime.date.today().isoformat()}, {cpu['name']} "
            f"({cpu['cores']} cores; {isa}), batch 1, {args.size}x{args.size}, untrained weights, "
            f"ORT intra-op threads: default (as structured.py); latency = median of {args.runs} timed runs, "
            f"split over {args.rounds} interleaved rounds (5 warm-up runs each)\n\n"
            f"Versions: {vers}")


def ort_logits(path: str, x: np.ndarray) -> np.ndarray:
    """The file's output for ``x``, taken before a final Softmax when there is one (Keras applications).

    An untrained network's softmax is nearly flat (~1/1000 everywhere); uint8 output quantization turns
    it into ties, so top-1 on probabilities says nothing. The logits feeding the Softmax are compared
    instead; the file that is timed is not modified."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(path)
    producer = {out: node for node in model.graph.node for out in node.output}
    final = producer.get(model.graph.output[0].name)
    while final is not None and final.op_type in ("QuantizeLinear", "DequantizeLinear"):
        final = producer.get(final.input[0])  # a QDQ file quantizes the softmax output too
    if final is not None and final.op_type == "Softmax":
        del model.graph.output[:]
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(final.input[0]))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0])


def agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    ref, out = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
    return {"max_abs_diff": float(np.max(np.abs(ref - out))),
            "rel_diff": float(np.max(np.abs(ref - out)) / max(float(np.max(np.abs(ref))), 1e-12)),
            "top1": float(np.mean(ref.argmax(1) == out.argmax(1)))}


# --------------------------------------------------------------------------------- post-training int8
def ort_quantize(fp32: Path, out: Path, calib: np.ndarray, reduce_range: bool, work: Path) -> str:
    """ORT's recommended flow: quant_pre_process (shape inference + optimisation), then quantize_static.

    Returns a note ("" or why pre-processing was skipped)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib[i:i + 1] for i in range(len(calib)))  # batch 1, as deployed

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {self.name: item}

    import onnx

    Reader.name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    pre, note = work / f"{fp32.stem}.pre.onnx", ""
    try:
        quant_pre_process(str(fp32), str(pre))
    except Exception as exc:  # fall back to the raw export rather than losing the column
        pre, note = fp32, f"quant_pre_process failed ({type(exc).__name__}), raw export quantized"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return note


def slimkit_quantize(model: Any, out: Path, calib: np.ndarray) -> None:
    recipe = json.loads(json.dumps(PTQ_RECIPE))
    recipe["stages"][0]["quantize"]["activations"]["samples"] = len(calib)
    res = slimkit.compress(model, recipe, calib_data=calib, verbose=False)
    res.export_onnx(out)


def wait_idle(limit_s: float, threshold: float = IDLE_CORES) -> None:
    """Waits (at most ``limit_s``) until other processes use less than ``threshold`` cores for a second."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        probe = machine.OtherLoad()
        time.sleep(1.0)
        used = probe.cores()
        if used is None or used < threshold:
            return
    log(f"machine still busy after {limit_s:.0f}s; timing anyway")


def time_files(files: dict[str, dict[str, Any]], x: np.ndarray, args: argparse.Namespace) -> float | None:
    """Fills ``latency_ms`` of every file; returns the cores other processes used meanwhile.

    The variants are interleaved over rounds so drift hits them alike. With ``--wait-idle`` the timing
    waits for a quiet machine and is repeated (up to 3 times) when other processes got busy meanwhile;
    the attempt with the least interference is kept."""
    best: tuple[float, dict[str, float]] | None = None
    for _attempt in range(3 if args.wait_idle else 1):
        if args.wait_idle:
            wait_idle(args.wait_idle)
        busy = machine.OtherLoad()
        lat: dict[str, list[float]] = {label: [] for label, f in files.items() if "error" not in f}
        for _ in range(max(1, args.rounds)):
            for label in lat:
                lat[label].append(latency_ms(str(files[label]["path"]), x, repeats=max(1, args.runs // args.rounds)))
        other = busy.cores()
        score = float("inf") if other is None else other
        if best is None or score < best[0]:
            best = (score, {label: float(np.median(v)) for label, v in lat.items()})
        if other is not None and other < IDLE_CORES:
            break
        log(f"other processes used {score:.2f} cores while timing")
    assert best is not None
    for label, ms in best[1].items():
        files[label]["latency_ms"] = ms
    return None if best[0] == float("inf") else best[0]


def run_ptq(args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    calib_nhwc = rng.normal(size=(args.calib, args.size, args.size, 3)).astype(np.float32)
    eval_nhwc = np.random.default_rng(2).normal(size=(args.eval_batch, args.size, args.size, 3)).astype(np.float32)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for framework in args.frameworks:
            for name in args.models:
                tag = f"{framework}_{name}"
                log(f"{tag}: building and exporting fp32")
                model, sample = build(framework, name, args.size)
                layout = (lambda a: a) if framework == "keras" else (lambda a: a.transpose(0, 3, 1, 2).copy())
                calib, xeval = layout(calib_nhwc), layout(eval_nhwc)
                fp32 = work / f"{tag}.onnx"
                slimkit.export_onnx(model, fp32, sample=sample[:2])
                variants: list[tuple[str, Callable[[Path], str | None]]] = [("fp32", lambda p: None)]
                for rr in ((False, True) if name == "resnet50" or args.reduce_range_all else (False,)):
                    variants.append((f"ORT QDQ rr={'on' if rr else 'off'}",
                                     lambda p, rr=rr: ort_quantize(fp32, p, calib, rr, work)))
                variants.append(("slimkit int8", lambda p: slimkit_quantize(model, p, calib)))

                files: dict[str, dict[str, Any]] = {}
                for label, make in variants:
                    path = fp32 if label == "fp32" else work / f"{tag}_{label.split()[0]}_{len(files)}.onnx"
                    start = time.perf_counter()
                    try:
                        note = make(path)
                        files[label] = {"path": path, "seconds": time.perf_counter() - start, "note": note or ""}
                    except Exception as exc:  # slimkit's quantizer is still being built
                        files[label] = {"error": short_error(exc)}
                        log(f"{tag}: {label} failed: {files[label]['error']}")
                ref = ort_logits(str(fp32), xeval)
                for label, f in files.items():
                    if "error" not in f:
                        f.update(agreement(ref, ort_logits(str(f["path"]), xeval)))
                        f["bytes"] = f["path"].stat().st_size
                other = time_files(files, xeval[:1], args)
                for label, f in files.items():
                    row = {"model": name, "framework": framework, "variant": label, "other_cpu": other}
                    if "error" in f:
                        row["error"] = f["error"]
                    else:
                        row.update({k: v for k, v in f.items() if k != "path"})
                    rows.append(row)
                log(f"{tag}: " + ", ".join(f"{r['variant']} {r.get('latency_ms', float('nan')):.2f} ms"
                                           for r in rows if r["model"] == name and r["framework"] == framework)
                    + f" (other processes used {other if other is not None else float('nan'):.2f} cores meanwhile)")
                del model
    return rows


def ptq_tables(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | framework | variant | ONNX MB | ORT ms (batch 1) | speedup vs fp32 | max abs diff "
             "| rel diff | top-1 agree | quantize s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    base = {(r["model"], r["framework"]): r for r in rows if r["variant"] == "fp32" and "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['framework']} | {r['variant']} | {r['error']} | | | | | | |")
            continue
        b = base.get((r["model"], r["framework"]))
        speed = f"{b['latency_ms'] / r['latency_ms']:.2f}" if b else "n/a"
        quant_s = "-" if r["variant"] == "fp32" else f"{r['seconds']:.1f}"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {r['model']} | {r['framework']} | {r['variant']}{note} | {r['bytes'] / 2**20:.1f} | "
                     f"{r['latency_ms']:.2f} | {speed} | {r['max_abs_diff']:.3g} | {r['rel_diff']:.3g} | "
                     f"{r['top1']:.0%} | {quant_s} |")
    lines += ["", "| model | framework | ORT int8 speedup (rr off) | ORT int8 speedup (rr on) | slimkit int8 speedup "
              "| slimkit ms / ORT int8 ms (rr off) | other CPU load while timing (cores) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for (model, framework), b in base.items():
        get = {r["variant"]: r for r in rows if r["model"] == model and r["framework"] == framework}

        def speedup(label: str) -> str:
            r = get.get(label)
            if r is None:
                return "-"
            return r["error"] if "error" in r else f"{b['latency_ms'] / r['latency_ms']:.2f}"

        ort, slim = get.get("ORT QDQ rr=off"), get.get("slimkit int8")
        if slim is not None and "error" in slim:
            vs = "n/a (slimkit failed)"
        elif ort is None or "error" in ort or slim is None:
            vs = "n/a"
        else:
            vs = f"{slim['latency_ms'] / ort['latency_ms']:.2f}"
        lines.append(f"| {model} | {framework} | {speedup('ORT QDQ rr=off')} | {speedup('ORT QDQ rr=on')} | "
                     f"{speedup('slimkit int8')} | {vs} | "
                     f"{'n/a' if b.get('other_cpu') is None else format(b['other_cpu'], '.2f')} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- QAT
class _StepTimer:
    """Mixin body for a Keras callback: wall time per training batch (the first, tracing, is dropped)."""

    def on_train_batch_begin(self, batch, logs=None):  # noqa: ANN001
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):  # noqa: ANN001
        self.times.append(time.perf_counter() - self._t)

    def mean_ms(self) -> float:
        times = self.times[1:] if len(self.times) > 1 else self.times
        return float(np.mean(times) * 1e3)


def step_timer(keras_module: Any) -> Any:
    cls = type("StepTimer", (_StepTimer, keras_module.callbacks.Callback), {})
    timer = cls()
    timer.times = []
    return timer


def accuracy(model: Any, data: tuple[np.ndarray, np.ndarray]) -> float:
    x, y = data
    return float(np.mean(np.argmax(np.asarray(model.predict(x, verbose=0)), axis=-1) == y))


def fp32_step_ms(keras_module: Any, model: Any, data: tuple[np.ndarray, np.ndarray]) -> float:
    """Mean step time of fine-tuning a copy of the fp32 model, same batch size and optimizer (reference)."""
    copy = keras_module.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(optimizer=keras_module.optimizers.Adam(QAT_LR),
                 loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=True))
    timer = step_timer(keras_module)
    copy.fit(*data, batch_size=QAT_BATCH, epochs=1, verbose=0, callbacks=[timer])
    return timer.mean_ms()


def tfmot_worker(options: dict[str, Any]) -> dict[str, Any]:
    """Runs inside a subprocess started with TF_USE_LEGACY_KERAS=1: tf_keras baseline + tfmot QAT."""
    import tensorflow as tf
    import tf_keras

    # examples/digits.py builds and trains with ``import keras``; point it at tf_keras (the Keras 2
    # API tfmot needs) so the very same model definition and training loop are used.
    sys.modules["keras"] = tf_keras
    import digits
    import tensorflow_model_optimization as tfmot

    out: dict[str, Any] = {"tensorflow": tf.__version__, "tfmot": tfmot.__version__}
    train, test = digits.load("keras")
    model = digits.build("keras")
    digits.train("keras", model, train, epochs=options["base_epochs"])
    out["fp32_acc"] = accuracy(model, test)
    out["fp32_step_ms"] = fp32_step_ms(tf_keras, model, train)

    tf_keras.utils.set_random_seed(0)
    start = time.perf_counter()
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.compile(optimizer=tf_keras.optimizers.Adam(QAT_LR),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    instrument = time.perf_counter() - start
    out["qat_acc_before_ft"] = accuracy(qat, test)
    timer = step_timer(tf_keras)
    start = time.perf_counter()
    qat.fit(*train, batch_size=QAT_BATCH, epochs=options["qat_epochs"], verbose=0, shuffle=True, callbacks=[timer])
    out["qat_seconds"] = instrument + time.perf_counter() - start  # quantize_model + compile + fit
    out["qat_steps"] = len(timer.times)
    out["qat_step_ms"] = timer.mean_ms()
    out["qat_acc"] = accuracy(qat, test)
    try:  # what the QAT model becomes when deployed: a TFLite int8 model
        converter = tf.lite.TFLiteConverter.from_keras_model(qat)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        interp = tf.lite.Interpreter(model_content=converter.convert())
        interp.allocate_tensors()
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        hits = 0
        for xi, yi in zip(*test):
            interp.set_tensor(inp["index"], xi[None].astype(inp["dtype"]))
            interp.invoke()
            hits += int(np.argmax(interp.get_tensor(outp["index"])) == yi)
        out["tflite_int8_acc"] = hits / len(test[1])
    except Exception as exc:
        out["tflite_int8_acc"] = short_error(exc, 60)
    return out


def run_tfmot(options: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    try:
        proc = subprocess.run([sys.executable, __file__, WORKER_FLAG, json.dumps(options)], env=env,
                              capture_output=True, text=True, timeout=1800)
    except Exception as exc:
        return {"error": short_error(exc)}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"n/a (error: subprocess exit {proc.returncode}: {tail[:90]})"}


def run_slimkit_qat(options: dict[str, Any]) -> dict[str, Any]:
    import keras

    import digits

    out: dict[str, Any] = {"keras": keras.__version__}
    train, test = digits.load("keras")
    model = digits.build("keras")
    digits.train("keras", model, train, epochs=options["base_epochs"])
    out["fp32_acc"] = accuracy(model, test)
    out["fp32_step_ms"] = fp32_step_ms(keras, model, train)
    recipe = {"version": 1, "fine_tune": {"epochs": options["qat_epochs"], "batch_size": QAT_BATCH,
                                          "learning_rate": QAT_LR},
              "stages": [{"quantize": {"method": "qat"}}]}
    try:
        start = time.perf_counter()
        res = slimkit.compress(model, recipe, train_data=train, eval_data=test, verbose=False)
        seconds = time.perf_counter() - start
        try:
            out["qat_acc"] = accuracy(res.model, test)
        except Exception:
            out["qat_acc"] = float(res.report.metrics_after["accuracy"])
        stage = res.report.stages[0] if res.report.stages else None
        if stage is not None and getattr(stage, "steps", 0):
            out["qat_seconds"], out["qat_steps"] = float(stage.seconds), int(stage.steps)
        else:  # the whole compress() call over the steps it must have run
            out["qat_seconds"] = seconds
            out["qat_steps"] = options["qat_epochs"] * math.ceil(len(train[1]) / QAT_BATCH)
        # slimkit's built-in loop exposes no per-step hook, so there is no steady-state step time.
        out["qat_step_ms"] = "n/a (no per-step hook)"
        try:  # what the QAT model becomes when deployed: slimkit's int8 ONNX in onnxruntime
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "digits_qat.onnx"
                res.export_onnx(path)
                logits = ort_logits(str(path), test[0])
                out["onnx_int8_acc"] = float(np.mean(logits.argmax(-1) == test[1]))
        except Exception as exc:
            out["onnx_int8_acc"] = short_error(exc, 60)
    except Exception as exc:
        out["error"] = short_error(exc)
    return out


def qat_table(tfmot_res: dict[str, Any], slim_res: dict[str, Any], options: dict[str, Any]) -> str:
    lines = [f"QAT on the digits CNN (examples/digits.py): baseline {options['base_epochs']} epochs (batch 32), "
             f"then QAT fine-tune {options['qat_epochs']} epochs, batch {QAT_BATCH}, Adam {QAT_LR}; "
             "test accuracy on 450 images. QAT s: tfmot = quantize_model + compile + fit; slimkit = the QAT "
             "stage's seconds from its report (instrumenting, calibrating and training); ms/step incl. setup = "
             "QAT s / steps, the like-for-like number. Steady step ms: per-batch wall time, first (tracing) "
             "step dropped (slimkit's loop has no per-step hook). fp32 step ms: one epoch of plain fine-tuning, "
             "same batch size and optimizer, measured the same way as steady step ms.",
             "",
             "| framework | method | fp32 acc | QAT acc (fake-quant) | int8 deployed acc | QAT s (steps) "
             "| ms/step incl. setup | steady step ms | fp32 step ms | steady QAT/fp32 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(v: Any, pct: bool = False) -> str:
        if isinstance(v, (int, float)):
            return f"{v:.1%}" if pct else f"{v:.2f}"
        return str(v) if v is not None else "-"

    for label, fw, r, deployed in (
            (f"tfmot {tfmot_res.get('tfmot', '?')} quantize_model", "tf_keras", tfmot_res, "tflite_int8_acc"),
            ("slimkit qat", f"keras {slim_res.get('keras', '?')}", slim_res, "onnx_int8_acc")):
        if "fp32_acc" not in r:
            lines.append(f"| {fw} | {label} | {r.get('error', 'n/a')} | | | | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {fw} | {label} | {fmt(r['fp32_acc'], True)} | {r['error']} | | | | | "
                         f"{fmt(r['fp32_step_ms'])} | |")
            continue
        steady = isinstance(r.get("qat_step_ms"), float) and r.get("fp32_step_ms")
        ratio = r["qat_step_ms"] / r["fp32_step_ms"] if steady else None
        where = " (TFLite)" if "tflite" in deployed else " (ORT)"
        dep = fmt(r.get(deployed), True) + (where if isinstance(r.get(deployed), float) else "")
        lines.append(f"| {fw} | {label} | {fmt(r['fp32_acc'], True)} | {fmt(r['qat_acc'], True)} | {dep} | "
                     f"{r['qat_seconds']:.2f} ({r['qat_steps']}) | {r['qat_seconds'] / r['qat_steps'] * 1e3:.1f} | "
                     f"{fmt(r['qat_step_ms'])} | {fmt(r['fp32_step_ms'])} | {fmt(ratio)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return items
    return parse


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [WORKER_FLAG]:
        print(RESULT_TAG + json.dumps(tfmot_worker(json.loads(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=csv(MODELS), default=list(MODELS), help="comma-separated")
    parser.add_argument("--frameworks", type=csv(FRAMEWORKS), default=list(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per file (after 5 warm-up runs each round)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the runs are split over")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calib", type=int, default=32, help="calibration images (fixed random)")
    parser.add_argument("--eval-batch", type=int, default=32, help="images for fp32 agreement")
    parser.add_argument("--reduce-range-all", action="store_true", help="reduce_range on/off for every model, "
                        "not only ResNet50")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="on a shared machine: wait up to S seconds for other processes to go quiet before "
                        "timing each model, and re-time (up to 3 tries) when they got busy meanwhile")
    parser.add_argument("--skip-qat", action="store_true", help="skip the digits QAT comparison")
    parser.add_argument("--skip-ptq", action="store_true", help="skip the ResNet50/MobileNetV2 comparison")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64x64 inputs, few runs and images, "
                        "short training")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.runs, args.rounds, args.calib, args.eval_batch = 64, 3, 1, 4, 4
    qat_options = {"base_epochs": 3 if args.quick else 30, "qat_epochs": 1 if args.quick else QAT_EPOCHS}

    parts = [header(args, cpu_info())]
    if not args.skip_ptq:
        rows = run_ptq(args)
        parts.append(f"Post-training int8 (QDQ, per-channel int8 weights, uint8 activations, MinMax on "
                     f"{args.calib} fixed random images, quant_pre_process first; rr = reduce_range; top-1 "
                     f"agree and diffs vs the fp32 file on {args.eval_batch} other images, on the logits (before "
                     f"Keras' final softmax); rel diff = max abs diff / max |fp32 logit|)\n\n" + ptq_tables(rows))
    if not args.skip_qat:
        log("QAT: tfmot in a tf_keras subprocess")
        if args.wait_idle:
            wait_idle(args.wait_idle)
        tfmot_res = run_tfmot(qat_options)
        log(f"QAT: tfmot -> {tfmot_res}")
        log("QAT: slimkit on Keras 3")
        if args.wait_idle:
            wait_idle(args.wait_idle)
        slim_res = run_slimkit_qat(qat_options)
        log(f"QAT: slimkit -> {slim_res}")
        parts.append(qat_table(tfmot_res, slim_res, qat_options))
    text = "\n\n".join(parts) + "\n"
    print("\n" + text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
