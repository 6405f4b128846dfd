"""``slimkit bench``: ONNX files side by side in onnxruntime: latency, throughput, size, MACs and how
far their outputs agree with the first file's."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from slimkit.cli.errors import EXIT_HELP, debug_option, guarded
from slimkit.cli.loading import inputs_of, load_data
from slimkit.errors import DataError, UnsupportedModelError


@dataclass(frozen=True)
class BenchRow:
    """One file's measurements (latencies in milliseconds per run of ``batch`` samples)."""

    path: str
    bytes: int
    macs: int | None
    batch: int
    median_ms: float
    p90_ms: float
    samples_per_s: float
    max_abs_diff: float | None  # against the first file, on the same inputs (None for the first)
    top1_agreement: float | None  # share of samples whose argmax equals the first file's


@click.command(epilog=EXIT_HELP)
@click.argument("files", nargs=-1, required=True, metavar="FILE.onnx...")
@click.option("--data", "data_spec", metavar="FILE|MODULE:FN",
              help="Inputs (.npz, .npy or module:function); default: seeded random inputs of the first file's "
                   "input shape (dynamic axes taken as 1).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Samples per run.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="onnxruntime intra-op threads (0: onnxruntime's default, every core).")
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per file.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs first.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@debug_option
@guarded
def bench(files: tuple[str, ...], data_spec: str | None, batch: int, threads: int, repeats: int, warmup: int,
          as_json: bool) -> None:
    """Measure ONNX files in onnxruntime (CPU), side by side.

    Per file: size, MACs per sample, median and 90th-percentile latency of one run of --batch samples,
    throughput, and the outputs' agreement with the first file's on the same inputs (max |difference|,
    and the share of equal argmax for classifier outputs). A Keras (NHWC) and a PyTorch (NCHW) file of
    the same network take the same inputs: images are transposed to each file's layout.

    \b
      slimkit bench dense.onnx pruned.onnx int8.onnx --threads 1
    """
    from slimkit.deploy import load_bench

    meter = load_bench()
    sessions = [_session(meter, f, threads) for f in files]
    x = _inputs(data_spec, sessions[0], batch)
    rows, reference = [], None
    for path, sess in zip(files, sessions):
        feed = _fitted(x, sess.get_inputs(), path)
        out = _run(sess, feed, path)
        times = meter.latencies_ms(path, feed, repeats, warmup, threads, sess=sess)
        median = float(np.median(times))
        diff = agree = None
        if reference is None:
            reference = out
        else:
            diff, agree = _agreement(reference, out, files[0], path)
        rows.append(BenchRow(path, os.path.getsize(path), _macs(meter, path), batch, median,
                             float(np.percentile(times, 90)), batch * 1e3 / median if median else float("inf"),
                             diff, agree))
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        click.echo(table(rows, threads))


def _session(meter: Any, path: str, threads: int) -> Any:
    if not Path(path).is_file():
        raise UnsupportedModelError(f"{path}: no such file")
    try:
        return meter.session(path, threads)
    except Exception as exc:  # onnxruntime's own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"{path}: onnxruntime cannot load it as a model ({first[:300]})") from None


def _inputs(spec: str | None, sess: Any, batch: int) -> Any:
    if spec is not None:
        x = inputs_of(load_data(spec, "--data"), "--data", batch)
        if x is None:
            raise DataError(f"--data {spec}: bench needs numpy inputs, not a loader")
        return x
    rng = np.random.default_rng(0)
    out = {}
    for spec_in in sess.get_inputs():
        shape = [batch] + [d if isinstance(d, int) and d > 0 else 1 for d in spec_in.shape[1:]]
        if "int" in spec_in.type:
            out[spec_in.name] = rng.integers(0, 2, shape)
        else:
            out[spec_in.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _fitted(x: Any, graph_inputs: list[Any], path: str) -> dict[str, np.ndarray]:
    """The feed for one file: arrays matched to its inputs by name (dict) or position, images moved to
    the file's channel layout when only that makes them fit."""
    from slimkit.deploy import load_runtime

    feed = load_runtime().feed
    names = [i.name for i in graph_inputs]
    if isinstance(x, dict):
        arrays = list(x.values()) if set(x) != set(names) and len(x) == len(names) else [x.get(n) for n in names]
    else:
        arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(arrays) != len(names) or any(a is None for a in arrays):
        raise DataError(f"{path} takes inputs {names}; the data has {len(arrays)} input(s)"
                        + (f" named {sorted(x)}" if isinstance(x, dict) else ""))
    fitted = []
    for spec, a in zip(graph_inputs, arrays):
        a = np.asarray(a)
        want = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
        candidates = [a] + ([np.moveaxis(a, -1, 1), np.moveaxis(a, 1, -1)] if a.ndim >= 3 else [])
        match = next((c for c in candidates if _fits(c.shape, want)), None)
        if match is None:
            raise DataError(f"{path}: input {spec.name!r} has shape {spec.shape}; the data's inputs have shape "
                            f"{tuple(a.shape)}, which does not fit it (channels moved either way included)")
        fitted.append(np.ascontiguousarray(match))
    try:
        return feed(graph_inputs, tuple(fitted) if len(fitted) > 1 else fitted[0], path)
    except Exception as exc:
        raise DataError(str(exc)) from None


def _fits(shape: tuple[int, ...], want: list[int | None]) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape[1:], want[1:]))


def _run(sess: Any, feed: dict[str, np.ndarray], path: str) -> np.ndarray:
    try:
        return np.asarray(sess.run(None, feed)[0])
    except Exception as exc:
        shapes = {k: v.shape for k, v in feed.items()}
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: onnxruntime failed on inputs of shapes {shapes}: {first[:300]}") from None


def _macs(meter: Any, path: str) -> int | None:
    try:
        return meter.macs(path)
    except Exception:  # a graph shape inference cannot follow: MACs are left blank, not guessed
        return None


def _agreement(ref: np.ndarray, out: np.ndarray, first: str, path: str) -> tuple[float | None, float | None]:
    if ref.shape != out.shape:
        if ref.size == out.size:
            out = out.reshape(ref.shape)
        else:
            return None, None  # different outputs altogether: nothing to compare
    diff = float(np.max(np.abs(ref.astype(np.float64) - out.astype(np.float64)))) if ref.size else 0.0
    agree = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        agree = float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1)))
    return diff, agree


def table(rows: list[BenchRow], threads: int) -> str:
    """The rows as an aligned text table, the first file the reference."""
    head = ["file", "size", "MACs", "median ms", "p90 ms", "samples/s", "max |diff|", "top-1 agree"]
    body = []
    for r in rows:
        body.append([r.path, _bytes(r.bytes), "-" if r.macs is None else _si(r.macs), f"{r.median_ms:.3f}",
                     f"{r.p90_ms:.3f}", f"{r.samples_per_s:.1f}",
                     "(reference)" if r is rows[0] else "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}",
                     "" if r.top1_agreement is None else f"{r.top1_agreement:.1%}"])
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [head, *body]]
    note = f"batch {rows[0].batch}, onnxruntime CPU, {'default' if not threads else threads} thread(s)"
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:], note])


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _si(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)
