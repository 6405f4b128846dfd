"""Structured (channel) pruning benchmark: ResNet50- and MobileNetV2-shaped models, both frameworks.

For each model and channel ratio, slimkit removes the lowest-L1 channels of every prunable group
(rounded to multiples of 8), rebuilds the smaller model, exports it to ONNX (verified) and measures
it in onnxruntime against the unpruned export of the same model, in the same process:
parameters, MACs (counted on the ONNX graph), file size and median latency (batch 1).

Run:  python benchmarks/structured.py [--framework keras|torch|both] [--ratios 0.3 0.5] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import slimkit  # noqa: E402
from slimkit.deploy.bench import latency_ms, macs  # noqa: E402
from slimkit.registry import adapter_for  # noqa: E402

MODELS = ("resnet50", "mobilenet_v2")


def build(framework: str, name: str, size: int):
    """An untrained model with random weights (no download) and a calibration batch in its layout."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, size, size, 3)).astype(np.float32)
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(0)
        ctor = keras.applications.ResNet50 if name == "resnet50" else keras.applications.MobileNetV2
        return ctor(weights=None, input_shape=(size, size, 3), classes=1000), x
    import torch

    import torch_models

    torch.manual_seed(0)
    model = torch_models.resnet50() if name == "resnet50" else torch_models.mobilenet_v2()
    return model.eval(), x.transpose(0, 3, 1, 2).copy()


def params(model) -> int:
    return sum(layer.params for layer in adapter_for(model).layers())


def measure(model, x, path: Path, repeats: int) -> dict[str, float]:
    row = slimkit.export_onnx(model, path, sample=x[:2])
    return {"params": params(model), "macs": macs(str(path)), "bytes": row.bytes,
            "latency_ms": latency_ms(str(path), x[:1], repeats=repeats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["keras", "torch", "both"], default="both")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3, 0.5])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    frameworks = ("keras", "torch") if args.framework == "both" else (args.framework,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for framework in frameworks:
            for name in args.models:
                model, x = build(framework, name, args.size)
                base = measure(model, x, Path(tmp) / f"{framework}_{name}.onnx", args.repeats)
                rows.append((name, framework, 0.0, base, base, 0.0))
                for ratio in args.ratios:
                    recipe = {"fine_tune": None, "layers": {"exclude": ["*predictions*", "*fc*", "*classifier*"]},
                              "stages": [{"prune": {"method": "channel", "sparsity": ratio, "criterion": "l1",
                                                    "round_to": 8, "samples": 4}}]}
                    start = time.perf_counter()
                    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
                    seconds = time.perf_counter() - start
                    small = measure(result.model, x, Path(tmp) / f"{framework}_{name}_{ratio}.onnx", args.repeats)
                    rows.append((name, framework, ratio, small, base, seconds))
                    print(f"done {framework} {name} ratio {ratio}: {seconds:.1f}s", file=sys.stderr, flush=True)

    print("\n| model | framework | channel ratio | params | MACs (M) | ONNX MB | ORT ms (batch 1) "
          "| params x | MACs x | speedup | prune s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, framework, ratio, m, base, seconds in rows:
        print(f"| {name} | {framework} | {ratio:.0%} | {m['params']:,} | {m['macs'] / 1e6:,.0f} | "
              f"{m['bytes'] / 2**20:.1f} | {m['latency_ms']:.2f} | {base['params'] / m['params']:.2f} | "
              f"{base['macs'] / m['macs']:.2f} | {base['latency_ms'] / m['latency_ms']:.2f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
