"""``l1`` and ``l2``: the norm of each channel's weights over every member of its group (Li et al., 2017)."""

from __future__ import annotations

import numpy as np

from slimkit.graph import Group
from slimkit.plugins import NoOptions
from slimkit.pruning.criteria.base import CRITERIA, Criterion, CriterionData, norm_scores


@CRITERIA.register("l1", NoOptions)
class L1(Criterion):
    head_norm_order = 1

    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        return norm_scores(group, data.weights, 1)


@CRITERIA.register("l2", NoOptions)
class L2(Criterion):
    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        return norm_scores(group, data.weights, 2)
