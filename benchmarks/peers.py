"""slimkit against its peers: one table, same models, same run, ratios slimkit / peer.

It runs the other benchmarks' code with small settings and adds the digits jobs they lack:

* digits CNN (``peers_digits.py``; test accuracy on 450 held-out images): magnitude pruning 80% against
  tensorflow-model-optimization (Keras) and ``torch.nn.utils.prune`` (PyTorch); QAT against tfmot;
  Keras 3's own ``model.quantize("int8")`` (Dense layers) against slimkit's dynamic int8 of those layers.
* post-training static int8 of ResNet50 and MobileNetV2 (width 0.35 by default), Keras and PyTorch,
  against onnxruntime's ``quant_pre_process`` + ``quantize_static`` on the same fp32 export:
  ``speed.py``'s workers (one fresh process per run, the fastest of ``--timing-rounds`` kept; model
  building not timed); quality = top-1 agreement with the fp32 file on 16 other random images (random
  weights: no accuracy to measure).
* channel pruning of the torchvision-shaped PyTorch ResNet50 (50%, L1, round_to 8) against Torch-Pruning:
  ``prune_speed.py``'s two sides; quality = top-1 agreement of the two pruned models with each other
  (they should keep the same channels), time = the fastest of the rounds.
* ``zoo.py``'s static int8 cases (``--zoo``: its Pearson r of slimkit's int8 logits against its ``ORT r``),
  and Keras' ``model.quantize("int8")`` on zoo.py's Keras token model (Embedding, MultiHeadAttention,
  Dense) against slimkit's dynamic int8.

Every result is an ONNX file measured here in onnxruntime: size (pruned files: gzip size, since
zeros compress and a dense file holds them), median batch-1 latency (files of one comparison
interleaved over rounds), and the compression step's wall time (exports not included). The load average
before and after, and the CPU other processes used during the run and during each timed step, are
recorded: the machine may be shared, and PyTorch's threads in particular slow down several-fold when
another process takes a core.

Run:  python benchmarks/peers.py [--quick] [--sections ptq,digits,structured,zoo] [--rounds 5]
          [--timing-rounds 2] [--ptq-models resnet50,mobilenet_v2_0.35] [--frameworks keras,torch]
          [--zoo MobileNetV3Small,hf-ViT,hf-GPT-2] [--json FILE] [--out FILE]
A full run (no --quick, no --json/--out) writes benchmarks/results/peers.json and peers.md.
Needs the ``bench`` extra (tensorflow-model-optimization, torch-pruning).
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import importlib.metadata
import json
import os
import statistics
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
import peers_digits  # noqa: E402
import speed  # noqa: E402
from quantization import agreement, ort_logits, short_error  # noqa: E402

SECTIONS = ("ptq", "digits", "structured", "zoo")
RESULTS = HERE / "results"
PEER_DISTS = ("onnxruntime", "onnx", "keras", "tensorflow", "tf_keras", "tensorflow-model-optimization",
              "tf2onnx", "torch", "torch-pruning")


# ---------------------------------------------------------------------------------------- measuring
def measure(files: dict[str, dict[str, Any]], x: np.ndarray, rounds: int, gz: bool,
            ref: str | None = None, y: np.ndarray | None = None) -> None:
    """Adds size, latency and quality to every side that has an ``onnx`` file, in place.

    Quality is accuracy against ``y`` when given, else top-1 agreement with the file of side ``ref``."""
    ok = {k: Path(f["onnx"]) for k, f in files.items() if "onnx" in f and Path(f["onnx"]).exists()}
    for key, f in files.items():
        if "onnx" in f and key not in ok:
            f["error"] = f.get("error") or "no ONNX file was written"
    for key, path in ok.items():
        files[key]["bytes"] = path.stat().st_size
        if gz:
            files[key]["gzip_bytes"] = len(gzip.compress(path.read_bytes(), 9))
    try:
        lat = speed.latency(ok, x, rounds)
    except Exception as exc:
        lat = {}
        for key in ok:
            files[key]["latency_error"] = short_error(exc)
    for key, ms in lat.items():
        files[key]["ms"] = ms
    outs = {}
    for key, path in ok.items() if (ref is not None or y is not None) else ():
        try:
            outs[key] = ort_logits(str(path), x)
        except Exception as exc:
            files[key]["quality_error"] = short_error(exc)
    for key, out in outs.items():
        if y is not None:
            files[key]["quality"] = float(np.mean(out.reshape(len(out), -1).argmax(1) == y))
        elif ref in outs and key != ref:
            files[key].update({f"vs_{ref}_{k}": v for k, v in agreement(outs[ref], out).items()})
            files[key]["quality"] = files[key][f"vs_{ref}_top1"]


def strip(side: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in side.items() if k != "onnx"}


# ----------------------------------------------------------------------------------------- sections
def digits_rows(work: Path, rounds: int, runs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import digits

    rows, info = [], {}
    for framework, run in (("keras", peers_digits.keras_jobs), ("torch", peers_digits.torch_jobs)):
        log(f"digits: {framework}")
        try:
            jobs = run(work, runs)
        except Exception as exc:
            rows.append({"comparison": f"digits CNN ({framework})", "framework": framework, "peer": "-",
                         "slimkit": {"error": short_error(exc)}, "peer_side": {"error": short_error(exc)}})
            continue
        info.update(jobs.pop("info"))
        _, (x, y) = digits.load(framework)
        fp32 = jobs.pop("fp32")
        for job, sides in jobs.items():
            sides = {"fp32": dict(fp32), **sides}  # the baseline is timed with them: same conditions
            measure(sides, x, rounds, gz=(job == "prune"), y=y)
            rows.append({**DIGITS_LABELS[(framework, job)](info), "framework": framework, "quality_kind": "test acc",
                         "size_kind": "gzip" if job == "prune" else "file", "fp32": strip(sides["fp32"]),
                         "slimkit": strip(sides["slimkit"]), "peer_side": strip(sides["peer"])})
            log(f"digits {framework} {job}: {rows[-1]['slimkit']} | {rows[-1]['peer_side']}")
    return rows, info


DIGITS_LABELS = {
    ("keras", "prune"): lambda i: {"comparison": "magnitude 80%, digits CNN",
                                   "peer": f"tfmot {i.get('tfmot', '?')} prune_low_magnitude (tf_keras)"},
    ("keras", "qat"): lambda i: {"comparison": "QAT int8, digits CNN",
                                 "peer": f"tfmot {i.get('tfmot', '?')} quantize_model (tf_keras, tf2onnx QDQ)",
                                 "note": "tf2onnx keeps tfmot's weights float, quantized as the file runs"},
    ("keras", "int8"): lambda i: {"comparison": "int8 Dense layers (slimkit dynamic), digits CNN",
                                  "peer": f"Keras {i.get('keras', '?')} model.quantize(\"int8\")"},
    ("torch", "prune"): lambda i: {"comparison": "magnitude 80%, digits CNN",
                                   "peer": "torch.nn.utils.prune l1_unstructured (one-shot + fine-tune)"},
}


def ptq_rows(work: Path, models: list[str], frameworks: list[str], size: int, rounds: int,
             timing_rounds: int) -> list[dict[str, Any]]:
    """speed.py's fp32 / ort / slimkit workers, ``timing_rounds`` times with ORT and slimkit alternating
    which goes first; each side keeps its fastest run (the one least slowed by other work) with the
    other processes' load during it."""
    cases = [(framework, model) for framework in frameworks for model in models]
    runs: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for framework, model in cases:  # every worker before any measuring here: a forked worker's peak RSS
        case = work / f"ptq-{framework}-{model}"  # starts at this process's size, which ORT sessions grow
        case.mkdir()
        runs[(framework, model)] = {"fp32": [], "ort": [], "slimkit": []}
        for rnd in range(timing_rounds):
            order = ("fp32", "ort", "slimkit") if rnd % 2 == 0 else ("fp32", "slimkit", "ort")
            for tool in order[rnd > 0:]:  # fp32 first (ORT quantizes its file), exported once
                job = {"tool": tool, "framework": framework, "model": model, "size": size, "work": str(case)}
                load = machine.OtherLoad()
                res = speed.run_worker(job)
                runs[(framework, model)][tool].append({**res, "other_cores": load.cores()})
                log(f"ptq {framework} {model} {tool}: {runs[(framework, model)][tool][-1]}")
    rows = []
    for framework, model in cases:
        case = work / f"ptq-{framework}-{model}"
        sides: dict[str, dict[str, Any]] = {}
        for tool, done in runs[(framework, model)].items():
            good = [r for r in done if "error" not in r]
            name = case / ("fp32.onnx" if tool == "fp32" else f"{tool}.int8.onnx")
            sides[tool] = ({"error": done[-1]["error"]} if not good else
                           {"onnx": str(name), **min(good, key=lambda r: r["seconds"]),
                            "all_seconds": [r["seconds"] for r in good]})
        x = np.random.default_rng(2).normal(size=(16, size, size, 3)).astype(np.float32)
        x = x if framework == "keras" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        measure(sides, x, rounds, gz=False, ref="fp32")
        rows.append({"comparison": f"static int8, {model} {size}x{size}", "framework": framework,
                     "peer": f"onnxruntime {importlib.metadata.version('onnxruntime')} quantize_static",
                     "quality_kind": "top-1 agree w/ fp32", "size_kind": "file", "fp32": strip(sides["fp32"]),
                     "slimkit": strip(sides["slimkit"]), "peer_side": strip(sides["ort"])})
    return rows


