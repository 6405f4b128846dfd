"""Prune the same digits CNN in Keras and in PyTorch with one recipe file, export both to ONNX.

Run:  python examples/prune_digits.py [--framework keras|torch|both] [--recipe FILE] [--out DIR]
The default recipe zeroes 80% of the weights (magnitude); ``recipes/channel_50.yaml`` removes half
of the channels instead. Prints slimkit's report per framework and a before/after table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import digits  # noqa: E402  (the example's own helper module, next to this file)
import slimkit  # noqa: E402

RECIPE = HERE / "recipes" / "prune_80.yaml"


def run(framework: str, out_dir: Path, recipe_path: Path = RECIPE) -> dict[str, float | None]:
    """Trains a dense CNN, prunes it with the recipe, exports dense and pruned ONNX; returns the numbers."""
    train_data, test_data = digits.load(framework)
    model = digits.build(framework)
    print(f"\n=== {framework}: training the dense baseline", flush=True)
    digits.train(framework, model, train_data)

    recipe = slimkit.Recipe.load(recipe_path)
    result = slimkit.compress(model, recipe, train_data=train_data, eval_data=test_data)
    dense_file = slimkit.export_onnx(model, out_dir / f"digits_{framework}_dense.onnx", sample=test_data[0][:16])
    pruned_file = result.export_onnx(out_dir / f"digits_{framework}_{recipe_path.stem}.onnx")
    print(result.report.to_markdown())
    report = result.report
    targeted = [r for r in report.layers if r.target is not None]
    return {
        "accuracy dense": report.metrics_before["accuracy"],
        "accuracy pruned": report.metrics_after["accuracy"],
        # Channel pruning sets no kernel-sparsity target: it removes whole channels instead.
        "kernel sparsity (targeted layers)": 1 - sum(r.kernel_nonzeros for r in targeted) /
        sum(r.kernel_params for r in targeted) if targeted else None,
        "parameters after / before": report.weight_bytes["fp32 after"] / report.weight_bytes["fp32 before"],
        "onnx bytes dense": dense_file.bytes,
        "onnx bytes pruned": pruned_file.bytes,
        "onnx gzip bytes dense": dense_file.gzip_bytes,
        "onnx gzip bytes pruned": pruned_file.gzip_bytes,
        "onnx max abs diff": pruned_file.max_abs_diff or 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["keras", "torch", "both"], default="both")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    frameworks = digits.FRAMEWORKS if args.framework == "both" else (args.framework,)
    results = {fw: run(fw, args.out, args.recipe) for fw in frameworks}

    print("\n## before / after (same recipe file for every framework)\n")
    print("| metric | " + " | ".join(frameworks) + " |")
    print("|---|" + "---:|" * len(frameworks))
    for key in next(iter(results.values())):
        cells = ["-" if results[fw][key] is None else f"{results[fw][key]:.4g}" for fw in frameworks]
        print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
