"""The network family of the embedded default study, as chains of stages with exit heads.

Every network of the study, trained here or (later) pre-trained, is a :class:`MultiExitNetwork`:
a chain of backbone ``stages`` and one exit ``head`` after some of them. ``forward`` returns the
logits of every exit in order, the last one being the network's own answer. Early exit and network
selection both work on this shape: a network without intermediate exits is one stage and one head.

The default family (Fashion-MNIST, 1x28x28 inputs) spans more than 20x in cost:

* ``linear``: flatten + one linear layer (a multinomial logistic regression);
* ``small_cnn``: two conv-BN-ReLU-max-pool blocks and a linear head on the flattened map;
* ``exit_resnet``: a BN CNN with a conv stem, max-pool to 14x14, and three stages of two
  conv-BN-ReLU each (widths 32/64/128 by default), with a global-average-pool + linear exit after
  every stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adaptive_inference.family import DEFAULT_OPTIONS


class MultiExitNetwork(nn.Module):
    """A chain of stages with an exit head after some of them.

    Args:
        stages: backbone pieces, applied in order.
        heads: exit heads; ``heads[k]`` reads the output of stage ``exit_after[k]``.
        exit_after: index of the stage each head follows, strictly increasing, the last one being
            the last stage.
        exit_names: a name for each exit (defaults to ``exit0``, ``exit1``, ...).
    """

    def __init__(
        self,
        stages: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        exit_after: Sequence[int],
        exit_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        exit_after = [int(i) for i in exit_after]
        if len(heads) != len(exit_after):
            raise ValueError(f"{len(heads)} heads but {len(exit_after)} exit positions")
        if sorted(set(exit_after)) != exit_after or not exit_after:
            raise ValueError(f"exit_after must be strictly increasing, got {exit_after}")
        if exit_after[-1] != len(stages) - 1:
            raise ValueError("the last exit must follow the last stage")
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.exit_after = tuple(exit_after)
        self.exit_names = tuple(exit_names or [f"exit{k}" for k in range(len(heads))])
        if len(self.exit_names) != len(heads):
            raise ValueError("one name per exit is needed")
        self._head_of_stage = {stage: head for head, stage in enumerate(self.exit_after)}

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def head_after(self, stage: int) -> int | None:
        """The index of the exit head that reads stage ``stage``'s output, if any."""
        return self._head_of_stage.get(stage)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            head = self.head_after(index)
            if head is not None:
                outputs.append(self.heads[head](x))
        return tuple(outputs)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _pool_linear_head(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def linear(
    *, in_channels: int = 1, image_size: int = 28, num_classes: int = 10
) -> MultiExitNetwork:
    """Multinomial logistic regression on the pixels: one stage (flatten), one exit (linear)."""
    features = in_channels * image_size * image_size
    return MultiExitNetwork([nn.Flatten()], [nn.Linear(features, num_classes)], [0], ["final"])


def small_cnn(
    *,
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    widths: Sequence[int] = DEFAULT_OPTIONS["small_cnn"]["widths"],
) -> MultiExitNetwork:
    """Conv-BN-ReLU-max-pool blocks, then a linear head on the flattened feature map."""
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for width in widths:
        layers += [*_conv_bn_relu(c_in, width), nn.MaxPool2d(2)]
        c_in, size = width, size // 2
    head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * size * size, num_classes))
    return MultiExitNetwork([nn.Sequential(*layers)], [head], [0], ["final"])


def exit_resnet(
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = DEFAULT_OPTIONS["exit_resnet"]["widths"],
    blocks_per_stage: int = DEFAULT_OPTIONS["exit_resnet"]["blocks_per_stage"],
) -> MultiExitNetwork:
    """A BN CNN with a cheap stem and an exit (global pool + linear) after every stage.

    The stem (one conv-BN-ReLU and a 2x2 max-pool) brings 28x28 inputs to 14x14; stage ``k``
    has ``blocks_per_stage`` conv-BN-ReLU blocks of width ``widths[k]``, and every stage after the
    first halves the resolution with a max-pool.
    """
    stages: list[nn.Module] = []
    c_in = in_channels
    for k, width in enumerate(widths):
        layers: list[nn.Module] = []
        if k == 0:
            layers += [*_conv_bn_relu(c_in, width), nn.MaxPool2d(2)]
            c_in = width
        else:
            layers.append(nn.MaxPool2d(2))
        for _ in range(blocks_per_stage):
            layers += _conv_bn_relu(c_in, width)
            c_in = width
        stages.append(nn.Sequential(*layers))
    heads = [_pool_linear_head(width, num_classes) for width in widths]
    names = [f"stage{k + 1}" for k in range(len(widths) - 1)] + ["final"]
    return MultiExitNetwork(stages, heads, list(range(len(widths))), names)


BUILDERS = {"linear": linear, "small_cnn": small_cnn, "exit_resnet": exit_resnet}
"""The family's builders by architecture name (their defaults: :data:`~adaptive_inference.family.
DEFAULT_OPTIONS`)."""
