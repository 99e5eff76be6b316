"""SegNet-MTAN (Liu, Johns and Davison, CVPR 2019), the network of the NYUv2 / Cityscapes papers.

The architecture of the MTAN, CAGrad, Nash-MTL, FAMO and IMGrad experiments (their
``SegNetMtan``): a SegNet encoder-decoder (five levels, max-pooling with indices and unpooling)
shared by all tasks, one soft-attention network per task over its encoder and decoder features
(attention masks per task, the blocks between them shared), and per task a prediction layer
(3×3 conv, 1×1 conv). Initialisation as published: Xavier-normal convolutions with zero bias,
batch norms at weight 1, bias 0. ``width`` scales the published filters ``64·(1, 2, 4, 8, 8)``
(``width=64``); tests use 4. Inputs need a height and width divisible by 32.

Parameter split as published (Nash-MTL's ``shared_parameters``: everything but the ``pred``
layers): the attention networks count as shared, the prediction layers are the task heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl_backends.models.hps import HardParameterSharing


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _attention(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_mid, kernel_size=1),
        nn.BatchNorm2d(c_mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, kernel_size=1),
        nn.BatchNorm2d(c_out),
        nn.Sigmoid(),
    )


class SegNetMTANTrunk(nn.Module):
    """The shared SegNet and the per-task attention networks; returns one feature map per task.

    Args:
        n_tasks: Number of attention networks (tasks).
        width: First-level filters (published: 64); the levels have ``width·(1, 2, 4, 8, 8)``.
    """

    def __init__(self, n_tasks: int, width: int = 64) -> None:
        super().__init__()
        f = [width, 2 * width, 4 * width, 8 * width, 8 * width]
        self.n_tasks = n_tasks
        self.width = width
        self.encoder_block = nn.ModuleList([_conv(3, f[0])])
        self.decoder_block = nn.ModuleList([_conv(f[0], f[0])])
        self.conv_block_enc = nn.ModuleList([_conv(f[0], f[0])])
        self.conv_block_dec = nn.ModuleList([_conv(f[0], f[0])])
        for i in range(4):
            self.encoder_block.append(_conv(f[i], f[i + 1]))
            self.decoder_block.append(_conv(f[i + 1], f[i]))
            if i == 0:
                self.conv_block_enc.append(_conv(f[1], f[1]))
                self.conv_block_dec.append(_conv(f[0], f[0]))
            else:
                self.conv_block_enc.append(
                    nn.Sequential(_conv(f[i + 1], f[i + 1]), _conv(f[i + 1], f[i + 1]))
                )
                self.conv_block_dec.append(nn.Sequential(_conv(f[i], f[i]), _conv(f[i], f[i])))
        # Per task: attention masks of the five encoder and five decoder levels.
        self.encoder_att = nn.ModuleList()
        self.decoder_att = nn.ModuleList()
        for _ in range(n_tasks):
            enc = [_attention(f[0], f[0], f[0])]
            dec = [_attention(2 * f[0], f[0], f[0])]
            for i in range(4):
                enc.append(_attention(2 * f[i + 1], f[i + 1], f[i + 1]))
                dec.append(_attention(f[i + 1] + f[i], f[i], f[i]))
            self.encoder_att.append(nn.ModuleList(enc))
            self.decoder_att.append(nn.ModuleList(dec))
        # Shared blocks between the attention masks.
        self.encoder_block_att = nn.ModuleList([_conv(f[0], f[1])])
        self.decoder_block_att = nn.ModuleList([_conv(f[0], f[0])])
        for i in range(4):
            last = i == 3
            self.encoder_block_att.append(_conv(f[i + 1], f[i + 1] if last else f[i + 2]))
            self.decoder_block_att.append(_conv(f[i + 1], f[i + 1] if last else f[i]))
        self.down = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.up = nn.MaxUnpool2d(kernel_size=2, stride=2)
        init_published(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        """One ``[B, width, H, W]`` feature map per task."""
        enc0: list[Tensor] = []  # first conv of each encoder level
        enc1: list[Tensor] = []  # last conv of each encoder level
        indices: list[Tensor] = []
        h = x
        for i in range(5):
            a = self.encoder_block[i](h)
            b = self.conv_block_enc[i](a)
            h, idx = self.down(b)
            enc0.append(a)
            enc1.append(b)
            indices.append(idx)
        ups: list[Tensor] = []  # unpooled input of each decoder level
        dec: list[Tensor] = []  # output of each decoder level
        for j in range(5):
            u = self.up(h, indices[-j - 1])
            h = self.conv_block_dec[-j - 1](self.decoder_block[-j - 1](u))
            ups.append(u)
            dec.append(h)
        features = []
        for t in range(self.n_tasks):
            enc_att = cast(nn.ModuleList, self.encoder_att[t])
            dec_att = cast(nn.ModuleList, self.decoder_att[t])
            a_t: Tensor | None = None
            for j in range(5):
                gate_in = enc0[j] if a_t is None else torch.cat((enc0[j], a_t), dim=1)
                masked = enc_att[j](gate_in) * enc1[j]
                a_t = F.max_pool2d(self.encoder_block_att[j](masked), kernel_size=2, stride=2)
            assert a_t is not None
            for j in range(5):
                up = F.interpolate(a_t, scale_factor=2, mode="bilinear", align_corners=True)
                up = self.decoder_block_att[-j - 1](up)
                a_t = dec_att[-j - 1](torch.cat((ups[j], up), dim=1)) * dec[j]
            features.append(a_t)
        return features


class TaskPrediction(nn.Module):
    """Task ``task``'s prediction layer on its own feature map (3×3 conv, 1×1 conv).

    Args:
        task: Index of the trunk's feature map this head reads.
        width: Channels of the feature map.
        out_channels: Output channels (classes, 1 for depth, 3 for normals).
        unit_norm: L2-normalise the output over channels (surface normals); a pixel whose raw
            output is exactly zero stays zero (the published code would give NaN there).
    """

    def __init__(self, task: int, width: int, out_channels: int, unit_norm: bool = False) -> None:
        super().__init__()
        self.task = task
        self.unit_norm = unit_norm
        self.pred = nn.Sequential(
            nn.Conv2d(width, width, kernel_size=3, padding=1),
            nn.Conv2d(width, out_channels, kernel_size=1),
        )
        init_published(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        """The prediction ``[B, out_channels, H, W]``."""
        out: Tensor = self.pred(features[self.task])
        if self.unit_norm:
            out = out / torch.linalg.vector_norm(out, dim=1, keepdim=True).clamp_min(1e-12)
        return out


def init_published(module: nn.Module) -> None:
    """Xavier-normal convolutions with zero bias; batch norms at weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def segnet_mtan(
    out_channels: Sequence[int], width: int = 64, unit_norm: Sequence[bool] | None = None
) -> HardParameterSharing:
    """SegNet-MTAN with one prediction layer per task.

    Args:
        out_channels: Output channels of each task.
        width: First-level filters (published 64).
        unit_norm: Per task, whether its output is L2-normalised (default: none).

    Returns:
        The model: the trunk is the shared part, the prediction layers the heads.
    """
    norms = list(unit_norm) if unit_norm is not None else [False] * len(out_channels)
    heads = [
        TaskPrediction(t, width, c, norm)
        for t, (c, norm) in enumerate(zip(out_channels, norms, strict=True))
    ]
    return HardParameterSharing(SegNetMTANTrunk(len(out_channels), width), heads)


__all__ = ["SegNetMTANTrunk", "TaskPrediction", "init_published", "segnet_mtan"]
