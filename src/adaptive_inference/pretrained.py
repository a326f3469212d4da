"""torchvision's pre-trained classifiers as multi-exit networks, with exit heads on frozen features.

A network of the paper's setup is named in config by torchvision model name and weights enum
(``resnet50`` / ``ResNet50_Weights.IMAGENET1K_V1``) and loaded through torchvision's weights API,
so its file is fetched once into ``$TORCH_HOME/hub/checkpoints/`` and read from there afterwards
(no network needed once cached). GoogLeNet's pre-trained file holds its auxiliary heads; the
builder drops them after loading, as in the paper (only the main classifier is used).

**Exits.** The network is FX-traced (torchvision's ``create_feature_extractor``, eval mode) and cut
into a chain of stages at the exit points named in config: node names as
:func:`torchvision.models.feature_extraction.get_graph_node_names` lists them, where a module name
(``layer2``) means the module's output. Stage ``k`` holds the nodes that the value at exit ``k``
depends on and earlier exits do not; a point that some other value crosses (inside a residual
block, or between the branches of an Inception module) is not a cut and is refused with the
reason. The last stage ends at the network's logits: the final exit is the network's own
classifier, unchanged. The network's answers are exactly the original model's.

Each intermediate exit gets a head of global average pooling and one linear layer, trained on the
frozen backbone (:func:`train_exit_heads`): the pooled features are computed once, then only the
linear layers learn. A head reads its stage's output before the next stage runs, so torchvision's
in-place ReLUs (which overwrite a tensor that a later layer takes in) cannot change what an exit
sees, even at a pre-activation exit point.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import fx, nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from adaptive_inference.data import load_split
from adaptive_inference.device import make_loader
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.splits import ids_of
from adaptive_inference.training import CURVE_POINTS

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# torchvision is imported where a pre-trained network is built, not with this module: the
# default study's jobs import this module and never touch torchvision, whose import costs each of
# them more than a second (torchvision.ops pulls in torch._dynamo).


class PretrainedConfigError(ValueError):
    """A torchvision model, weights or exit point that cannot be used, with what can."""


def weights_of(model: str, weights: str) -> WeightsEnum:
    """The weights enum named ``weights`` (``ResNet50_Weights.IMAGENET1K_V1``), checked against
    ``model``."""
    from torchvision import models

    available = models.list_models(module=models)
    if model not in available:
        raise PretrainedConfigError(
            f"torchvision has no classifier {model!r}; choose one of {', '.join(available)}."
        )
    try:
        enum = models.get_weight(weights)
    except (ValueError, KeyError, AttributeError) as error:
        raise PretrainedConfigError(
            f"unknown weights {weights!r} ({error}); {model} has "
            f"{', '.join(str(w) for w in models.get_model_weights(model))}."
        ) from None
    if type(enum) is not models.get_model_weights(model):
        raise PretrainedConfigError(
            f"weights {weights} are not {model}'s; {model} has "
            f"{', '.join(str(w) for w in models.get_model_weights(model))}."
        )
    return enum


def weights_file(enum: WeightsEnum) -> Path:
    """Where torchvision's weights API caches (and looks for) the weights' file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)


def num_classes_of(model: str, weights: str) -> int:
    return len(weights_of(model, weights).meta["categories"])


def load_classifier(model: str, weights: str) -> nn.Module:
    """The pre-trained classifier through torchvision's weights API (cached in ``$TORCH_HOME``),
    in eval mode."""
    from torchvision import models

    enum = weights_of(model, weights)
    try:
        network = models.get_model(model, weights=enum)
    except (OSError, RuntimeError) as error:  # URLError is an OSError: no network, no cached file
        cached = weights_file(enum)
        raise PretrainedConfigError(
            f"cannot load {weights} ({error}). It is read from {cached} once cached; on a machine "
            f"without network, download {enum.url} elsewhere and copy it there (or set TORCH_HOME "
            "to a folder whose hub/checkpoints/ holds it)."
        ) from error
    if getattr(network, "aux_logits", False):  # GoogLeNet / Inception: drop the auxiliary heads
        network.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(network, name):
                setattr(network, name, None)
    return network.eval()


