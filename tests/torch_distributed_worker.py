"""One rank of a 2-process ``torch.distributed`` job (gloo), as torchrun would start it:
``RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python torch_distributed_worker.py OUT``.

Each rank runs the scenarios of ``test_distributed_torch.py`` in order and writes what it ended with into
``OUT/rank{r}_{scenario}.npz`` / ``.json``; the files a scenario exports go to ``OUT/{scenario}.*`` (only
rank 0 may write them). The last scenario makes rank 1 fail mid-training. The recipes, model and data
are defined here so that the test computes the single-process reference from the same ones.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: slimkit's collective timeout in the failing scenario (rank 1 stays alive after failing, so rank 0's
#: only way out is the timeout)
TIMEOUT_S = 5
#: global batch of every scenario; the DataLoader scenarios give each of the 2 ranks half of it
BATCH = 32


def make_model(seed: int = 0) -> nn.Module:
    """A small CNN with batch norms over 1x8x8 digits. Its convolutions have no bias, as in ResNets: a bias
    right before a batch norm has no effect, and its gradient is rounding noise that Adam scales up to
    full steps, so it would differ between any two summation orders."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 10),
    ).eval()


class SpareHead(nn.Module):
    """The CNN with a head its forward never uses (as models with several heads have): DDP must be told."""

    def __init__(self) -> None:
        super().__init__()
        self.body = make_model()
        self.spare = nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_bert() -> nn.Module:
    """A Hugging Face BERT classifier from a tiny config (random weights; no dropout, which draws
    differently on every rank)."""
    import transformers

    torch.manual_seed(1)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config).eval()


def text(n: int = 64) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    x = {"input_ids": rng.integers(0, 64, (n, 12)), "attention_mask": np.ones((n, 12), np.int64)}
    return x, rng.integers(0, 3, n)


def digits(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[:n] / 16.0).astype(np.float32)[:, None]
    return x, data.target[:n].astype(np.int64)


def recipe(scenario: str) -> dict:
    fine_tune = {"epochs": 2, "batch_size": BATCH, "learning_rate": 0.01, "sync_batchnorm": True}
    if scenario == "prune":
        stage = {"prune": {"method": "magnitude", "sparsity": 0.6,
                           "schedule": {"kind": "polynomial", "begin": 0.0, "end": 0.6, "every": 3}}}
        return {"seed": 3, "fine_tune": fine_tune, "stages": [stage]}
    if scenario == "prune_local_bn":  # batch norms each on their rank's share; statistics averaged after
        return dict(recipe("prune"), fine_tune=dict(fine_tune, epochs=1, sync_batchnorm=False))
    if scenario == "spare":
        return dict(recipe("prune"), fine_tune=dict(fine_tune, epochs=1))
    if scenario == "bert":
        return {"seed": 7, "fine_tune": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3},
                "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5, "schedule": {"every": 2}}}]}
    if scenario == "tune":
        return {"fine_tune": None, "stages": [{"quantize": {"method": "static"}}],
                "tune": {"strategy": "basic", "tolerance": {"relative": 0.01}, "max_trials": 2}}
    if scenario == "qat":
        stage = {"quantize": {"method": "qat", "activations": {"learn": "ema"}, "fine_tune": dict(fine_tune, epochs=1)}}
        return {"seed": 4, "fine_tune": None, "stages": [stage]}
    if scenario in ("minmax", "percentile"):
        return {"seed": 5, "fine_tune": None,
                "stages": [{"quantize": {"method": "static", "activations": {"calibration": scenario}}}]}
    if scenario == "fail":
        return {"seed": 6, "fine_tune": dict(fine_tune, epochs=3), "distributed": {"timeout_s": TIMEOUT_S},
                "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}
    raise KeyError(scenario)


def loader(x: np.ndarray, y: np.ndarray, batch: int, sampler=None, fail_at: int | None = None):
    """A DataLoader over (x, y); ``fail_at``: raise when that batch is drawn."""
    pairs = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            if i >= fail_at * batch:
                raise RuntimeError("disk read failed (planted by the test)")
            return pairs[i]

    dataset = pairs if fail_at is None else Failing()
    return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, shuffle=False)


def state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def ranges(report) -> dict[str, list[float]]:
    """Each activation site's calibrated float range."""
    return {row.site: [row.range_min, row.range_max] for row in report.quant if row.kind == "activation"}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    warnings.simplefilter("ignore")
    import slimkit

    x, y = digits()
    model = make_model()
    # magnitude pruning while fine-tuning: every rank holds all the data; slimkit splits each global batch
    result = slimkit.compress(model, recipe("prune"), train_data=(x, y), verbose=False)
    np.savez(out / f"rank{rank}_prune.npz", **state(result.model))
    row = result.export_onnx(out / "prune.onnx")
    result.report.to_json(out / "prune.json")
    result.save(out / "prune_model")
    (out / f"rank{rank}_prune.json").write_text(json.dumps(
        {"row": None if row is None else row.path, "files": sorted(p.name for p in out.iterdir())}))
    result = slimkit.compress(model, recipe("prune_local_bn"), train_data=(x, y), verbose=False)
    np.savez(out / f"rank{rank}_prune_local_bn.npz", **state(result.model))
    result = slimkit.compress(SpareHead(), recipe("spare"), train_data=(x, y), verbose=False)
    np.savez(out / f"rank{rank}_spare.npz", **state(result.model))
    result = slimkit.compress(make_bert(), recipe("bert"), train_data=text(), verbose=False)
    np.savez(out / f"rank{rank}_bert.npz", **state(result.model))
    try:
        slimkit.compress(model, recipe("tune"), calib_data=x, eval_data=(x, y), verbose=False)
        refused = None
    except slimkit.SlimkitError as exc:
        refused = f"{type(exc).__name__}: {exc}"
    (out / f"rank{rank}_tune.json").write_text(json.dumps(refused))
    # QAT: each rank holds its own shard through a DistributedSampler, half the global batch per rank
    sampler = torch.utils.data.distributed.DistributedSampler(
        torch.utils.data.TensorDataset(torch.from_numpy(x)), shuffle=False)
    result = slimkit.compress(model, recipe("qat"), train_data=loader(x, y, BATCH // size, sampler),
                              calib_data=x, verbose=False)
    np.savez(out / f"rank{rank}_qat.npz", **state(result.model))
    # calibration: each rank calibrates on its own half of the inputs
    half = np.array_split(np.arange(len(x)), size)[rank]
    for scenario in ("minmax", "percentile"):
        result = slimkit.compress(model, recipe(scenario), calib_data=x[half], verbose=False)
        (out / f"rank{rank}_{scenario}.json").write_text(json.dumps(ranges(result.report)))
    # a rank that fails mid-training
    start = time.perf_counter()
    try:
        data = loader(x, y, BATCH, fail_at=3 if rank == 1 else None)
        slimkit.compress(model, recipe("fail"), train_data=data, verbose=False)
        outcome = {"error": None}
    except Exception as exc:  # noqa: BLE001 - the test reads what each rank raised
        outcome = {"error": type(exc).__name__, "message": str(exc), "slimkit": isinstance(exc, slimkit.SlimkitError),
                   "trace": traceback.format_exc()[-2000:]}
    outcome["seconds"] = time.perf_counter() - start
    (out / f"rank{rank}_fail.json").write_text(json.dumps(outcome))
    if rank == 1:  # a failed rank that lingers (its process does not end): the others must not wait for it
        time.sleep(TIMEOUT_S + 4)
    os._exit(0)  # the process group is broken now: do not wait in its shutdown


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
