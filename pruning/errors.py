"""Exceptions of the pruning package: each names the group, layer or file at fault and what to do instead."""

from __future__ import annotations


class PruningError(Exception):
    """Base class of every error raised by pruning."""


class PlanError(PruningError, ValueError):
    """A pruning plan cannot be built or applied as asked."""


class RatioError(PlanError):
    """A pruning ratio lies outside [0, 1)."""


class ProtectedChannelError(PlanError):
    """The plan cuts channels that must stay (head outputs, image channels, channels of unknown ops)."""


class UnknownLayerError(PlanError):
    """The plan names a layer or channel group that the model does not have."""


class EmptyLayerError(PlanError):
    """The plan would leave a layer (a channel group) with no channels, or with fewer than `min_channels`."""


class SplitConstraintError(PlanError):
    """The plan breaks a relation that a block's own forward code needs (C2f's `chunk(2)`: equal halves)."""


class BlockError(PlanError):
    """A depth plan names a residual block that cannot be removed (no shortcut, a head input, unknown)."""


class StalePlanError(PlanError):
    """The plan was made for a different architecture (group sizes differ from the model's)."""


class OutputError(PruningError, OSError):
    """An output file cannot be written where asked (exists without an overwrite flag, folder not writable)."""


class OverwriteError(OutputError, FileExistsError):
    """Saving would overwrite an existing file (never done silently, and never the input weights)."""
