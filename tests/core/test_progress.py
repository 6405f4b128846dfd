"""Progress display and logging (``slimkit.progress``) over the numpy fake framework: readable lines when
stderr is not a terminal, nothing when quiet, rich bars on a (forced) terminal, logging records that carry
every line, and no bar left running after an exception."""

from __future__ import annotations

import io
import logging
import os
import re
import sys

import pytest
from rich.console import Console

import slimkit
from slimkit import RecipeError, progress
from slimkit.tune.log import TrialRecord
from slimkit.tune.run import _Progress as TuneProgress

pytestmark = pytest.mark.usefixtures("fake_registered")

FT = {"epochs": 3, "batch_size": 25, "learning_rate": 0.05}  # 200 samples: 8 steps per epoch, 24 in all
PRUNE_THEN_INT8 = {"seed": 0, "stages": [{"prune": {"sparsity": 0.5, "fine_tune": FT}},
                                         {"quantize": {"method": "static"}}]}


@pytest.fixture(autouse=True)
def restore():
    """Each test starts at the default verbosity with stderr as the display, and leaves it so."""
    progress.set_verbosity("normal")
    progress.set_console(None)
    yield
    progress.set_verbosity("normal")
    progress.set_console(None)
    assert progress._DISPLAY.open == [] and progress._DISPLAY.progress is None


@pytest.fixture
def records():
    """The slimkit logger's records during the test."""
    found: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = found.append
    logging.getLogger("slimkit").addHandler(handler)
    yield found
    logging.getLogger("slimkit").removeHandler(handler)


def test_lines_when_stderr_is_not_a_terminal(mlp, classification_data, capsys):
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data)
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("[slimkit] ") for line in lines), lines
    assert lines[0] == "[slimkit] stage 1/2 prune:magnitude: fine-tuning 3 epochs, 24 steps"
    epochs = [l for l in lines if ": epoch " in l]
    assert [re.search(r"epoch (\d)/3 ", l).group(1) for l in epochs] == ["1", "2", "3"]
    assert all(re.search(r"loss \d\.\d{4}  sparsity 0\.\d{3}  \(\d+\.\ds\)$", l) for l in epochs), epochs
    # calibration: a line per quarter of the samples, the last one at all of them
    calib = [l for l in lines if "calibration (minmax)" in l]
    assert 1 <= len(calib) <= 5 and calib[-1].startswith("[slimkit] calibration (minmax): 200/200 samples, ")
    assert len(lines) == 1 + 3 + len(calib)


def test_quiet_shows_nothing_and_verbose_false_too(mlp, classification_data, capsys, records):
    slimkit.set_verbosity("quiet")
    assert slimkit.get_verbosity() == "quiet"
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data, verbose=True)
    assert capsys.readouterr().err == "" and records == []
    slimkit.set_verbosity("normal")
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data, verbose=False)
    assert capsys.readouterr().err == "" and records == []


def test_logger_level_is_the_switch_and_debug_adds_stage_times(mlp, classification_data, capsys):
    logging.getLogger("slimkit").setLevel(logging.WARNING)
    assert slimkit.get_verbosity() == "quiet"
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data)
    assert capsys.readouterr().err == ""
    slimkit.set_verbosity("debug")
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data)
    err = capsys.readouterr().err
    assert re.search(r"^\[slimkit\] stage 2/2 quantize:static: \d+\.\d\ds, 0 steps$", err, re.M), err
    assert "epoch 3/3" in err


def test_records_carry_the_lines(mlp, classification_data, capsys, records):
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data)
    shown = [l.removeprefix("[slimkit] ") for l in capsys.readouterr().err.splitlines()]
    assert [r.getMessage() for r in records] == shown
    assert all(r.name == "slimkit" and r.levelno == logging.INFO for r in records)
    assert {r.slimkit_task for r in records} == {"stage 1/2 prune:magnitude", "calibration (minmax)"}


def test_bars_on_a_terminal(mlp, classification_data, capsys, records):
    buffer = io.StringIO()
    slimkit.progress.set_console(Console(file=buffer, force_terminal=True, width=150, color_system=None))
    slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data)
    screen = buffer.getvalue()
    # the finished bars stay: label, steps done of all, fields beside them
    last = [l for l in screen.replace("\r", "\n").splitlines() if "prune:magnitude" in l][-1]
    assert "stage 1/2 prune:magnitude" in last and "24/24" in last and "sparsity 0.500" in last
    assert "epoch 3/3" in last and re.search(r"loss \d\.\d+", last), last
    assert re.search(r"calibration \(minmax\).*200/200", screen.replace("\r", "\n"))
    # the tasks' own lines stay off the screen and off stderr (the bars show them) but are still logged
    assert capsys.readouterr().err == "" and ": epoch " not in screen
    assert sum(": epoch " in r.getMessage() for r in records) == 3


