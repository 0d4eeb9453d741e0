"""JDSH (Liu et al., SIGIR 2020) as the DUCH authors ran it: joint-modal similarity and reconstruction loss.

Per batch of n (image, caption) features, with S_I, S_T as DJSRH's (2 cos - 1 of the input features):
  S_high = rownorm(S_I) rownorm(S_T)^T
  S_     = alpha S_I + beta S_T + lamb (S_high + S_high^T) / 2
  reweighting (the paper's distribution-based similarity weighting; off by default, as the authors ran it):
    left = loc_left - alpha_left scale_left,  right = loc_right + beta_right scale_right
    S_ <- (1 + l1 exp(-(S_ - min))) S_  where S_ < left;  (1 + l2 exp(S_ - max)) S_  where S_ > right
  S      = mu S_
  L = intra MSE(B_I B_I^T, S) + [MSE(B_I B_T^T, S) + MSE(B_T B_I^T, S) - mean_k <B_I,k, B_T,k>]
      + intra MSE(B_T B_T^T, S)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.train.losses_djsrh import code_similarities, modality_similarity

LOSS_TERMS = ("total", "image_image", "image_text", "text_text")


def joint_similarity(
    img_features: torch.Tensor, txt_features: torch.Tensor, alpha: float, beta: float, lamb: float
) -> torch.Tensor:
    """S_ before reweighting and mu."""
    s_i, s_t = modality_similarity(img_features), modality_similarity(txt_features)
    s_high = F.normalize(s_i, dim=1) @ F.normalize(s_t, dim=1).T
    return alpha * s_i + beta * s_t + lamb * (s_high + s_high.T) / 2


def reweight(S: torch.Tensor, p: dict) -> torch.Tensor:
    """Scale the values below the left threshold and above the right one (masks taken on the input values)."""
    left = p["loc_left"] - p["alpha_left"] * p["scale_left"]
    right = p["loc_right"] + p["beta_right"] * p["scale_right"]
    low = (1 + p["l1"] * torch.exp(-(S - p["min"]))) * S
    high = (1 + p["l2"] * torch.exp(S - p["max"])) * S
    return torch.where(S < left, low, torch.where(S > right, high, S))


def similarity(img_features: torch.Tensor, txt_features: torch.Tensor, p: dict) -> torch.Tensor:
    S = joint_similarity(img_features, txt_features, p["alpha"], p["beta"], p["lamb"])
    if p.get("reweight", False):
        S = reweight(S, p)
    return p["mu"] * S


def loss(code_i: torch.Tensor, code_t: torch.Tensor, S: torch.Tensor, intra: float) -> dict[str, torch.Tensor]:
    ii, it, tt = code_similarities(code_i, code_t)
    b_i, b_t = F.normalize(code_i, dim=1), F.normalize(code_t, dim=1)
    cross = F.mse_loss(it, S) + F.mse_loss(it.T, S) - (b_i * b_t).sum(dim=1).mean()
    terms = {"image_image": F.mse_loss(ii, S), "image_text": cross, "text_text": F.mse_loss(tt, S)}
    terms["total"] = intra * terms["image_image"] + terms["image_text"] + intra * terms["text_text"]
    return terms


def batch_loss(code_i, code_t, img_features, txt_features, params: dict) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        S = similarity(img_features, txt_features, params)
    return loss(code_i, code_t, S, params["intra"])


def term_weights(params: dict) -> dict[str, float]:
    return {"image_image": params["intra"], "image_text": 1.0, "text_text": params["intra"]}
