"""The config: the schema (types, defaults) and check_config (what a schema cannot say), and
that the code and the schema agree on every default and list."""

import copy
import inspect

import pytest
import yaml
from conftest import REPO
from PIL import Image
from snakemake.exceptions import WorkflowError

from adaptive_inference import config as config_module
from adaptive_inference import device as device_module
from adaptive_inference.config import (
    ConfigError,
    check_config,
    load_config,
    network_training,
    reference_network,
)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MINIMAL = {
    "study": "x",
    "data": {"dataset": "fashion_mnist"},
    "networks": {"a": {"arch": "linear"}},
}


@pytest.fixture(scope="module")
def default():
    return load_config(REPO / "config.yaml", SCHEMA)


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load(SCHEMA.read_text())


@pytest.fixture
def minimal(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(MINIMAL))
    return load_config(tmp_path / "c.yaml", SCHEMA)


@pytest.mark.parametrize(
    "path", ["config.yaml", "tests/configs/tiny.yaml", "studies/imagenet.yaml"]
)
def test_shipped_configs_are_valid(path):
    config = load_config(REPO / path, SCHEMA)
    assert config["policies"]["schemes"] and config["policies"]["lambdas"]["count"] > 1


def test_defaults_fill_missing_sections(minimal):
    assert minimal["timing"]["batch_sizes"] == {"latency": 1, "throughput": 256}
    assert minimal["splits"]["fractions"] == {
        "head_train": 0.0,
        "policy_train": 0.35,
        "policy_validation": 0.15,
        "test": 0.5,
    }


def test_the_schema_gives_every_key_the_code_indexes(minimal):
    """A minimal config, validated, holds a value for every key the jobs read without a
    fallback: the training budget in steps, the compute options, the joint timing's rounds,
    the new policy and runtime keys; and the package's readers of each section accept it."""
    import torch

    from adaptive_inference.device import compute_options
    from adaptive_inference.runtime_measure import RuntimeSettings
    from adaptive_inference.sweep import sweep_options
    from adaptive_inference.training import TrainConfig

    c = minimal
    assert c["training"] == {
        "steps": 800,
        "batch_size": 256,
        "max_lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "seed": 0,
        "channels_last": True,
        "exit_weights": None,
        "precision": "auto",
    }
    assert c["networks"]["a"] == {"arch": "linear", "options": {}, "training": {}}
    assert c["compute"] == {
        "dtype": "float32",
        "channels_last": True,
        "cudnn_benchmark": False,
        "cuda_graphs": True,
    }
    assert c["extraction"]["shards"] == 1 and c["extraction"]["probs_dtype"] == "float32"
    assert (
        c["timing"]["rounds"],
        c["timing"]["throughput_rounds"],
        c["timing"]["warmup_rounds"],
        c["timing"]["throughput_warmup_rounds"],
        c["timing"]["throughput_warmup"],
    ) == (200, 10, 5, 2, 3)
    policies = c["policies"]
    shifts = policies["lambdas"]["shifts"]  # intercept shifts of the learned rules, both ways
    assert shifts and min(shifts) < 0 < max(shifts)
    assert policies["operating_points"] == {"confidence": 0.9}
    assert policies["allow_near_chance"] is False and policies["schemes"] == {}
    assert list(policies["methods"]) == list(config_module.METHODS)
    assert c["runtime"]["max_examples"] == 2000 and c["robustness"] == {"resplits": 5, "seed": 1}
    assert "retiming" not in c["runtime"] and "decision_timing" not in policies

    cfg = TrainConfig.from_config(network_training(c, "a"))
    assert cfg.steps == 800 and cfg.channels_last is True and cfg.exit_weights is None
    assert cfg.precision == "auto"
    assert compute_options(c["compute"]) == {"dtype": torch.float32, "channels_last": True}
    options = sweep_options(policies)
    assert options["confidence"] == 0.9 and options["shifts"] == shifts
    settings = RuntimeSettings.from_config(
        c["runtime"],
        throughput_batch=c["timing"]["batch_sizes"]["throughput"],
        confidence=policies["operating_points"]["confidence"],
    )
    assert settings.batch_size == 256 and settings.max_examples == 2000
    assert reference_network(c) == "a"


