"""``random``: channels ranked by a random draw from the recipe-seeded generator (a baseline)."""

from __future__ import annotations

import numpy as np

from slimkit.graph import Group
from slimkit.plugins import NoOptions
from slimkit.pruning.criteria.base import CRITERIA, Criterion, CriterionData


@CRITERIA.register("random", NoOptions)
class Random(Criterion):
    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        return (data.rng or np.random.default_rng(0)).random(group.channels)
