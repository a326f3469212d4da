import copy

import pytest
import yaml
from snakemake.exceptions import WorkflowError

from adaptive_inference.config import ConfigError, check_config, load_config, network_training, reference_network

from conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def default():
    return load_config(REPO / "config.yaml", SCHEMA)


@pytest.mark.parametrize("path", ["config.yaml", "tests/configs/tiny.yaml", "studies/imagenet.yaml"])
def test_shipped_configs_are_valid(path):
    config = load_config(REPO / path, SCHEMA)
    assert config["policies"]["schemes"] and config["policies"]["lambdas"]["count"] > 1


def test_defaults_fill_missing_sections(tmp_path):
    minimal = {"study": "x", "data": {"dataset": "fashion_mnist"}, "networks": {"a": {"arch": "linear"}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(minimal))
    config = load_config(tmp_path / "c.yaml", SCHEMA)
    assert config["timing"]["batch_sizes"] == {"latency": 1, "throughput": 256}
    assert config["splits"]["fractions"]["test"] == 0.5


def test_network_training_overrides_the_defaults(default):
    merged = network_training(default, "exit_resnet")
    assert merged["exit_weights"] == [0.3, 0.3, 1.0] and merged["batch_size"] == 256
    assert reference_network(default) == "exit_resnet"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["policies"].update(reference="vgg"), "policies.reference"),
        (lambda c: c["policies"]["schemes"]["early_exit"].update(networks=["linear", "small_cnn"]), "one network"),
        (lambda c: c["policies"]["schemes"]["combined"].update(networks=["resnet"]), "policies.schemes.combined"),
        (lambda c: c["splits"]["fractions"].update(test=0.6), "sum to 1"),
        (lambda c: c["data"].update(dataset="image_folder"), "data.image_folder.eval"),
    ],
)
def test_semantic_errors_name_the_key(default, edit, message):
    config = copy.deepcopy(default)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_unknown_key_is_named(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["timing"]["iteratons"] = 5
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WorkflowError, match="iteratons"):
        load_config(tmp_path / "c.yaml", SCHEMA)


def test_figure_options_resolve_schemes_and_methods(default):
    from adaptive_inference.config import figure_notebooks, figure_options

    config = copy.deepcopy(default)
    assert figure_options(config, "exit_proportions")["schemes"] == list(config["policies"]["schemes"])
    assert figure_options(config, "early_exit")["scheme"] == "early_exit"
    config["figures"]["early_exit"]["scheme"] = None
    config["figures"]["network_selection"]["schemes"] = None
    assert figure_options(config, "early_exit")["scheme"] == "early_exit"  # the first early_exit graph
    assert figure_options(config, "network_selection")["schemes"] == ["network_selection", "combined"]
    config["policies"]["methods"] = ["learned", "oracle"]
    assert figure_options(config, "oracle")["methods"] == ["learned"]
    assert figure_notebooks(config)[-2:] == ["6_summary", "7_runtime"]
    config["policies"]["methods"] = ["learned"]
    del config["policies"]["schemes"]["early_exit"]
    config["figures"]["early_exit"]["scheme"] = None
    config["figures"]["network_selection"]["compare_schemes"] = None
    config["figures"]["exit_proportions"]["schemes"] = None
    assert figure_notebooks(config) == [
        "1_networks", "3_network_selection", "4_exit_proportions", "6_summary", "7_runtime"
    ]


def test_figure_schemes_must_be_policy_schemes(default):
    config = copy.deepcopy(default)
    config["figures"]["oracle"]["schemes"] = ["combined", "cascades"]
    with pytest.raises(ConfigError, match=r"figures.oracle.schemes names \['cascades'\]"):
        check_config(config)


@pytest.fixture(scope="module")
def paper():
    return load_config(REPO / "studies" / "imagenet.yaml", SCHEMA)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["networks"]["alexnet"]["options"].update(model="alexnett"), "no classifier 'alexnett'"),
        (lambda c: c["networks"]["alexnet"]["options"].update(weights="ResNet50_Weights.IMAGENET1K_V1"), "are not alexnet's"),
        (lambda c: c["networks"]["alexnet"]["options"].update(weights="AlexNet_Weights.IMAGENET1K_V9"), "unknown weights"),
        (lambda c: c["networks"]["resnet50"]["options"].update(exits=["layer1", "layer9"]), r"\['layer9'\] are not nodes of resnet50"),
        (lambda c: c["networks"]["alexnet"]["options"].pop("weights"), "needs weights"),
        (lambda c: c["networks"].update(small={"arch": "linear"}), "trained here, but data.dataset is imagenet"),
        (lambda c: c["data"].update(dataset="fashion_mnist"), "set data.dataset to imagenet"),
        (lambda c: c["data"]["imagenet"].update(eval=None), "data.imagenet.eval"),
        (lambda c: c["networks"]["alexnet"]["options"].update(widths=[8]), "do not apply to a torchvision"),
        (lambda c: c["splits"]["fractions"].update(head_train=0.0, policy_train=0.6), "head_train"),
    ],
)
def test_paper_setup_errors_name_the_key(paper, edit, message):
    config = copy.deepcopy(paper)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)
