"""KnownOutputs: the quantize stage's outputs are reused only for the inputs they were computed on."""

import numpy as np

from slimkit.quant.known_outputs import KnownOutputs


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


def test_a_changed_model_no_longer_matches_the_record():
    sim = np.random.default_rng(0).uniform(0, 1, (300, 2)).astype(np.float32)  # off any grid: no step slack
    known = KnownOutputs(np.zeros((300, 3), np.float32), sim, sim)
    assert known.still_describes(sim[:1] + 5e-5)  # within 1e-4 of the output's range
    assert not known.still_describes(sim[:1] + 1e-3)
    assert not known.still_describes(sim[0])  # another shape


def test_a_quantized_output_may_round_one_step_either_way():
    grid = (np.arange(40, dtype=np.float32) * 0.25).reshape(20, 2)  # a 0.25 output step
    known = KnownOutputs(np.zeros((20, 3), np.float32), grid, grid)
    assert known.still_describes(grid[:1] + 0.25)
    assert not known.still_describes(grid[:1] + 0.75)
