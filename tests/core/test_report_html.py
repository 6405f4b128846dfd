"""report.json (versioned, strict JSON) and report.html (self-contained: plots inline, tables from the
markdown), on reports built by hand and by compress() over the numpy fake framework.

The page is rendered in a browser by tests/e2e/test_report_chromium.py.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import sys

import numpy as np
import pytest

import slimkit
from slimkit import ExportError
from slimkit.report import SCHEMA_VERSION, LayerRow, Report
from slimkit.report_html import markdown_html, render_html, write_html

from report_samples import ALL_PLOTS, full_report

mpimage = pytest.importorskip("matplotlib.image")  # the report extra; installed by .[all]

IMG = re.compile(r'<figure id="plot-([a-z]+)"[^>]*><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(full_report())


def figures(text: str) -> dict[str, np.ndarray]:
    """The page's plots, decoded: key -> RGB(A) pixels in [0, 1]."""
    return {key: mpimage.imread(io.BytesIO(base64.b64decode(data)), format="png") for key, data in IMG.findall(text)}


# -- report.json ------------------------------------------------------------------------------------


def test_to_dict_is_versioned_and_strict_json_whatever_the_values():
    r = full_report()
    r.metrics_before["loss"] = np.float32(0.25)  # a numpy scalar from a user's eval
    r.metrics_after["loss"] = float("nan")  # diverged
    r.metrics_after["ratio"] = float("-inf")
    r.layers[0] = LayerRow("conv1", "conv", np.int64(880), 180, 864, 164, 0.8)
    data = r.to_dict()
    assert data["schema"] == SCHEMA_VERSION == 1
    text = json.dumps(data, allow_nan=False)  # strict JSON: no NaN/Infinity tokens
    back = json.loads(text)
    assert back["metrics_before"]["loss"] == 0.25 and isinstance(back["metrics_before"]["loss"], float)
    assert back["metrics_after"] == {"accuracy": 0.938, "loss": "nan", "ratio": "-inf"}
    assert math.isnan(float(back["metrics_after"]["loss"])) and float(back["metrics_after"]["ratio"]) == -math.inf
    assert back["layers"][0]["params"] == 880 and isinstance(back["layers"][0]["params"], int)
    assert back["layers"][0]["params_before"] is None and back["layers"][2]["macs_before"] == 921_600
    assert back["groups"][1] == {"producers": ["conv2", "shortcut"], "channels": 32, "kept": 16}
    # the tuning log and the sensitivity analysis travel with it; an exact layer's SQNR is "inf"
    assert back["tuning"]["best"] == 4 and len(back["tuning"]["trials"]) == 9
    sens = back["sensitivity"]
    assert sens["metric"] == "accuracy" and len(sens["rows"]) == 12
    assert [row["sqnr_db"] for row in sens["rows"] if row["action"] == "quantize"] == ["inf", 34.0, 33.0]


