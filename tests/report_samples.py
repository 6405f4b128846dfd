"""A report holding every kind of data the HTML page plots, built by hand (no framework, no training).

Shared by the page's unit tests (tests/core/test_report_html.py) and its browser test
(tests/e2e/test_report_chromium.py).
"""

from __future__ import annotations

import math

from slimkit.report import (FileRow, GroupRow, LayerRow, QuantExportRow, QuantRow, Report, RoundRow,
                            StageRow)
from slimkit.tune.log import TrialRecord, TuningReport
from slimkit.tune.sensitivity_report import Sensitivity, SensitivityRow

#: The figures :func:`full_report` gives, by their keys (``<figure id="plot-KEY">``).
ALL_PLOTS = ("sparsity", "channels", "params", "macs", "quant", "outcome", "tuning", "sensitivity")


def full_report() -> Report:
    """Pruned (layer targets, channel groups), quantized, tuned and analysed: every plot has data."""
    layers = [
        LayerRow("conv1", "conv", 880, 180, 864, 164, 0.8, params_before=1760, macs=86_400, macs_before=172_800),
        LayerRow("bn1", "batchnorm", 64, 64, 0, 0, None, params_before=128),
        LayerRow("conv2", "conv", 4640, 1850, 4608, 1818, 0.6, params_before=9248, macs=460_800,
                 macs_before=921_600),
        LayerRow("fc", "dense", 330, 170, 320, 160, 0.5, params_before=650, macs=320, macs_before=640),
    ]
    trials = [TrialRecord(i, {"sparsity:conv2": 0.1 * i}, metric=0.95 - 0.004 * i * i, compression=1 + 0.5 * i,
                          size_mb=0.05 - 0.004 * i, macs=1_000_000 - 60_000 * i, latency_ms=1.0 - 0.06 * i,
                          seconds=1.0, feasible=i < 5) for i in range(8)]
    trials.append(TrialRecord(8, {"sparsity:conv2": 0.9}, error="DataError: eval failed"))
    tuning = TuningReport("basic", "accuracy within 2% of the float model", "accuracy", 0.95,
                          {"size_mb": 0.06, "gzip_mb": 0.055, "macs": 1_100_000, "latency_ms": 1.1}, trials,
                          best=4, met=True, message="best of 9 trials meeting the target: trial 4", seconds=9.5)
    rows = []
    for k, name in enumerate(("conv1", "conv2", "fc")):
        rows += [SensitivityRow(name, "conv", "prune", r, 0.95 - r * r * (k + 1) / 10, r * r * (k + 1) / 10, 30.0 - 10 * r,
                                0.99) for r in (0.25, 0.5, 0.75)]
        rows.append(SensitivityRow(name, "conv", "quantize", 8, 0.95 - 0.01 * k, 0.01 * k,
                                   math.inf if k == 0 else 35.0 - k, 1.0))
    return Report(
        framework="fake",
        layers=layers,
        stages=[StageRow("prune:channel", ("conv1", "conv2"), 0.5, "layer", True, 60, 2.0, achieved=0.5,
                         params_removed=0.48),
                StageRow("prune:magnitude", ("conv1", "conv2", "fc"), 0.6, "layer", True, 100, 1.5, achieved=0.61),
                StageRow("quantize:static", ("conv1", "conv2"), None, "w8 a8", False, 0, 0.4)],
        metrics_before={"accuracy": 0.95},
        metrics_after={"accuracy": 0.938},
        weight_bytes={"fp32 before": 47_144, "fp32 after": 23_656, "zlib before": 43_000, "zlib after": 9_400},
        files=[FileRow("out/model.onnx", "onnx", 30_000, 12_000, 1e-6, 1e-3)],
        groups=[GroupRow(("conv1",), 16, 8), GroupRow(("conv2", "shortcut"), 32, 16)],
        notes=["group (conv3) left whole: it feeds the output"],
        quant=[QuantRow("input", "activation", 8, 1, 0.0102, 0.0102, (-128,), -1.3, 1.3),
               QuantRow("conv1/kernel", "kernel", 8, 8, 0.0011, 0.0043, (0,), -0.55, 0.54),
               QuantRow("conv1/bias", "bias", 32, 8, 1.1e-5, 4.4e-5, (0,), -0.1, 0.2),
               QuantRow("relu1", "activation", 8, 1, 0.023, 0.023, (-128,), 0.0, 5.9)],
        quantized=["conv1", "conv2"],
        float_layers=["fc"],
        quant_exports=[QuantExportRow("out/model.int8.onnx", 40_000, 12_000, 2.0, 1.1, {"QLinearConv": 2}, 0.01, 0.0102,
                                      0.02, int8_error=0.004, simulated_error=0.003)],
        rounds=[RoundRow("stages[1].prune", 0, None, None, 0, 20, None)],
        tuning=tuning,
        sensitivity=Sensitivity("accuracy", 0.95, rows, 3.0, ["bn1: no kernel to prune"]),
    )
