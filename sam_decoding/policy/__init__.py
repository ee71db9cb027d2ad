"""Cost-aware speculation: how many draft nodes a step should verify on this hardware.

``cost_profile`` measures what verification costs (``t(q, L)``), ``acceptance`` estimates how likely
each node is to be accepted, ``selection`` picks the subtree with the most expected tokens per
second, and ``cost_aware`` ties them into the policy the generate loop uses by default.
"""

from sam_decoding.policy.acceptance import AcceptanceModel, NodeEstimates
from sam_decoding.policy.batch_budget import BatchBudget, DraftGuard, StepCostCurve, best_budget
from sam_decoding.policy.cost_aware import CostAwarePolicy, Plan
from sam_decoding.policy.cost_profile import CostProfile, calibrate
from sam_decoding.policy.selection import Selection, best_subtree

#: What the generate loop calls on a policy (``CostAwarePolicy`` is the one implementation).
VerificationPolicy = CostAwarePolicy

__all__ = [
    "AcceptanceModel",
    "BatchBudget",
    "CostAwarePolicy",
    "CostProfile",
    "DraftGuard",
    "NodeEstimates",
    "Plan",
    "Selection",
    "StepCostCurve",
    "VerificationPolicy",
    "best_budget",
    "best_subtree",
    "calibrate",
]
