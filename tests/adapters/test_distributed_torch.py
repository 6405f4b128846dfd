"""A recipe inside a 2-process ``torch.distributed`` job (gloo on this machine), against the same recipe in
one process with the same global batches.

One pair of worker processes (``tests/torch_distributed_worker.py``, started as torchrun starts ranks) runs
every scenario in sequence; the single-process references run here, from the worker's own model, data
and recipes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import slimkit  # noqa: E402
import torch_distributed_worker as worker  # noqa: E402

WORKER = Path(worker.__file__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    """The folder the two ranks wrote into."""
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(out)], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return out


def _single(scenario: str, model: torch.nn.Module | None = None, **data) -> slimkit.CompressionResult:
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimkit.compress(model or worker.make_model(), worker.recipe(scenario), verbose=False, **data)


def _ranks(job: Path, scenario: str) -> list[dict[str, np.ndarray]]:
    return [dict(np.load(job / f"rank{r}_{scenario}.npz")) for r in (0, 1)]


def _assert_same(ranks: list[dict[str, np.ndarray]], single: dict[str, np.ndarray]) -> None:
    assert sorted(ranks[0]) == sorted(ranks[1]) == sorted(single)
    for key, value in single.items():
        assert np.array_equal(ranks[0][key], ranks[1][key], equal_nan=True), f"{key}: the ranks differ"
        np.testing.assert_allclose(ranks[0][key], value, atol=1e-4, rtol=0, err_msg=key)


def test_magnitude_pruning_with_fine_tuning_matches_one_process(job: Path) -> None:
    x, y = worker.digits()
    single = worker.state(_single("prune", train_data=(x, y)).model)
    ranks = _ranks(job, "prune")
    _assert_same(ranks, single)
    for key in single:  # the same weights are pruned on both ranks and in the single process
        if key.endswith("weight") and single[key].ndim > 1:
            zeros = ranks[0][key] == 0
            assert np.array_equal(zeros, ranks[1][key] == 0) and np.array_equal(zeros, single[key] == 0), key
    kernels = [k for k in single if k.endswith("weight") and single[k].ndim > 1]
    sparsity = sum(int((single[k] == 0).sum()) for k in kernels) / sum(single[k].size for k in kernels)
    assert sparsity == pytest.approx(0.6, abs=0.02)
    # batch norms trained on global-batch statistics: the running statistics moved, alike everywhere
    assert not np.allclose(single["1.running_var"], 1.0)


def test_a_model_with_parameters_its_forward_never_uses(job: Path) -> None:
    x, y = worker.digits()
    single = worker.state(_single("spare", model=worker.SpareHead(), train_data=(x, y)).model)
    ranks = _ranks(job, "spare")
    _assert_same(ranks, single)
    assert np.count_nonzero(single["body.0.weight"] == 0) > 0


def test_a_hugging_face_bert_prunes_alike_on_every_rank_and_in_one_process(job: Path) -> None:
    pytest.importorskip("transformers")
    x, y = worker.text()
    single = worker.state(_single("bert", model=worker.make_bert(), train_data=(x, y)).model)
    ranks = _ranks(job, "bert")
    _assert_same(ranks, single)
    query = "bert.encoder.layer.0.attention.self.query.weight"
    assert np.mean(single[query] == 0) == pytest.approx(0.5, abs=0.05)


def test_qat_with_a_distributed_sampler_matches_one_process(job: Path) -> None:
    x, y = worker.digits()
    single = _single("qat", train_data=worker.loader(x, y, worker.BATCH), calib_data=x)
    ranks = _ranks(job, "qat")
    _assert_same(ranks, worker.state(single.model))
    ranges = [k for k in ranks[0] if "range" in k or "scale" in k]
    assert ranges, "no fake-quant state in the QAT model"


def test_rank_zero_writes_one_set_of_files(job: Path) -> None:
    rank0 = json.loads((job / "rank0_prune.json").read_text())
    rank1 = json.loads((job / "rank1_prune.json").read_text())
    assert rank0["row"] == str(job / "prune.onnx") and rank1["row"] is None
    # every rank returned only after the writer finished: rank 1 saw the files
    assert {"prune.onnx", "prune.json", "prune_model"} <= set(rank1["files"])
    written = sorted(p.name for p in job.iterdir() if p.name.startswith("prune"))
    assert written == ["prune.json", "prune.onnx", "prune_model"]  # no second copy, no leftovers
    report = json.loads((job / "prune.json").read_text())
    assert report["files"] == [] or report["files"][0]["path"].endswith("prune.onnx")


def test_calibration_split_over_ranks_equals_one_process(job: Path) -> None:
    x, _ = worker.digits()
    minmax = worker.ranges(_single("minmax", calib_data=x).report)
    for rank in (0, 1):
        found = json.loads((job / f"rank{rank}_minmax.json").read_text())
        assert found.keys() == minmax.keys()
        for site, (lo, hi) in minmax.items():
            assert found[site] == pytest.approx([lo, hi], abs=1e-6), site
    # histograms: summed over edges the ranks agreed on, within one bin of one process's
    percentile = worker.ranges(_single("percentile", calib_data=x).report)
    for rank in (0, 1):
        found = json.loads((job / f"rank{rank}_percentile.json").read_text())
        for site, (lo, hi) in percentile.items():
            bin_width = (minmax[site][1] - min(0.0, minmax[site][0])) / 2048
            assert abs(found[site][1] - hi) <= bin_width and abs(found[site][0] - lo) <= bin_width, site


def test_a_failing_rank_stops_the_others_in_bounded_time(job: Path) -> None:
    failed = json.loads((job / "rank1_fail.json").read_text())
    stopped = json.loads((job / "rank0_fail.json").read_text())
    assert failed["error"] == "RuntimeError" and "planted by the test" in failed["message"]
    assert stopped["error"] == "DistributedError" and stopped["slimkit"]
    assert "rank 1 failed with RuntimeError: disk read failed" in stopped["message"]
    assert "rank 0 of 2 stops" in stopped["message"]
    # rank 1 lingered without answering: rank 0 gave up after distributed.timeout_s, not gloo's 30 minutes
    assert stopped["seconds"] < worker.TIMEOUT_S + 10


def test_batch_norms_on_each_share_end_alike_on_every_rank(job: Path) -> None:
    ranks = _ranks(job, "prune_local_bn")
    x, y = worker.digits()
    synced = worker.state(_single("prune_local_bn", train_data=(x, y)).model)
    for key in ranks[0]:
        assert np.array_equal(ranks[0][key], ranks[1][key], equal_nan=True), key
    # each rank normalised by its half of the batch: not what one process computes on the whole batch
    assert not np.allclose(ranks[0]["1.running_var"], synced["1.running_var"], atol=1e-4)


def test_tuning_in_a_distributed_job_is_refused(job: Path) -> None:
    for rank in (0, 1):
        message = json.loads((job / f"rank{rank}_tune.json").read_text())
        assert message.startswith("NotSupportedYetError: tune: tuning inside a distributed job (2 ranks)")
