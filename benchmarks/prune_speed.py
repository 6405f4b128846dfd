"""Channel-pruning speed: slimkit against Torch-Pruning on the same PyTorch model, same channels.

Both prune 50% of the channels of every prunable group of a random-weight, torchvision-shaped ResNet50
(``torch_models.resnet50``; the classifier's outputs kept), one-shot, by the L1 norm of each channel
averaged over the layers that hold it, rounded to multiples of 8. slimkit's side is ``slimkit.compress``
with a channel stage; Torch-Pruning's is building its ``DependencyGraph`` (inside ``MetaPruner``) and
``step()``. slimkit's graph capture (``torch.fx`` trace + shape propagation, the equivalent of
Torch-Pruning's dependency tracing) is reported apart from its own work (scoring, grouping, slicing,
rebuild), as the stage row of the report times it.

Each side runs once untimed (imports, first-call costs), then ``--rounds`` interleaved timed rounds;
medians are reported, and the median of each round's ratio (the two sides of a round run back to back,
so load from elsewhere weighs on both). The pruned models are compared: parameter count, MACs (Torch-Pruning's own
counter on both) and the share of kept channels that are the same channels, layer by layer.

Run:  python benchmarks/prune_speed.py [--rounds 5] [--ratio 0.5] [--size 224] [--out FILE]
Needs the ``bench`` extra (``torch-pruning``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import machine  # noqa: E402
import slimkit  # noqa: E402


def fresh_model():
    import torch

    import torch_models

    torch.manual_seed(0)
    model = torch_models.resnet50().eval()
    with torch.no_grad():  # channel ids, read back by kept_agreement; no L1 score looks at them
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.copy_(torch.arange(layer.num_features, dtype=torch.float32))
    return model


def run_slimkit(model, x: np.ndarray, ratio: float):
    recipe = {"fine_tune": None, "layers": {"exclude": ["fc"]},
              "stages": [{"prune": {"method": "channel", "sparsity": ratio, "criterion": "l1",
                                    "round_to": 8, "samples": len(x)}}]}
    start = time.perf_counter()
    result = slimkit.compress(model, recipe, calib_data=x, verbose=False)
    total = time.perf_counter() - start
    (stage,) = result.report.stages
    return result.model, total, stage.capture_seconds


def run_torch_pruning(model, x: np.ndarray, ratio: float):
    import torch
    import torch_pruning as tp

    start = time.perf_counter()
    example = torch.from_numpy(x[:1])
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=[model.fc], round_to=8)
    pruner.step()
    return model, time.perf_counter() - start


def kept_agreement(a, b) -> float:
    """Share of kept channels that are the same channels in ``a`` and ``b``, batch norm by batch norm.

    :func:`fresh_model` numbers each batch norm's channels in its running mean (which neither L1 score
    reads), and both libraries slice that buffer with the channels they keep.
    """
    import torch

    same = total = 0
    modules_b = dict(b.named_modules())
    for name, layer in a.named_modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            ours, theirs = (set(m.running_mean.long().tolist()) for m in (layer, modules_b[name]))
            same += len(ours & theirs)
            total += max(len(ours), len(theirs))
    return same / max(1, total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import torch
    import torch_pruning as tp

    x = np.random.default_rng(0).normal(size=(4, 3, args.size, args.size)).astype(np.float32)
    load = os.getloadavg()[0]
    run_slimkit(fresh_model(), x, args.ratio)  # untimed: imports and first-call costs on both sides
    run_torch_pruning(fresh_model(), x, args.ratio)
    times: dict[str, list[float]] = {"slimkit": [], "capture": [], "torch-pruning": []}
    for _ in range(args.rounds):
        small, total, capture = run_slimkit(fresh_model(), x, args.ratio)
        times["slimkit"].append(total)
        times["capture"].append(capture)
        theirs, seconds = run_torch_pruning(fresh_model(), x, args.ratio)
        times["torch-pruning"].append(seconds)
        print(f"round: slimkit {total:.2f} s (graph {capture:.2f} s), torch-pruning {seconds:.2f} s, "
              f"load {os.getloadavg()[0]:.2f}",
              file=sys.stderr, flush=True)
    example = torch.from_numpy(x[:1])
    dense = fresh_model()
    ops = {k: tp.utils.count_ops_and_params(m, example) for k, m in
           (("dense", dense), ("slimkit", small), ("torch-pruning", theirs))}
    agree = kept_agreement(small, theirs)
    med = {k: statistics.median(v) for k, v in times.items()}
    owns = [t - c for t, c in zip(times["slimkit"], times["capture"])]
    own = statistics.median(owns)
    # each round's own ratio: both sides ran back to back, so load from elsewhere hits both alike
    ratio = statistics.median(o / t for o, t in zip(owns, times["torch-pruning"]))
    lines = [
        f"# Channel pruning speed: slimkit vs Torch-Pruning {tp.__version__}",
        "",
        f"Machine: {machine.cpu()}; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; torch "
        f"{torch.__version__}. `python benchmarks/prune_speed.py --rounds {args.rounds}` (median of "
        f"{args.rounds} interleaved rounds, in one process after one untimed run of each).",
        "",
        f"PyTorch ResNet50 (random weights, {args.size}x{args.size}), {args.ratio:.0%} of each group's "
        "channels, L1, round_to 8, one-shot, classifier outputs kept.",
        "",
        "| | slimkit | Torch-Pruning |",
        "|---|---:|---:|",
        f"| total s | {med['slimkit']:.2f} | {med['torch-pruning']:.2f} |",
        f"| of which graph capture s | {med['capture']:.2f} | (inside its total) |",
        f"| own work s (total - capture) | {own:.2f} | |",
        f"| own work / Torch-Pruning total: median of the rounds' ratios | {ratio:.2f}x | |",
        f"| own work / Torch-Pruning total: ratio of the medians | {own / med['torch-pruning']:.2f}x | |",
        f"| params | {ops['slimkit'][1]:,} | {ops['torch-pruning'][1]:,} |",
        f"| MACs (Torch-Pruning's counter) | {ops['slimkit'][0] / 1e6:,.1f} M | {ops['torch-pruning'][0] / 1e6:,.1f} M |",
        f"| dense params / MACs | {ops['dense'][1]:,} / {ops['dense'][0] / 1e6:,.1f} M | |",
        f"| same kept channels (per batch norm) | {agree:.1%} | |",
    ]
    return machine.emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    sys.exit(main())
