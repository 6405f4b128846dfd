"""The tuning run's record: every trial with its settings and measurements, the best one, and whether it
met the target. Kept in ``result.report.tuning`` and written as JSON (``tune.log``) after every trial,
atomically, so an interrupted run leaves a complete log of the trials it finished."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slimkit.staging import check_target, staged


@dataclass
class TrialRecord:
    """One trial: a candidate compressed, exported, measured and evaluated.

    Attributes:
        number: its index in the run (in the study, for shared Optuna studies).
        settings: the settings that differ from the recipe's own (``sparsity:conv2: 0.5``, ``float:fc: true``).
        metric: the metric of the exported model (onnxruntime on ``eval_data``, or ``eval_fn``).
        compression: the float model's weight bits over the trial's (zeros free, int8 layers 8 bits).
        size_mb: the ONNX file's size in MB (10^6 bytes); ``gzip_mb`` its gzip size (what zeros save).
        macs: multiply-accumulates per sample counted on the ONNX graph.
        latency_ms: onnxruntime's latency for one sample on this machine.
        seconds: the trial's wall time; ``steps``: the optimizer steps its stages took (fine-tuning, QAT).
        feasible: it met the tolerance and the budget; ``violations`` says by how much it missed each.
        error: why the trial failed (it is kept, and never best).
        worker: the process that ran it (``pid@host``), for studies shared between processes.
        notes: the warnings compressing it raised (a sparsity shortfall, a low int8 correlation).
    """

    number: int
    settings: dict[str, Any]
    metric: float | None = None
    compression: float = 1.0
    size_mb: float | None = None
    gzip_mb: float | None = None
    macs: int | None = None
    latency_ms: float | None = None
    seconds: float = 0.0
    steps: int = 0
    feasible: bool = False
    violations: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    worker: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["violations"] = {k: (None if v == float("inf") else v) for k, v in self.violations.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrialRecord":
        raw = dict(raw)
        raw["violations"] = {k: (float("inf") if v is None else v) for k, v in (raw.get("violations") or {}).items()}
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass
class TuningReport:
    """What a tuning run did.

    Attributes:
        strategy: the strategy's name; ``target``: the tolerance and budget in words.
        metric: the metric's name; ``baseline``: the float model's metric (and ``baseline_measures``:
            its ONNX file's size, MACs and latency).
        trials: every trial this process ran (and, for a shared study, the others' read from it).
        best: the best trial's number (the closest one when none met the target).
        met: whether the returned model meets the target; ``message`` says so in words.
        interrupted: the run was stopped (Ctrl-C) and returned the best so far.
        sensitivity_seconds: the sensitivity analysis's time (not counted as trials).
        recipe: the plain recipe (a mapping) that reproduces the best trial without ``tune:``.
    """

    strategy: str
    target: str
    metric: str | None
    baseline: float | None
    baseline_measures: dict[str, Any] = field(default_factory=dict)
    trials: list[TrialRecord] = field(default_factory=list)
    best: int | None = None
    met: bool = False
    message: str = ""
    interrupted: bool = False
    stopped_by: str | None = None
    sensitivity_seconds: float | None = None
    seconds: float = 0.0
    recipe: dict[str, Any] | None = None
    reuse: dict[str, Any] = field(default_factory=dict)

    @property
    def best_trial(self) -> TrialRecord | None:
        return next((t for t in self.trials if t.number == self.best), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trials"] = [t.to_dict() for t in self.trials]
        return out

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Writes the log as JSON, atomically (a reader never sees half a file)."""
        path = Path(path)
        target = check_target(path, "tune.log")
        with staged(target, "tune.log") as out:
            out.path.write_text(json.dumps(self.to_dict(), indent=1, default=_plain))
            out.commit()
        return path

    def to_markdown(self) -> str:
        lines = [f"### Tuning ({self.strategy}): {self.message}", "",
                 f"Target: {self.target}; baseline {self.metric} {_fmt(self.baseline)}; {len(self.trials)} trials in "
                 f"{self.seconds:.1f} s" + (" (interrupted)" if self.interrupted else "")
                 + (f"; sensitivity analysis {self.sensitivity_seconds:.1f} s" if self.sensitivity_seconds else ""),
                 "", "| trial | metric | compression | size MB | MACs | latency ms | s | met | settings |",
                 "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for t in self.trials:
            mark = "**best**" if t.number == self.best else ("yes" if t.feasible else ("error" if t.error else "no"))
            settings = t.error or ", ".join(f"{k}={_fmt(v)}" for k, v in t.settings.items()) or "(recipe as written)"
            lines.append(f"| {t.number} | {_fmt(t.metric)} | {t.compression:.2f}x | {_fmt(t.size_mb)} | "
                         f"{_fmt(t.macs)} | {_fmt(t.latency_ms)} | {t.seconds:.1f} | {mark} | {settings} |")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
