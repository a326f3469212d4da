"""The study's configuration: checks beyond the JSON schema, and per-rule sections.

The workflow validates ``config.yaml`` against ``workflow/schemas/config.schema.yaml`` with
Snakemake's ``validate`` (types, allowed values, unknown keys, and *every* default: the code
reads the validated config and restates none), then calls :func:`check_config` for what a schema
cannot say (fractions that sum to 1, exit weights that match the exits, image folders that
exist, an early-exit scheme on a network with exits). Both run before any job starts, while
Snakemake parses the workflow, so this module imports no torch (the paper setup's checks of
torchvision's names import it, for those studies only).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from adaptive_inference.family import PRETRAINED, exit_count

METHODS = ("learned", "myopic", "uniform", "cascade", "oracle", "single")
"""The policies and baselines a study can compute (``policies.methods``; the schema's enums
list the same, which a test checks)."""

LOSSES = ("top1", "top5")
"""The 0/1 losses a policy can be trained on and a curve read at (``policies.losses``)."""


class ConfigError(ValueError):
    """A config value that cannot work, with the key and what is allowed."""


def network_training(config: Mapping[str, Any], network: str) -> dict[str, Any]:
    """The training section of one network: the study's defaults updated by its own."""
    merged = copy.deepcopy(dict(config["training"]))
    merged.update(config["networks"][network]["training"])
    return merged


def reference_network(config: Mapping[str, Any]) -> str:
    """The study's reference: ``policies.reference``, else the last network listed."""
    return config["policies"]["reference"] or list(config["networks"])[-1]


def runtime_schemes(config: Mapping[str, Any]) -> list[str]:
    """The schemes whose policies are run for real (``runtime.schemes``; null: every scheme)."""
    schemes = config["runtime"]["schemes"]
    return list(config["policies"]["schemes"] if schemes is None else schemes)


def _check_runtime(config: Mapping[str, Any]) -> None:
    """The runtime measures fitted policies of known schemes, trained on its metric."""
    runtime, policies = config["runtime"], config["policies"]
    unknown = [s for s in runtime_schemes(config) if s not in policies["schemes"]]
    if unknown:
        raise ConfigError(
            f"runtime.schemes names {unknown}, which are not in `policies.schemes` "
            f"({', '.join(policies['schemes']) or 'none'})."
        )
    for key, fitted in [("method", "methods"), ("metric", "losses")]:
        value = runtime[key]
        if value not in policies[fitted]:
            raise ConfigError(
                f"runtime.{key} is {value!r}, but the policies are fitted for "
                f"policies.{fitted} {policies[fitted]} only."
            )


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for values the schema lets through but the study cannot use
    (``config`` validated against the schema, its defaults set)."""
    fractions = config["splits"]["fractions"]
    total = sum(float(v) for v in fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ConfigError(
            f"splits.fractions must sum to 1, got {total:g} ({fractions}); adjust "
            "head_train, policy_train, policy_validation and test."
        )
    _check_data(config["data"])
    policies = config["policies"]
    reference = policies["reference"]
    if reference is not None and reference not in config["networks"]:
        raise ConfigError(
            f"policies.reference is {reference!r}, not one of the networks "
            f"({', '.join(config['networks'])})."
        )
    for scheme, entry in policies["schemes"].items():
        unknown = [n for n in entry["networks"] if n not in config["networks"]]
        if unknown:
            raise ConfigError(
                f"policies.schemes.{scheme}.networks names {unknown}, which are not in `networks` "
                f"({', '.join(config['networks'])})."
            )
        if entry["graph"] == "early_exit":
            if len(entry["networks"]) != 1:
                raise ConfigError(
                    f"policies.schemes.{scheme}: an early_exit graph takes one network."
                )
            (network,) = entry["networks"]
            net = config["networks"][network]
            if exit_count(net["arch"], net["options"]) < 2:
                raise ConfigError(
                    f"policies.schemes.{scheme}: early exit needs a network with two exits or "
                    f"more, but {network} ({net['arch']}) has one; name a network with exits "
                    "(exit_resnet, or a torchvision network with options.exits) or remove the "
                    "scheme."
                )
        elif len(entry["networks"]) < 2:
            raise ConfigError(
                f"policies.schemes.{scheme}: a {entry['graph']} graph needs two networks or more."
            )
    for key, schemes in _figure_schemes(config["figures"]):
        unknown = [s for s in schemes if s not in policies["schemes"]]
        if unknown:
            raise ConfigError(
                f"figures.{key} names {unknown}, which are not in `policies.schemes` "
                f"({', '.join(policies['schemes']) or 'none'})."
            )
    _check_runtime(config)
    _check_pretrained(config)
    for name, net in config["networks"].items():
        weights = network_training(config, name).get("exit_weights")
        if weights is None or net["arch"] == PRETRAINED:
            continue
        exits = exit_count(net["arch"], net["options"])
        if len(weights) != exits:
            raise ConfigError(
                f"networks.{name}.training.exit_weights has {len(weights)} values but "
                f"{net['arch']} with these options has {exits} exits: give one weight per exit."
            )


def _check_data(data: Mapping[str, Any]) -> None:
    """The data a study reads exists where the config says (image folders: class folders)."""
    if data["dataset"] != "image_folder":
        return
    folders = data["image_folder"]
    if not folders["eval"]:
        raise ConfigError("data.image_folder.eval must name the evaluation images' folder")
    for which in ("train", "eval"):
        folder = folders[which]
        if folder is None:
            continue
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(
                f"data.image_folder.{which}: {path} does not exist; point it at a folder with one "
                "sub-folder of images per class."
            )
        if not any(p.is_dir() for p in path.iterdir()):
            raise ConfigError(
                f"data.image_folder.{which}: {path} holds no class folders; expected "
                f"{path}/<class>/<image>."
            )


def pretrained_networks(config: Mapping[str, Any]) -> list[str]:
    """The networks of the study that are torchvision's pre-trained classifiers."""
    return [n for n, entry in config["networks"].items() if entry["arch"] == PRETRAINED]


