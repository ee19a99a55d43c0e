"""Checked (raising) mode for the Python-level API.

Inside `jit` an invalid action is replaced by the lowest valid choice and
counted in `info`; outside it, `check_action` names what is wrong instead.
"""
from __future__ import annotations

import numpy as np

from damdjax.envs.dynamics import dispatch_feasible, dispatch_needed, eligible_slots, pick_needed
from damdjax.envs.state import Action, EnvState


def check_action(state: EnvState, action: Action) -> None:
    """Raise ValueError if `action` breaks a mask of a decision needed in `state`.

    Works on concrete (unbatched) arrays only.
    """
    if bool(np.asarray(state.done)):
        raise ValueError("the episode is done: reset before stepping")
    feasible = np.asarray(dispatch_feasible(state))
    if bool(np.asarray(dispatch_needed(state))):
        d = int(np.asarray(action.dispatch))
        if not 0 <= d < feasible.shape[0] or not feasible[d]:
            raise ValueError(
                f"dispatch to server {d} is not allowed: feasible servers are "
                f"{np.flatnonzero(feasible).tolist()}")
    eligible = np.asarray(eligible_slots(state))
    need = np.asarray(pick_needed(state))
    picks = np.asarray(action.picks)
    if picks.shape != need.shape:
        raise ValueError(f"picks must have shape {need.shape}, got {picks.shape}")
    for server in np.flatnonzero(need):
        slot = int(picks[server])
        if not 0 <= slot < eligible.shape[1] or not eligible[server, slot]:
            raise ValueError(
                f"server {server} picked queue slot {slot}, which is not eligible: eligible "
                f"slots are {np.flatnonzero(eligible[server]).tolist()}")


def checked_step(env, key, state: EnvState, action: Action, params):
    """`env.step` after `check_action` (not jittable)."""
    check_action(state, action)
    return env.step(key, state, action, params)
