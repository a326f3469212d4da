"""The study's networks: built from their spec, saved and loaded.

A network's **spec** is what rebuilds it: ``arch`` (a member of the default family, or
``torchvision`` for a pre-trained classifier), the classes, the input's channels and size, and
the architecture's options. :func:`save_network` stores the spec beside the weights (for a
pre-trained network only its exit heads: the backbone comes back through torchvision's weights
API); :func:`load_network` rebuilds the network from the spec and loads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from adaptive_inference.family import PRETRAINED, options_of
from adaptive_inference.io import atomic_path
from adaptive_inference.models import BUILDERS, MultiExitNetwork
from adaptive_inference.pretrained import pretrained_spec, torchvision_network


def network_spec(
    arch: str, options: Mapping[str, Any], *, num_classes: int, input_shape
) -> dict[str, Any]:
    """The spec of a network of the study, for a dataset of ``num_classes`` classes whose
    images have shape ``input_shape`` ``(C, H, W)`` (a pre-trained network's come from its
    weights)."""
    if arch == PRETRAINED:
        return pretrained_spec(options)
    channels, height, _ = input_shape
    return {
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(channels),
        "image_size": int(height),
        **dict(options),
    }


def build_network(
    arch: str, *, num_classes: int, in_channels: int, image_size: int, **options: Any
) -> MultiExitNetwork:
    """Build a network from its spec (see :func:`network_spec`).

    ``torchvision`` is a pre-trained classifier (options ``model``, ``weights``, ``exits``); its
    classes and input size come from its weights, so the ``num_classes`` / ``in_channels`` /
    ``image_size`` recorded beside them are not used here.
    """
    if arch == PRETRAINED:
        return torchvision_network(**options)
    options = options_of(arch, options)  # an unknown architecture is an error
    kwargs = dict(num_classes=num_classes, in_channels=in_channels, **options)
    if arch in ("linear", "small_cnn"):
        kwargs["image_size"] = image_size
    return BUILDERS[arch](**kwargs)


def save_network(model: MultiExitNetwork, spec: Mapping[str, Any], path: Path | str) -> None:
    """Save weights with the spec that rebuilds the network (see :func:`load_network`).

    A pre-trained backbone (``arch: torchvision``) is not copied: only the exit heads are saved,
    and loading rebuilds the backbone from its weights (cached in ``$TORCH_HOME``).
    """
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if spec["arch"] == PRETRAINED:
        state = {k: v for k, v in state.items() if k.startswith("heads.")}
    # through a file object: torch.save names the archive inside after a path it is given (here
    # the temporary one, a random name), but "archive" for a file object, so that the same
    # weights give the same bytes
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"spec": dict(spec), "state_dict": state}, handle)


def load_network(
    path: Path | str, map_location: str | torch.device = "cpu", *, with_spec: bool = False
):
    """Rebuild a network saved by :func:`save_network`, in eval mode (and its spec if asked)."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    spec = checkpoint["spec"]
    model = build_network(**spec)
    if spec["arch"] == PRETRAINED:
        missing = model.load_state_dict(checkpoint["state_dict"], strict=False).missing_keys
        heads = [k for k in missing if k.startswith("heads.")]
        if heads:
            raise ValueError(f"{path} lacks the exit heads' weights {heads}; re-run train_network.")
    else:
        model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return (model, spec) if with_spec else model