def test_to_dict_of_an_empty_report():
    data = Report(framework="torch").to_dict()
    assert data["schema"] == 1 and data["tuning"] is None and data["sensitivity"] is None
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_to_json_writes_atomically_and_names_a_bad_target(tmp_path):
    r = full_report()
    path = tmp_path / "report.json"
    path.write_text("old")
    assert r.to_json(path) == path
    assert json.loads(path.read_text()) == json.loads(json.dumps(r.to_dict()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left
    with pytest.raises(ExportError, match=r"report\.json: .*missing.* does not exist"):
        r.to_json(tmp_path / "missing" / "report.json")
    with pytest.raises(ExportError, match=r"report\.json: .* is a directory"):
        r.to_json(tmp_path)


def test_markdown_carries_the_sensitivity_table():
    md = full_report().to_markdown()
    assert "### Sensitivity (accuracy baseline 0.9500, 3.0s)" in md
    assert "| fc | conv | quantize | int8 | 0.9300 | 0.0200 | 33.0 | 1.0000 |" in md


# -- report.html ------------------------------------------------------------------------------------


def test_every_plot_is_embedded_and_drawn(page):
    images = figures(page)
    assert tuple(images) == ALL_PLOTS
    assert page.count("<img") == len(ALL_PLOTS)
    for key, pixels in images.items():
        rgb = pixels[..., :3]
        assert rgb.shape[0] > 150 and rgb.shape[1] > 400, key
        assert rgb.std() > 0.05, key  # not blank
        colour = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25  # bars, lines and markers are coloured
        assert colour.mean() > 0.002, (key, colour.mean())


def test_page_is_self_contained(page):
    assert not re.search(r"(?i)(https?|ftp|wss?):", page)  # no address of any kind
    assert not re.search(r"(?i)<(script|link|iframe|object|embed)\b|@import|url\(", page)
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(sources) == len(ALL_PLOTS) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "default-src 'none'; img-src data:" in page  # the browser refuses any fetch besides


def test_tables_are_the_markdown_tables(page):
    md = full_report().to_markdown()
    tables = len(re.findall(r"(?m)^\|---", md))
    assert page.count("<table>") == tables >= 9
    assert '<td>conv1</td><td>conv</td><td class="num">880</td><td class="num">180</td>' in page
    assert "<td>4</td>" not in page and '<td class="num">4</td>' in page  # right-aligned number columns
    assert "<strong>best</strong>" in page and "<strong>total (all weights)</strong>" in page
    assert "<li>group (conv3) left whole: it feeds the output</li>" in page
    assert "<h3>Tuning (basic): best of 9 trials meeting the target: trial 4</h3>" in page


def test_text_is_escaped():
    r = Report(framework="fake", layers=[LayerRow("<script>alert(1)</script>", "dense", 10, 5, 8, 3, 0.5)],
               notes=['a "note" & <b>tag</b>'])
    text = render_html(r)
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<li>a &quot;note&quot; &amp; &lt;b&gt;tag&lt;/b&gt;</li>" in text


def test_markdown_html_subset():
    out = markdown_html("## T\n\n| a | b |\n|---|---:|\n| x | **1** |\n\n- one\n- two\ntext")
    assert out.splitlines() == [
        "<h2>T</h2>",
        '<table><thead><tr><th>a</th><th class="num">b</th></tr></thead>'
        '<tbody><tr><td>x</td><td class="num"><strong>1</strong></td></tr></tbody></table>',
        "<ul><li>one</li><li>two</li></ul>",
        "<p>text</p>"]


def test_plots_only_for_what_a_compress_report_holds(fake_registered, mlp, tmp_path):
    report = slimkit.compress(mlp, {"seed": 0, "stages": [{"prune": {"sparsity": 0.75, "fine_tune": None}}]},
                              verbose=False).report
    path = write_html(report, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    # no metrics, quantization, channel groups, tuning or analysis: their plots are absent
    assert tuple(figures(text)) == ("sparsity", "params", "outcome")
    for row in report.layers:
        if row.kernel_params:
            assert f"<td>{row.name}</td>" in text


def test_quantized_compress_report_draws_ranges(fake_registered, classification_data):
    from fake_adapter import make_mlp

    x, y = classification_data
    report = slimkit.compress(make_mlp(other=False), {"seed": 0, "stages": [{"quantize": {"method": "static"}}]},
                              calib_data=x, eval_data=(x, y), verbose=False).report
    images = figures(render_html(report))
    assert "quant" in images and "sparsity" not in images  # nothing pruned, nothing to show there
    assert "outcome" in images  # accuracy before and after


def test_an_empty_report_says_there_is_nothing_to_plot():
    text = render_html(Report(framework="torch"))
    assert "<img" not in text and "Nothing to plot" in text and "<table>" in text


def test_write_html_is_atomic_and_checks_the_target_first(tmp_path, monkeypatch):
    import slimkit.report_plots as plots

    path = tmp_path / "report.html"
    path.write_text("old page")
    monkeypatch.setattr(plots, "plots", lambda report: (_ for _ in ()).throw(RuntimeError("drawing failed")))
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_html(Report(framework="fake"), path)
    assert path.read_text() == "old page"  # a failed write leaves the old page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    # the target is checked before any plot is drawn
    with pytest.raises(ExportError, match=r"report\.html: .*nowhere.* does not exist"):
        write_html(Report(framework="fake"), tmp_path / "nowhere" / "report.html")
    with pytest.raises(ExportError, match=r"report\.html: .* is a directory"):
        Report(framework="fake").to_html(tmp_path)


def test_without_matplotlib_the_error_names_the_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ExportError, match=r"matplotlib, which is not installed; pip install \"slimkit\[report\]\""):
        write_html(full_report(), tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_drawing_leaves_the_callers_matplotlib_alone(page):
    import matplotlib

    before = (matplotlib.get_backend(), dict(matplotlib.rcParams))
    render_html(Report(framework="fake", layers=[LayerRow("fc", "dense", 10, 5, 8, 3, 0.5)]))
    assert (matplotlib.get_backend(), dict(matplotlib.rcParams)) == before


def test_a_deep_network_draws_its_largest_layers_shares_and_says_so():
    layers = [LayerRow(f"block{i}/conv", "conv", 100 + i, 50, 100 + i, 50, 0.5) for i in range(60)]
    text = render_html(Report(framework="fake", layers=layers))
    assert "The 40 largest of 60 layers are drawn; the other 20 hold" in text
    images = figures(text)
    assert set(images) == {"sparsity", "params"}
    # one row per layer in the sparsity plot, drawn at a fixed density (not squeezed into a fixed height)
    assert images["sparsity"].shape[0] > 60 * 0.15 * 100


def test_the_metric_is_drawn_against_sizes_measured_alike(fake_registered, mlp, classification_data):
    from slimkit.report_measures import outcome_panels

    # tuned: the float model's ONNX file against the returned one's, with their latencies
    panels = dict(outcome_panels(full_report()))
    assert panels["trade"] == (("accuracy", 0.95, 0.938), ("ONNX file (tuning)", 0.06e6, pytest.approx(0.034e6)),
                               ("ONNX file (tuning)", 1.1, pytest.approx(0.76)))
    assert panels["size"][1] == ("model.int8.onnx: fp32/int8", 40_000, 12_000)
    assert panels["macs"] == [("ONNX graph", 1_100_000, 760_000)]
    # pruned: the weights, compressed (what zeros save)
    x, y = classification_data
    pruned = slimkit.compress(mlp, {"seed": 0, "stages": [{"prune": {"sparsity": 0.75, "fine_tune": None}}]},
                              eval_data=(x, y), verbose=False).report
    trade = dict(outcome_panels(pruned))["trade"]
    assert trade[1] == ("zlib weights", pruned.weight_bytes["zlib before"], pruned.weight_bytes["zlib after"])
    assert trade[2] is None
    # quantized without tuning: weight bytes count int8 as float, and a file's float twin is not the user's
    # model, so no size is drawn against the metric
    r = full_report()
    r.tuning = None
    assert "trade" not in dict(outcome_panels(r))


def test_sensitivity_of_a_deep_network_draws_its_most_sensitive_layers():
    from slimkit.report_measures import _most_sensitive
    from slimkit.tune.sensitivity_report import Sensitivity, SensitivityRow

    rows = [SensitivityRow(f"l{i}", "conv", "prune", r, None, 0.01 * i * r, None, None)
            for i in range(25) for r in (0.5, 0.9)]
    rows += [SensitivityRow(f"l{i}", "conv", "quantize", 8, None, None, 40.0 - i, 0.99) for i in range(40)]
    assert _most_sensitive([r for r in rows if r.action == "prune"], 3) == {"l24", "l23", "l22"}
    assert _most_sensitive([r for r in rows if r.action == "quantize"], 2) == {"l39", "l38"}  # lowest SQNR
    text = render_html(Report(framework="fake", sensitivity=Sensitivity(None, None, rows, 1.0)))
    assert "Drawn: prune: the 10 most sensitive of 25 layers; quantize: the 30 most sensitive of 40 layers." in text
    assert "sensitivity" in figures(text)
