"""``train_data=(x, None)``: inputs alone serve where nothing needs labels, and a clear DataError
where something does; a key that cannot act (a schedule for n:m) is refused."""

from __future__ import annotations

import pytest

import slimkit
from slimkit.errors import DataError, RecipeError

ONE_SHOT = {"fine_tune": None, "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}
TRAINS = {"fine_tune": {"epochs": 1, "batch_size": 16}, "stages": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}


@pytest.mark.usefixtures("fake_registered")
def test_inputs_without_labels_serve_a_one_shot_recipe(mlp, classification_data):
    x, _ = classification_data
    result = slimkit.compress(mlp, ONE_SHOT, train_data=(x, None), verbose=False)
    assert result.report.stages[0].achieved == pytest.approx(0.5, abs=0.01)


@pytest.mark.usefixtures("fake_registered")
def test_inputs_without_labels_for_fine_tuning_name_the_missing_labels(mlp, classification_data):
    x, _ = classification_data
    with pytest.raises(DataError, match=r"train_data: y is None, but labels are needed"):
        slimkit.compress(mlp, TRAINS, train_data=(x, None), verbose=False)


def test_a_schedule_for_n_m_is_refused():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.prune\.schedule: has no effect here: method n:m"):
        slimkit.Recipe.load({"stages": [{"prune": {"method": "n:m", "schedule": {"every": 2}}}]})
