"""A fast slice of the coverage sweep (benchmarks/zoo.py): a few cheap cases that take different paths
through slimkit, run by the sweep's own case runner and classified by its criteria.

Keras LSTM: magnitude pruning of recurrent kernels, dynamic int8 (weight-only LSTM), channel pruning of
its hidden units. PyTorch nn.TransformerEncoder classifier: static and dynamic
int8 through torch.export capture. Hugging Face DistilBERT from a tiny config: float export of a
tokenizer dict. The full sweep and its table: ``python benchmarks/zoo.py`` (benchmarks/results/zoo.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# tests/zoo.py (the test zoo) shadows the module name ``zoo`` on the test path: load the sweep by file.
_SWEEP = Path(__file__).resolve().parents[2] / "benchmarks" / "zoo.py"
_spec = importlib.util.spec_from_file_location("zoo_sweep", _SWEEP)
sweep = importlib.util.module_from_spec(_spec)
sys.modules["zoo_sweep"] = sweep  # dataclasses look their module up while the file executes
_spec.loader.exec_module(sweep)

OK = "ok"
#: (model, operation, expected): "ok", or ("refused", SlimkitError/SlimkitWarning class, text the message names).
CASES = [
    ("keras-lstm", "magnitude", OK),
    ("keras-lstm", "dynamic", OK),
    ("keras-lstm", "channel", OK),  # hidden units removed from the LSTM's gates
    ("torch-transformer", "static", OK),
    ("torch-transformer", "dynamic", OK),
    ("hf-DistilBERT", "export", OK),
    ("hf-EfficientNet", "static", OK),  # a transformers output dict: the logits are read, the rest left whole
    # int8 of a random, tiny MobileNetV2 departs from the float model (onnxruntime's own int8 too, r 0.58): the
    # earliest layers are kept float until r > 0.95, warned, and the file is then over 0.45x the float one
    ("hf-MobileNetV2", "static", ("refused", "SlimkitWarning", "selected layers kept float so that the outputs")),
]


def _id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]}-{values[1]}"


@pytest.fixture(scope="module")
def specs() -> dict:
    return {spec.name: spec for spec in sweep.model_specs()}


@pytest.mark.parametrize("model, op, expected", CASES, ids=[_id(c) for c in CASES])
def test_zoo_case(specs, tmp_path, model, op, expected):
    spec = specs[model]
    outcome = sweep.run_case(spec, op, tmp_path)
    context = f"{outcome.line()}\n{outcome.output[-2000:]}"
    if expected == OK:
        assert outcome.status == "ok", context
        return
    status, error_class, named = expected
    assert outcome.status == status, context
    assert outcome.reason.startswith(f"{error_class}: "), context
    assert named in outcome.reason, context
