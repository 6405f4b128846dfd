"""Twin CNNs (identical weights, made fragile between pw and fc1) give the same sensitivity rows on every pair
of frameworks: the same layers, actions and settings, metrics within a small tolerance, the same quant_order.

Metric: MSE against the float model's outputs on 64 digits. Magnitude masks are identical (canonical
tie-breaking), so prune rows agree to float32 rounding; quantize rows agree unless a rounding tie breaks
differently in the frameworks' float sums, which moves an MSE by far less than the tolerance.
"""

from __future__ import annotations

import pytest

import slimkit
from fragile import digits_images, fidelity_data, make_fragile
from frameworks import pair_ids, pairs
from twins import twin_pair

RECIPE = {"stages": [{"quantize": {"method": "static"}}],
          "analyze": {"prune": {"ratios": [0.75]}, "quantize": {"bits": [8, 4]}, "samples": 64}}


@pytest.mark.parametrize("pair", pairs("twins"), ids=pair_ids("twins"))
def test_twins_give_the_same_rows(pair):
    models = twin_pair("cnn", seed=1, he=True, frameworks=pair)
    results = {}
    for fw, model in models.items():
        fragile = make_fragile(model, "pw", "fc1")
        x = digits_images(fw, 64)
        results[fw] = slimkit.sensitivity(fragile, RECIPE, eval_data=fidelity_data(fragile, x), calib_data=x,
                                          verbose=False)
    a, b = (results[fw] for fw in pair)
    assert [(r.layer, r.kind, r.action, r.setting) for r in a.rows] == \
        [(r.layer, r.kind, r.action, r.setting) for r in b.rows]
    assert len(a.rows) == 5 * (1 + 2)
    for ra, rb in zip(a.rows, b.rows):
        print(ra.layer, ra.action, ra.setting, f"{ra.metric:.6g} {rb.metric:.6g}  {ra.sqnr_db:.3f} {rb.sqnr_db:.3f}")
        assert ra.metric == pytest.approx(rb.metric, rel=1e-3, abs=1e-7), (ra, rb)
        assert ra.sqnr_db == pytest.approx(rb.sqnr_db, abs=0.05), (ra, rb)
        assert ra.cosine == pytest.approx(rb.cosine, abs=1e-4), (ra, rb)
    assert a.quant_order() == b.quant_order()
    assert a.quant_order(4) == b.quant_order(4)
    assert a.quant_order()[:2] == ["fc1", "pw"]
