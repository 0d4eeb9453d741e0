"""DJSRH (Su et al., ICCV 2019) as the DUCH authors ran it: joint similarity matrix and reconstruction loss.

Per batch of n (image, caption) features:
  S_I = 2 cos(x_i, x_j) - 1,  S_T = 2 cos(y_i, y_j) - 1          (cosines of the L2-normalised input features)
  S~  = beta S_I + (1 - beta) S_T
  S   = mu ((1 - eta) S~ + eta S~ S~^T / n)
  L   = lambda1 MSE(B_I B_I^T, S) + MSE(B_I B_T^T, S) + lambda2 MSE(B_T B_T^T, S)
with B_I, B_T the L2-normalised network outputs (so B B^T are cosines) and MSE the mean over the n x n entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TERMS = ("total", "image_image", "image_text", "text_text")


def modality_similarity(features: torch.Tensor) -> torch.Tensor:
    """2 cos - 1 between every pair of rows: values in [-3, 1], 1 on the diagonal."""
    f = F.normalize(features, dim=1)
    return f @ f.T * 2 - 1


def similarity(
    img_features: torch.Tensor, txt_features: torch.Tensor, beta: float, eta: float, mu: float
) -> torch.Tensor:
    s_tilde = beta * modality_similarity(img_features) + (1 - beta) * modality_similarity(txt_features)
    n = s_tilde.shape[0]
    return mu * ((1 - eta) * s_tilde + eta * (s_tilde @ s_tilde.T) / n)


def code_similarities(code_i: torch.Tensor, code_t: torch.Tensor):
    """Cosines image-image, image-text, text-text of the network outputs."""
    b_i, b_t = F.normalize(code_i, dim=1), F.normalize(code_t, dim=1)
    return b_i @ b_i.T, b_i @ b_t.T, b_t @ b_t.T


def loss(
    code_i: torch.Tensor, code_t: torch.Tensor, S: torch.Tensor, lambda1: float, lambda2: float
) -> dict[str, torch.Tensor]:
    """The weighted total and its unweighted terms."""
    ii, it, tt = code_similarities(code_i, code_t)
    terms = {"image_image": F.mse_loss(ii, S), "image_text": F.mse_loss(it, S), "text_text": F.mse_loss(tt, S)}
    terms["total"] = lambda1 * terms["image_image"] + terms["image_text"] + lambda2 * terms["text_text"]
    return terms


def batch_loss(code_i, code_t, img_features, txt_features, params: dict) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        S = similarity(img_features, txt_features, params["beta"], params["eta"], params["mu"])
    return loss(code_i, code_t, S, params["lambda1"], params["lambda2"])


def term_weights(params: dict) -> dict[str, float]:
    return {"image_image": params["lambda1"], "image_text": 1.0, "text_text": params["lambda2"]}