def structured_row(work: Path, size: int, rounds: int, timing_rounds: int) -> dict[str, Any]:
    import prune_speed
    import torch_pruning as tp

    import slimkit

    x = np.random.default_rng(0).normal(size=(4, 3, size, size)).astype(np.float32)
    row: dict[str, Any] = {"comparison": f"channels 50% L1, ResNet50 {size}x{size}", "framework": "torch",
                           "peer": f"Torch-Pruning {tp.__version__} MetaPruner", "quality_kind": "top-1 agree w/ peer",
                           "size_kind": "file"}
    try:
        prune_speed.run_slimkit(prune_speed.fresh_model(), x, 0.5)  # untimed: first-call costs, as prune_speed.py
        prune_speed.run_torch_pruning(prune_speed.fresh_model(), x, 0.5)
        ours_s, theirs_s, ours_load, theirs_load = [], [], [], []
        for _ in range(timing_rounds):
            model, load = prune_speed.fresh_model(), machine.OtherLoad()
            ours, seconds, _capture = prune_speed.run_slimkit(model, x, 0.5)
            ours_s.append(seconds)
            ours_load.append(load.cores() or 0.0)
            model, load = prune_speed.fresh_model(), machine.OtherLoad()
            theirs, seconds = prune_speed.run_torch_pruning(model, x, 0.5)
            theirs_s.append(seconds)
            theirs_load.append(load.cores() or 0.0)
        same = prune_speed.kept_agreement(ours, theirs)
        import torch

        example = torch.from_numpy(x[:1])
        fast = {k: min(range(len(t)), key=t.__getitem__) for k, t in (("peer", theirs_s), ("slimkit", ours_s))}
        sides = {"peer": {"seconds": theirs_s[fast["peer"]], "other_cores": theirs_load[fast["peer"]],
                          "all_seconds": theirs_s},
                 "slimkit": {"seconds": ours_s[fast["slimkit"]], "other_cores": ours_load[fast["slimkit"]],
                             "all_seconds": ours_s}}
        for key, model in (("peer", theirs), ("slimkit", ours)):
            macs, params = tp.utils.count_ops_and_params(model, example)
            sides[key].update({"onnx": str(work / f"structured_{key}.onnx"), "params": int(params), "macs": int(macs)})
            slimkit.export_onnx(model, sides[key]["onnx"], sample=x[:2])
        measure(sides, x, rounds, gz=False, ref="peer")
        row.update({"slimkit": strip(sides["slimkit"]), "peer_side": strip(sides["peer"]),
                    "note": f"same kept channels {same:.0%}; params {sides['slimkit']['params'] / 1e6:.2f}M / "
                            f"{sides['peer']['params'] / 1e6:.2f}M; MACs {sides['slimkit']['macs'] / 1e6:,.0f}M / "
                            f"{sides['peer']['macs'] / 1e6:,.0f}M"})
    except Exception as exc:
        row.update({"slimkit": {"error": short_error(exc)}, "peer_side": {"error": short_error(exc)}})
    return row


