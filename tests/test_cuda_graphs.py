"""Segments replayed through static buffers (CUDA graphs on a GPU; the buffer logic on CPU)."""

import numpy as np
import pytest
import torch

from adaptive_inference.costs import segment_key
from adaptive_inference.cuda_graphs import CapturedSegment, capture_reason, capture_sizes
from adaptive_inference.networks import build_network
from adaptive_inference.segments import build_segment


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_network(
        "exit_resnet",
        num_classes=10,
        in_channels=1,
        image_size=28,
        widths=[4, 8, 8],
        blocks_per_stage=1,
    ).eval()


def test_capture_needs_cuda_and_the_switch():
    assert "CUDA device" in capture_reason(torch.device("cpu"), True)
    assert "cuda_graphs is false" in capture_reason(torch.device("cpu"), False)
    assert capture_sizes(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert capture_sizes(1) == [1] and capture_sizes(48)[-2:] == [32, 48]


@pytest.mark.parametrize("key", [segment_key("net", None, 1), segment_key("net", 0, 2)])
def test_static_buffers_give_the_segment_s_outputs_at_every_size(network, key):
    segment = build_segment(network, key, name="s")
    x = torch.randn(40, 1, 28, 28)
    with torch.inference_mode():
        source = segment.prefix(x)
        replayed = CapturedSegment(
            segment, source[:1], [1, 8, 32], keep_outputs=True, backend="eager"
        )
        for n in (1, 5, 8, 17, 32, 40):  # padded into 8 / 32, or (40) eagerly
            h, logits = replayed(source[:n])
            want_h, want_logits = segment(source[:n])
            torch.testing.assert_close(logits, want_logits)
            torch.testing.assert_close(h, want_h)


def test_kept_outputs_survive_the_next_replay(network):
    segment = build_segment(network, segment_key("net", None, 0), name="s")
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        kept = CapturedSegment(segment, x[:1], [4], keep_outputs=True, backend="eager")
        views = CapturedSegment(segment, x[:1], [4], keep_outputs=False, backend="eager")
        first_kept, first_view = kept(x[:4])[1], views(x[:4])[1]
        expected = first_kept.clone()
        kept(x[4:]), views(x[4:])
        torch.testing.assert_close(first_kept, expected)  # a copy: unchanged
        assert not torch.allclose(first_view, expected)  # a view of the static buffer


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA graphs need a CUDA GPU; this "
    "machine has none (CI never has one): the buffer logic is tested above",
)
def test_captured_graphs_replay_the_segment_on_the_gpu(network):
    gpu = network.to("cuda")
    segment = build_segment(gpu, segment_key("net", None, 2), name="s")
    x = torch.randn(16, 1, 28, 28, device="cuda")
    with torch.inference_mode():
        replayed = CapturedSegment(segment, x[:1], [1, 16], keep_outputs=True)
        for n in (1, 9, 16):
            np.testing.assert_allclose(
                replayed(x[:n])[1].cpu(), segment(x[:n])[1].cpu(), rtol=1e-5, atol=1e-5
            )
