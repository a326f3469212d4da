import pytest
import torch

from adaptive_inference.family import ARCHITECTURES, DEFAULT_OPTIONS, exit_count
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.networks import build_network


def _build(arch, **options):
    return build_network(arch, num_classes=10, in_channels=1, image_size=28, **options)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_exit_gives_logits_for_every_example(arch):
    model = _build(arch).eval()
    outputs = model(torch.randn(3, 1, 28, 28))
    assert len(outputs) == model.num_exits == len(model.exit_names)
    assert all(out.shape == (3, 10) for out in outputs)
    assert model.exit_names[-1] == "final"


def test_exit_resnet_has_an_exit_after_each_stage():
    model = _build("exit_resnet", widths=[8, 16, 24, 32])
    assert model.num_exits == 4
    assert model.exit_after == (0, 1, 2, 3)
    assert model.exit_names == ("stage1", "stage2", "stage3", "final")


def test_costs_span_the_family():
    params = {arch: sum(p.numel() for p in _build(arch).parameters()) for arch in ARCHITECTURES}
    assert params["linear"] < params["small_cnn"] < params["exit_resnet"]


def test_exits_read_the_stage_they_follow():
    """Changing the last stage's weights leaves the first exit's answer unchanged."""
    model = _build("exit_resnet").eval()
    x = torch.randn(2, 1, 28, 28)
    before = model(x)
    with torch.no_grad():
        for p in model.stages[-1].parameters():
            p.add_(1.0)
    after = model(x)
    torch.testing.assert_close(before[0], after[0])
    assert not torch.allclose(before[-1], after[-1])


def test_bad_shapes_are_refused():
    stage = torch.nn.Identity()
    with pytest.raises(ValueError, match="last exit"):
        MultiExitNetwork([stage, stage], [torch.nn.Identity()], [0])
    with pytest.raises(ValueError, match="strictly increasing"):
        MultiExitNetwork([stage, stage], [torch.nn.Identity()] * 2, [1, 1])
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        _build("vgg")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_family_facts_match_the_networks(arch):
    """family.py (torch-free, read by the config checks) says what the built networks are."""
    model = _build(arch)
    assert model.num_exits == exit_count(arch, {})
    wide = {"widths": [4, 4, 4, 4, 4]} if arch == "exit_resnet" else {}
    assert _build(arch, **wide).num_exits == exit_count(arch, wide)
    if "widths" in DEFAULT_OPTIONS[arch]:
        assert (
            _build(arch, widths=list(DEFAULT_OPTIONS[arch]["widths"])).num_exits == model.num_exits
        )