@pytest.mark.parametrize("key", ["runtime.retiming", "policies.decision_timing", "training.epochs"])
def test_removed_keys_are_refused(tmp_path, key):
    config = copy.deepcopy(MINIMAL)
    section, name = key.split(".")
    config[section] = {name: 1}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WorkflowError, match=name):
        load_config(tmp_path / "c.yaml", SCHEMA)


def _enums(node, path=()):
    """(path, enum) of every enum in a schema, the path of property names down to it."""
    if isinstance(node, dict):
        if "enum" in node:
            yield path, node["enum"]
        for key, value in node.items():
            yield from _enums(value, path + (key,) if key not in ("properties", "items") else path)
    elif isinstance(node, list):
        for value in node:
            yield from _enums(value, path)


def test_the_schema_lists_what_the_code_knows(schema):
    """One list per fact: the methods, the architectures and the splits of the code are the
    schema's enums and keys."""
    from adaptive_inference import family, splits, sweep

    methods = [enum for path, enum in _enums(schema) if path and path[-1] == "methods"]
    assert len(methods) >= 2  # policies.methods and $defs.methods (the figures' lists)
    assert all(enum == list(config_module.METHODS) for enum in methods), methods
    assert schema["properties"]["policies"]["properties"]["methods"]["default"] == list(
        config_module.METHODS
    )
    # a single method's enums (runtime, exit proportions) choose among them
    single = [enum for path, enum in _enums(schema) if path and path[-1] == "method"]
    assert single and all(set(enum) <= set(config_module.METHODS) for enum in single)
    assert tuple(sweep.METHODS) == tuple(config_module.METHODS)

    network = schema["properties"]["networks"]["additionalProperties"]
    assert network["properties"]["arch"]["enum"] == [*family.ARCHITECTURES, family.PRETRAINED]
    assert set(family.DEFAULT_OPTIONS) == set(family.ARCHITECTURES)

    fractions = schema["properties"]["splits"]["properties"]["fractions"]
    assert list(fractions["properties"]) == list(splits.SPLITS)
    assert list(fractions["default"]) == list(splits.SPLITS)
    assert sum(fractions["default"].values()) == pytest.approx(1.0)

    training = schema["properties"]["training"]["properties"]
    assert set(schema["$defs"]["training"]["properties"]) == set(training)  # overrides: same keys
    assert not any("default" in v for v in schema["$defs"]["training"]["properties"].values())
    assert training["precision"]["enum"] == list(device_module.PRECISIONS)


COMPUTE_KEYS = {"dtype", "channels_last", "cudnn_benchmark", "cuda_graphs"}
TRAINING_KEYS = {"steps", "max_lr", "momentum", "weight_decay", "exit_weights", "precision"}
# Library functions whose keyword defaults are not config defaults: a caller outside the
# workflow (a test, a notebook) gets these; the workflow's scripts pass the config's values.
LIBRARY_DEFAULTS = {
    ("extraction", "extract", "dtype"),
    ("extraction", "extract", "channels_last"),
    ("training", "TrainConfig", "exit_weights"),  # None: every exit weighs 1 (the schema's null)
    ("training", "TrainConfig", "precision"),  # float32 outside the workflow: the same everywhere
    ("figures", "plot_oracle_share", "steps"),  # points of a plotted grid, not training steps
}


def _callables(module):
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            yield name, obj
            for attr, member in vars(obj).items():
                member = getattr(member, "__func__", member)
                if inspect.isfunction(member):
                    yield f"{name}.{attr}", member


def test_no_code_default_restates_a_compute_or_training_default():
    """The schema holds the defaults of `compute` and `training`: no function of the package
    gives such a key a default of its own (beyond the documented library defaults)."""
    import importlib
    import pkgutil

    import adaptive_inference
    from adaptive_inference.device import apply_compute, compute_options

    for fn in (compute_options, apply_compute):
        assert all(
            p.default is inspect.Parameter.empty for p in inspect.signature(fn).parameters.values()
        )
    found = set()
    for info in pkgutil.iter_modules(adaptive_inference.__path__):
        module = importlib.import_module(f"adaptive_inference.{info.name}")
        for name, obj in _callables(module):
            try:
                parameters = inspect.signature(obj).parameters.values()
            except (TypeError, ValueError):
                continue
            for p in parameters:
                if (
                    p.name in COMPUTE_KEYS | TRAINING_KEYS
                    and p.default is not inspect.Parameter.empty
                ):
                    found.add(
                        (info.name, name.split(".")[0] if name[0].isupper() else name, p.name)
                    )
    assert found <= LIBRARY_DEFAULTS, sorted(found - LIBRARY_DEFAULTS)
    # nor does a job fall back on a value of its own when it reads a section
    for path in [
        *(REPO / "src" / "adaptive_inference").glob("*.py"),
        *(REPO / "workflow").rglob("*.py"),
        *(REPO / "workflow").rglob("*.smk"),
    ]:
        text = path.read_text()
        for key in sorted(COMPUTE_KEYS | TRAINING_KEYS):
            assert f'.get("{key}",' not in text, f"{path.name} falls back on a default of {key}"