def exit_point_names(network: nn.Module) -> list[str]:
    """The node names an exit may be placed at (eval mode)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    return get_graph_node_names(network.eval())[1]


def _stage_nodes(graph: fx.Graph, cuts: Sequence[fx.Node]) -> list[list[fx.Node]]:
    """The compute nodes of each stage: those the cut depends on that no earlier cut does."""

    def ancestors(node: fx.Node) -> set[fx.Node]:
        seen, stack = set(), [node]
        while stack:
            current = stack.pop()
            for parent in current.all_input_nodes:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    order = {node: i for i, node in enumerate(graph.nodes)}
    done: set[fx.Node] = set()
    stages = []
    for cut in cuts:
        upstream = ancestors(cut) | {cut}
        members = {n for n in upstream - done if n.op not in ("placeholder", "get_attr")}
        stages.append(sorted(members, key=order.__getitem__))
        done |= upstream
    return stages


def _overwrites_input(node: fx.Node, root: nn.Module) -> bool:
    """Whether ``node`` writes into its first input (torchvision's ``ReLU(inplace=True)``,
    ``F.relu(x, inplace=True)``, ``x.relu_()``)."""
    if node.op == "call_module":
        return bool(getattr(root.get_submodule(str(node.target)), "inplace", False))
    if (
        node.op == "call_method"
        and str(node.target).endswith("_")
        and not str(node.target).startswith("_")
    ):
        return True
    return bool(node.kwargs.get("inplace", False))


def _build_stage(
    root: nn.Module, nodes: list[fx.Node], source: fx.Node, cut: fx.Node, entry: str
) -> fx.GraphModule:
    """A graph module computing ``cut`` from the value of ``source`` (the previous cut, exit point
    ``entry``, or the input), refusing any other value that flows in from outside the stage.

    Where a layer of the stage would overwrite its input in place (a pre-activation exit point
    followed by torchvision's in-place ReLU), the stage works on a copy, so the exit's value is
    still the one the exit head saw, whatever order the two run in.
    """
    graph = fx.Graph()
    x = graph.placeholder("x")
    members = set(nodes)
    if any(
        _overwrites_input(user, root) and user.args and user.args[0] is source
        for user in source.users
        if user in members
    ):
        x = graph.call_method("clone", (x,))
    env: dict[fx.Node, fx.Node] = {source: x}
    for node in nodes:
        for parent in node.all_input_nodes:
            if parent in env:
                continue
            if parent.op == "get_attr":
                env[parent] = graph.node_copy(parent)
            elif parent not in members:
                raise PretrainedConfigError(
                    f"exit point {entry!r} does not cut the network into a chain: {node.name} "
                    f"after it also reads {parent.name}, computed before it. Put exits between "
                    "blocks (e.g. ResNet's layer1..layer3, GoogLeNet's inception3b / "
                    "inception4e), not inside a residual block or an Inception module."
                )
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[cut])
    graph.lint()
    return fx.GraphModule(root, graph)


def resolve_exit_point(names: Sequence[str], point: str) -> str | None:
    """The node an exit point names: the node itself, or a module's last node (its output)."""
    if point in names:
        return point
    inside = [n for n in names if n.startswith(point + ".")]
    return inside[-1] if inside else None


def _modules_listed(names: Sequence[str]) -> list[str]:
    """The top-level modules of a network's node names, in network order."""
    return list(dict.fromkeys(n.split(".")[0] for n in names[1:]))  # names[0] is the input


def split_network(
    network: nn.Module, exits: Sequence[str]
) -> tuple[list[fx.GraphModule], list[str]]:
    """Cut ``network`` at the named nodes into a chain of stages; the last ends at its logits.

    Returns the stages and the names of their outputs (the exit points, then ``final``).
    """
    names = exit_point_names(network)
    nodes = {e: resolve_exit_point(names, e) for e in exits}
    unknown = [e for e, node in nodes.items() if node is None]
    if unknown:
        raise PretrainedConfigError(
            f"exit points {unknown} are neither nodes nor modules of {type(network).__name__}; "
            f"its modules are {', '.join(_modules_listed(names))} (all node names: "
            "torchvision.models.feature_extraction.get_graph_node_names)."
        )
    positions = [names.index(nodes[e]) for e in exits]
    if positions != sorted(positions) or len(set(positions)) != len(positions):
        raise PretrainedConfigError(
            f"exit points {list(exits)} must be distinct and in network order."
        )
    final = names[-1]
    if final in nodes.values():
        raise PretrainedConfigError(
            f"{final!r} is the network's output: it is the final exit already."
        )
    from torchvision.models.feature_extraction import create_feature_extractor

    traced = create_feature_extractor(
        network.eval(),
        return_nodes={**{nodes[e]: e for e in exits}, final: "final"},
        suppress_diff_warning=True,
    )
    outputs = next(n for n in traced.graph.nodes if n.op == "output").args[0]
    cuts = [outputs[e] for e in exits] + [outputs["final"]]
    source = next(n for n in traced.graph.nodes if n.op == "placeholder")
    stages = []
    for entry, cut, nodes in zip(["input", *exits], cuts, _stage_nodes(traced.graph, cuts)):
        stages.append(_build_stage(traced, nodes, source, cut, entry))
        source = cut
    return stages, [*exits, "final"]


def pool_linear_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pooling and one linear layer: the exit head of a pre-trained network."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def torchvision_network(*, model: str, weights: str, exits: Sequence[str] = ()) -> MultiExitNetwork:
    """A pre-trained torchvision classifier as a :class:`MultiExitNetwork` with exits at ``exits``
    (heads untrained until :func:`train_exit_heads`)."""
    network = load_classifier(model, weights)
    num_classes = num_classes_of(model, weights)
    stages, names = split_network(network, list(exits))
    crop = input_size(model, weights)
    heads: list[nn.Module] = []
    with torch.no_grad():  # (not inference mode: the heads' parameters must stay trainable)
        x = torch.zeros(1, 3, crop, crop)
        for stage in stages[:-1]:
            x = stage(x)
            if x.dim() != 4:
                raise PretrainedConfigError(
                    f"exit point {names[len(heads)]!r} of {model} gives a {x.dim()}-d tensor; an "
                    "exit head pools an (N, C, H, W) feature map."
                )
            heads.append(pool_linear_head(x.shape[1], num_classes))
    heads.append(nn.Identity())
    return MultiExitNetwork(stages, heads, list(range(len(stages))), names).eval()


def input_size(model: str, weights: str) -> int:
    """The side of the square crop the weights' transforms produce."""
    return int(weights_of(model, weights).transforms().crop_size[0])


def transforms_of(model: str, weights: str):
    """The weights' own preprocessing (resize, centre crop, normalisation)."""
    return weights_of(model, weights).transforms()


# ------------------------------------------------------------------------------------------
# Exit heads on frozen features
# ------------------------------------------------------------------------------------------


@torch.inference_mode()
def pooled_features(
    model: MultiExitNetwork,
    loader: Any,
    *,
    device: torch.device,
    progress: bool = True,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Globally pooled features at every intermediate exit (on the host), and the labels."""
    model.eval().to(device)
    features: list[list[torch.Tensor]] = [[] for _ in range(model.num_exits - 1)]
    labels = []
    for images, targets in tqdm(
        loader, desc="pooled features", disable=not progress, mininterval=2.0
    ):
        x = images.to(device, non_blocking=True)
        for index, stage in enumerate(model.stages[:-1]):
            x = stage(x)
            head = model.head_after(index)
            if head is not None:
                features[head].append(model.heads[head][:2](x).float().cpu())
        labels.append(torch.as_tensor(targets))
    return [torch.cat(f) for f in features], torch.cat(labels)


def train_exit_heads(
    model: MultiExitNetwork,
    features: Sequence[torch.Tensor],
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    max_lr: float,
    momentum: float,
    weight_decay: float,
    seed: int,
    validation_size: int,
    device: torch.device,
    progress: bool = True,
) -> pd.DataFrame:
    """Train the linear layer of every intermediate exit head on its pooled features.

    SGD with Nesterov momentum and a OneCycle schedule over ``steps`` optimizer steps (the
    family's recipe), all heads at once on the same batches; ``validation_size`` examples are
    held out for the curve (:data:`~adaptive_inference.training.CURVE_POINTS` rows: training
    loss and the held-out accuracy of each head).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    held = min(validation_size, len(labels) // 5)
    val, train = order[:held], order[held:]
    linears = [model.heads[k][2].to(device) for k in range(len(features))]
    params = [p for linear in linears for p in linear.parameters()]
    optimizer = torch.optim.SGD(
        params, lr=max_lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps)
    criterion = nn.CrossEntropyLoss()
    feats = [f.to(device) for f in features]
    y = labels.to(device)
    per_epoch = math.ceil(len(train) / batch_size)
    checkpoints = {math.ceil(steps * (i + 1) / CURVE_POINTS) for i in range(CURVE_POINTS)}
    rows, step, total, seen, start = [], 0, 0.0, 0, time.perf_counter()
    with tqdm(total=steps, desc="exit heads", disable=not progress, mininterval=2.0) as bar:
        while step < steps:
            for batch in train[torch.randperm(len(train), generator=generator)].split(batch_size):
                loss = sum(
                    criterion(linear(f[batch]), y[batch]) for linear, f in zip(linears, feats)
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
                bar.update()
                if step in checkpoints:
                    row: dict[str, Any] = {
                        "step": step,
                        "epoch": step / per_epoch,
                        "train_loss": total / seen,
                        "seconds": time.perf_counter() - start,
                    }
                    with torch.inference_mode():
                        for name, linear, f in zip(model.exit_names, linears, feats):
                            right = linear(f[val]).argmax(1) == y[val]
                            row[f"val_accuracy_{name}"] = (
                                float(right.float().mean()) if held else math.nan
                            )
                    rows.append(row)
                    total, seen, start = 0.0, 0, time.perf_counter()
                if step == steps:
                    break
    model.cpu()
    return pd.DataFrame(rows)


def pretrained_spec(options: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`~adaptive_inference.networks.load_network` rebuilds a pre-trained network from
    (the classes and input size recorded for the timing and the tables)."""
    return {
        "arch": "torchvision",
        "num_classes": num_classes_of(options["model"], options["weights"]),
        "in_channels": 3,
        "image_size": input_size(options["model"], options["weights"]),
        **options,
    }


def head_training_set(data_cfg: Mapping[str, Any], splits: pd.DataFrame, transform: Any) -> Dataset:
    """The images the exit heads learn from, read with the network's transforms: the configured
    ImageNet training subset, else the evaluation set's ``head_train`` split."""
    if data_cfg.get("imagenet", {}).get("train"):
        return load_split(data_cfg, data_cfg["root"], train=True, transform=transform)
    ids = ids_of(splits, "head_train")
    if len(ids) == 0:
        raise ValueError(
            "the exit heads need training images: splits.fractions.head_train is 0 and "
            "data.imagenet.train is not set."
        )
    return Subset(
        load_split(data_cfg, data_cfg["root"], train=False, transform=transform), ids.tolist()
    )


def build_and_train(
    options: Mapping[str, Any],
    *,
    data_cfg: Mapping[str, Any],
    splits: pd.DataFrame,
    training: Mapping[str, Any],
    loader: Mapping[str, Any],
    device: torch.device,
    progress: bool = True,
) -> tuple[MultiExitNetwork, dict[str, Any], pd.DataFrame]:
    """A pre-trained network with its exit heads trained on frozen pooled features.

    Returns the network (on the CPU), its spec and the heads' training curve (empty without
    intermediate exits).
    """
    model = torchvision_network(
        model=options["model"], weights=options["weights"], exits=options.get("exits", [])
    )
    spec = pretrained_spec(options)
    if model.num_exits == 1:
        return model, spec, pd.DataFrame(columns=["step", "epoch", "train_loss", "seconds"])
    dataset = head_training_set(
        data_cfg, splits, transforms_of(options["model"], options["weights"])
    )
    batches = make_loader(
        dataset, loader["batch_size"], device=device, num_workers=loader["num_workers"]
    )
    features, labels = pooled_features(model, batches, device=device, progress=progress)
    curve = train_exit_heads(
        model,
        features,
        labels,
        steps=training["steps"],
        batch_size=training["batch_size"],
        max_lr=training["max_lr"],
        momentum=training["momentum"],
        weight_decay=training["weight_decay"],
        seed=training["seed"],
        validation_size=data_cfg["validation_size"],
        device=device,
        progress=progress,
    )
    return model, spec, curve
