"""Trained draft heads (Medusa-1): small predictors on the target's last hidden state.

``model`` holds the heads themselves, ``identity`` what ties them to one base model,
``file_format`` the safetensors file they live in, ``features`` the on-disk cache of hidden states
they are trained on, ``self_distillation`` how that cache is filled from the model's own greedy
answers, ``training`` the training loop and ``default`` the heads shipped for the default model.
The drafter that uses them is :class:`sam_decoding.drafters.HeadsDrafter`.
"""

from sam_decoding.heads.file_format import FORMAT_VERSION, HeadsFormatError, HeadsMismatchError
from sam_decoding.heads.identity import ModelIdentity
from sam_decoding.heads.model import DEFAULT_NUM_HEADS, MedusaHeads

__all__ = [
    "DEFAULT_NUM_HEADS",
    "FORMAT_VERSION",
    "HeadsFormatError",
    "HeadsMismatchError",
    "MedusaHeads",
    "ModelIdentity",
]
