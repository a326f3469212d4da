"""The runtime's segments replayed as captured CUDA graphs (``compute.cuda_graphs``).

At batch 1 on a modern GPU the study's networks are launch-bound: a segment is a few dozen small
kernels, each paying the host's launch overhead (docs/runtime.md). A :class:`CapturedSegment`
records its segment once per batch size in use into a ``torch.cuda.CUDAGraph`` with static input
and output buffers, and replays it: the input is copied into the smallest captured buffer that
holds it (the rows beyond it are stale and ignored: every layer of these networks works row by
row in eval mode), the graph replays, and the outputs are read back as slices of the static
buffers (copies where the caller keeps them: ``keep_outputs``, as the rebatching queues do).

On the CPU there is nothing to capture: :func:`capture_reason` says why, and the runtime runs
eagerly. ``backend="eager"`` runs the same buffer logic without a graph, which is how the tests
check it on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from adaptive_inference.runtime import AdaptiveRuntime
from adaptive_inference.segments import Segment


def capture_reason(device: torch.device, enabled: bool) -> str | None:
    """Why segments are not captured on ``device`` (None: they are)."""
    if not enabled:
        return "compute.cuda_graphs is false"
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, the runtime runs on {device.type}"
    return None


def capture_sizes(batch_size: int) -> list[int]:
    """The batch sizes captured for a rebatched stream of ``batch_size``: 1 and powers of two up
    to it, and itself (a flush call is padded to the next one)."""
    sizes = {1, batch_size}
    size = 2
    while size < batch_size:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


class CapturedSegment:
    """A segment replayed through static buffers at fixed batch sizes (module doc).

    Args:
        segment: the runtime's segment.
        example: one input row of the segment, ``(1, ...)`` on the device (its shape, dtype and
            memory format are the buffers').
        sizes: the batch sizes to capture.
        keep_outputs: return copies of the outputs (a caller that keeps them past the next
            replay of this segment), else views of the static buffers.
        backend: ``cuda`` (capture CUDA graphs) or ``eager`` (the same buffers, no graph).
    """

    def __init__(
        self,
        segment: Segment,
        example: torch.Tensor,
        sizes: Sequence[int],
        *,
        keep_outputs: bool,
        backend: str = "cuda",
    ) -> None:
        if backend not in ("cuda", "eager"):
            raise ValueError(f"backend must be cuda or eager, got {backend!r}")
        self.segment = segment
        self.from_input, self.network = segment.from_input, segment.network
        self.node, self.key, self.name = segment.node, segment.key, segment.name
        self.keep_outputs = keep_outputs
        self.sizes = sorted(set(sizes))
        self._replays: dict[
            int, tuple[torch.Tensor, Callable[[], None], torch.Tensor, torch.Tensor]
        ] = {}
        for size in self.sizes:
            static = example.expand(size, *example.shape[1:]).clone(
                memory_format=torch.preserve_format
            )
            self._replays[size] = self._record(static, backend)

    def _record(self, static: torch.Tensor, backend: str):
        if backend == "eager":
            h, logits = self.segment(static)
            outputs = (h.clone(), logits.clone())

            def replay() -> None:
                new_h, new_logits = self.segment(static)
                outputs[0].copy_(new_h)
                outputs[1].copy_(new_logits)

            return static, replay, outputs[0], outputs[1]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graphs asks
            for _ in range(3):
                self.segment(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            h, logits = self.segment(static)
        return static, graph.replay, h, logits

    def __call__(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = source.shape[0]
        size = next((s for s in self.sizes if s >= n), None)
        if size is None:  # larger than every captured size: eagerly
            return self.segment(source)
        static, replay, h, logits = self._replays[size]
        static[:n].copy_(source)
        replay()
        if self.keep_outputs:
            return h[:n].clone(), logits[:n].clone()
        return h[:n], logits[:n]

    def __repr__(self) -> str:
        return f"CapturedSegment({self.name}, sizes={self.sizes})"


def captured(
    runtime: AdaptiveRuntime,
    inputs: dict[str, torch.Tensor],
    sizes: Sequence[int],
    *,
    keep_outputs: bool,
    backend: str = "cuda",
) -> AdaptiveRuntime:
    """A twin of ``runtime`` whose segments replay captured graphs at ``sizes``; ``inputs`` are
    the runtime's :meth:`~adaptive_inference.runtime.AdaptiveRuntime.inputs` for one example
    (each segment's example row is computed from them)."""

    def capture(segment: Segment) -> CapturedSegment:
        with torch.inference_mode():
            example = segment.prefix(inputs[segment.network][:1])
        return CapturedSegment(segment, example, sizes, keep_outputs=keep_outputs, backend=backend)

    return runtime.wrapped(capture, lambda decision, name: decision)
