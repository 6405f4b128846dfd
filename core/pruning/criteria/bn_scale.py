"""``bn_scale``: network slimming (Liu et al., 2017), |gamma| of the group's batch norms."""

from __future__ import annotations

import numpy as np

from slimkit.graph import Group
from slimkit.plugins import NoOptions
from slimkit.pruning.criteria.base import CRITERIA, Criterion, CriterionData, member_slices, norm_scores


@CRITERIA.register("bn_scale", NoOptions)
class BNScale(Criterion):
    sees_bn_scales = True
    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        # Groups without a batch norm fall back to L1 so that every group still gets a ranking.
        gammas = [np.abs(member_slices(m, data.weights[m.layer])[:, 0]) for m in group.members
                  if m.role == "channel" and "gamma" in data.weights[m.layer]]
        return np.mean(gammas, axis=0) if gammas else norm_scores(group, data.weights, 1)
