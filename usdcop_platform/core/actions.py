"""The one action encoding of the platform (REFERENCE.md "Actions").

Policies output probabilities over three discrete actions, in this order:

    index  action  target position
    0      SELL    -1
    1      HOLD     0   (flat)
    2      BUY     +1

Confidence is the largest of the three probabilities. Every module that turns an action into a
position (environment, backtest, live signal, ensemble) imports the mapping from here.
"""

from __future__ import annotations

from typing import Final

import numpy as np

SELL: Final = 0
HOLD: Final = 1
BUY: Final = 2
N_ACTIONS: Final = 3

ACTION_NAMES: Final[tuple[str, ...]] = ("SELL", "HOLD", "BUY")
ACTION_TO_POSITION: Final[tuple[int, ...]] = (-1, 0, 1)
# The same mapping as an array, for vectorized code: positions = ACTION_POSITIONS[actions].
ACTION_POSITIONS: Final[np.ndarray] = np.array(ACTION_TO_POSITION, dtype=np.int8)
ACTION_POSITIONS.setflags(write=False)


def position_of(action: int) -> int:
    """Target position of an action index; raises ValueError for anything outside 0..2."""
    if not 0 <= int(action) < N_ACTIONS:
        raise ValueError(f"action must be one of 0 (SELL), 1 (HOLD), 2 (BUY); got {action!r}")
    return ACTION_TO_POSITION[int(action)]


def action_name(action: int) -> str:
    position_of(action)  # validates
    return ACTION_NAMES[int(action)]