def zoo_rows(work: Path, names: list[str]) -> list[dict[str, Any]]:
    """zoo.py's static int8 cases (its ``corr`` against its ``ort_corr``), then Keras' own int8 where it
    reaches furthest: zoo.py's Keras token model (Embedding, MultiHeadAttention's EinsumDense, Dense)."""
    import zoo

    specs, rows = {s.name: s for s in zoo.model_specs()}, []
    for name in names:
        log(f"zoo: {name} static")
        case = work / f"zoo-{name}"
        case.mkdir()
        out = zoo.run_case(specs[name], "static", case)
        n = out.numbers
        ours = {"quality": n["corr"]} if "corr" in n else {"error": f"{out.status}: {zoo.one_line(out.reason, 120)}"}
        theirs = ({"quality": n["ort_corr"]} if n.get("ort_corr") is not None
                  else {"error": n.get("ort_error", "onnxruntime's output shape differs")})
        rows.append({"comparison": f"static int8, zoo.py {name}", "framework": specs[name].framework,
                     "peer": "onnxruntime quantize_static (zoo.py's ORT r)", "quality_kind": "Pearson r w/ fp32",
                     "slimkit": ours, "peer_side": theirs,
                     "note": f"zoo.py case {out.status} in {out.seconds:.1f} s (both quantizers)"})
    rows.append(keras_int8_tokens(work))
    return rows


