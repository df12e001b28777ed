"""The coupling's data model: a `Touch` (one parameter slice of a channel), a `Unit` (channels removed together),
a `Group` (one layer's units, the granule of a plan), the attention `HeadLayout`/`HeadCut`, and the `Coupling`
of a graph (its groups and the blocks that must lose equally many channels), as Torch-Pruning's `Group`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

OUT, NORM, STAT, IN = "out", "norm", "stat", "in"  # roles of a touch: producer, BN affine, BN stats, consumer


class Touch(NamedTuple):
    """One slice of one parameter that belongs to a channel: `param[..., index, ...]` along `dim`.

    `role` says why: `out` (a filter and its bias), `norm` (BatchNorm weight/bias), `stat` (running
    statistics), `in` (a consumer's input slice).  Zeroing every `out` and `norm` touch of a unit makes the
    channel exactly zero after a BatchNorm, which is what the equivalence tests use.
    """

    param: str
    dim: int
    index: int
    role: str


@dataclass
class Unit:
    """Channels that must be removed together (one per producing filter) and all the slices they touch."""

    touches: tuple[Touch, ...]
    sources: tuple[tuple[str, int], ...]  # (producer module path, output channel index)
    pinned: tuple[str, ...] = ()  # why it cannot be removed (empty if it can)


@dataclass
class Group:
    """The units of one layer's channels that share producers and path: the granule of a pruning plan.

    `name` is the primary producer's module path, with the channel range when the group holds only part of
    its outputs (the two halves of a C2f's cv1: `model.2.cv1.conv[0:16]`, `model.2.cv1.conv[16:32]`).
    """

    name: str
    units: list[Unit]
    sources: tuple[str, ...]  # module paths of every producing filter op, primary first
    layer: int | None  # layer index of the primary producer
    layers: frozenset[int]  # layer indices of all producers
    protected: str | None = None  # reason it may not be cut, or None

    def __len__(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> bool:
        return self.protected is None

    def params(self) -> set[str]:
        """Names of every parameter or buffer that this group's removal changes."""
        return {t.param for u in self.units for t in u.touches}


class HeadLayout(NamedTuple):
    """How a reshape splits channels into heads: `num_heads` consecutive blocks of `key_dim` q, `key_dim` k and
    `head_dim` v channels (ultralytics `Attention`: qkv.view(B, num_heads, 2*key_dim + head_dim, N)).

    `v_channels`: v channel j of head h leaves the module as channel h*head_dim + j of a width the module records
    itself (`AAttn`'s all_head_dim), so v is cut with the key dims instead of pinned, and q, k and v share one
    head_dim (their counts per head stay equal).  `rescale`: the forward recomputes its softmax scale as
    key_dim**-0.5 (AAttn has no `scale` attribute), so surgery scales the kept q channels by sqrt(new/old key_dim)
    and rewrites the baked scale (used with `v_channels`, whose surgery rewrites the module's baked sizes).
    """

    num_heads: int
    key_dim: int
    head_dim: int
    module: str  # the attention module's path, for messages
    v_channels: bool = False
    rescale: bool = False

    @property
    def per_head(self) -> int:
        return 2 * self.key_dim + self.head_dim


@dataclass
class HeadCut:
    """An attention reshape found by the analysis: its layout, the qkv weight it reads and the q/k group of each
    head (unit j of a head's group = its q channel j and k channel j), and its v groups if v is cut too."""

    layout: HeadLayout
    param: str | None  # the producing conv's weight (qkv.conv.weight), whose dim 0 holds the q/k/v channels
    groups: tuple[str, ...]
    v_groups: tuple[str, ...] = ()  # each head's v group, when the layout cuts v (`v_channels`)


@dataclass
class Coupling:
    """All channel groups of a graph and the blocks that must lose equally many channels."""

    groups: dict[str, Group]
    blocks: list[tuple[str, ...]] = field(default_factory=list)
    # why a block must lose equally many channels, when it is not a chunk's halves (attention heads)
    block_reasons: dict[tuple[str, ...], str] = field(default_factory=dict)
    # reshape node name -> the attention heads it splits
    heads: dict[str, HeadCut] = field(default_factory=dict)
    # node name -> for each channel of its output, the (group name, unit index) it belongs to, or None for a
    # channel no plan can remove; what lets surgery update shapes without re-running the graph.
    channels: dict[str, list[tuple[str, int] | None]] = field(default_factory=dict, repr=False)

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if g.prunable]

    def block_of(self, name: str) -> tuple[str, ...]:
        """The block holding group `name` (a 1-tuple for a group without a split constraint)."""
        for block in self.blocks:
            if name in block:
                return block
        return (name,)

    def all_blocks(self) -> list[tuple[str, ...]]:
        """Every group in exactly one block, in graph order."""
        seen: set[str] = set()
        out = []
        for name in self.groups:
            if name in seen:
                continue
            block = self.block_of(name)
            seen.update(block)
            out.append(block)
        return out

    def layers(self) -> set[int]:
        return {layer for g in self.groups.values() for layer in g.layers}

    def summary(self) -> str:
        """One line per group: name, size, state."""
        lines = []
        for g in self.groups.values():
            state = "prunable" if g.prunable else f"protected: {g.protected}"
            lines.append(f"{g.name:40s} {len(g):5d}  {state}")
        return "\n".join(lines)
