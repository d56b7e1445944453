"""MELP losses: contrastive (rhythm), caption (token), beat alignment (beat) and their sum.

Each term is a pure function of the model's named outputs; :class:`MELPLoss` weights and sums them.
"""

from melp.losses.beat import beat_loss
from melp.losses.caption import caption_loss
from melp.losses.clip import clip_loss
from melp.losses.gather import all_gather_with_grad
from melp.losses.total import MELPLoss

__all__ = ["MELPLoss", "all_gather_with_grad", "beat_loss", "caption_loss", "clip_loss"]