def keras_int8_tokens(work: Path) -> dict[str, Any]:
    import warnings

    import keras
    import zoo
    import zoo_models

    import slimkit

    row = {"comparison": "int8 (slimkit dynamic), zoo.py keras-mha", "framework": "keras",
           "peer": f"Keras {keras.__version__} model.quantize(\"int8\")", "quality_kind": "Pearson r w/ fp32",
           "size_kind": "file"}
    try:
        model, x = zoo_models.keras_sequence("mha")
        ref = zoo_models.framework_logits(model, x)
        sides: dict[str, dict[str, Any]] = {}
        with peers_digits.Clock() as clock:
            res = slimkit.compress(model, {"stages": [{"quantize": {"method": "dynamic"}}]}, calib_data=x,
                                   verbose=False)
        sides["slimkit"] = {**clock.record(), "onnx": str(work / "mha_slimkit.onnx")}
        res.export_onnx(sides["slimkit"]["onnx"])
        with peers_digits.Clock() as clock:
            copy = keras.models.clone_model(model)
            copy.set_weights(model.get_weights())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                copy.quantize("int8")
        sides["peer"] = {**clock.record(), "onnx": str(work / "mha_keras.onnx")}
        copy(x[:1])
        copy.export(sides["peer"]["onnx"], format="onnx", verbose=False)
        measure(sides, x, 3, gz=False)
        for side in sides.values():
            side["quality"] = float(np.corrcoef(zoo.ort_logits(Path(side["onnx"]), x).ravel(), ref.ravel())[0, 1])
        row.update({"slimkit": strip(sides["slimkit"]), "peer_side": strip(sides["peer"]),
                    "note": "random weights, 16 token sequences"})
    except Exception as exc:
        row.update({"slimkit": {"error": short_error(exc)}, "peer_side": {"error": short_error(exc)}})
    return row


