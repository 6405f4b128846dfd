"""What a compression run did, as data (``to_dict``, ``to_json``), as readable tables (``to_markdown``)
and as a page of plots (``to_html``, :mod:`slimkit.report_html`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.deferred import Deferred

#: Version of the layout ``Report.to_dict`` writes (its ``"schema"`` key). Raised when a key is renamed,
#: removed or changes meaning; new keys may appear without a change.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LayerRow:
    """One weighted layer after compression."""

    name: str
    kind: str
    params: int  # every weight of the layer, bias and normalisation statistics included
    nonzeros: int
    kernel_params: int  # the matrices pruning targets: the kernel, every matrix of a recurrent or attention layer
    kernel_nonzeros: int
    target: float | None  # the kernel sparsity a stage aimed at, None if no stage touched the layer
    # What the report's producer knew besides: the layer's weights before compression (channel pruning
    # shrinks shapes), and multiply-accumulates per sample after and before. None when not measured.
    params_before: int | None = None
    macs: int | None = None
    macs_before: int | None = None

    @property
    def sparsity(self) -> float:
        """Kernel sparsity (what a pruning target refers to); all weights for kernel-less layers."""
        if self.kernel_params:
            return 1.0 - self.kernel_nonzeros / self.kernel_params
        return 1.0 - self.nonzeros / max(1, self.params)


@dataclass(frozen=True)
class StageRow:
    """One recipe stage: what it targeted and how long it took."""

    name: str
    layers: tuple[str, ...]
    target: float | None  # sparsity target of a prune stage; None for quantization
    scope: str
    fine_tuned: bool
    steps: int
    seconds: float
    achieved: float | None = None  # what the stage reached, in the target's terms (see compress)
    params_removed: float | None = None  # share of the model's parameters the stage removed or zeroed
    capture_seconds: float = 0.0  # of ``seconds``: capturing the model's graph (structured pruning)


@dataclass(frozen=True)
class GroupRow:
    """One channel group of a structured-pruning stage."""

    producers: tuple[str, ...]
    channels: int
    kept: int


@dataclass(frozen=True)
class RoundRow:
    """One round of an iterative (lottery ticket) prune stage.

    Round 0 is the dense training before the first pruning (no target); round r >= 1 prunes to
    ``target`` after ``start_step`` optimizer steps, resets the surviving weights to their values after
    step ``rewound_to``, and trains ``steps`` steps.
    """

    stage: str  # the stage's recipe path, e.g. stages[0].prune
    round: int
    target: float | None  # the round's sparsity target (None for round 0)
    achieved: float | None  # sparsity of the selected matrices' masks after the round's pruning
    start_step: int  # optimizer steps run before the round
    steps: int  # optimizer steps the round trains
    rewound_to: int | None  # the step whose weights the survivors were reset to (None for round 0)


@dataclass(frozen=True)
class FileRow:
    """One exported file, verified against the framework's own output; ``gzip_bytes`` None where it was
    not measured (a tuning trial's file, see :mod:`slimkit.checks`). The gzip size is measured from the
    file when first read (see :mod:`slimkit.deferred`): None if the file changed or is gone by then."""

    path: str
    format: str
    bytes: int
    gzip_bytes: int | None = Deferred()  # type: ignore[assignment]  # required; measured on first read
    max_abs_diff: float | None
    tolerance: float | None


@dataclass(frozen=True)
class QuantRow:
    """One quantized tensor: an activation, a kernel or a bias.

    ``scale_min``/``scale_max`` are equal for per-tensor sites; ``zero_points`` lists the distinct
    zero points; ``range_min``/``range_max`` is the calibrated (or learned) float range it covers.
    """

    site: str
    kind: str  # activation | kernel | bias
    bits: int
    channels: int  # 1 for per-tensor
    scale_min: float
    scale_max: float
    zero_points: tuple[int, ...]
    range_min: float
    range_max: float


@dataclass(frozen=True)
class QuantExportRow:
    """A quantized ONNX export next to its float twin: sizes, latency and what onnxruntime fused.

    The latencies (onnxruntime, one sample, median of a few runs on this machine) are measured when first
    read (see :mod:`slimkit.deferred`): None if the int8 file changed or is gone by then."""

    path: str
    float_bytes: int
    int8_bytes: int
    float_latency_ms: float | None = Deferred()  # type: ignore[assignment]  # required; measured on first read
    int8_latency_ms: float | None = Deferred()  # type: ignore[assignment]
    integer_ops: dict[str, int]
    max_abs_diff: float
    output_step: float | None  # the scale of the output tensor, if it is quantized
    tolerance: float  # the bound verification held it to: one output step, or the float tolerance
    int8_error: float | None = None  # RMS of onnxruntime's int8 output against the float model
    simulated_error: float | None = None  # RMS of the simulated (fake-quant) output against the float model
    float_ops: tuple[str, ...] = ()  # ops run in float between quantized tensors, each with why

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / max(1, self.float_bytes)


@dataclass
class Report:
    """The result of :func:`slimkit.compress`, as data.

    Attributes:
        framework: ``keras`` or ``torch``.
        layers: per-layer rows after compression.
        stages: per-stage rows in recipe order.
        metrics_before: evaluation of the user's model (empty without eval data).
        metrics_after: evaluation of the compressed model.
        weight_bytes: name -> bytes: fp32 weight bytes before/after and, when the recipe prunes, their
            zlib-compressed sizes (level 1).
        files: exported files with their sizes and verification results.
        groups: channel groups that structured pruning shrank.
        notes: what was left alone and why (channel groups that cannot be pruned safely, say).
        quant: per-tensor quantization parameters (empty without a quantize stage).
        quantized: layers that run integer kernels; ``weight_only`` those whose matrices are stored int8
            but run in float (recurrent, attention projections without their own op, embeddings, tied
            weights); ``float_layers`` the weighted ones kept float.
        quant_exports: quantized ONNX files with their float twins' size and latency.
        rounds: the rounds of iterative (lottery ticket) prune stages, in order.
        tuning: the tuning run that chose this model (:class:`slimkit.tune.log.TuningReport`), None
            without ``tune:``.
        sensitivity: a per-layer sensitivity analysis (:class:`slimkit.Sensitivity`) when one was run
            (a tuning strategy that reads the curves, or one attached by the caller), else None.
    """

    framework: str
    layers: list[LayerRow] = field(default_factory=list)
    stages: list[StageRow] = field(default_factory=list)
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)
    weight_bytes: dict[str, int] = field(default_factory=dict)
    files: list[FileRow] = field(default_factory=list)
    groups: list[GroupRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    quant: list[QuantRow] = field(default_factory=list)
    quantized: list[str] = field(default_factory=list)
    weight_only: list[str] = field(default_factory=list)
    float_layers: list[str] = field(default_factory=list)
    quant_exports: list[QuantExportRow] = field(default_factory=list)
    rounds: list[RoundRow] = field(default_factory=list)
    tuning: Any = None
    sensitivity: Any = None
    #: the distributed job that made it (:class:`slimkit.adapter.collective.Collective`): only its writer rank
    #: writes the files; None for a report built by hand
    collective: Any = field(default=None, repr=False, compare=False)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.layers)

    def layer(self, name: str) -> LayerRow:
        """The row of the named layer."""
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r} in the report; layers: {[r.name for r in self.layers]}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of everything in the report, versioned by its ``"schema"`` key (:data:`SCHEMA_VERSION`).

        Always JSON-serialisable as strict JSON: tuples become lists, numpy scalars Python numbers, and a
        float that is not finite (a diverged loss, an exact layer's SQNR) the string ``"nan"``, ``"inf"``
        or ``"-inf"`` (``float()`` reads each back), since JSON has no such numbers.
        """
        return _jsonable({
            "schema": SCHEMA_VERSION,
            "framework": self.framework,
            "params": self.params,
            "nonzeros": self.nonzeros,
            "layers": [dict(dataclasses.asdict(r), sparsity=r.sparsity) for r in self.layers],
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "metrics_before": dict(self.metrics_before),
            "metrics_after": dict(self.metrics_after),
            "weight_bytes": dict(self.weight_bytes),
            "files": [dataclasses.asdict(f) for f in self.files],
            "groups": [dataclasses.asdict(g) for g in self.groups],
            "notes": list(self.notes),
            "quant": [dataclasses.asdict(q) for q in self.quant],
            "quantized": list(self.quantized),
            "weight_only": list(self.weight_only),
            "float_layers": list(self.float_layers),
            "quant_exports": [dict(dataclasses.asdict(q), size_ratio=q.size_ratio) for q in self.quant_exports],
            "rounds": [dataclasses.asdict(r) for r in self.rounds],
            "tuning": None if self.tuning is None else self.tuning.to_dict(),
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict(),
        })

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Writes :meth:`to_dict` as JSON, atomically (the file is absent, the old one or the new one).

        Returns:
            ``path`` as a Path.

        Raises:
            ExportError: ``path`` cannot be written (a directory, a missing or read-only directory);
                the message names it.
        """
        from slimkit.adapter.collective import on_writer
        from slimkit.staging import check_target, staged

        path = Path(path)

        def write() -> None:
            target = check_target(path, "report.json")
            text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
            with staged(target, "report.json") as out:
                out.path.write_text(text + "\n", encoding="utf-8")
                out.commit()

        on_writer(self.collective, "report.json", write)  # rank 0 of a distributed job
        return path

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Writes a self-contained HTML page of plots and tables (:func:`slimkit.report_html.write_html`)."""
        from slimkit.adapter.collective import on_writer
        from slimkit.report_html import write_html

        on_writer(self.collective, "report.html", lambda: write_html(self, path))
        return Path(path)

    def to_markdown(self) -> str:
        """Readable tables: layers, totals, metrics, stages and files."""
        out = [f"## slimkit report ({self.framework})", "",
               "| layer | kind | params | nonzeros | kernel sparsity | target |",
               "|---|---|---:|---:|---:|---:|"]
        for r in self.layers:
            target = "-" if r.target is None else f"{r.target:.1%}"
            out.append(f"| {r.name} | {r.kind} | {r.params} | {r.nonzeros} | {r.sparsity:.1%} | {target} |")
        total_sparsity = 1.0 - self.nonzeros / max(1, self.params)
        out.append(f"| **total (all weights)** | | {self.params} | {self.nonzeros} | {total_sparsity:.1%} | |")
        if self.metrics_before or self.metrics_after:
            out += ["", "| metric | before | after | change |", "|---|---:|---:|---:|"]
            for key in sorted(set(self.metrics_before) | set(self.metrics_after)):
                before, after = self.metrics_before.get(key), self.metrics_after.get(key)
                change = "" if before is None or after is None else f"{after - before:+.4f}"
                out.append(f"| {key} | {_num(before)} | {_num(after)} | {change} |")
        if self.weight_bytes:
            out += ["", "| weights | bytes |", "|---|---:|"]
            out += [f"| {k} | {v} |" for k, v in self.weight_bytes.items()]
        if self.stages:
            out += ["", "| stage | layers | target | achieved | params removed | scope | fine-tuned steps | seconds |",
                    "|---|---:|---:|---:|---:|---|---:|---:|"]
            for s in self.stages:
                steps = s.steps if s.fine_tuned else "one-shot"
                target = "-" if s.target is None else f"{s.target:.1%}"
                out.append(f"| {s.name} | {len(s.layers)} | {target} | {_pct(s.achieved)} | {_pct(s.params_removed)} "
                           f"| {s.scope} | {steps} | {_seconds(s)} |")
        if self.rounds:
            out += ["", "| lottery round | stage | target | achieved | from step | steps | rewound to step |",
                    "|---|---|---:|---:|---:|---:|---:|"]
            for r in self.rounds:
                label = "0 (dense)" if r.round == 0 else str(r.round)
                rewound = "-" if r.rewound_to is None else r.rewound_to
                out.append(f"| {label} | {r.stage} | {_pct(r.target)} | {_pct(r.achieved)} | {r.start_step} | "
                           f"{r.steps} | {rewound} |")
        if self.groups:
            out += ["", "| channel group (producers) | channels | kept |", "|---|---:|---:|"]
            out += [f"| {', '.join(g.producers)} | {g.channels} | {g.kept} |" for g in self.groups]
        if self.notes:
            out += [""] + [f"- {note}" for note in self.notes]
        if self.quant:
            out += ["", f"Quantized layers (integer kernels): {', '.join(self.quantized) or '-'}; weight-only int8 "
                    f"(run in float): {', '.join(self.weight_only) or '-'}; kept float: "
                    f"{', '.join(self.float_layers) or '-'}", "",
                    "| tensor | kind | bits | channels | scale | zero point | range |",
                    "|---|---|---:|---:|---|---|---|"]
            for q in self.quant:
                scale = f"{q.scale_min:.3g}" if q.scale_min == q.scale_max else f"{q.scale_min:.3g}..{q.scale_max:.3g}"
                zps = ",".join(str(z) for z in q.zero_points[:3]) + (",..." if len(q.zero_points) > 3 else "")
                out.append(f"| {q.site} | {q.kind} | {q.bits} | {q.channels} | {scale} | {zps} | "
                           f"[{q.range_min:.4g}, {q.range_max:.4g}] |")
        if self.quant_exports:
            out += ["", "| quantized file | fp32 bytes | int8 bytes | ratio | fp32 ms | int8 ms | speedup | integer ops |",
                    "|---|---:|---:|---:|---:|---:|---:|---|"]
            for q in self.quant_exports:
                speed = ("-" if not q.float_latency_ms or not q.int8_latency_ms
                         else f"{q.float_latency_ms / q.int8_latency_ms:.2f}x")
                ops = ", ".join(f"{k} x{v}" for k, v in sorted(q.integer_ops.items()))
                out.append(f"| {q.path} | {q.float_bytes} | {q.int8_bytes} | {q.size_ratio:.2f} | "
                           f"{_num(q.float_latency_ms, '.2f')} | {_num(q.int8_latency_ms, '.2f')} | {speed} | {ops} |")
            out += [f"- {q.path}: float between quantized tensors: {op}" for q in self.quant_exports
                    for op in q.float_ops]
        if self.files:
            out += ["", "| file | format | bytes | gzip bytes | max abs diff |", "|---|---|---:|---:|---:|"]
            for f in self.files:
                out.append(f"| {f.path} | {f.format} | {f.bytes} | {_num(f.gzip_bytes, 'd')} | {_num(f.max_abs_diff, '.2e')} |")
        if self.tuning is not None:
            out += ["", self.tuning.to_markdown()]
        if self.sensitivity is not None:
            out += ["", "### " + self.sensitivity.to_markdown().rstrip("\n")]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_markdown()


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: see :meth:`Report.to_dict`. Anything else becomes its ``str``, so
    that a report never fails to serialise over one odd value (a user's eval_fn returning a tensor)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy (or framework) scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):  # small arrays kept as lists rather than their repr
        try:
            return _jsonable(value.tolist())
        except (TypeError, ValueError):
            pass
    return str(value)


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(stage: StageRow) -> str:
    if stage.capture_seconds:
        return f"{stage.seconds:.1f} (graph {stage.capture_seconds:.1f})"
    return f"{stage.seconds:.1f}"
