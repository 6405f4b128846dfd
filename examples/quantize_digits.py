"""Quantize the same digits CNN to int8 in Keras and in PyTorch (PTQ and QAT), export QDQ ONNX.

Run:  python examples/quantize_digits.py [--framework keras|torch|both] [--out DIR]
For each framework: trains the float CNN, runs ``recipes/int8_static.yaml`` (post-training) and
``recipes/int8_qat.yaml`` (quantization-aware training) on it, exports both int8 models, and
measures accuracy in the framework (simulated) and in onnxruntime (the deployed int8 model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import digits  # noqa: E402  (the example's own helper module, next to this file)
import slimkit  # noqa: E402
from slimkit.deploy.runtime import run as onnx_run  # noqa: E402

RECIPES = {"ptq": HERE / "recipes" / "int8_static.yaml", "qat": HERE / "recipes" / "int8_qat.yaml"}


def run(framework: str, out_dir: Path) -> dict[str, float]:
    """Trains, quantizes with both recipes, exports; returns accuracies, sizes and latencies."""
    train_data, test_data = digits.load(framework)
    model = digits.build(framework)
    print(f"\n=== {framework}: training the float baseline", flush=True)
    digits.train(framework, model, train_data)
    x_test, y_test = test_data
    fp32_file = slimkit.export_onnx(model, out_dir / f"digits_{framework}_fp32.onnx", sample=x_test[:16])
    numbers: dict[str, float] = {"onnx KB fp32": fp32_file.bytes / 1024}
    for name, recipe in RECIPES.items():
        result = slimkit.compress(model, recipe, train_data=train_data, calib_data=train_data[0],
                                  eval_data=test_data)
        path = out_dir / f"digits_{framework}_{name}_int8.onnx"
        row = result.export_onnx(path)
        print(result.report.to_markdown())
        deployed = np.mean(np.argmax(onnx_run(str(path), x_test), axis=1) == y_test)
        q = result.report.quant_exports[-1]
        numbers["accuracy fp32"] = result.report.metrics_before["accuracy"]
        numbers[f"accuracy {name} (simulated)"] = result.report.metrics_after["accuracy"]
        numbers[f"accuracy {name} (onnxruntime int8)"] = float(deployed)
        numbers[f"onnx KB {name}"] = row.bytes / 1024
        numbers[f"size ratio {name}"] = q.size_ratio
        numbers[f"max |ort - simulated| / step {name}"] = q.max_abs_diff / (q.output_step or 1.0)
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["keras", "torch", "both"], default="both")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    frameworks = digits.FRAMEWORKS if args.framework == "both" else (args.framework,)
    results = {fw: run(fw, args.out) for fw in frameworks}
    print("\n## int8 digits (same recipe files for every framework)\n")
    print("| metric | " + " | ".join(frameworks) + " |")
    print("|---|" + "---:|" * len(frameworks))
    for key in results[frameworks[0]]:
        print(f"| {key} | " + " | ".join(f"{results[fw][key]:.4g}" for fw in frameworks) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
