"""Coverage sweep: every operation of slimkit on a zoo of real architectures, one outcome per case.

Models (benchmarks/zoo_models.py, random weights, batch-norm statistics re-estimated on the sweep's
data): keras.applications (EfficientNetB0, MobileNetV3Small, ConvNeXtTiny, DenseNet121, ResNet50V2,
InceptionV3, Xception, NASNetMobile, EfficientNetV2B0, RegNetX002 where this Keras has it), Keras
token models (Embedding + Conv1D, LSTM, GRU, a MultiHeadAttention encoder block), Hugging Face
transformers from small configs (ResNet, MobileNetV2, ConvNeXt, EfficientNet, RegNet, ViT, Swin,
BERT, DistilBERT, RoBERTa, GPT-2) and PyTorch token models (nn.TransformerEncoder, nn.LSTM, nn.GRU).

Operations: ``export`` (float ONNX), ``magnitude`` (50% global, one-shot), ``channel`` (30% L2,
one-shot), ``static`` int8 and, for token models, ``dynamic`` int8; each followed by the export.

Outcome of a case: ``ok`` (faithful), ``refused`` (a SlimkitError, or a SlimkitWarning that the result
fell short) or ``FAILED`` (any other exception, or an unfaithful result nobody warned about).
Faithful: onnxruntime's logits within 1e-3 x max(1, max |logit|) of the framework's (computed here,
and the export row's own figure); magnitude: achieved sparsity of the selected matrices within 5
points of 50%; channel: achieved within 5 points of 30% and at least 15% of the parameters removed;
int8: int8 file < 0.45x the float file (float files over 1 MB) and onnxruntime's int8 logits
correlating > 0.95 (Pearson) with the fp32 model's. Every case runs on a fresh build of its model.
Static cases also run onnxruntime's own quantizer on the same float export (the ``ORT r`` column, a
comparison only; its time is in the case's seconds).

Run:  python benchmarks/zoo.py [--only NAME ...] [--ops export,static] [--out PATH]
A full run writes benchmarks/results/zoo.md; a partial run (--only/--ops) prints its table and writes
a file only when --out is given.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.metadata
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports tensorflow
HERE = Path(__file__).resolve().parent

import numpy as np  # noqa: E402

import slimkit  # noqa: E402
from zoo_models import ModelSpec, framework_logits, model_specs  # noqa: E402,F401  (re-exported for tests)

OPS = ("export", "magnitude", "channel", "static", "dynamic")
RECIPES: dict[str, dict[str, Any]] = {
    "magnitude": {"fine_tune": None, "stages": [{"prune": {"sparsity": 0.5, "scope": "global"}}]},
    "channel": {"fine_tune": None, "stages": [{"prune": {"method": "channel", "sparsity": 0.3, "criterion": "l2"}}]},
    "static": {"stages": [{"quantize": {"method": "static", "activations": {"samples": 16}}}]},
    "dynamic": {"stages": [{"quantize": {"method": "dynamic"}}]},
}
EXPORT_TOL = 1e-3  # relative to max(1, max |logit|)
MAGNITUDE, CHANNEL, MIN_REMOVED, POINTS = 0.5, 0.3, 0.15, 0.05
MAX_INT8_RATIO, MIN_CORRELATION, RATIO_ABOVE_BYTES = 0.45, 0.95, 1_000_000
#: Phrases of compress()'s shortfall warnings (core/compress.py _shortfall); other SlimkitWarnings
#: (a tied layer left float, say) are notes and leave a faithful case ok.
SHORTFALL_PHRASES = ("short of the requested", "less than half the requested")
DEFAULT_OUT = HERE / "results" / "zoo.md"
CASE_TIMEOUT_S = 900  # a case still running then is stopped and FAILED, so that one hang cannot stall the sweep


@dataclass
class Outcome:
    """One case's result: ``status`` is ok, refused, FAILED or n/a; ``reason`` the full text."""

    model: str
    op: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    build_seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # SlimkitWarnings of a case that is still ok
    other_warnings: list[str] = field(default_factory=list)  # python warnings, recorded not printed
    output: str = ""  # what the frameworks printed during the case (C++ logs), kept out of the console

    def line(self) -> str:
        """The console line printed when the case finishes."""
        text = f"{self.model:20s} {self.op:9s} {self.status:7s} {self.seconds:7.1f}s"
        return f"{text}  {one_line(self.reason, 160)}" if self.reason else text


