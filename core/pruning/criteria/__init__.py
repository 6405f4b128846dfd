"""Channel importance criteria: registered plugins, one file each (``l1``/``l2`` in norms.py, ``fpgm``,
``bn_scale``, ``taylor``, ``apoz``/``mean_activation`` in activation.py, ``random`` in draw.py).

Register your own with :data:`CRITERIA` (``slimkit.register_criterion``): it then drives channel
pruning on every framework, since criteria see numpy arrays only.
"""

from slimkit.pruning.criteria.base import (
    CRITERIA,
    Criterion,
    CriterionData,
    activation_stats,
    criterion_of,
    group_scores,
    member_slices,
)

__all__ = ["CRITERIA", "Criterion", "CriterionData", "activation_stats", "criterion_of", "group_scores",
           "member_slices"]