def test_inner_bars_go_outer_bar_stays_lines_outside_tasks_print_above():
    buffer = io.StringIO()
    progress.set_console(Console(file=buffer, force_terminal=True, width=120, color_system=None))
    with progress.task("outer work", 2) as outer:
        with progress.task("inner work", 4) as inner:
            inner.advance(4, loss=0.25)
            assert len(progress._DISPLAY.progress.tasks) == 2
        assert len(progress._DISPLAY.progress.tasks) == 1  # the inner bar went when it finished
        progress.info("a decision worth reading")
        outer.advance(2, best="#1 0.97")
    screen = buffer.getvalue().replace("\r", "\n")
    assert "[slimkit] a decision worth reading" in screen
    final = [l for l in screen.splitlines() if "outer work" in l][-1]
    assert "2/2" in final and "best #1 0.97" in final


def test_an_exception_closes_the_bars(mlp, classification_data):
    progress.set_console(Console(file=io.StringIO(), force_terminal=True, width=120))

    def fit_fn(model, callback):
        callback.begin(10)
        callback.step()
        raise KeyboardInterrupt  # the user's Ctrl-C inside training

    with pytest.raises(KeyboardInterrupt):
        slimkit.compress(mlp, PRUNE_THEN_INT8, train_data=classification_data, fit_fn=fit_fn)
    assert progress._DISPLAY.open == [] and progress._DISPLAY.progress is None  # checked by the fixture too


def test_tuning_lines_one_per_trial(capsys):
    show = TuneProgress(True, 3, "basic")
    first = TrialRecord(0, {}, metric=0.95, compression=4.0, size_mb=0.1, latency_ms=0.2, seconds=1.5,
                        feasible=True)
    show.trial(first, first, 1, "accuracy")
    show.trial(TrialRecord(1, {}, error="boom", seconds=0.5), first, 2, "accuracy")
    show.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["[slimkit] tune trial 1/3: accuracy 0.95, 4.00x, 0.1 MB, 0.2 ms, meets the target; "
                     "best #0 accuracy 0.95, 4.00x (1.5s)",
                     "[slimkit] tune trial 2/3: failed (boom) (0.5s)"]


def test_sensitivity_bar_on_a_terminal(capsys):
    from fake_adapter import FakeAdapter, make_mlp
    import numpy as np

    model = make_mlp()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    y = np.argmax(FakeAdapter(model).predict(x), axis=1)
    buffer = io.StringIO()
    progress.set_console(Console(file=buffer, force_terminal=True, width=150, color_system=None))
    slimkit.sensitivity(model, {"stages": [{"quantize": {"method": "static"}}],
                                "analyze": {"prune": {"ratios": [0.5]}, "quantize": None}},
                        eval_data=(x, y))
    screen = buffer.getvalue().replace("\r", "\n")
    assert re.search(r"sensitivity .* 3/3 .*logits prune 0\.50", screen), screen[-500:]
    assert capsys.readouterr().err == ""


def test_unknown_verbosity_is_refused():
    with pytest.raises(RecipeError, match="set_verbosity: level must be one of quiet, normal, debug, got 'loud'"):
        slimkit.set_verbosity("loud")


def test_native_filter_drops_informational_lines_and_banners_only(capfd):
    from slimkit.native_logs import filtered_stderr

    with filtered_stderr():
        os.write(2, b"I0000 00:00:1796507145.667851    6485 devices.cc:67] Number of eligible GPUs: 0\n"
                    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"E0000 00:00:1796507143.870227    6485 cuda_platform.cc:52] failed call to cuInit: 303\n"
                    b"E0000 00:00:1796507143.870227    6485 kernel.cc:9] a real error\n"
                    b"the user's own line\n")
        # one write of the whole line: print's text and newline are two writes, and the filter's thread may
        # write its line between them
        sys.stderr.write("[slimkit] a progress line\n")
        sys.stderr.flush()
        os.write(2, b"partial ")
        os.write(2, b"then whole\n")
    # (under capfd, sys.stderr writes to pytest's file directly: only the descriptor's lines keep their order)
    lines = capfd.readouterr().err.splitlines()
    assert sorted(lines) == sorted(["E0000 00:00:1796507143.870227    6485 kernel.cc:9] a real error",
                                    "the user's own line", "[slimkit] a progress line", "partial then whole"])
    assert lines.index("the user's own line") < lines.index("partial then whole")