# -------------------------------------------------------------------------------------------- table
def pair(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> tuple[str, str]:
    """``"slimkit / peer"`` and their ratio for one measure, or the error that stands for them."""
    a, b = row["slimkit"], row["peer_side"]
    for side, label in ((a, "slimkit"), (b, "peer")):
        if "error" in side:  # said once, in the quality column
            return (f"{label}: {side['error']}" if key == "quality" else "-"), "-"
    if key not in a or key not in b:
        return "-", "-"
    va, vb = a[key] * scale, b[key] * scale
    return f"{va:{fmt}} / {vb:{fmt}}", (f"{va / vb:.2f}" if vb else "-")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| comparison | framework | peer | quality | slimkit / peer | size KB slimkit / peer | size x "
             "| ORT ms slimkit / peer | latency x | wall s slimkit / peer | time x | notes |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        quality, _ = pair(r, "quality", ".4f" if r.get("quality_kind", "").startswith("Pearson") else ".1%")
        if r.get("quality_kind") == "top-1 agree w/ peer" and "quality" in r["slimkit"]:
            quality = f"{r['slimkit']['quality']:.1%}"  # the peer's own result is the reference
        size_key = "gzip_bytes" if r.get("size_kind") == "gzip" else "bytes"
        size, size_x = pair(r, size_key, ",.0f", 1 / 1024)
        ms, ms_x = pair(r, "ms", ".3g")
        secs, secs_x = pair(r, "seconds", ".1f")
        notes = [r.get("note", "")]
        if r.get("size_kind") == "gzip":
            notes.append("size = gzip of the ONNX file")
        sp = [r[k].get("sparsity") for k in ("slimkit", "peer_side")]
        if None not in sp:
            notes.append(f"sparsity {sp[0]:.0%} / {sp[1]:.0%}")
        a, b = r["slimkit"], r["peer_side"]
        if "vs_fp32_rel_diff" in a and "vs_fp32_rel_diff" in b:
            notes.append(f"max |diff| / max |fp32 logit| {a['vs_fp32_rel_diff']:.3g} / {b['vs_fp32_rel_diff']:.3g}")
        if a.get("other_cores") is not None and b.get("other_cores") is not None:
            notes.append(f"other processes' cores while timing {a['other_cores']:.1f} / {b['other_cores']:.1f}")
        if "rss_gb" in a and "rss_gb" in b:
            notes.append(f"peak RSS GB {a['rss_gb']:.2f} / {b['rss_gb']:.2f}")
        if "fp32" in r and "quality" in r["fp32"] and r.get("quality_kind") == "test acc":
            notes.append(f"fp32 {r['fp32']['quality']:.1%}")
        lines.append(f"| {r['comparison']} | {r['framework']} | {r['peer']} | {r.get('quality_kind', '-')} | {quality} "
                     f"| {size} | {size_x} | {ms} | {ms_x} | {secs} | {secs_x} | {'; '.join(n for n in notes if n)} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    out = {}
    for dist in PEER_DISTS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [peers_digits.WORKER_FLAG]:
        print(peers_digits.RESULT_TAG + json.dumps(peers_digits.tf_keras_worker(json.loads(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument("--ptq-models", default="resnet50,mobilenet_v2_0.35", help="speed.py's model names")
    parser.add_argument("--frameworks", default="keras,torch", help="for the post-training int8 rows")
    parser.add_argument("--size", type=int, default=224, help="image size of the ResNet50/MobileNetV2 rows")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (20 runs each)")
    parser.add_argument("--timing-rounds", type=int, default=2, help="timed runs of every compression "
                        "step but zoo.py's (the fastest is kept)")
    parser.add_argument("--zoo", default="MobileNetV3Small,hf-ViT,hf-GPT-2", help="zoo.py models of the static rows")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64x64 images, MobileNetV2 only, 1 round")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/peers.json "
                        "(not written with --quick unless given)")
    parser.add_argument("--out", type=Path, default=None, help="markdown; default benchmarks/results/peers.md")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if any(s not in SECTIONS for s in sections):
        parser.error(f"--sections: choose from {','.join(SECTIONS)}")
    if args.quick:
        args.size, args.rounds, args.timing_rounds, args.ptq_models = 64, 1, 1, "mobilenet_v2_0.35"
        args.zoo = "hf-ViT"
    elif args.json is None and args.out is None:
        args.json, args.out = RESULTS / "peers.json", RESULTS / "peers.md"
    peers_digits.check_recipe()

    load_before, use, start = os.getloadavg(), machine.OtherLoad(), time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "ptq" in sections:  # first: a worker's peak RSS starts from this process's size when it forks
            rows += ptq_rows(work, args.ptq_models.split(","), args.frameworks.split(","), args.size, args.rounds,
                             args.timing_rounds)
        if "digits" in sections:
            rows += digits_rows(work, args.rounds, args.timing_rounds)[0]
        if "structured" in sections:
            log("structured: slimkit vs Torch-Pruning")
            rows.append(structured_row(work, args.size, args.rounds, args.timing_rounds))
        if "zoo" in sections:
            rows += zoo_rows(work, [n for n in args.zoo.split(",") if n])
    wall, others, load_after = time.perf_counter() - start, use.cores(), os.getloadavg()
    command = "python benchmarks/peers.py" + (" " + " ".join(argv) if argv else "")
    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
              "machine": machine.cpu(), "versions": versions(), "wall_seconds": wall,
              "load_average_before": list(load_before), "load_average_after": list(load_after),
              "other_processes_cores": others, "settings": vars(args) | {"json": str(args.json), "out": str(args.out)},
              "rows": rows}
    vers = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    text = "\n".join([
        "# slimkit against its peers", "",
        f"`{command}`, {record['date'][:10]}: {machine.cpu()}; wall time {wall / 60:.1f} min; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; other processes used "
        f"{'n/a' if others is None else format(others, '.2f')} cores on average during the run (a shared machine: "
        "latencies and times are noisier than the ratios of one comparison, whose sides run back to back).", "",
        f"Versions: {vers}.", "",
        "Ratios are slimkit / peer: below 1 is smaller or faster for size, latency and time. Quality: digits "
        "test accuracy in onnxruntime (450 images); random-weight models: top-1 agreement with the fp32 file or "
        "with the peer's result on 16 random images. Sizes are ONNX files (pruned digits: gzip of the file). "
        "ORT ms: median batch-1 latency, default threads, files of a row interleaved. Wall s: the compression "
        "step alone (fine-tuning included, export excluded), the fastest of the timed runs (a shared "
        "machine slows some runs several-fold); static int8 rows: speed.py's workers, one fresh process per run (slimkit: compress + verified export; ORT: "
        "quant_pre_process + quantize_static); channel row: prune_speed.py's "
        "sides in this process after one untimed run each. Other processes' "
        "cores: CPU used by everything else on the machine during that timed run.", "",
        table(rows), ""])
    print(text)
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, default=str) + "\n")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
