"""The tuner on ResNet50: a 20-trial static-int8 tuning run per framework, and a latency budget run.

Models: ``keras.applications.ResNet50(weights=None, classifier_activation=None)`` and the PyTorch
ResNet50 of ``benchmarks/torch_models.py`` (torchvision's definition), random weights (seed 0). Random
weights leave batch-norm statistics at their initial values (mean 0, variance 1), which describe no
input: they are re-estimated first, the model run in training mode over ``--bn-batches`` batches of
generated images with a cumulative average (PyTorch ``momentum=None``; Keras momentum ``(i-1)/i`` at
batch ``i``), then put back in inference mode. The Keras model outputs logits: an untrained softmax is
nearly flat over 1000 classes and its uint8 output would tie (see ``benchmarks/quantization.py``).

Inputs are generated 224x224 RGB images with a natural-image 1/f amplitude spectrum (smooth random
fields), normalised per channel: ``--calib`` (16) calibrate, ``--heldout`` (64) judge. The metric is
top-1 agreement with the fp32 model: ``eval_data = (x_heldout, argmax of the fp32 outputs)``, computed
by the tuner on each trial's ONNX file in onnxruntime.

* Run 1 (``tolerance``, each framework): ``tune: {strategy: optuna, tolerance: {relative: 0.05},
  max_trials: 20, space: {float_layers: true, calibration: [minmax, percentile]}}`` over one static int8
  stage. Recorded: the whole ``compress()`` wall time (the float baseline, 20 trials, the returned
  model), the trials' own seconds, the trials that met the tolerance and the best one.
* Run 2 (``budget``, ``--budget-framework``, PyTorch by default): the fp32 model's onnxruntime latency at
  batch 1 is measured first (its verified export, median of ``--latency-rounds`` x 30 runs), then
  ``tune: {budget: {latency_ms: 0.7 x that}}`` searches the same space for the best agreement within it.

Each run is its own process (as ``speed.py``): one framework's memory and threads never weigh on the
other's. The load average is recorded before and after; on a shared 2-core machine it moves the
seconds and the latencies, so read them with it.

Run:  python benchmarks/tune.py [--runs tolerance,budget] [--frameworks keras,torch] [--trials 20]
          [--strategy optuna] [--tolerance 0.05] [--budget-factor 0.7] [--budget-trials 12]
          [--size 224] [--out benchmarks/results/tune.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import machine  # noqa: E402

FRAMEWORKS = ("keras", "torch")
RUNS = ("tolerance", "budget")
RESULT = "TUNE_RESULT "
SPACE = {"float_layers": True, "calibration": ["minmax", "percentile"]}


# ------------------------------------------------------------------------------------------ data
def smooth_images(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` NHWC images whose amplitude spectrum falls as 1/f^1.5 (smooth fields with some edges,
    as natural images), each channel normalised to mean 0 and standard deviation 1."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0 / size  # the mean's amplitude stays finite
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        decay = rng.uniform(1.2, 2.0)  # some images smoother than others
        spectrum = rng.normal(size=(3, size, size // 2 + 1)) + 1j * rng.normal(size=(3, size, size // 2 + 1))
        field = np.fft.irfft2(spectrum / radius**decay, s=(size, size), axes=(1, 2))
        field = field.transpose(1, 2, 0)
        out[i] = (field - field.mean(axis=(0, 1))) / (field.std(axis=(0, 1)) + 1e-8)
    return out


def layout(framework: str, x: np.ndarray) -> np.ndarray:
    return x if framework == "keras" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------------------------------ models
def build(framework: str, size: int, bn_images: np.ndarray, batch: int) -> Any:
    """Random-weight ResNet50 with batch-norm statistics re-estimated on ``bn_images`` (framework layout)."""
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classifier_activation=None)
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        saved = [layer.momentum for layer in norms]
        for step, lo in enumerate(range(0, len(bn_images), batch), start=1):
            for layer in norms:
                layer.momentum = (step - 1) / step  # moving = cumulative mean of the batch statistics
            model(bn_images[lo:lo + batch], training=True)
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
        return model
    import torch

    import torch_models

    torch.manual_seed(0)
    model = torch_models.resnet50()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    model.train()
    with torch.no_grad():
        for lo in range(0, len(bn_images), batch):
            model(torch.from_numpy(bn_images[lo:lo + batch]))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def predict(framework: str, model: Any, x: np.ndarray, batch: int = 16) -> np.ndarray:
    if framework == "keras":
        return np.concatenate([np.asarray(model(x[lo:lo + batch], training=False)) for lo in range(0, len(x), batch)])
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[lo:lo + batch])).numpy() for lo in range(0, len(x), batch)])


# ------------------------------------------------------------------------------------------ worker
def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One tuning run in this process; returns its measurements, trial log and markdown."""
    import warnings

    import slimkit
    from slimkit.deploy.bench import latency_ms

    warnings.simplefilter("ignore")
    fw, size = job["framework"], job["size"]
    bn = layout(fw, smooth_images(job["bn_batches"] * 16, size, seed=1))
    calib = layout(fw, smooth_images(job["calib"], size, seed=2))
    held = layout(fw, smooth_images(job["heldout"], size, seed=3))
    start = time.perf_counter()
    model = build(fw, size, bn, 16)
    logits = predict(fw, model, held)
    labels = logits.argmax(axis=1)
    top2 = np.sort(logits, axis=1)[:, -2:]
    out: dict[str, Any] = {
        "build_s": time.perf_counter() - start,
        "distinct_labels": int(len(np.unique(labels))),
        # how far the winning logit is ahead: small margins are what int8 noise flips
        "median_margin": float(np.median(top2[:, 1] - top2[:, 0])),
        "logit_std": float(logits.std()),
    }
    tune: dict[str, Any] = {"strategy": job["strategy"], "max_trials": job["trials"], "space": SPACE}
    if job["run"] == "budget":
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fp32.onnx"
            slimkit.export_onnx(model, path, sample=calib[:2])
            runs = [latency_ms(str(path), calib[:1], repeats=30, warmup=5) for _ in range(job["latency_rounds"])]
        out["fp32_latency_ms"] = float(np.median(runs))
        out["fp32_latency_runs"] = runs
        tune["budget"] = {"latency_ms": round(job["budget_factor"] * out["fp32_latency_ms"], 3)}
    else:
        tune["tolerance"] = {"relative": job["tolerance"]}
    recipe = {"version": 1, "seed": 0,
              "stages": [{"quantize": {"method": "static", "activations": {"samples": job["calib"]}}}],
              "tune": tune}
    out["tune"] = dict(tune)
    if job.get("log_path"):
        tune["log"] = job["log_path"]  # rewritten after every trial: a run stopped early keeps its trials
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = slimkit.compress(model, recipe, calib_data=calib, eval_data=(held, labels), verbose=True)
    out["total_s"] = time.perf_counter() - start
    out["load_before"], out["load_after"] = load, os.getloadavg()[0]
    log = result.report.tuning
    out["log"] = log.to_dict()
    out["markdown"] = log.to_markdown()
    out["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


# ------------------------------------------------------------------------------------------ parent
def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Runs ``job`` in a fresh interpreter; the tuner's progress lines pass through to stderr."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], stdout=subprocess.PIPE,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        return {"error": f"exit {proc.returncode}", **partial(job)}
    return {**json.loads(lines[-1][len(RESULT):]), **job}


def partial(job: dict[str, Any]) -> dict[str, Any]:
    """A stopped run's job, with the trials its log kept (``partial_log``, ``partial_markdown``)."""
    path = Path(job["log_path"]) if job.get("log_path") else None
    if path is None or not path.exists():
        return job
    from slimkit.tune.log import TrialRecord, TuningReport

    raw = json.loads(path.read_text())
    report = TuningReport(**{k: v for k, v in raw.items() if k != "trials"})
    report.trials = [TrialRecord.from_dict(t) for t in raw["trials"]]
    report.message = report.message or f"stopped after {len(report.trials)} trials"
    return {**job, "partial_log": raw, "partial_markdown": report.to_markdown()}


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run's table row."""
    log = res["log"]
    trials = log["trials"]
    best = next((t for t in trials if t["number"] == log["best"]), None)
    trial_s = [t["seconds"] for t in trials]
    floated = None if best is None else sum(1 for k, v in best["settings"].items() if k.startswith("float:") and v)
    return {"n": len(trials), "met": sum(1 for t in trials if t["feasible"]),
            "errors": sum(1 for t in trials if t["error"]),
            "trial_sum": sum(trial_s), "trial_mean": sum(trial_s) / max(1, len(trial_s)),
            "trial_min": min(trial_s, default=None), "trial_max": max(trial_s, default=None),
            "best": best, "floated": floated}


def table(results: list[dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    lines = [header, "",
             "| run | framework | strategy | target | trials (met) | compress() s | trial s: sum / mean / min-max "
             "| under 5 min | baseline agreement | best trial: agreement, compression, float layers, latency ms "
             "| met | stopped by |",
             "|---|---|---|---|---:|---:|---|---|---:|---|---|---|"]
    for res in results:
        if "error" in res:
            done = (res.get("partial_log") or {}).get("trials", [])
            seconds = [t["seconds"] for t in done]
            timing = f"{sum(seconds):.0f} / {sum(seconds) / len(seconds):.1f} / -" if seconds else "-"
            lines.append(f"| {res['run']} | {res['framework']} | {res['strategy']} | - | {len(done)} finished | - | "
                         f"{timing} | - | - | stopped: {res['error']} | - | - |")
            continue
        s, log = summary(res), res["log"]
        best = s["best"]
        best_text = "-" if best is None else (
            f"#{best['number']}: {fmt(best['metric'], '.3f')}, {best['compression']:.2f}x, {s['floated']}, "
            f"{fmt(best['latency_ms'], '.2f')}")
        under = "yes" if res["total_s"] < 300 else "no"
        lines.append(
            f"| {res['run']} | {res['framework']} | {res['strategy']} | {log['target']} | {s['n']} ({s['met']}) | "
            f"{res['total_s']:.0f} | {s['trial_sum']:.0f} / {s['trial_mean']:.1f} / "
            f"{fmt(s['trial_min'])}-{fmt(s['trial_max'])} | {under} | {fmt(log['baseline'], '.3f')} | {best_text} | "
            f"{'yes' if log['met'] else 'no'} | {log['stopped_by']} |")
    lines.append("")
    for res in results:
        if "error" in res:
            if res.get("partial_markdown"):
                lines += [f"## {res['run']}, {res['framework']}: stopped ({res['error']}), the trials it finished",
                          "", res["partial_markdown"], ""]
            continue
        base = res["log"]["baseline_measures"]
        extra = ""
        if res["run"] == "budget":
            extra = (f"; fp32 ORT latency measured first {res['fp32_latency_ms']:.2f} ms (rounds: "
                     f"{', '.join(f'{v:.2f}' for v in res['fp32_latency_runs'])}), budget "
                     f"{res['tune']['budget']['latency_ms']:.2f} ms = {res['budget_factor']} x that")
        lines += [f"## {res['run']}, {res['framework']}", "",
                  f"Model built and BN re-estimated in {res['build_s']:.0f} s; fp32 top-1 over the {res['heldout']} "
                  f"held-out images: {res['distinct_labels']} distinct classes, median top-1/top-2 logit margin "
                  f"{res['median_margin']:.3g} (logit std {res['logit_std']:.3g}). Float ONNX as the tuner measured "
                  f"it: {base.get('size_mb', 0):.1f} MB, {base.get('latency_ms', 0):.2f} ms{extra}. Load average "
                  f"{res['load_before']:.2f} before the run, {res['load_after']:.2f} after; peak RSS "
                  f"{res['rss_gb']:.1f} GB. Reuse cache: {json.dumps(res['log'].get('reuse') or {}) or 'none'}.",
                  "", f"Recipe `tune:` section: `{json.dumps(res['tune'])}`", "", res["markdown"], ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="frameworks of the tolerance run")
    parser.add_argument("--budget-framework", default="torch")
    parser.add_argument("--strategy", default="optuna")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--budget-trials", type=int, default=12)
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance of run 1")
    parser.add_argument("--budget-factor", type=float, default=0.7)
    parser.add_argument("--latency-rounds", type=int, default=3)
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--bn-batches", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None, help="folder: each run's raw result as JSON")
    parser.add_argument("--collect", type=Path, default=None,
                        help="folder of saved runs: write the table from them instead of running")
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT + json.dumps(worker(json.loads(args.worker)), default=str), flush=True)
        return 0
    load_before = os.getloadavg()
    if args.collect:
        order = {(r, f): i for i, (r, f) in enumerate((r, f) for r in RUNS for f in FRAMEWORKS)}
        results = [json.loads(p.read_text()) for p in sorted(args.collect.glob("*.json"))
                   if not p.name.endswith(".trials.json")]
        results.sort(key=lambda r: order.get((r["run"], r["framework"]), 99))
        return machine.emit(table(results, args, header(args, results)), args.out)
    common = {"size": args.size, "calib": args.calib, "heldout": args.heldout, "bn_batches": args.bn_batches,
              "strategy": args.strategy, "tolerance": args.tolerance, "budget_factor": args.budget_factor,
              "latency_rounds": args.latency_rounds}
    jobs = []
    if "tolerance" in args.runs.split(","):
        jobs += [{"run": "tolerance", "framework": f, "trials": args.trials, **common}
                 for f in args.frameworks.split(",")]
    if "budget" in args.runs.split(","):
        jobs.append({"run": "budget", "framework": args.budget_framework, "trials": args.budget_trials, **common})
    results = []
    for job in jobs:
        print(f"--- {job['run']} run, {job['framework']}, {job['trials']} trials", file=sys.stderr, flush=True)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            job["log_path"] = str(args.save.resolve() / f"{job['run']}-{job['framework']}.trials.json")
        results.append(run_worker(job))
        if args.save:
            (args.save / f"{job['run']}-{job['framework']}.json").write_text(json.dumps(results[-1]))
    return machine.emit(table(results, args, header(args, results, load_before)), args.out)


def header(args: argparse.Namespace, results: list[dict[str, Any]], load_before: Any = None) -> str:
    """Machine, versions, load and the setup; the load of collected runs is their first and last."""
    from quantization import versions

    done = [r for r in results if "load_before" in r]
    before = load_before[0] if load_before is not None else (done[0]["load_before"] if done else float("nan"))
    after = os.getloadavg()[0] if load_before is not None else (done[-1]["load_after"] if done else float("nan"))
    first = results[0] if results else vars(args)
    vers = ", ".join(f"{k} {v}" for k, v in versions().items() if k != "tensorflow-model-optimization")
    try:
        import importlib.metadata

        vers += f", optuna {importlib.metadata.version('optuna')}"
    except importlib.metadata.PackageNotFoundError:
        pass
    return (f"# benchmarks/tune.py, {datetime.date.today().isoformat()}\n\n"
            f"Machine: {machine.cpu()}; load average (1 min) {before:.2f} before the first run, "
            f"{after:.2f} after the last; one process per run.\n\nVersions: {vers}\n\n"
            f"ResNet50, random weights, BN statistics re-estimated on {first['bn_batches'] * 16} generated "
            f"images; {first['size']}x{first['size']} 1/f images, {first['calib']} calibration, {first['heldout']} "
            f"held-out; metric: top-1 agreement with the fp32 model (onnxruntime, each trial's file); one static "
            f"int8 stage; space {json.dumps(SPACE)}. 'compress() s' is the whole call (float baseline export and "
            f"latency, the trials, the returned model); 'under 5 min' is that figure against 300 s.")


if __name__ == "__main__":
    sys.exit(main())
