"""DJSRH networks as the DUCH authors ran them on remote-sensing features (their ImgNetRS / TxtNetRS).

Per modality: L2-normalised feature -> Linear(d, hidden) -> BatchNorm -> ReLU -> Linear(hidden, bits)
-> tanh(alpha h), with alpha = sqrt(epoch + 1) set at the start of each epoch. The code is sign(h);
alpha only sharpens the training outputs. JDSH uses the same networks (models/jdsh.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.duch import to_binary

HIDDEN_UNITS = 4096


class L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


class ScaledTanh(nn.Module):
    """tanh(alpha x); alpha is a plain attribute (not a parameter), set by ``set_alpha``."""

    def __init__(self):
        super().__init__()
        self.alpha = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x)


def epoch_alpha(epoch: int) -> float:
    """alpha = sqrt(epoch + 1), epoch counted from 0."""
    return math.sqrt(epoch + 1.0)


class RSHashNet(nn.Module):
    """One modality's hashing network; ``net[-2]`` is the last Linear (its out_features are the bits)."""

    def __init__(self, in_features: int, bits: int, hidden: int = HIDDEN_UNITS):
        super().__init__()
        self.net = nn.Sequential(
            L2Normalize(),
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, bits),
            ScaledTanh(),
        )

    @property
    def in_features(self) -> int:
        return self.net[1].in_features

    def set_alpha(self, epoch: int) -> None:
        self.net[-1].alpha = epoch_alpha(epoch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DJSRH(nn.Module):
    """Image and text networks, saved and loaded as one state dict."""

    method = "djsrh"

    def __init__(self, image_dim: int, caption_dim: int, bits: int, hidden: int = HIDDEN_UNITS):
        super().__init__()
        self.image_net = RSHashNet(image_dim, bits, hidden)
        self.text_net = RSHashNet(caption_dim, bits, hidden)

    def set_alpha(self, epoch: int) -> None:
        self.image_net.set_alpha(epoch)
        self.text_net.set_alpha(epoch)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """±1 codes of both modalities in eval mode, sign(0) taken as +1 (as DUCH)."""
        was_training = self.training
        self.eval()
        img, txt = self.image_net(images), self.text_net(captions)
        self.train(was_training)
        return to_binary(img), to_binary(txt)
