"""The DUCH networks: one hashing net per modality and the adversarial discriminator."""
from __future__ import annotations

import torch
from torch import nn

HIDDEN_UNITS = 4096


class HashingNet(nn.Module):
    """Feature -> Linear(d, 4096) -> BatchNorm -> ReLU -> Linear(4096, bits) -> tanh, codes in (-1, 1)."""

    def __init__(self, in_features: int, bits: int, hidden: int = HIDDEN_UNITS):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, bits),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_views(self, *views: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``tuple(self(x) for x in views)`` with each linear layer one GEMM over the rows of all views (larger
        GEMMs run nearer the machine's rate); batch norm still normalises each view by its own statistics and
        updates its running statistics view after view, as separate calls would."""
        first, norm, relu, second, tanh = self.net
        rows = [len(x) for x in views]
        hidden = first(torch.cat(views))
        hidden = torch.cat([norm(part) for part in hidden.split(rows)])
        return tanh(second(relu(hidden))).split(rows)


class Discriminator(nn.Module):
    """Hash code -> Linear(bits, 2 bits) -> BatchNorm -> ReLU -> Linear(2 bits, 1) logit."""

    def __init__(self, bits: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(bits, 2 * bits),
            nn.BatchNorm1d(2 * bits),
            nn.ReLU(inplace=True),
            nn.Linear(2 * bits, 1),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.net(codes)


class DUCH(nn.Module):
    """Both hashing nets and the discriminator, saved and loaded as one state dict."""

    def __init__(self, image_dim: int, caption_dim: int, bits: int):
        super().__init__()
        self.image_net = HashingNet(image_dim, bits)
        self.text_net = HashingNet(caption_dim, bits)
        self.discriminator = Discriminator(bits)

    def hashing_parameters(self):
        return list(self.image_net.parameters()) + list(self.text_net.parameters())

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """±1 codes of both modalities in eval mode: sign(net(x)), with sign(0) taken as +1."""
        was_training = self.training
        self.eval()
        img = self.image_net(images)
        txt = self.text_net(captions)
        self.train(was_training)
        return to_binary(img), to_binary(txt)


def to_binary(h: torch.Tensor) -> torch.Tensor:
    return torch.where(h >= 0, 1.0, -1.0).to(h.dtype)
