"""KnownOutputs: the quantize stage's outputs are reused only for the inputs they were computed on."""

import dataclasses

import numpy as np

from slimkit.quant.known_outputs import KnownOutputs, model_digest
from fake_adapter import FakeAdapter, make_mlp


def _known(inputs):
    ref = np.arange(12, dtype=np.float32).reshape(6, 2)
    return KnownOutputs(inputs, ref, ref + 0.5)


def test_named_inputs_are_covered_by_their_first_rows_only():
    ids = np.arange(24, dtype=np.int64).reshape(6, 4)
    known = _known({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    ref, sim = known.covering({"input_ids": ids[:3], "attention_mask": np.ones_like(ids[:3])})
    np.testing.assert_array_equal(ref, np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(sim, ref + 0.5)
    assert known.covering({"input_ids": ids[1:4], "attention_mask": np.ones_like(ids[:3])}) is None
    assert known.covering({"attention_mask": np.ones_like(ids[:3]), "input_ids": ids[:3]}) is None
    assert known.covering((ids[:3], np.ones_like(ids[:3]))) is None
    assert known.covering({"input_ids": ids[:3].astype(np.int32), "attention_mask": np.ones_like(ids[:3])}) is None


def test_a_probe_longer_than_the_record_or_of_another_dtype_is_not_covered():
    x = np.linspace(0, 1, 6 * 3, dtype=np.float32).reshape(6, 3)
    known = _known(x)
    assert known.covering(x[:6]) is not None
    assert known.covering(np.concatenate([x, x])) is None
    assert known.covering(x[:2].astype(np.float64)) is None


def test_the_digest_changes_with_any_array_of_the_model():
    adapter = FakeAdapter(make_mlp(seed=0))
    known = dataclasses.replace(_known(np.zeros((6, 3), np.float32)), digest=model_digest(adapter))
    assert known.describes(adapter)
    assert known.describes(FakeAdapter(make_mlp(seed=0)))  # equal arrays, another object
    name = adapter.layers()[0].name
    kernel = adapter.get_weights(name)["kernel"]
    kernel.flat[0] = np.nextafter(kernel.flat[0], np.float32(np.inf))  # one ulp of one weight
    adapter.set_weights(name, {"kernel": kernel})
    assert not known.describes(adapter)
    assert not _known(np.zeros((6, 3), np.float32)).describes(adapter)  # no digest taken: never reused
