"""A warning for plans that leave layers too thin to work: `plan_for_target(g, 0.99)` can meet its target with
1-channel convs, and the result predicts nothing.  The API's `min_channels` floor is 1 unless the caller sets it;
when the caller has not, a plan that leaves a layer below `SAFE_MIN_CHANNELS` warns (setting min_channels, even to
1, says the thin layers are meant)."""

from __future__ import annotations

import warnings

from .errors import PruningError
from .plans import Plan

SAFE_MIN_CHANNELS = 8  # the job's default min_channels (default.yaml)


class ThinPlanWarning(PruningError, UserWarning):
    """A plan leaves a layer with fewer than `SAFE_MIN_CHANNELS` channels that the caller did not ask for."""


def thin_groups(plan: Plan, floor: int = SAFE_MIN_CHANNELS) -> dict[str, tuple[int, int]]:
    """The groups `plan` leaves with fewer than `floor` channels that had at least `floor`: name -> (kept, size)."""
    kept = {name: (size - len(plan.remove.get(name, ())), size) for name, size in plan.sizes.items()}
    return {name: ks for name, ks in kept.items() if ks[1] >= floor and ks[0] < floor}


def thin_plan_message(plan: Plan, floor: int = SAFE_MIN_CHANNELS) -> str | None:
    """One line naming the thinnest layers `plan` leaves below `floor`, or None when there are none."""
    thin = thin_groups(plan, floor)
    if not thin:
        return None
    worst = sorted(thin.items(), key=lambda item: (item[1][0], item[0]))[:3]
    names = ", ".join(f"{name} keeps {kept} of {size}" for name, (kept, size) in worst)
    return (f"the plan leaves {len(thin)} layer(s) with fewer than {floor} channels ({names}); such a model often "
            f"predicts nothing: pass min_channels={floor} to keep them, or min_channels=1 to say it is meant")


def warn_if_thin(plan: Plan, floor: int = SAFE_MIN_CHANNELS) -> str | None:
    """Issue a `ThinPlanWarning` when `plan` leaves layers below `floor`; returns its message (or None)."""
    message = thin_plan_message(plan, floor)
    if message is not None:
        warnings.warn(ThinPlanWarning(message), stacklevel=3)
    return message
