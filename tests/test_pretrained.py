"""torchvision's pre-trained classifiers as multi-exit networks, offline: random weights saved under
torchvision's file names in a temporary TORCH_HOME load through the real weights API."""

from __future__ import annotations

import urllib.error

import pandas as pd
import pytest
import torch
from imagenet_fixture import save_random_weights
from torchvision import models

from adaptive_inference import pretrained
from adaptive_inference.networks import load_network, network_spec, save_network
from adaptive_inference.timing import profile_network

ALEXNET = ("alexnet", "AlexNet_Weights.IMAGENET1K_V1")
GOOGLENET = ("googlenet", "GoogLeNet_Weights.IMAGENET1K_V1")
RESNET18 = ("resnet18", "ResNet18_Weights.IMAGENET1K_V1")


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    saved = {
        name: save_random_weights(home, name, weights, seed=1)
        for name, weights in (ALEXNET, GOOGLENET, RESNET18)
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))

        # Never reach the network: a missing file must fail here, not download.
        def offline(url, *args, **kwargs):
            raise urllib.error.URLError(f"offline test: no download of {url}")

        patch.setattr(torch.hub, "download_url_to_file", offline)
        yield saved


def test_weights_load_through_the_weights_api_from_torch_home(torch_home):
    network = pretrained.load_classifier(*RESNET18)
    saved = torch.load(torch_home["resnet18"], weights_only=True)
    assert torch.equal(
        network.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"]
    )
    assert pretrained.weights_file(models.get_weight(RESNET18[1])) == torch_home["resnet18"]


def test_googlenet_loses_its_auxiliary_heads(torch_home):
    assert "aux1.conv.conv.weight" in torch.load(torch_home["googlenet"], weights_only=True)
    network = pretrained.load_classifier(*GOOGLENET)
    assert network.aux1 is None and network.aux2 is None and not network.aux_logits
    assert network.transform_input  # the pre-trained weights expect torchvision's input transform


def test_missing_weights_say_where_to_put_them(torch_home):
    with pytest.raises(
        pretrained.PretrainedConfigError, match=r"hub/checkpoints/resnet50-0676ba61\.pth"
    ):
        pretrained.load_classifier("resnet50", "ResNet50_Weights.IMAGENET1K_V1")


@pytest.mark.parametrize(
    ("name", "exits"),
    [
        (RESNET18, ["layer1", "layer2", "layer3"]),
        (GOOGLENET, ["inception3b", "inception4e"]),
        (ALEXNET, []),
    ],
)
def test_exits_leave_the_networks_answers_exactly_as_they_were(torch_home, name, exits):
    network = pretrained.torchvision_network(model=name[0], weights=name[1], exits=exits)
    original = pretrained.load_classifier(*name)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        outputs = network(x)
        assert torch.equal(outputs[-1], original(x))
    assert network.exit_names == (*exits, "final") and len(outputs) == len(exits) + 1
    assert all(o.shape == (2, 1000) for o in outputs)


def test_an_exit_sees_the_value_of_its_node(torch_home):
    network = pretrained.torchvision_network(
        model="resnet18", weights=RESNET18[1], exits=["layer2"]
    )
    original = pretrained.load_classifier(*RESNET18)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        seen = network.stages[0](x)
        o = original
        expected = o.layer2(o.layer1(o.maxpool(o.relu(o.bn1(o.conv1(x))))))
    assert torch.equal(seen, expected)


def test_a_pre_activation_exit_is_not_overwritten_by_an_in_place_relu(torch_home):
    network = pretrained.torchvision_network(
        model="alexnet", weights=ALEXNET[1], exits=["features.0"]
    )
    original = pretrained.load_classifier(*ALEXNET)
    assert original.features[1].inplace  # torchvision's ReLU(inplace=True) follows the exit point
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        tapped = network.stages[0](x)
        before = tapped.clone()
        network.stages[1](tapped)  # the next stage runs first: the exit's value must survive it
        assert torch.equal(tapped, before) and (before < 0).any()
        assert torch.equal(before, original.features[0](x))


@pytest.mark.parametrize(
    ("name", "exits", "message"),
    [
        (RESNET18, ["layer1.0.bn1"], "'layer1.0.bn1' does not cut the network into a chain"),
        (GOOGLENET, ["inception3a.branch1"], "does not cut the network into a chain"),
        (RESNET18, ["layer5"], r"neither nodes nor modules of ResNet; its modules are conv1, bn1"),
        (RESNET18, ["layer3", "layer1"], "in network order"),
        (RESNET18, ["fc"], "final exit already"),
    ],
)
def test_bad_exit_points_are_refused_with_the_reason(torch_home, name, exits, message):
    with pytest.raises(pretrained.PretrainedConfigError, match=message):
        pretrained.torchvision_network(model=name[0], weights=name[1], exits=exits)


