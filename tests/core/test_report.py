"""Report as data and as markdown, built from rows directly (compress() fills it in other tests)."""

from __future__ import annotations

import json
import pytest

from slimkit.report import FileRow, LayerRow, Report, StageRow


def sample_report():
    return Report(
        framework="fake",
        layers=[
            LayerRow("conv1", "conv", params=880, nonzeros=180, kernel_params=864, kernel_nonzeros=164, target=0.8),
            LayerRow("bn1", "batchnorm", params=64, nonzeros=60, kernel_params=0, kernel_nonzeros=0, target=None),
            LayerRow("fc", "dense", params=330, nonzeros=330, kernel_params=320, kernel_nonzeros=320, target=None),
        ],
        stages=[StageRow("prune:magnitude", ("conv1",), 0.8, "global", True, 120, 1.5, achieved=0.81,
                         params_removed=0.12),
                StageRow("prune:magnitude", ("fc",), 0.5, "layer", False, 0, 0.01),
                StageRow("prune:channel", ("conv1",), 0.5, "layer", False, 0, 0.84, capture_seconds=0.29)],
        metrics_before={"accuracy": 0.9},
        metrics_after={"accuracy": 0.875, "eval_fn": 3.0},
        weight_bytes={"fp32 before": 5096, "fp32 after": 5096, "zlib before": 4700, "zlib after": 1900},
        files=[FileRow("out/model.onnx", "onnx", 6000, 2500, 1.5e-6, 1e-4)],
    )


def test_row_sparsity_is_the_kernel_sparsity():
    r = sample_report()
    assert r.layer("conv1").sparsity == pytest.approx(1 - 164 / 864)
    assert r.layer("bn1").sparsity == pytest.approx(1 - 60 / 64)  # no kernel: all weights
    assert r.layer("fc").sparsity == 0.0


def test_totals():
    r = sample_report()
    assert r.params == 880 + 64 + 330
    assert r.nonzeros == 180 + 60 + 330


def test_layer_lookup():
    r = sample_report()
    assert r.layer("bn1").kind == "batchnorm"
    with pytest.raises(KeyError, match=r"'nope'.*conv1.*bn1.*fc"):
        r.layer("nope")


def test_to_dict_round_trips_through_json():
    r = sample_report()
    data = json.loads(json.dumps(r.to_dict()))
    assert data["framework"] == "fake"
    assert (data["params"], data["nonzeros"]) == (r.params, r.nonzeros)
    conv = data["layers"][0]
    assert conv == {"name": "conv1", "kind": "conv", "params": 880, "nonzeros": 180, "kernel_params": 864,
                    "kernel_nonzeros": 164, "target": 0.8, "params_before": None, "macs": None, "macs_before": None,
                    "sparsity": pytest.approx(1 - 164 / 864)}
    assert data["layers"][1]["target"] is None
    assert data["stages"][0] == {"name": "prune:magnitude", "layers": ["conv1"], "target": 0.8,
                                 "scope": "global", "fine_tuned": True, "steps": 120, "seconds": 1.5,
                                 "achieved": 0.81, "params_removed": 0.12, "capture_seconds": 0.0}
    assert data["metrics_after"] == {"accuracy": 0.875, "eval_fn": 3.0}
    assert data["weight_bytes"]["zlib after"] == 1900
    assert data["files"] == [{"path": "out/model.onnx", "format": "onnx", "bytes": 6000, "gzip_bytes": 2500,
                              "max_abs_diff": 1.5e-6, "tolerance": 1e-4}]


def test_to_dict_is_a_copy():
    r = sample_report()
    d = r.to_dict()
    d["metrics_before"]["accuracy"] = 0.0
    d["weight_bytes"].clear()
    assert r.metrics_before["accuracy"] == 0.9 and r.weight_bytes


def test_markdown_tables():
    r = sample_report()
    md = r.to_markdown()
    lines = md.splitlines()
    assert lines[0] == "## slimkit report (fake)"
    assert f"| conv1 | conv | 880 | 180 | {1 - 164 / 864:.1%} | 80.0% |" in lines
    assert f"| bn1 | batchnorm | 64 | 60 | {1 - 60 / 64:.1%} | - |" in lines
    total = [l for l in lines if l.startswith("| **total")]
    assert len(total) == 1 and f"| {r.params} | {r.nonzeros} | {1 - r.nonzeros / r.params:.1%} |" in total[0]
    assert "| accuracy | 0.9000 | 0.8750 | -0.0250 |" in lines
    assert "| eval_fn | - | 3.0000 |  |" in lines
    assert "| zlib after | 1900 |" in lines
    assert "| prune:magnitude | 1 | 80.0% | 81.0% | 12.0% | global | 120 | 1.5 |" in lines
    assert "| prune:magnitude | 1 | 50.0% | - | - | layer | one-shot | 0.0 |" in lines
    assert "| prune:channel | 1 | 50.0% | - | - | layer | one-shot | 0.8 (graph 0.3) |" in lines
    assert "| out/model.onnx | onnx | 6000 | 2500 | 1.50e-06 |" in lines
    assert str(r) == md


def test_markdown_of_an_empty_report_has_only_the_layer_table():
    md = Report(framework="torch").to_markdown()
    assert "| **total" in md
    for absent in ("metric", "stage", "file", "weights"):
        assert f"| {absent}" not in md


def test_float_ops_of_a_quantized_file_are_listed_under_its_row():
    from slimkit.report import QuantExportRow

    row = QuantExportRow("m.int8.onnx", 4000, 1200, 2.0, 1.0, {"QLinearConv": 3}, 0.01, 0.02, 0.03,
                         float_ops=("Pad (p1): no integer kernel",))
    lines = Report(framework="fake", quant_exports=[row]).to_markdown().splitlines()
    assert "| m.int8.onnx | 4000 | 1200 | 0.30 | 2.00 | 1.00 | 2.00x | QLinearConv x3 |" in lines
    assert "- m.int8.onnx: float between quantized tensors: Pad (p1): no integer kernel" in lines