def _check_pretrained(config: Mapping[str, Any]) -> None:
    """Pre-trained networks go with ImageNet: names, weights and exit points exist; exit heads
    have data to learn from. Checked on a model built on the meta device (no weights, no
    compute)."""
    data = config["data"]
    pretrained = pretrained_networks(config)
    imagenet = data["dataset"] == "imagenet"
    if imagenet and not data["imagenet"]["eval"]:
        raise ConfigError(
            "data.imagenet.eval must name the folder of ImageNet's validation images."
        )
    trained_here = [n for n in config["networks"] if n not in pretrained]
    for name in config["networks"]:
        options = set(config["networks"][name]["options"])
        wrong = options & (
            {"widths", "blocks_per_stage"} if name in pretrained else {"model", "weights", "exits"}
        )
        if wrong:
            kind = (
                "a torchvision" if name in pretrained else f"a {config['networks'][name]['arch']}"
            )
            raise ConfigError(
                f"networks.{name}.options: {sorted(wrong)} do not apply to {kind} network."
            )
    if imagenet and trained_here:
        raise ConfigError(
            f"networks {trained_here} are trained here, but data.dataset is imagenet: its "
            "networks are torchvision's pre-trained classifiers (arch: torchvision)."
        )
    if pretrained and not imagenet:
        raise ConfigError(
            f"networks {pretrained} are torchvision's ImageNet classifiers: set data.dataset to "
            "imagenet (see studies/imagenet.yaml)."
        )
    if not pretrained:
        return
    # torch and torchvision's models take seconds to import: only a paper-setup study pays it
    import torch
    from torchvision import models

    from adaptive_inference.pretrained import (
        PretrainedConfigError,
        exit_point_names,
        resolve_exit_point,
        weights_of,
    )

    for name in pretrained:
        options = config["networks"][name]["options"]
        missing = [k for k in ("model", "weights") if not options.get(k)]
        if missing:
            raise ConfigError(
                f"networks.{name}.options needs {' and '.join(missing)} (e.g. model: resnet50, "
                "weights: ResNet50_Weights.IMAGENET1K_V1)."
            )
        try:
            weights_of(options["model"], options["weights"])
        except PretrainedConfigError as error:
            raise ConfigError(f"networks.{name}: {error}") from None
        exits = list(options.get("exits", []))
        if not exits:
            continue
        with torch.device("meta"):
            kwargs = (
                {"aux_logits": False, "init_weights": False}
                if options["model"] == "googlenet"
                else {}
            )
            names = exit_point_names(models.get_model(options["model"], weights=None, **kwargs))
        unknown = [e for e in exits if resolve_exit_point(names, e) is None]
        if unknown:
            raise ConfigError(
                f"networks.{name}.options.exits: {unknown} are not nodes of {options['model']} "
                "(list them with torchvision.models.feature_extraction.get_graph_node_names)."
            )
        if not data["imagenet"]["train"] and not config["splits"]["fractions"]["head_train"]:
            raise ConfigError(
                f"networks.{name} has exits whose heads need training data: give "
                "splits.fractions.head_train a share of the evaluation set, or set "
                "data.imagenet.train."
            )


