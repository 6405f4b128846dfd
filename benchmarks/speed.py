"""Speed and memory of post-training int8: slimkit against onnxruntime's own quantizer, one process per measurement.

For each model (ResNet50 and MobileNetV2 at width 0.35 / 1.0 / 1.4, Keras and PyTorch, random weights,
16 fixed random calibration images) three fresh interpreters run, in an order that rotates each round:

* ``fp32``: ``slimkit.export_onnx`` of the float model (the fp32 file an onnxruntime user starts from);
* ``ort``: onnxruntime's ``quant_pre_process`` then ``quantize_static`` of that file (QDQ, per-channel
  int8 weights, uint8 activations, MinMax, the 16 images at batch 1), importing no framework;
* ``slimkit``: ``slimkit.compress`` (static int8, the 16 images) then ``export_onnx`` (verified). The
  fidelity fallback is off (``max_float_share: 0``): onnxruntime's quantizer has none, and random weights
  with random images leave ResNet50's int8 outputs below its target, so it would search and keep layers
  float; the benchmark compares the same job.

Each reports its wall time (model building excluded) and its peak RSS (``ru_maxrss`` of that process,
model building included, as the user's process holds the model anyway). Then the two int8 files of
the last round are timed in onnxruntime at batch 1, in :data:`LATENCY_ROUNDS` interleaved rounds. The load average is recorded before
and after. Targets (the speed issue): slimkit time <= fp32 export + 2 x ORT's quantizer, RSS <= 1.2 x
the fp32 export's peak and 2 x ORT's, int8 latency <= 1.05 x ORT's int8.

Run:  python benchmarks/speed.py [--models resnet50,mobilenet_v2_0.35,...] [--frameworks keras,torch]
          [--rounds 3] [--size 224] [--out benchmarks/results/speed.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
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

MODELS = ("resnet50", "mobilenet_v2_0.35", "mobilenet_v2_1.0", "mobilenet_v2_1.4")
FRAMEWORKS = ("keras", "torch")
TOOLS = ("fp32", "ort", "slimkit")
SAMPLES = 16
#: Interleaved latency rounds per pair of int8 files (30 timed runs each): a MobileNetV2 0.35 run takes
#: about 1 ms, so three rounds of two identical graphs still differ by 15% on a busy machine.
LATENCY_ROUNDS = 9
RESULT = "SPEED_RESULT "


# ------------------------------------------------------------------------------------------ worker
def build(framework: str, name: str, size: int) -> Any:
    """A random-weight model; ``mobilenet_v2_<alpha>`` sets the width multiplier."""
    alpha = float(name.rsplit("_", 1)[1]) if name.startswith("mobilenet_v2_") else 1.0
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(0)
        if name == "resnet50":
            return keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
        return keras.applications.MobileNetV2(weights=None, alpha=alpha, input_shape=(size, size, 3))
    import torch

    import torch_models

    torch.manual_seed(0)
    model = torch_models.resnet50() if name == "resnet50" else torch_models.mobilenet_v2(width_mult=alpha)
    return model.eval()


def images(framework: str, size: int) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(SAMPLES, size, size, 3)).astype(np.float32)
    return x if framework == "keras" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process; returns seconds and peak RSS (GB)."""
    work, x = Path(job["work"]), images(job["framework"], job["size"])
    fp32, int8 = work / "fp32.onnx", work / f"{job['tool']}.int8.onnx"
    if job["tool"] == "ort":
        from quantization import ort_quantize

        start = time.perf_counter()
        ort_quantize(fp32, int8, x, reduce_range=False, work=work)
    else:
        import warnings

        import slimkit

        warnings.simplefilter("ignore")
        model = build(job["framework"], job["model"], job["size"])
        start = time.perf_counter()
        if job["tool"] == "fp32":
            slimkit.export_onnx(model, fp32, sample=x[:2])
        else:
            recipe = {"stages": [{"quantize": {"method": "static", "activations": {"samples": SAMPLES},
                                               "max_float_share": 0.0}}]}
            slimkit.compress(model, recipe, calib_data=x, verbose=False).export_onnx(int8)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


# ------------------------------------------------------------------------------------------ parent
def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-300:]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len(RESULT):])


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else None


def paired_ratio(ours: list[dict[str, Any]], peer: list[dict[str, Any]]) -> float | None:
    """Median over rounds of ours / peer, each round's pair measured back to back (a machine that slows
    down between rounds moves both)."""
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(ours, peer) if "seconds" in a and b.get("seconds")]
    return statistics.median(ratios) if ratios else None


