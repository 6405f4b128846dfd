"""Magnitude-pruning fine-tune step overhead in Keras: slimkit (Keras 3) against tfmot (tf_keras).

Each framework is compared with its own plain step: the same model, optimizer, loss and batches
trained by ``model.fit`` without pruning. slimkit's side runs ``slimkit.compress`` with a gradual
magnitude stage through ``fit_fn`` (the user's own ``model.fit`` with slimkit's callback); tfmot's side
wraps the tf_keras twin in ``prune_low_magnitude`` with a ``PolynomialDecay`` schedule and its
``UpdatePruningStep`` callback. Both update masks every ``--every`` steps from 0 to the target over
the whole run.

A step's time is the interval between consecutive ``on_train_batch_begin`` calls, so whatever runs
after a step (mask updates, callbacks) counts. The first ``--skip`` steps (tracing) are dropped; the
mean of the rest is the run's step time (mask updates happen on a few steps, so the mean, not the
median, carries their cost). Every measurement runs in a fresh process; rounds are interleaved and
the overhead (pruned / plain - 1) is the median over rounds.

Run:  python benchmarks/prune_step.py [--rounds 3] [--steps 300] [--every 10] [--out FILE]
Needs the ``bench`` extra (``tensorflow-model-optimization``, which brings ``tf_keras``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import machine  # noqa: E402

MODES = ("keras-plain", "keras-slimkit", "tf_keras-plain", "tf_keras-tfmot")


def build(k, size: int):
    """A small image classifier (conv, batch norm, dense), the same in Keras 3 and tf_keras."""
    layers = k.layers
    inputs = k.Input((size, size, 3))
    h = inputs
    for width in (32, 64, 128):
        h = layers.Conv2D(width, 3, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = layers.ReLU()(h)
        h = layers.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    h = layers.Dense(256, activation="relu")(h)
    return k.Model(inputs, layers.Dense(10)(h))


def child(mode: str, steps: int, every: int, batch: int, size: int, skip: int) -> dict:
    """One measurement, in this (fresh) process."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if mode.startswith("tf_keras"):
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 10, steps * batch)
    if mode.startswith("tf_keras"):
        import tf_keras as k
    else:
        import keras as k
    k.utils.set_random_seed(0)
    model = build(k, size)
    stamps: list[float] = []

    class Timer(k.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            stamps.append(time.perf_counter())

        def on_train_end(self, logs=None):
            stamps.append(time.perf_counter())

    def fit(m, *callbacks):
        m.compile(optimizer=k.optimizers.SGD(0.01, momentum=0.9),
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[*callbacks, Timer()])

    sparsity = 0.8
    if mode.endswith("plain"):
        fit(model)
    elif mode == "keras-slimkit":
        import slimkit

        recipe = {"fine_tune": {"epochs": 1, "batch_size": batch},
                  "stages": [{"prune": {"method": "magnitude", "sparsity": sparsity,
                                        "schedule": {"begin": 0.0, "end": 1.0, "every": every}}}]}
        slimkit.compress(model, recipe, train_data=(x, y), fit_fn=lambda m, cb: fit(m, cb), verbose=False)
    else:
        import tensorflow_model_optimization as tfmot

        sched = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=steps, frequency=every)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=sched)
        fit(pruned, tfmot.sparsity.keras.UpdatePruningStep())
    gaps = np.diff(stamps)[skip:]
    return {"mean_ms": 1e3 * float(np.mean(gaps)), "p90_ms": 1e3 * float(np.percentile(gaps, 90)),
            "steps": int(len(gaps))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--skip", type=int, default=20)
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    settings = (args.steps, args.every, args.batch, args.size, args.skip)
    if args.child:
        print(json.dumps(child(args.child, *settings)))
        return 0
    load = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--every",
                   str(args.every), "--batch", str(args.batch), "--size", str(args.size), "--skip", str(args.skip)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{mode} failed")
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(mode, runs[mode][-1], f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)

    def overhead(pruned: str, plain: str) -> float:
        return statistics.median(p["mean_ms"] / q["mean_ms"] - 1 for p, q in zip(runs[pruned], runs[plain]))

    med = {m: statistics.median(r["mean_ms"] for r in runs[m]) for m in MODES}
    p90 = {m: statistics.median(r["p90_ms"] for r in runs[m]) for m in MODES}
    ours, theirs = overhead("keras-slimkit", "keras-plain"), overhead("tf_keras-tfmot", "tf_keras-plain")
    import importlib.metadata as md

    lines = [
        "# Keras magnitude-pruning step overhead: slimkit vs tfmot",
        "",
        f"Machine: {machine.cpu()}; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; keras "
        f"{md.version('keras')}, tf_keras {md.version('tf_keras')}, tensorflow-model-optimization "
        f"{md.version('tensorflow-model-optimization')}. `python benchmarks/prune_step.py --rounds {args.rounds} "
        f"--steps {args.steps} --every {args.every}`: a 6-conv CNN at {args.size}x{args.size}, batch {args.batch}, "
        f"SGD, {args.steps} steps of which the first {args.skip} are dropped, masks updated every {args.every} steps from 0 to "
        "80%; one fresh process per measurement, rounds interleaved, medians over rounds.",
        "",
        "| | plain step ms (mean / p90) | pruned step ms (mean / p90) | overhead |",
        "|---|---:|---:|---:|",
        f"| slimkit, Keras 3 | {med['keras-plain']:.2f} / {p90['keras-plain']:.2f} | "
        f"{med['keras-slimkit']:.2f} / {p90['keras-slimkit']:.2f} | {ours:+.1%} |",
        f"| tfmot, tf_keras | {med['tf_keras-plain']:.2f} / {p90['tf_keras-plain']:.2f} | "
        f"{med['tf_keras-tfmot']:.2f} / {p90['tf_keras-tfmot']:.2f} | {theirs:+.1%} |",
        "",
        f"slimkit's overhead minus tfmot's: {100 * (ours - theirs):+.1f} points (target: at most +3).",
    ]
    return machine.emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    sys.exit(main())
