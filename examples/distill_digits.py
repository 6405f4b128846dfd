"""Distill the digits CNN into a half-width student, in Keras and in PyTorch, with one recipe file.

Run:  python examples/distill_digits.py [--framework keras|torch|both] [--labelled N] [--seeds K]
For each framework: trains the full-width CNN (the teacher) on the whole training split, then trains a
half-width student (every hidden layer halved) from scratch on ``--labelled`` labelled images with
``recipes/distill_digits.yaml``, and the same student with the same seeds, batches and steps without
distillation (``alpha: 0``: labels only). Distillation is what a few labels need most: the teacher's
softened outputs say how each image resembles every class, not only which class it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import digits  # noqa: E402  (the example's own helper module, next to this file)
import slimkit  # noqa: E402

RECIPE = HERE / "recipes" / "distill_digits.yaml"


def _accuracy(model: Any, data: tuple[np.ndarray, np.ndarray]) -> float:
    from slimkit.registry import adapter_for

    return float(np.mean(np.argmax(adapter_for(model).predict(data[0]), axis=1) == data[1]))


def run(framework: str, labelled: int = 200, seeds: tuple[int, ...] = (0, 1, 2), epochs: int | None = None,
        teacher_epochs: int = 30, verbose: bool = False) -> dict[str, Any]:
    """Teacher accuracy and, per seed, the student's test accuracy with and without distillation
    (``epochs``: the recipe's, unless given)."""
    train_data, test_data = digits.load(framework)
    teacher = digits.build(framework, seed=100)
    digits.train(framework, teacher, train_data, epochs=teacher_epochs)
    recipe = slimkit.Recipe.load(RECIPE)
    if epochs is not None:
        stage = recipe.stages[0]
        recipe = _with_stage(recipe, stage, fine_tune=_replace(stage.fine_tune, epochs=epochs))
    plain = _with_stage(recipe, recipe.stages[0], distill=_replace(recipe.stages[0].distill, alpha=0.0))
    few = (train_data[0][:labelled], train_data[1][:labelled])
    numbers: dict[str, Any] = {"teacher": _accuracy(teacher, test_data), "distilled": [], "labels only": []}
    for seed in seeds:
        student = digits.build(framework, seed=seed, width=0.5)
        for name, r in (("distilled", recipe), ("labels only", plain)):
            seeded = _replace(r, seed=seed)
            result = slimkit.compress(student, seeded, train_data=few, teacher=teacher, verbose=verbose)
            numbers[name].append(_accuracy(result.model, test_data))
    numbers["gain (points)"] = 100 * (np.mean(numbers["distilled"]) - np.mean(numbers["labels only"]))
    return numbers


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def _with_stage(recipe: Any, stage: Any, **changes: Any) -> Any:
    return _replace(recipe, stages=(_replace(stage, **changes),) + recipe.stages[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["keras", "torch", "both"], default="both")
    parser.add_argument("--labelled", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    frameworks = digits.FRAMEWORKS if args.framework == "both" else (args.framework,)
    print(f"## half-width student, {args.labelled} labelled digits, {args.seeds} seeds (test accuracy)\n")
    print("| framework | teacher | distilled (mean) | labels only (mean) | gain, points | per seed |")
    print("|---|---:|---:|---:|---:|---|")
    for fw in frameworks:
        n = run(fw, args.labelled, tuple(range(args.seeds)))
        seeds = ", ".join(f"{a:.3f} vs {b:.3f}" for a, b in zip(n["distilled"], n["labels only"]))
        print(f"| {fw} | {n['teacher']:.3f} | {np.mean(n['distilled']):.3f} | {np.mean(n['labels only']):.3f} | "
              f"{n['gain (points)']:+.2f} | {seeds} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
