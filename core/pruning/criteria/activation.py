"""``apoz`` and ``mean_activation``: the producers' outputs after ReLU (the usual follower).

APoZ ranks channels by how rarely they are zero (Hu et al., 2016); mean activation by their mean.
"""

from __future__ import annotations

import numpy as np

from slimkit.graph import Group
from slimkit.plugins import NoOptions
from slimkit.pruning.criteria.base import CRITERIA, Criterion, CriterionData


class _ActivationCriterion(Criterion):
    needs_activations = True
    sees_bn_scales = True  # activations after a batch norm scale with it

    def per_producer(self, total: np.ndarray, zeros: np.ndarray, count: int) -> np.ndarray:
        raise NotImplementedError

    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        stats = data.stats or {}
        return np.mean([self.per_producer(*stats[layer]) for layer in group.producers], axis=0)


@CRITERIA.register("apoz", NoOptions)
class APoZ(_ActivationCriterion):
    def per_producer(self, total: np.ndarray, zeros: np.ndarray, count: int) -> np.ndarray:
        return 1.0 - zeros / count


@CRITERIA.register("mean_activation", NoOptions)
class MeanActivation(_ActivationCriterion):
    def per_producer(self, total: np.ndarray, zeros: np.ndarray, count: int) -> np.ndarray:
        return total / count
