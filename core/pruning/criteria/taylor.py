"""``taylor``: first-order Taylor importance (Molchanov et al., 2019), ``(sum over a channel of g * w)^2``,
the squared first-order change of the loss if the channel were removed."""

from __future__ import annotations

import numpy as np

from slimkit.graph import Group
from slimkit.plugins import NoOptions
from slimkit.pruning.criteria.base import CRITERIA, Criterion, CriterionData, member_slices


@CRITERIA.register("taylor", NoOptions)
class Taylor(Criterion):
    needs_gradients = True
    sees_bn_scales = True  # gamma x its gradient is part of a channel's score

    def scores(self, group: Group, data: CriterionData) -> np.ndarray:
        grads = data.grads or {}
        scores = []
        for m in group.members:
            if m.layer not in grads or not any(k in grads[m.layer] for k in ("kernel", "gamma")):
                continue
            w = member_slices(m, data.weights[m.layer])
            g = member_slices(m, grads[m.layer])
            scores.append((w * g).sum(1) ** 2)
        return np.mean(scores, axis=0)
