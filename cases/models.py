"""Small models for the case studies (torch), built with a seed so that a run can be repeated exactly.

Vision: :func:`conv_net`, a VGG-style stack of 3x3 convolutions for 8x8 images, with BN before or after the
ReLU or without BN; :class:`ResidualBlock` (He et al. 2016, "Deep Residual Learning for Image
Recognition", arXiv:1512.03385, Fig. 2 / option A identity shortcut) and :func:`residual_net`, a stack of
them. Inputs are (N, 1, 8, 8) float32 images; outputs (N, num_classes) logits.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

NORM_PLACEMENTS = ("before", "after", "none")


def conv_net(placement: str = "before", widths: Sequence[int] = (16, 32, 32), num_classes: int = 10,
             in_channels: int = 1, init: str = "he", init_scale: float = 1.0, seed: int = 0) -> nn.Sequential:
    """3x3 convolutions (padding 1; the second has stride 2, 8x8 -> 4x4), global average pooling, a linear layer.

    ``placement``: "before" gives conv-BN-ReLU (Ioffe & Szegedy 2015, Section 3.2: BN on the convolution's
    output, before the nonlinearity; the convolution has no bias since BN's beta takes its place);
    "after" gives conv-ReLU-BN (the convolution keeps its bias); "none" gives conv-ReLU with biases.
    ``init``: "he" draws every convolution and linear weight from N(0, 2 / fan_in) (He et al. 2015,
    "Delving Deep into Rectifiers", arXiv:1502.01852), biases 0; "torch" keeps PyTorch's default (uniform,
    variance 1 / (3 fan_in)). ``init_scale`` then multiplies the convolutions' weights (1 keeps them; the
    last linear layer is not scaled): with BN after every convolution the forward pass does not depend on
    it, without BN the output scales with ``init_scale`` to the power of the depth.
    """
    if placement not in NORM_PLACEMENTS:
        raise ValueError(f"placement must be one of {NORM_PLACEMENTS}, got {placement!r}")
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    c = in_channels
    for i, w in enumerate(widths):
        conv = nn.Conv2d(c, w, 3, stride=2 if i == 1 else 1, padding=1, bias=placement != "before")
        if placement == "before":
            layers += [conv, nn.BatchNorm2d(w), nn.ReLU()]
        elif placement == "after":
            layers += [conv, nn.ReLU(), nn.BatchNorm2d(w)]
        else:
            layers += [conv, nn.ReLU()]
        c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    net = nn.Sequential(*layers)
    if init == "he":
        he_init(net)
    elif init != "torch":
        raise ValueError(f"init must be 'he' or 'torch', got {init!r}")
    if init_scale != 1.0:
        scale_weights(net, init_scale, kinds=(nn.Conv2d,))
    return net


def he_init(model: nn.Module) -> nn.Module:
    """He initialization of every convolution and linear layer (weights N(0, 2 / fan_in), biases 0), in place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.zero_()
    return model


def scale_weights(model: nn.Module, factor: float, kinds=(nn.Conv2d, nn.Linear)) -> nn.Module:
    """Multiply the weights of every layer of the types ``kinds`` (convolutions and linear layers by
    default) by ``factor``, in place; returns model."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, kinds):
                m.weight.mul_(factor)
    return model


class ResidualBlock(nn.Module):
    """The basic residual block of He et al. (2016): y = ReLU(x + BN(conv(ReLU(BN(conv(x)))))).

    3x3 convolutions without bias (BN follows each), ``channels`` in and out, the identity as shortcut.
    With ``zero_init_residual`` the last BN's gamma starts at 0 (Goyal et al. 2017, "Accurate, Large
    Minibatch SGD", arXiv:1706.02677, Section 5.1), so the block computes ReLU(x) at initialization. This is
    the course's reference for the learner's graded ``ResidualBlock``.
    """

    def __init__(self, channels: int, zero_init_residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if zero_init_residual:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


def residual_net(block: Callable[..., nn.Module] = ResidualBlock, depth: int = 8, width: int = 16,
                 zero_init_residual: bool = True, num_classes: int = 10, in_channels: int = 1,
                 seed: int = 0) -> nn.Sequential:
    """A stem (conv-BN-ReLU to ``width`` channels), ``depth`` blocks ``block(width, zero_init_residual=...)``,
    global average pooling and a linear layer. ``block`` may be the learner's class."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                               nn.ReLU()]
    layers += [block(width, zero_init_residual=zero_init_residual) for _ in range(depth)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm1d/2d/3d (and SyncBatchNorm) of ``model``, in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter values."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
