"""The runtime's computations: a network's stages between two of its exits, then a head.

A :class:`Segment` computes one node's logits of a graph of stages, from the network's input or
continuing from an earlier exit's activation; it is keyed like its cost
(:meth:`~adaptive_inference.graph.GraphStructure.segment`, :mod:`adaptive_inference.costs`), so
the runtime that runs it and the joint timing job that times it build it the same way
(:func:`build_segment`). :class:`Plan` holds one object per distinct computation of a graph.
A node run alone (a route that stops every example at its start without a decision) is keyed
as that component (``("alone", ...)``): the same stages from the input, priced as they run then.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from adaptive_inference.costs import Key, segment_key
from adaptive_inference.graph import StageGraph
from adaptive_inference.models import MultiExitNetwork


class Segment:
    """Stages ``first..last`` of one network (named ``network``), then one of its exit heads:
    the computation of ``node``'s logits (component ``key``).

    ``segment(h)`` returns the last stage's activation (where a later segment of the same
    network continues) and the head's logits; a segment ``from_input`` reads the network's own
    input.
    """

    __slots__ = ("stages", "head", "from_input", "network", "name", "node", "key", "_before")

    def __init__(
        self,
        network: MultiExitNetwork,
        first: int,
        last: int,
        head: int,
        *,
        network_name: str,
        name: str,
        node: int,
        key: Key,
    ) -> None:
        self.stages = tuple(network.stages[first : last + 1])
        self.head = network.heads[head]
        self.from_input = first == 0
        self.network = network_name
        self.name = name
        self.node = node
        self.key = key
        self._before = tuple(network.stages[:first])

    def __call__(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.stages:
            h = stage(h)
        return h, self.head(h)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """What this segment continues from, computed from the network's input ``x`` (the
        earlier stages; ``x`` itself for a segment from the input)."""
        for stage in self._before:
            x = stage(x)
        return x

    def warm_up(self, x: torch.Tensor) -> None:
        """Run once on input images ``x``, so that one-off costs (kernel selection, buffers) of
        this input shape are paid outside any measurement."""
        self(self.prefix(x))

    def __repr__(self) -> str:
        return f"Segment({self.name})"


class Plan:
    """The segments of a graph's networks, one object per distinct computation
    (:meth:`~adaptive_inference.graph.GraphStructure.segment`)."""

    def __init__(self, graph: StageGraph, networks: Mapping[str, MultiExitNetwork]) -> None:
        missing = sorted(set(graph.networks) - set(networks))
        if missing:
            raise ValueError(f"no network given for {missing}")
        for net, exit_name in zip(graph.networks, graph.exit_names):
            if exit_name not in networks[net].exit_names:
                raise ValueError(f"network {net} has no exit {exit_name!r}")
        self.graph, self.networks = graph, networks
        self._segments: dict[Key, Segment] = {}

    def segment(self, source: int | None, node: int, *, alone: bool = False) -> Segment:
        """The computation from ``source``'s state (None: the input) to ``node``'s logits;
        ``alone``: from the input, as the node alone (its own component)."""
        key = self.graph.single_component(node) if alone else self.graph.segment(source, node)
        if key not in self._segments:
            model = self.networks[key[1]]
            if key[0] == "alone":
                suffix = " alone"
            else:
                suffix = "" if key[2] is None else f" from {model.exit_names[key[2]]}"
            name = self.graph.names[node] + suffix
            self._segments[key] = build_segment(model, key, name=name, node=node)
        return self._segments[key]


def build_segment(model: MultiExitNetwork, key: Key, *, name: str, node: int = -1) -> Segment:
    """The segment of component ``key`` (``("segment", network, source exit or None, exit)``,
    or ``("alone", network, exit)``: from the input) of ``model``."""
    _, net, source_exit, exit = segment_key(key[1], None, key[2]) if key[0] == "alone" else key
    first = 0 if source_exit is None else model.exit_after[source_exit] + 1
    return Segment(
        model,
        first,
        model.exit_after[exit],
        exit,
        network_name=net,
        name=name,
        node=node,
        key=key,
    )