def one_line(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------------------------------- quiet
def quiet_frameworks() -> None:
    """Imports the frameworks with their C++ start-up notices (absl, oneDNN, CUDA stubs) discarded and
    turns their Python loggers down; TF_CPP_MIN_LOG_LEVEL does not reach the absl pre-init messages."""
    with _redirected_fds(os.devnull):
        for name in ("tensorflow", "keras", "tf2onnx", "torch", "transformers", "onnxruntime"):
            with contextlib.suppress(ImportError):
                __import__(name)
    for name in ("tensorflow", "tf2onnx", "absl", "transformers", "torch.onnx", "torch.export", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()


@contextlib.contextmanager
def _redirected_fds(path: str) -> Iterator[None]:
    """Points file descriptors 1 and 2 (C++ and Python output alike) at ``path`` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


# ---------------------------------------------------------------------------------------- checking
def ort_logits(path: Path, x: Any) -> np.ndarray:
    """onnxruntime's first output for ``x`` (one array or a dict by graph input name), float64.

    Written here, not taken from slimkit.deploy, so that the sweep checks slimkit's files independently.
    """
    import onnxruntime as ort

    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    arrays = [x[i.name] for i in inputs] if isinstance(x, dict) else [x]
    feed = {i.name: np.asarray(a).astype(types.get(i.type, np.float32)) for i, a in zip(inputs, arrays)}
    return np.asarray(sess.run(None, feed)[0], dtype=np.float64)


def _compare(ref: np.ndarray, out: np.ndarray, numbers: dict[str, Any], problems: list[str]) -> None:
    """Export fidelity: max abs difference within EXPORT_TOL x max(1, max |ref|)."""
    if out.shape != ref.shape:
        problems.append(f"onnxruntime output shape {out.shape} != framework output shape {ref.shape}")
        return
    tol = EXPORT_TOL * max(1.0, float(np.max(np.abs(ref))))
    diff = float(np.max(np.abs(out - ref)))
    numbers.update(diff=diff, tol=tol)
    if not diff <= tol:
        problems.append(f"onnxruntime logits differ from the framework's by {diff:.3g} > {tol:.3g}")


def _check_prune(op: str, result: Any, numbers: dict[str, Any], problems: list[str]) -> None:
    stage = result.report.stages[0]
    achieved, removed = stage.achieved, stage.params_removed
    numbers.update(achieved=achieved, removed=removed)
    target = MAGNITUDE if op == "magnitude" else CHANNEL
    if achieved is None or abs(achieved - target) > POINTS:
        problems.append(f"achieved sparsity {achieved} is not within {POINTS:.0%} of {target:.0%}")
    if op == "channel" and (removed is None or removed < MIN_REMOVED):
        problems.append(f"params removed {removed} < {MIN_REMOVED:.0%}")


def _check_int8(result: Any, ref: np.ndarray, int8: np.ndarray, numbers: dict[str, Any],
                problems: list[str]) -> None:
    report = result.report
    q = report.quant_exports[-1]
    numbers.update(ratio=q.size_ratio, float_mb=q.float_bytes / 1e6, quantized=len(report.quantized),
                   int_ops=sum(q.integer_ops.values()), int8_rms=q.int8_error, sim_rms=q.simulated_error)
    if not report.quantized:
        problems.append("no layer was quantized")
    if q.float_bytes > RATIO_ABOVE_BYTES and not q.size_ratio < MAX_INT8_RATIO:
        problems.append(f"int8 file is {q.size_ratio:.2f}x the float file (>= {MAX_INT8_RATIO})")
    if int8.shape != ref.shape:
        problems.append(f"int8 output shape {int8.shape} != framework output shape {ref.shape}")
        return
    r = float(np.corrcoef(int8.ravel(), ref.ravel())[0, 1])
    numbers["corr"] = r
    if not r > MIN_CORRELATION:
        # the simulated (fake-quant) model's own correlation tells a poor quantization from a bad export
        sim = numbers.get("sim_corr")
        problems.append(f"int8 logits correlate {r:.3f} <= {MIN_CORRELATION} with the fp32 logits (simulated "
                        f"model's r {_fmt(sim, '.3f')}; RMS error vs fp32: int8 {_fmt(q.int8_error, '.3g')}, "
                        f"simulated {_fmt(q.simulated_error, '.3g')}; max |fp32 logit| {np.max(np.abs(ref)):.3g})")


def ort_reference_corr(model: Any, x: Any, path: Path) -> float | None:
    """Pearson r of onnxruntime's own static int8 (``quant_pre_process`` + ``quantize_static``: QDQ,
    per-channel int8 weights, uint8 activations, MinMax, the sweep's inputs as calibration data) of the
    same float export with the framework's logits: what int8 can do on this model, for comparison."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path, pre, out = (path.with_name(path.stem + s) for s in ("_ref.onnx", "_ref_pre.onnx", "_ref_q.onnx"))
    slimkit.export_onnx(model, float_path, sample=x)
    with contextlib.chdir(path.parent):  # its shape inference leaves temporary files in the working folder
        quant_pre_process(str(float_path), str(pre))
    names = [i.name for i in ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()]
    arrays = [np.asarray(x[n]) for n in names] if isinstance(x, dict) else [np.asarray(x)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(range(len(arrays[0])))

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.rows, None)
            return None if i is None else {n: a[i:i + 1] for n, a in zip(names, arrays)}

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    got = ort_logits(out, x)
    ref = framework_logits(model, x)
    return float(np.corrcoef(got.ravel(), ref.ravel())[0, 1]) if got.shape == ref.shape else None


def apply_op(op: str, model: Any, x: Any, path: Path) -> tuple[dict[str, Any], list[str]]:
    """Runs one operation on ``model`` and checks it; returns measurements and unmet criteria.

    Raises whatever slimkit or the frameworks raise; the caller classifies it.
    """
    numbers: dict[str, Any] = {}
    problems: list[str] = []
    ref = framework_logits(model, x)
    if op == "export":
        row = slimkit.export_onnx(model, path, sample=x)
        numbers["row_diff"] = row.max_abs_diff
        _compare(ref, ort_logits(path, x), numbers, problems)
        if row.max_abs_diff is None or not row.max_abs_diff <= numbers.get("tol", 0.0):
            problems.append(f"the export row reports max abs diff {row.max_abs_diff}")
        return numbers, problems
    result = slimkit.compress(model, RECIPES[op], calib_data=x, verbose=False)
    row = result.export_onnx(path)
    numbers["row_diff"] = row.max_abs_diff
    if op in ("magnitude", "channel"):
        _check_prune(op, result, numbers, problems)
        _compare(framework_logits(result.model, x), ort_logits(path, x), numbers, problems)
    else:
        try:  # diagnostic only: README says result.model computes what onnxruntime runs
            sim = framework_logits(result.model, x)
            numbers["sim_corr"] = float(np.corrcoef(sim.ravel(), ref.ravel())[0, 1])
        except Exception as exc:
            numbers["sim_error"] = one_line(f"result.model cannot be called: {type(exc).__name__}: {exc}", 300)
        _check_int8(result, ref, ort_logits(path, x), numbers, problems)
        if op == "static":
            try:  # diagnostic only: onnxruntime's own quantizer on the same model
                numbers["ort_corr"] = ort_reference_corr(model, x, path)
            except Exception as exc:
                numbers["ort_error"] = one_line(f"onnxruntime's quantizer failed: {type(exc).__name__}: {exc}", 200)
    return numbers, problems


def _where(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frame, and the innermost one in slimkit if different."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    ours = [f for f in frames if "/core/" in f.filename or "/adapters/" in f.filename]
    spots = [frames[-1]] + ([ours[-1]] if ours and ours[-1] is not frames[-1] else [])
    return " (at " + "; slimkit: ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in spots) + ")"


class CaseTimeout(Exception):
    """A case ran past its time limit (raised by SIGALRM once control returns to Python)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raises CaseTimeout in the block after ``seconds`` (main thread with SIGALRM only; else no limit)."""
    import signal
    import threading

    if not seconds or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"the case ran past {seconds:.0f} s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _release(framework: str) -> None:
    """Frees the case's models: Keras keeps every built layer in its global graph state otherwise."""
    if framework == "keras" and "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()


def run_case(spec: ModelSpec, op: str, workdir: str | os.PathLike[str], quiet: bool = True,
             timeout_s: float | None = CASE_TIMEOUT_S) -> Outcome:
    """Runs one operation on a fresh build of one model and classifies the result; never raises.

    Args:
        spec: the model (``zoo_models.model_specs()``).
        op: one of :data:`OPS`.
        workdir: folder for the ONNX file.
        quiet: send what the frameworks print during the case to ``Outcome.output``, not the console.
        timeout_s: stop the operation after this many seconds (FAILED: CaseTimeout); None for no limit.

    Returns:
        The outcome: ok, refused (SlimkitError, or a SlimkitWarning of a shortfall) or FAILED.
    """
    if spec.available:
        return Outcome(spec.name, op, "n/a", spec.available)
    out = Outcome(spec.name, op, "FAILED")
    path = Path(workdir) / f"{spec.name}_{op}.onnx"
    log = Path(workdir) / f"{spec.name}_{op}.log"
    caught: list[warnings.WarningMessage] = []
    error: BaseException | None = None
    problems: list[str] = []
    with (_redirected_fds(str(log)) if quiet else contextlib.nullcontext()), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            model, x = spec.build()
        except Exception as exc:  # the model itself could not be built: not slimkit's doing, but listed
            out.reason = f"building the model: {type(exc).__name__}: {exc}{_where(exc)}"
            out.build_seconds = time.perf_counter() - start
            return out
        out.build_seconds = time.perf_counter() - start
        start = time.perf_counter()
        try:
            with _time_limit(timeout_s):
                out.numbers, problems = apply_op(op, model, x, path)
        except Exception as exc:
            error = exc
        out.seconds = time.perf_counter() - start
        del model
        _release(spec.framework)
    if quiet and log.exists():
        out.output = log.read_text(errors="replace")[-4000:]
    ours = [str(w.message) for w in caught if issubclass(w.category, slimkit.SlimkitWarning)]
    out.other_warnings = sorted({one_line(f"{w.category.__name__}: {w.message}", 200)
                                 for w in caught if not issubclass(w.category, slimkit.SlimkitWarning)})
    shortfalls = [m for m in ours if any(p in m for p in SHORTFALL_PHRASES)]
    if isinstance(error, slimkit.SlimkitError):
        out.status, out.reason = "refused", f"{type(error).__name__}: {error}"
    elif error is not None:
        out.reason = f"{type(error).__name__}: {error}{_where(error)}"
    elif shortfalls or (problems and ours):
        # slimkit said the result falls short: a refusal, whatever the numbers
        warned = shortfalls or ours
        out.status = "refused"
        out.reason = "SlimkitWarning: " + " | ".join(warned) + (f" [{'; '.join(problems)}]" if problems else "")
    elif problems:
        out.reason = "not faithful, no warning: " + "; ".join(problems)
    else:
        out.status = "ok"
    if out.status == "ok" or error is not None:
        out.notes = ours
    return out


# ----------------------------------------------------------------------------------------- reporting
def versions() -> str:
    """Versions of the packages the sweep exercises."""
    out = []
    for dist in ("tensorflow", "keras", "tf2onnx", "torch", "transformers", "onnx", "onnxruntime", "numpy"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} not installed")
    return ", ".join(out)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _cell(o: Outcome, refs: dict[tuple[str, str], int]) -> str:
    if o.status in ("ok", "n/a"):
        return f"ok {o.seconds:.1f}s" if o.status == "ok" else "n/a"
    short = one_line(o.reason, 48).replace("|", "\\|")
    return f"{o.status} [{refs[(o.model, o.op)]}]: {short} ({o.seconds:.1f}s)"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(outcomes: list[Outcome], specs: list[ModelSpec], ops: tuple[str, ...], seconds: float,
             argv: list[str], loads: tuple[float, float] | None = None) -> str:
    """The results file: machine, coverage table, counts, full reasons and per-case numbers."""
    by_case = {(o.model, o.op): o for o in outcomes}
    bad = [o for o in outcomes if o.status in ("refused", "FAILED")]
    refs = {(o.model, o.op): i + 1 for i, o in enumerate(bad)}
    counted = [o for o in outcomes if o.status != "n/a"]
    n_ok = sum(o.status == "ok" for o in counted)
    n_ref = sum(o.status == "refused" for o in counted)
    n_fail = sum(o.status == "FAILED" for o in counted)
    lines = [f"# benchmarks/zoo.py, {datetime.date.today().isoformat()}, {cpu_name()} ({os.cpu_count()} cores), "
             f"python {platform.python_version()}",
             "", f"Versions: {versions()}", "",
             (f"Load average (1 min) at start / end: {loads[0]:.2f} / {loads[1]:.2f}" if loads else
              "Load average: not recorded"), "",
             f"Command: `{' '.join(['python', 'benchmarks/zoo.py', *argv])}`; wall time {seconds / 60:.1f} min. "
             "Random weights, batch-norm statistics re-estimated on the 16 sweep inputs; seconds = the operation "
             "(compress + export + checks), not the model build. "
             "Criteria: see the module docstring of benchmarks/zoo.py.", "",
             "| model | framework | " + " | ".join(ops) + " |", "|---|---|" + "---|" * len(ops)]
    for spec in specs:
        cells = [_cell(by_case[(spec.name, op)], refs) if (spec.name, op) in by_case else "-" for op in ops]
        lines.append(f"| {spec.name} | {spec.framework} | " + " | ".join(cells) + " |")
    missing = sorted({o.model for o in outcomes if o.status == "n/a"})
    lines += ["", f"**ok {n_ok}, refused {n_ref}, FAILED {n_fail}, total {len(counted)} "
                  f"({100.0 * n_ok / max(1, len(counted)):.0f}% ok)**"
              + (f"; not counted: {', '.join(missing)} (not available in this Keras)" if missing else ""), ""]
    if bad:
        lines += ["## Refused and failed cases", ""]
        for o in bad:
            lines.append(f"{refs[(o.model, o.op)]}. **{o.model} / {o.op}**, {o.status}: "
                         f"{one_line(o.reason, 1500)}")
        lines.append("")
    lines += ["## Numbers per case", "",
              "diff: max abs difference onnxruntime vs framework logits (the float or pruned file), tol its bound; "
              "achieved / removed: the prune stage's report; int8: file size ratio, float file MB, layers "
              "quantized, integer ops onnxruntime ran, Pearson r of onnxruntime's int8 logits vs the fp32 model's, "
              "and of the simulated (fake-quant) result.model's; ORT r: onnxruntime's own static int8 (quant_pre_process + "
              "quantize_static, MinMax, per-channel) of the same float export, for comparison; warnings: other python "
              "warnings recorded.", "",
              "| model | op | outcome | s | build s | diff | tol | achieved | removed | int8/fp32 | float MB "
              "| quantized | int ops | r | simulated r | ORT r | warnings | notes |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for o in counted:
        n = o.numbers
        extra = [n[k] for k in ("sim_error", "ort_error") if k in n]
        notes = one_line(" | ".join(o.notes + extra), 200).replace("|", "\\|")
        lines.append(f"| {o.model} | {o.op} | {o.status} | {o.seconds:.1f} | {o.build_seconds:.1f} | "
                     f"{_fmt(n.get('diff'), '.2g')} | {_fmt(n.get('tol'), '.2g')} | {_fmt(n.get('achieved'), '.1%')} | "
                     f"{_fmt(n.get('removed'), '.1%')} | {_fmt(n.get('ratio'), '.2f')} | "
                     f"{_fmt(n.get('float_mb'), '.2f')} | {_fmt(n.get('quantized'), 'd')} | "
                     f"{_fmt(n.get('int_ops'), 'd')} | {_fmt(n.get('corr'), '.4f')} | "
                     f"{_fmt(n.get('sim_corr'), '.4f')} | {_fmt(n.get('ort_corr'), '.4f')} | "
                     f"{len(o.other_warnings)} | "
                     f"{notes} |")
    return "\n".join(lines) + "\n"


def cases(specs: list[ModelSpec], ops: tuple[str, ...]) -> list[tuple[ModelSpec, str]]:
    """The (model, operation) pairs to run: ``dynamic`` only for token models."""
    return [(spec, op) for spec in specs for op in ops if op != "dynamic" or spec.tokens]


def main(argv: list[str] | None = None) -> int:
    """The CLI; see the module docstring."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="models whose name contains one of these (case-insensitive)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--out", type=Path, help=f"results file (default {DEFAULT_OUT} for a full run only)")
    args = parser.parse_args(argv)
    ops = tuple(op.strip() for op in args.ops.split(",") if op.strip())
    unknown = sorted(set(ops) - set(OPS))
    if unknown:
        parser.error(f"unknown operations {unknown}; choose from {list(OPS)}")
    ops = tuple(op for op in OPS if op in ops)
    quiet_frameworks()
    specs = model_specs()
    if args.only:
        specs = [s for s in specs if any(name.lower() in s.name.lower() for name in args.only)]
        if not specs:
            parser.error(f"--only {args.only} matches none of {[s.name for s in model_specs()]}")
    partial = bool(args.only) or ops != OPS
    out_path = args.out or (None if partial else DEFAULT_OUT)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="slimkit_zoo_") as tmp:
        for spec, op in cases(specs, ops):
            outcome = run_case(spec, op, tmp)
            outcomes.append(outcome)
            print(outcome.line(), flush=True)
    text = markdown(outcomes, specs, ops, time.perf_counter() - start, argv, (load_start, os.getloadavg()[0]))
    if out_path is None:
        print("\n" + text, flush=True)
        print("partial run: no results file written (pass --out to write one)", flush=True)
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text)
        print(f"wrote {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
