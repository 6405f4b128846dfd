"""TensorFlow's log lines stay out of slimkit's output: a Keras compress + export in a fresh process (no
TF_CPP_MIN_LOG_LEVEL set) writes only slimkit's own lines to stderr after slimkit's import, and TensorFlow
imported inside ``slimkit.quiet_native_logs()`` prints none of its load-time banners."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

MARK = "=== slimkit imported"

# the user's own code imports Keras and builds the model first (TensorFlow's load-time banners and device
# lines come before slimkit is involved); then slimkit compresses (fine-tuning, calibration) and exports
USER_FIRST = textwrap.dedent(f"""
    import sys
    import numpy as np
    import keras
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32"); y = rng.integers(0, 4, 64)
    inp = keras.Input((8, 8, 1)); h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Flatten()(h); out = keras.layers.Dense(4, name="d")(h)
    model = keras.Model(inp, out)
    import slimkit
    print("{MARK}", file=sys.stderr, flush=True)
    recipe = {{"stages": [{{"prune": {{"sparsity": 0.5, "fine_tune": {{"epochs": 1}}}}}},
                          {{"quantize": {{"method": "static"}}}}]}}
    result = slimkit.compress(model, recipe, train_data=(x, y))
    result.export_onnx(sys.argv[1])
""")

# slimkit first: TensorFlow's import inside quiet_native_logs() (what slimkit's command line does)
SLIMKIT_FIRST = textwrap.dedent(f"""
    import sys
    import slimkit
    print("{MARK}", file=sys.stderr, flush=True)
    with slimkit.quiet_native_logs():
        import tensorflow
        import keras
    print("=== keras imported", file=sys.stderr, flush=True)
""")


def run(script: str, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    assert MARK in lines, out.stderr[-3000:]
    return lines[lines.index(MARK) + 1:]


def test_compress_and_export_print_only_slimkit_lines(tmp_path):
    after = run(USER_FIRST, str(tmp_path / "m.onnx"))
    assert after and all(line.startswith("[slimkit] ") for line in after), "\n".join(after)
    assert any("epoch 1/1" in line for line in after) and any("calibration" in line for line in after)


def test_tensorflow_imported_quietly_prints_no_banner():
    assert run(SLIMKIT_FIRST) == ["=== keras imported"]


def test_tf2onnx_errors_are_held_unless_the_block_fails(caplog):
    import logging

    from slimkit.adapters.keras.quiet import quiet

    log = logging.getLogger("tf2onnx.tfonnx")
    before = (logging.getLogger("tf2onnx").propagate, logging.getLogger("tf2onnx").level)
    with caplog.at_level(logging.DEBUG):
        with quiet():
            log.error("rewriter x: exception (recovered)")
        assert [r.getMessage() for r in caplog.records if r.name.startswith("tf2onnx")] == []
        with pytest.raises(RuntimeError):
            with quiet():
                log.error("Failed to convert node 'y'")
                raise RuntimeError("conversion failed")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("tf2onnx")] == ["Failed to convert node 'y'"]
    assert (logging.getLogger("tf2onnx").propagate, logging.getLogger("tf2onnx").level) == before  # put back
