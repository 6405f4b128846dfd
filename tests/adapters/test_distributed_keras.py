"""Keras compress under tf.distribute: MirroredStrategy over two logical CPU devices (one subprocess: logical
devices must be configured before TensorFlow starts) and MultiWorkerMirroredStrategy with two local workers
(two subprocesses, loopback TF_CONFIG). Magnitude pruning with fine-tuning and QAT on a model with batch
norm (synchronised, ``fine_tune.sync_batchnorm``) must end with the weights, masks and quantizer state of a
single process training on the same global batches in the same order; only the chief writes files; two
workers calibrating on one half of the data each find the ranges of one process calibrating on all of it.

The single-process references run in the pytest process; the three subprocesses start together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

import keras_distributed_worker as worker  # noqa: E402

WORKER = Path(worker.__file__)
TOL = 1e-4


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(mode: str, out: Path, tf_config: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_NUM_INTRAOP_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker timed out: {err[-3000:]}")
    assert proc.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The subprocesses' results, and the single-process references computed meanwhile."""
    out = tmp_path_factory.mktemp("keras_distributed")
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = {"mirrored": _start("mirrored", out)}
    for i in range(2):
        procs[f"mwms{i}"] = _start("mwms", out, {"cluster": cluster, "task": {"type": "worker", "index": i}})
    try:
        x, _ = worker.data()
        reference = {scenario: worker.state(worker.run(scenario, worker.build_model(),
                                                       calib=x if scenario == "calibration" else None))
                     for scenario in worker.RECIPES}
        done = {name: _finish(proc) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out, reference, done


def _same(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), what
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=0, atol=TOL, equal_nan=True, err_msg=f"{what}: {key}")
        if key.startswith("w:") and key.endswith("kernel"):  # the masks: the same entries pruned
            np.testing.assert_array_equal(got[key] == 0, value == 0, err_msg=f"{what}: zeros of {key}")


def _load(path: Path) -> dict:
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def test_mirrored_strategy_equals_one_process(runs):
    out, reference, done = runs
    assert done["mirrored"]["replicas"] == 2 and done["mirrored"]["size"] == 1  # one process: one rank
    for scenario in ("magnitude", "qat"):
        _same(_load(out / f"mirrored_{scenario}.npz"), reference[scenario], f"mirrored {scenario}")
    pruned = reference["magnitude"]
    assert np.count_nonzero(pruned["w:conv/kernel"] == 0) == pruned["w:conv/kernel"].size // 2
    assert int(pruned["steps"][0]) == 2 * 3  # one schedule step per global batch of 16: 37 samples, 2 epochs
    assert np.all(np.isfinite(reference["qat"]["q:relu:scale"]))  # the EMA range was learned


def test_multi_worker_strategy_equals_one_process(runs):
    out, reference, done = runs
    assert sorted(done[f"mwms{i}"]["rank"] for i in range(2)) == [0, 1]
    assert all(done[f"mwms{i}"]["size"] == 2 and done[f"mwms{i}"]["replicas"] == 2 for i in range(2))
    for scenario in ("magnitude", "qat"):
        results = [_load(out / f"mwms{rank}_{scenario}.npz") for rank in range(2)]
        _same(results[1], results[0], f"workers' {scenario}")
        _same(results[0], reference[scenario], f"multi-worker {scenario}")


def test_multi_worker_writes_one_set_of_files(runs):
    out, _, done = runs
    files = sorted(p.name for p in (out / "files").iterdir())
    assert files == ["magnitude.json", "magnitude.onnx", "qat.json"]  # no second copy, no temporary file
    by_rank = {d["rank"]: d for d in (done["mwms0"], done["mwms1"])}
    assert by_rank[0]["onnx_row"] and not by_rank[1]["onnx_row"]  # the chief's row; None elsewhere
    report = json.loads((out / "files" / "magnitude.json").read_text())
    assert report["framework"] == "keras"


def test_calibration_split_over_workers_equals_one_process(runs):
    out, reference, _ = runs
    want = {k: v for k, v in reference["calibration"].items() if k.startswith("q:")}
    assert want and all(np.all(np.isfinite(v)) for v in want.values())
    for rank in range(2):
        got = _load(out / f"mwms{rank}_calibration.npz")
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-7, err_msg=f"rank {rank}: {key}")
