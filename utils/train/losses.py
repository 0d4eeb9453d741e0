"""The DUCH losses (docs/method.md). Sums over the batch, not means, as in the original."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRADIENT_PENALTY_WEIGHT = 10.0
EPS = 1e-6


def ntxent(a: torch.Tensor, b: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """NT-Xent between paired rows of ``a`` and ``b``, summed over the 2n anchors.

    neg_k = max(sum_l exp(<z_k, z_l>/tau) - e^(1/tau), 1e-6) over all 2n rows (self term removed),
    pos_k = exp(<a_k, b_k>/tau); loss = -sum log(pos / (neg + 1e-6)).
    """
    z = F.normalize(torch.cat([a, b], dim=0), dim=1)
    similarity = torch.exp(z @ z.T / tau)
    negatives = (similarity.sum(dim=1) - math.exp(1.0 / tau)).clamp(min=EPS)
    positives = torch.exp((F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1) / tau)
    positives = torch.cat([positives, positives], dim=0)
    return -torch.log(positives / (negatives + EPS)).sum()


def contrastive_loss(h_i1, h_i2, h_t1, h_t2, weights=(1.0, 1.0, 1.0), tau: float = 1.0) -> torch.Tensor:
    """L_c = w0 NTX(i1, t1) + w1 NTX(i1, i2) + w2 NTX(t1, t2): inter-modal, intra-image, intra-text.

    ``tau`` is the NT-Xent temperature; 1, the original's, gives its formula unchanged.
    """
    return (
        weights[0] * ntxent(h_i1, h_t1, tau) + weights[1] * ntxent(h_i1, h_i2, tau)
        + weights[2] * ntxent(h_t1, h_t2, tau)
    )


def adversarial_generator_loss(discriminator, fakes) -> torch.Tensor:
    """L_adv = -sum log sigmoid(D(h)) over the given codes (the generator wants D to call them real)."""
    return sum(-F.logsigmoid(discriminator(h)).sum() for h in fakes)


def quantization_loss(codes_b: torch.Tensor, outputs) -> torch.Tensor:
    """L_q = sum of ||B_k - h_k||^2 over the batch and the views."""
    return sum(((codes_b - h) ** 2).sum() for h in outputs)


def bit_balance_loss(outputs) -> torch.Tensor:
    """L_bb = sum over views and batch of (sum over bits of h)^2: each code balanced in +1 and -1."""
    return sum((h.sum(dim=1) ** 2).sum() for h in outputs)


def gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """mean((||grad D(x)||_2 - 1)^2) at x = a real + (1 - a) fake, a ~ U(0, 1) elementwise."""
    alpha = torch.rand_like(real)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad = torch.autograd.grad(discriminator(x).sum(), x, create_graph=True)[0]
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def discriminator_loss(discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(D(real)) - mean log(1 - sigmoid(D(fake))) + 10 * gradient penalty."""
    loss = -F.logsigmoid(discriminator(real)).mean() - F.logsigmoid(-discriminator(fake)).mean()
    return loss + GRADIENT_PENALTY_WEIGHT * gradient_penalty(discriminator, real, fake)
