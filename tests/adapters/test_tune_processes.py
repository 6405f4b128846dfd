"""Tuning runs in separate processes: two workers sharing one Optuna study, and Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER = Path(__file__).parents[1] / "tune_worker.py"


def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout: float = 240) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_workers_share_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    procs = [start(storage, "shared", 8, tmp_path / f"log{i}.json", 0.3) for i in range(2)]
    a, b = (finish(p) for p in procs)
    assert a["best"] == b["best"] and a["metric"] == b["metric"]  # both read the same best from the study
    assert len(set(a["workers"]) | set(b["workers"])) == 2  # trials of both processes are in the study
    mine = a["mine"] + b["mine"]
    assert len(mine) == len(set(mine)), mine  # no trial run twice
    # every trial either process ran is in the study the second one read, none lost; the count stops at
    # max_trials, give or take the trials already running when the limit was reached
    last = a if len(a["trials"]) >= len(b["trials"]) else b
    assert set(mine) <= set(last["trials"]) or set(mine) <= set(a["trials"]) | set(b["trials"])
    assert 8 <= len(set(a["trials"]) | set(b["trials"])) <= 9
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers))) and set(mine) == set(numbers)


def test_sigint_returns_the_best_so_far_with_a_complete_log(tmp_path):
    log = tmp_path / "trials.json"
    proc = start("-", "-", 200, log, 0.5)
    deadline = time.time() + 120
    while time.time() < deadline:  # the log is rewritten after every trial
        if log.exists() and len(json.loads(log.read_text())["trials"]) >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("no trial finished in 120 s")
    proc.send_signal(signal.SIGINT)
    result = finish(proc, 120)
    assert result["interrupted"] is True
    ran = result["trials"]
    assert 2 <= len(ran) < 200 and ran == list(range(len(ran)))  # every finished trial, in order
    written = json.loads(log.read_text())
    assert [t["number"] for t in written["trials"]] == ran and written["interrupted"] is True
    assert written["best"] == result["best"] and written["recipe"] is not None
    assert not list(tmp_path.glob(".slimkit-*"))  # no temporary file left behind
