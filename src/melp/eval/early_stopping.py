"""Model selection on a validation score, shared by the linear probe and fine-tuning."""

from __future__ import annotations

import copy
import math
from typing import Any


class EarlyStopping:
    """Keep the state of the epoch with the best (highest) validation score; stop after
    ``patience`` epochs without improvement. A NaN score counts as no improvement.

    ``step(epoch, score, state)`` returns True when training should stop; ``best_state`` holds a
    deep copy of the best epoch's ``state`` (e.g. a ``state_dict``)."""

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.best_score, self.best_epoch, self.best_state, self._bad = -math.inf, 0, None, 0

    def step(self, epoch: int, score: float, state: Any) -> bool:
        score = -math.inf if score is None or math.isnan(score) else float(score)
        if score > self.best_score or self.best_state is None:
            self.best_score, self.best_epoch, self.best_state, self._bad = (
                score,
                epoch,
                copy.deepcopy(state),
                0,
            )
            return False
        self._bad += 1
        return self._bad >= self.patience
