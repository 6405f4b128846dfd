"""``fpgm``: filters near the geometric median of their layer are the most replaceable (He et al., 2019)."""

from __future__ import annotations

import numpy as np

from slimkit.graph import Group
from slimkit.plugins import NoOptions
from slimkit.pruning.criteria.base import CRITERIA, Criterion, CriterionData, member_slices


@CRITERIA.register("fpgm", NoOptions)
class FPGM(Criterion):
    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        # importance: the summed distance of each filter to all others, over the group's producers
        scores = []
        for m in group.members:
            if m.role != "out":
                continue
            filters = member_slices(m, data.weights[m.layer])
            diff = filters[:, None, :] - filters[None, :, :]
            scores.append(np.sqrt((diff ** 2).sum(-1)).sum(1))
        return np.mean(scores, axis=0)
