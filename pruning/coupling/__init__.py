"""Channel coupling: which channels of a flat graph must be removed together, and every tensor slice they touch.

One pass over the fx graph in topological order gives every tensor's channel dimension (dim 1) a list of
*labels*, one per channel.  A filter op (conv) creates fresh labels for its output channels; ops that act per
channel (BatchNorm, activations, pooling, upsampling) pass their input's labels on; `cat` along channels
concatenates them; `chunk`/`split` slices them; `add`/`sub`/`mul`/`div` of two tensors *unite* the labels of
their operands position by position (a residual shortcut ties the channels of both branches).  Each op that
holds a per-channel slice of a parameter records a `Touch` on the label of that channel: the producing conv
(weight dim 0, bias), the BatchNorm (affine and running statistics) and every consuming conv (weight dim 1).

Labels tied in a networkx graph form a *unit* (a connected component): channels that can only go together.  Units whose channels reach
an op we cannot slice (a reshape, the output, an image input...) are pinned.  Units with the same producers and
the same path through splits form a *group* (the channels of one layer, DepGraph's "group"); groups that sit on
the parts of one `chunk` form a *block* that must lose equally many channels, because `chunk(2)` in the block's
own forward code needs equal halves.

Attention: a reshape that a `heads` callback describes as multi-head (`HeadLayout`: num_heads blocks of
key_dim q, key_dim k and head_dim v channels, ultralytics's `Attention` qkv layout) ties q channel j to k channel j
of the same head (they are contracted together), tags each head's q/k pairs as their own group and makes the
heads' groups a block that loses equally many pairs (every head keeps one key_dim); v's channels are pinned, since
`view(B, C, H, W)` maps them onto the stream.  So attention is pruned by shrinking key_dim equally in every head.
A layout with `v_channels` (YOLO12's `AAttn`: one head_dim for q, k and v, v reshaped to its own all_head_dim) adds
each head's v dims as groups of the same block, and the module's channels-first outputs carry v's labels on to
`pe` and `proj`.

Nothing here knows YOLO: what a node is comes from its NodeInfo (`fxgraph.info`); a filter op whose role is
`head_output` (set at trace time from the model) is protected, and a `protect` callback may add model-specific
protection or a more precise reason (see pruning.policy).

The package has three parts, as Torch-Pruning splits node, group and graph: `units` (the data model),
`propagation` (the pass: one handler per op kind) and `grouping` (labels -> units -> groups -> blocks).
"""

from __future__ import annotations

import contextlib
import gc

from torch import fx

import fxgraph

from .grouping import group
from .propagation import BINARY_KINDS, PER_CHANNEL_KINDS, ChannelLabels, Heads, Labels, Propagation, Protect
from .units import IN, NORM, OUT, STAT, Coupling, Group, HeadCut, HeadLayout, Touch, Unit


def analyze(
    graph: fxgraph.FlatGraph | fx.GraphModule,
    protect: Protect | None = None,
    heads: Heads | None = None,
) -> Coupling:
    """Compute the channel groups of a flat graph.

    `protect(node)` may return a reason to keep a filter op's outputs (a model's output convs); filter ops whose
    NodeInfo role is `head_output`, and channels that reach an op whose channel semantics we do not know, are
    protected anyway.  `heads(node)` may describe a reshape as a multi-head split (`HeadLayout`); without it every
    reshape pins what reaches it.
    """
    gm = graph.module if isinstance(graph, fxgraph.FlatGraph) else graph
    with gc_paused():
        return group(Propagation(gm, protect, heads).run())


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector: the pass allocates ~10 small acyclic objects per channel, and
    collections triggered by them (which find nothing, refcounting frees these) would dominate its time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


__all__ = ["BINARY_KINDS", "IN", "NORM", "OUT", "PER_CHANNEL_KINDS", "STAT", "ChannelLabels", "Coupling", "Group",
           "HeadCut", "HeadLayout", "Heads", "Labels", "Propagation", "Protect", "Touch", "Unit", "analyze",
           "gc_paused", "group"]