def test_heads_learn_on_frozen_pooled_features_and_reload_from_a_small_checkpoint(
    torch_home, tmp_path
):
    network = pretrained.torchvision_network(
        model="resnet18", weights=RESNET18[1], exits=["layer1", "layer2"]
    )
    frozen = {k: v.clone() for k, v in network.stages.state_dict().items()}
    # Images whose class is their mean colour: a pooled linear head can learn it.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    images = torch.randn(60, 3, 64, 64, generator=generator) * 0.2 + (
        labels[:, None, None, None] - 1.0
    )
    loader = torch.utils.data.DataLoader(list(zip(images, labels)), batch_size=16)
    features, seen_labels = pretrained.pooled_features(
        network, loader, device=torch.device("cpu"), progress=False
    )
    assert [f.shape for f in features] == [(60, 64), (60, 128)] and torch.equal(seen_labels, labels)
    curve = pretrained.train_exit_heads(
        network,
        features,
        seen_labels,
        steps=90,
        batch_size=16,
        max_lr=0.05,
        momentum=0.9,
        weight_decay=0.0,
        seed=0,
        validation_size=12,
        device=torch.device("cpu"),
        progress=False,
    )
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert (
        curve["val_accuracy_layer1"].iloc[-1] == 1.0
        and curve["val_accuracy_layer2"].iloc[-1] == 1.0
    )
    assert all(torch.equal(v, network.stages.state_dict()[k]) for k, v in frozen.items())

    spec = network_spec(
        "torchvision",
        {"model": "resnet18", "weights": RESNET18[1], "exits": ["layer1", "layer2"]},
        num_classes=3,
        input_shape=(3, 64, 64),  # a pre-trained network's come from its weights
    )
    assert spec["image_size"] == 224 and spec["num_classes"] == 1000
    save_network(network, spec, tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_size < 2_000_000  # the heads only, not the backbone
    reloaded = load_network(tmp_path / "model.pt")
    with torch.inference_mode():
        x = images[:4]
        assert all(torch.equal(a, b) for a, b in zip(reloaded(x), network.eval()(x)))


def test_stages_and_heads_are_timed_like_the_family(torch_home):
    network = pretrained.torchvision_network(
        model="googlenet", weights=GOOGLENET[1], exits=["inception3b"]
    )
    result = profile_network(
        network,
        (3, 96, 96),
        batch_sizes={"latency": 1},
        warmup=1,
        iterations=3,
        device=torch.device("cpu"),
        threads=1,
        dtype=torch.float32,
        channels_last=True,
    )
    components = set(result["components"]["component"])
    assert {"stage_0", "stage_1", "head_0"} <= components
    assert isinstance(result["exits"], pd.DataFrame) and list(result["exits"]["exit_name"]) == [
        "inception3b",
        "final",
    ]
    assert result["environment"]["channels_last"] is True


MODERN = [
    (
        "mobilenet_v3_large",
        "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        ["features.6", "features.12"],
    ),
    ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", ["features.3", "features.5"]),
    ("convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", ["features.3", "features.5"]),
    ("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1", []),
]


@pytest.mark.parametrize(("model", "weights", "exits"), MODERN, ids=[m[0] for m in MODERN])
def test_modern_classifiers_load_by_name_and_keep_their_answers(
    tmp_path, monkeypatch, model, weights, exits
):
    save_random_weights(tmp_path, model, weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    network = pretrained.torchvision_network(model=model, weights=weights, exits=exits)
    original = pretrained.load_classifier(model, weights)
    size = pretrained.input_size(model, weights)
    x = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        outputs = network(x)
        assert torch.allclose(outputs[-1], original(x), atol=1e-5)
    assert len(outputs) == len(exits) + 1


def test_an_exit_without_a_feature_map_is_refused(tmp_path, monkeypatch):
    save_random_weights(tmp_path, *MODERN[-1][:2])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(pretrained.PretrainedConfigError, match="3-d tensor; an exit head pools"):
        pretrained.torchvision_network(
            model="vit_b_16", weights=MODERN[-1][1], exits=["encoder.layers.encoder_layer_5"]
        )