def test_network_training_overrides_the_defaults(default):
    merged = network_training(default, "exit_resnet")
    assert merged["exit_weights"] == [0.3, 0.3, 1.0] and merged["batch_size"] == 256
    own = default["networks"]["exit_resnet"]["training"]
    assert merged["steps"] == own["steps"] != default["training"]["steps"]
    small_cnn = network_training(default, "small_cnn")
    assert small_cnn["steps"] == default["networks"]["small_cnn"]["training"]["steps"]
    assert small_cnn["max_lr"] == default["training"]["max_lr"]
    linear = default["networks"]["linear"]["training"]["max_lr"]
    assert network_training(default, "linear")["max_lr"] == linear != default["training"]["max_lr"]
    assert reference_network(default) == "exit_resnet"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["policies"].update(reference="vgg"), "policies.reference"),
        (
            lambda c: c["policies"]["schemes"]["early_exit"].update(
                networks=["linear", "small_cnn"]
            ),
            "one network",
        ),
        (
            lambda c: c["policies"]["schemes"]["combined"].update(networks=["resnet"]),
            "policies.schemes.combined",
        ),
        (lambda c: c["splits"]["fractions"].update(test=0.6), "sum to 1"),
        (lambda c: c["splits"]["fractions"].update(policy_validation=0.0, test=0.65), None),
        (lambda c: c["data"].update(dataset="image_folder"), "data.image_folder.eval"),
        (
            lambda c: c["policies"]["schemes"]["early_exit"].update(networks=["small_cnn"]),
            r"policies.schemes.early_exit: early exit needs a network with two exits or more, "
            "but small_cnn",
        ),
        (lambda c: c["networks"]["exit_resnet"]["options"].update(widths=[32]), "exit_resnet"),
        (
            lambda c: c["policies"]["schemes"]["network_selection"].update(
                networks=["exit_resnet"]
            ),
            r"policies.schemes.network_selection: a network_selection graph needs two networks",
        ),
        (
            lambda c: c["policies"]["schemes"]["combined"].update(networks=["linear"]),
            "combined graph needs two",
        ),
        (
            lambda c: c["runtime"].update(schemes=["cascades"]),
            r"runtime.schemes names \['cascades'\]",
        ),
        (lambda c: c["runtime"].update(metric="top5"), "policies.losses"),
        (
            lambda c: c["networks"]["exit_resnet"]["training"].update(exit_weights=[1.0, 1.0]),
            "exit_weights has 2 values",
        ),
    ],
)
def test_semantic_errors_name_the_key(default, edit, message):
    config = copy.deepcopy(default)
    edit(config)
    if message is None:  # a valid edit: the fractions still sum to 1
        check_config(config)
        return
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_policy_validation_is_required(tmp_path):
    config = copy.deepcopy(MINIMAL)
    config["splits"] = {"fractions": {"policy_train": 0.5, "test": 0.5}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WorkflowError, match="policy_validation"):
        load_config(tmp_path / "c.yaml", SCHEMA)


def _image_folder_config(default, eval_folder, train_folder=None):
    config = copy.deepcopy(default)
    config["data"].update(dataset="image_folder")
    config["data"]["image_folder"].update(
        eval=str(eval_folder), train=None if train_folder is None else str(train_folder)
    )
    return config