def _figure_schemes(figures: Mapping[str, Any]):
    """(key, explicitly named schemes) of the figures section."""
    scheme = figures.get("early_exit", {}).get("scheme")
    if scheme is not None:
        yield "early_exit.scheme", [scheme]
    for section, key in [
        ("network_selection", "schemes"),
        ("network_selection", "compare_schemes"),
        ("exit_proportions", "schemes"),
        ("oracle", "schemes"),
    ]:
        value = figures.get(section, {}).get(key)
        if value is not None:
            yield f"{section}.{key}", list(value)


def figure_options(config: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The options of one notebook (``figures.<section>``) as its rule passes them: schemes left
    null resolved to the study's schemes, methods narrowed to those the policies computed."""
    options = copy.deepcopy(dict(config["figures"][section]))
    policies = config["policies"]
    schemes = policies["schemes"]
    if "methods" in options:
        options["methods"] = [m for m in options["methods"] if m in policies["methods"]]
    if section == "early_exit" and options.get("scheme") is None:
        graphs = [name for name, entry in schemes.items() if entry["graph"] == "early_exit"]
        options["scheme"] = graphs[0] if graphs else None
    if section == "network_selection":
        if options.get("schemes") is None:
            options["schemes"] = [
                name
                for name, entry in schemes.items()
                if entry["graph"] in ("network_selection", "combined")
            ]
        if options.get("compare_schemes") is None:
            options["compare_schemes"] = list(schemes)
    if section in ("exit_proportions", "oracle") and options.get("schemes") is None:
        options["schemes"] = list(schemes)
    return options


def figure_notebooks(config: Mapping[str, Any]) -> list[str]:
    """The notebooks this study renders, in reading order (those with something to draw)."""
    has_oracle = "oracle" in config["policies"]["methods"]
    wanted = {
        "1_networks": True,
        "2_early_exit": figure_options(config, "early_exit")["scheme"] is not None,
        "3_network_selection": bool(figure_options(config, "network_selection")["schemes"]),
        "4_exit_proportions": bool(figure_options(config, "exit_proportions")["schemes"]),
        "5_oracle": has_oracle and bool(figure_options(config, "oracle")["schemes"]),
        "6_summary": bool(config["policies"]["schemes"]),
        "7_runtime": bool(runtime_schemes(config)),
    }
    return [name for name, wanted_ in wanted.items() if wanted_]


def load_config(path, schema_path) -> dict[str, Any]:
    """Read, validate (schema with defaults, then :func:`check_config`) and return a config file.

    For notebooks and tests; the workflow does the same through Snakemake's ``validate``.
    """
    from snakemake.utils import validate

    with open(path) as handle:
        config = yaml.safe_load(handle)
    validate(config, str(schema_path), set_default=True)
    check_config(config)
    return config
