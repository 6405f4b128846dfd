"""SIGKILL during ONNX export: the target is absent, old or complete, and no temporary file outlives the next export.

Runs ``--runs`` exports (float and static int8, Keras and PyTorch, small CNNs) in child processes and
kills each with SIGKILL at a random moment of its export (uniform over 1.2x the export's measured
duration, so some kills land after it finished). After each kill:

* the target must be absent (only where there was none before), byte-identical to the old file, or
  complete: it loads in onnxruntime and matches the killed child's model;
* the temporary files the child left are counted;
* this process then exports into the same directory, after which no temporary file may remain: stale
  files of the dead child are removed by the next write (``slimkit.staging``).

Run:  python benchmarks/kill_export.py [--runs 20] [--seed 0] [--frameworks keras torch]
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

KINDS = ("float", "int8")
STATIC = {"seed": 0, "stages": [{"quantize": {"method": "static", "activations": {"samples": 32}}}]}


def build(framework: str, seed: int):
    """A small CNN (3 convs with batch norm, 24x24x3 inputs) with seeded weights, and 32 inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 24, 24, 3)).astype(np.float32)
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(seed)
        L = keras.layers
        inp = keras.Input((24, 24, 3))
        h = inp
        for i, width in enumerate((16, 32, 32)):
            h = L.ReLU()(L.BatchNormalization(name=f"bn{i}")(L.Conv2D(width, 3, padding="same", name=f"conv{i}")(h)))
        out = L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(h))
        return keras.Model(inp, out), x
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width_in = 3
    for width in (16, 32, 32):
        layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        width_in = width
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    return model, x.transpose(0, 3, 1, 2).copy()


def prepared(framework: str, kind: str, seed: int):
    """``(export(path), model to compare with, inputs)`` for one export of ``kind``."""
    import slimkit

    model, x = build(framework, seed)
    if kind == "int8":
        result = slimkit.compress(model, STATIC, calib_data=x, verbose=False)
        return result.export_onnx, result.model, x
    return (lambda path: slimkit.export_onnx(model, path, x)), model, x


def worker(framework: str, kind: str, seed: int, target: str, expected: str) -> None:
    """Child: prepare, save the model's expected outputs, say ``ready``, export, say ``done``."""
    from slimkit.registry import adapter_for

    export, model, x = prepared(framework, kind, seed)
    np.save(expected, adapter_for(model).predict(x[:8]))
    print("ready", flush=True)
    start = time.perf_counter()
    export(target)
    print(f"done {time.perf_counter() - start:.3f}", flush=True)


def temps(directory: Path) -> list[Path]:
    from slimkit.staging import TEMP_PREFIX

    return sorted(p for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def complete(path: Path, expected: np.ndarray, x: np.ndarray, kind: str) -> bool:
    """``path`` loads in onnxruntime and matches ``expected`` (int8: within 5% of the output range)."""
    from slimkit.deploy.runtime import run

    try:
        got = run(str(path), x)
    except Exception:  # a truncated or corrupt file
        return False
    span = float(np.max(expected) - np.min(expected)) or 1.0
    tol = 0.05 * span if kind == "int8" else 1e-3 * max(1.0, float(np.max(np.abs(expected))))
    return got.shape == expected.shape and float(np.max(np.abs(got - expected))) <= tol


def spawn(framework: str, kind: str, seed: int, target: Path, expected: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", framework, kind, str(seed), str(target), str(expected)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wait_for(child: subprocess.Popen, word: str, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    for line in child.stdout:  # type: ignore[union-attr]
        if line.startswith(word):
            return line.strip()
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"child {child.pid} exited without {word!r} (rc {child.poll()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frameworks", nargs="+", default=["keras", "torch"])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    combos = [(fw, kind) for fw in args.frameworks for kind in KINDS]
    root = Path(tempfile.mkdtemp(prefix="kill_export."))
    print(f"working in {root}", flush=True)

    durations = {}
    for fw, kind in combos:  # how long each export takes, to spread the kills over it
        d = root / f"{fw}-{kind}"
        d.mkdir()
        child = spawn(fw, kind, 0, d / "m.onnx", root / "calibrate.npy")
        durations[fw, kind] = float(wait_for(child, "done").split()[1])
        child.wait()
        print(f"{fw} {kind}: export takes {durations[fw, kind]:.2f} s", flush=True)

    rows, failures = [], []
    for run in range(args.runs):
        fw, kind = combos[run % len(combos)]
        d = root / f"{fw}-{kind}"
        target = d / "m.onnx"
        if run % 3 == 0:
            target.unlink(missing_ok=True)  # some runs start without a file: absent is then allowed
        old = target.read_bytes() if target.exists() else None
        seed = 100 + run
        expected_path = root / f"expected-{run}.npy"
        child = spawn(fw, kind, seed, target, expected_path)
        wait_for(child, "ready")
        delay = rng.uniform(0.0, 1.2 * durations[fw, kind])
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()  # reaped: its pid is gone
        _, x = build(fw, seed)
        if not target.exists():
            state = "absent"
        elif old is not None and target.read_bytes() == old:
            state = "old"
        elif complete(target, np.load(expected_path), x[:8], kind):
            state = "complete"
        else:
            state = "CORRUPT"
        left = temps(d)
        left_bytes = sum(p.stat().st_size for p in left)
        export, model, _ = prepared(fw, kind, seed + 1000)  # the next export, by this process
        export(d / "m.onnx")
        after = temps(d)
        ok = state in ("old", "complete") or (state == "absent" and old is None)
        if not ok or after:
            failures.append(run)
        rows.append((run, fw, kind, f"{delay:.2f}", state, len(left), left_bytes, len(after)))
        print(f"run {run:2d} {fw:5s} {kind:5s} kill at {delay:5.2f} s: target {state:8s} temp files left "
              f"{len(left)} ({left_bytes} B), after the next export {len(after)}", flush=True)

    states = {s: sum(r[4] == s for r in rows) for s in ("absent", "old", "complete", "CORRUPT")}
    leftover_runs = sum(r[5] > 0 for r in rows)
    print("\n| run | framework | export | kill at (s) | target | temp files left | bytes | after next export |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    print(f"\n{len(rows)} kills: target absent {states['absent']}, old {states['old']}, complete "
          f"{states['complete']}, corrupt {states['CORRUPT']}; {leftover_runs} kills left temporary files "
          f"(max {max((r[6] for r in rows), default=0)} B), {sum(r[7] for r in rows)} remained after the next export; "
          f"{'FAILED runs ' + str(failures) if failures else 'all checks passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
        sys.exit(0)
    sys.exit(main())