def test_image_folders_must_exist_and_hold_class_folders(default, tmp_path):
    good = tmp_path / "good"
    (good / "cat").mkdir(parents=True)
    Image.new("L", (8, 8)).save(good / "cat" / "0.png")
    check_config(_image_folder_config(default, good, good))
    with pytest.raises(
        ConfigError, match=rf"data.image_folder.eval: {tmp_path / 'missing'} does not exist"
    ):
        check_config(_image_folder_config(default, tmp_path / "missing"))
    with pytest.raises(
        ConfigError, match=rf"data.image_folder.train: {tmp_path / 'missing'} does not exist"
    ):
        check_config(_image_folder_config(default, good, tmp_path / "missing"))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (8, 8)).save(flat / "0.png")
    with pytest.raises(
        ConfigError, match=rf"data.image_folder.eval: {flat} holds no class folders"
    ):
        check_config(_image_folder_config(default, flat))


def test_the_config_module_imports_no_torch():
    """The checks run while Snakemake parses the workflow (a dry run included): torch-free."""
    import subprocess
    import sys

    code = (
        "import sys; import adaptive_inference.config, adaptive_inference.family, "
        "adaptive_inference.layout; print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_training_precision_outside_the_list_is_refused(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["networks"]["small_cnn"]["training"]["precision"] = "half"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WorkflowError, match="half"):
        load_config(tmp_path / "c.yaml", SCHEMA)


def test_unknown_key_is_named(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["timing"]["iteratons"] = 5
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WorkflowError, match="iteratons"):
        load_config(tmp_path / "c.yaml", SCHEMA)


def test_figure_options_resolve_schemes_and_methods(default):
    from adaptive_inference.config import figure_notebooks, figure_options

    config = copy.deepcopy(default)
    assert figure_options(config, "exit_proportions")["schemes"] == list(
        config["policies"]["schemes"]
    )
    assert figure_options(config, "early_exit")["scheme"] == "early_exit"
    config["figures"]["early_exit"]["scheme"] = None
    config["figures"]["network_selection"]["schemes"] = None
    assert (
        figure_options(config, "early_exit")["scheme"] == "early_exit"
    )  # the first early_exit graph
    assert figure_options(config, "network_selection")["schemes"] == [
        "network_selection",
        "combined",
    ]
    config["policies"]["methods"] = ["learned", "oracle"]
    assert figure_options(config, "oracle")["methods"] == ["learned"]
    assert figure_notebooks(config)[-2:] == ["6_summary", "7_runtime"]
    config["policies"]["methods"] = ["learned"]
    del config["policies"]["schemes"]["early_exit"]
    config["figures"]["early_exit"]["scheme"] = None
    config["figures"]["network_selection"]["compare_schemes"] = None
    config["figures"]["exit_proportions"]["schemes"] = None
    assert figure_notebooks(config) == [
        "1_networks",
        "3_network_selection",
        "4_exit_proportions",
        "6_summary",
        "7_runtime",
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
        (
            lambda c: c["networks"]["alexnet"]["options"].update(model="alexnett"),
            "no classifier 'alexnett'",
        ),
        (
            lambda c: c["networks"]["alexnet"]["options"].update(
                weights="ResNet50_Weights.IMAGENET1K_V1"
            ),
            "are not alexnet's",
        ),
        (
            lambda c: c["networks"]["alexnet"]["options"].update(
                weights="AlexNet_Weights.IMAGENET1K_V9"
            ),
            "unknown weights",
        ),
        (
            lambda c: c["networks"]["resnet50"]["options"].update(exits=["layer1", "layer9"]),
            r"\['layer9'\] are not nodes of resnet50",
        ),
        (lambda c: c["networks"]["alexnet"]["options"].pop("weights"), "needs weights"),
        (
            lambda c: c["networks"].update(small={"arch": "linear", "options": {}, "training": {}}),
            "trained here, but data.dataset is imagenet",
        ),
        (lambda c: c["data"].update(dataset="fashion_mnist"), "set data.dataset to imagenet"),
        (lambda c: c["data"]["imagenet"].update(eval=None), "data.imagenet.eval"),
        (
            lambda c: c["networks"]["alexnet"]["options"].update(widths=[8]),
            "do not apply to a torchvision",
        ),
        (lambda c: c["splits"]["fractions"].update(head_train=0.0, policy_train=0.6), "head_train"),
    ],
)
def test_paper_setup_errors_name_the_key(paper, edit, message):
    config = copy.deepcopy(paper)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)