def latency(paths: dict[str, Path], x: np.ndarray, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each file's median batch-1 latency (ms) of 30 timed runs, files interleaved."""
    from slimkit.deploy.bench import latency_ms

    runs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for key, path in paths.items():
            if path.exists():
                runs[key].append(latency_ms(str(path), x[:1], repeats=30, warmup=5))
    return {k: statistics.median(v) for k, v in runs.items() if v}


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace, header: str) -> str:
    lines = [header, "",
             "| model | framework | fp32 export s | ORT quantize s | slimkit s | slimkit / (fp32 + 2 x ORT) "
             "| time ratio slimkit / ORT (median of rounds) | RSS GB fp32 / ORT / slimkit | RSS vs max(1.2 x fp32, 2 x ORT) "
             "| int8 ms ORT / slimkit | latency ratio | errors |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|"]
    for (framework, model), res in results.items():
        t = {tool: median(res[tool], "seconds") for tool in TOOLS}
        m = {tool: median(res[tool], "rss_gb") for tool in TOOLS}
        budget = t["fp32"] + 2 * t["ort"] if t["fp32"] is not None and t["ort"] is not None else None
        mem_budget = max(1.2 * m["fp32"], 2 * m["ort"]) if m["fp32"] is not None and m["ort"] is not None else None
        lat = res.get("latency", {})
        errors = "; ".join(sorted({r["error"] for tool in TOOLS for r in res[tool] if "error" in r}))
        lines.append(
            f"| {model} | {framework} | {fmt(t['fp32'])} | {fmt(t['ort'])} | {fmt(t['slimkit'])} | "
            f"{fmt(t['slimkit'] / budget if budget and t['slimkit'] else None, '.2f')} | "
            f"{fmt(paired_ratio(res['slimkit'], res['ort']), '.2f')} | "
            f"{fmt(m['fp32'], '.2f')} / {fmt(m['ort'], '.2f')} / {fmt(m['slimkit'], '.2f')} | "
            f"{fmt(m['slimkit'] / mem_budget if mem_budget and m['slimkit'] else None, '.2f')} | "
            f"{fmt(lat.get('ort'), '.2f')} / {fmt(lat.get('slimkit'), '.2f')} | "
            f"{fmt(lat['slimkit'] / lat['ort'] if 'ort' in lat and 'slimkit' in lat else None, '.2f')} | "
            f"{errors[:200]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.worker:
        print(RESULT + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    from quantization import cpu_info, versions

    cpu, load_before = cpu_info(), os.getloadavg()
    cases = [(f, m) for f in args.frameworks.split(",") for m in args.models.split(",")]
    results: dict[tuple[str, str], dict[str, Any]] = {c: {t: [] for t in TOOLS} for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for framework, model in cases:
                work = Path(tmp) / f"{framework}-{model}"
                work.mkdir(exist_ok=True)
                # fp32 first (ORT needs its file); slimkit and ORT alternate which goes second
                order = ("fp32", "ort", "slimkit") if rnd % 2 == 0 else ("fp32", "slimkit", "ort")
                for tool in order:
                    job = {"tool": tool, "framework": framework, "model": model, "size": args.size,
                           "work": str(work)}
                    row = run_worker(job)
                    results[(framework, model)][tool].append(row)
                    print(f"round {rnd + 1} {framework:5s} {model:18s} {tool:7s} "
                          f"{row.get('seconds', 0):7.1f}s {row.get('rss_gb', 0):5.2f} GB {row.get('error', '')}",
                          file=sys.stderr, flush=True)
        for framework, model in cases:
            work = Path(tmp) / f"{framework}-{model}"
            paths = {"ort": work / "ort.int8.onnx", "slimkit": work / "slimkit.int8.onnx"}
            results[(framework, model)]["latency"] = latency(paths, images(framework, args.size), LATENCY_ROUNDS)
    isa = ", ".join(k for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if cpu.get(k)) or "no AVX2"
    vers = ", ".join(f"{k} {v}" for k, v in versions().items())
    header = (f"# benchmarks/speed.py, {datetime.date.today().isoformat()}, {cpu['name']} ({cpu['cores']} cores; {isa}), "
              f"{args.size}x{args.size}, {SAMPLES} calibration images, random weights, median of {args.rounds} "
              f"interleaved rounds, one process per measurement (int8 latency: median of {LATENCY_ROUNDS} interleaved "
              f"rounds of 30 runs); load average before "
              f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}\n\nVersions: {vers}")
    text = table(results, args, header)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
