"""Generated recipes, data and eval functions through ``compress`` + ``export_onnx`` on tiny models of
every framework: each example ends in a verified ONNX file or a SlimkitError, never another exception.

``export_onnx`` verifies the file in onnxruntime against the framework model (and, for int8, against
the simulation) and raises ExportError otherwise, so a returned file is a faithful one. The example
count is a tenth of the profile's (``--hypothesis-profile=long``: 300 per framework).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import slimkit
import zoo
from frameworks import building
from slimkit.errors import SlimkitError, SlimkitWarning
from slimkit.registry import adapter_for
from strategies import bad_or_good_arrays, eval_fns, recipes

pytestmark = pytest.mark.fuzz
ARCH = "plain"  # conv, batch norm, pooling, flatten, dense: every method applies
_MODELS: dict[str, tuple] = {}


def model_and_data(framework: str):
    """The framework's tiny model (built once), its layer names and 32 labelled samples."""
    if framework not in _MODELS:
        model = zoo.twins(ARCH, seed=1)[framework]
        x = zoo.sample(ARCH, framework, n=32, seed=2)
        y = np.random.default_rng(0).integers(0, 10, 32).astype(np.int64)
        _MODELS[framework] = model, [layer.name for layer in adapter_for(model).layers()], x, y
    return _MODELS[framework]


@pytest.mark.parametrize("framework", building("zoo"))
@settings(max_examples=max(3, settings.default.max_examples // 10), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_compress_and_export_end_in_a_faithful_file_or_a_slimkit_error(framework, data, tmp_path):
    model, names, x, y = model_and_data(framework)
    # careless recipes, data and metrics, each on its own: a careful recipe meets spoiled data too
    wild = {part: data.draw(st.booleans(), label=f"wild {part}") for part in ("recipe", "data", "eval_fn")}
    recipe = data.draw(recipes(names, wild["recipe"]), label="recipe")
    train = data.draw(bad_or_good_arrays(x, y, 10, wild["data"]), label="train_data")
    calib = data.draw(st.sampled_from([None, "train_x", "few"]), label="calib_data")
    eval_data = data.draw(st.sampled_from([None, (x[:8], y[:8])]), label="eval_data")
    eval_fn = data.draw(eval_fns(wild["eval_fn"]), label="eval_fn")
    kind = "+".join(part for part, on in wild.items() if on) or "careful"
    calib_data = {None: None, "train_x": train[0], "few": x[:2]}[calib]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlimkitWarning)
        try:
            result = slimkit.compress(model, recipe, train_data=train, calib_data=calib_data, eval_data=eval_data,
                                      eval_fn=eval_fn, verbose=False)
            path = tmp_path / f"fuzz_{data.draw(st.integers(0, 10**6))}.onnx"
            row = result.export_onnx(path)
        except SlimkitError as exc:
            assert str(exc)
            event(f"{kind}: {type(exc).__name__}")
            return
    event(f"{kind}: exported")
    assert path.is_file() and row.bytes == path.stat().st_size
