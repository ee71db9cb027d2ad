"""Drafters: everything that proposes tokens for the target model to verify.

``base`` holds the protocol (:class:`Drafter`, :class:`Draft`, :class:`Verified`); each other
module is one drafting method.
"""

from sam_decoding.drafters.base import Draft, Drafter, Verified
from sam_decoding.drafters.heads import HeadsDrafter
from sam_decoding.drafters.model_drafter import ModelDrafter
from sam_decoding.drafters.prompt_lookup import PromptLookupDrafter
from sam_decoding.drafters.sam import SamDrafter
from sam_decoding.drafters.token_recycling import TokenRecyclingDrafter, TreeTemplate

__all__ = [
    "Draft",
    "Drafter",
    "HeadsDrafter",
    "ModelDrafter",
    "PromptLookupDrafter",
    "SamDrafter",
    "TokenRecyclingDrafter",
    "TreeTemplate",
    "Verified",
]
