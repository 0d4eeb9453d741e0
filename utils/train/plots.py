"""PNG plots of a run: PR curves, P@K curves and training losses (matplotlib, no display needed).

Legends sit below the axes, so they never cover a curve; retrieval plots show the chance level.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.io import atomic_path
from utils.retrieval.evaluation import DIRECTION_TITLES

CHANCE_STYLE = dict(color="0.35", linestyle="--", linewidth=1.2)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6.4, 5.2))


def _legend_below(ax, ncol: int = 3) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=ncol, frameon=False, fontsize="small")


def _save(plt, fig, ax, path: str | Path) -> list[str]:
    """Write the PNG; returns the legend's labels (what the plot shows, for tests and callers)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    plt.close(fig)
    return labels


def _chance_line(ax, metrics: dict) -> None:
    """One dashed line per distinct chance level (the share of relevant database items)."""
    levels = sorted({round(float(v), 6) for v in metrics.get("chance", {}).values()})
    for i, level in enumerate(levels):
        names = [DIRECTION_TITLES[n] for n, v in metrics["chance"].items() if round(float(v), 6) == level]
        label = f"chance {level:.3f}" + ("" if len(levels) == 1 else f" ({', '.join(names)})")
        ax.axhline(level, label=label, **CHANCE_STYLE)


# curves of different directions often coincide: distinct markers and line styles keep each visible
_STYLES = [dict(marker="o", linestyle="-"), dict(marker="s", linestyle="--"), dict(marker="^", linestyle="-."),
           dict(marker="x", linestyle=":")]


def plot_pr_curves(metrics: dict, path: str | Path, title: str = "") -> list[str]:
    plt, fig, ax = _figure()
    for style, (name, precision) in zip(_STYLES, metrics["precision_radius"].items()):
        ax.plot(metrics["recall_radius"][name], precision, markersize=4, label=DIRECTION_TITLES[name], **style)
    _chance_line(ax, metrics)
    ax.set(xlabel="recall", ylabel="precision (0 at a radius that retrieves nothing)",
           title=f"PR curve over Hamming radii {title}".strip(), xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _save(plt, fig, ax, path)


def plot_p_at_k(metrics: dict, path: str | Path, title: str = "") -> list[str]:
    plt, fig, ax = _figure()
    for style, (name, curve) in zip(_STYLES, metrics["p@k"].items()):
        ks = [int(k) for k in curve]
        ax.plot(ks, list(curve.values()), markersize=4, label=DIRECTION_TITLES[name], **style)
    _chance_line(ax, metrics)
    ax.set(xlabel="K (top retrieved)", ylabel="precision@K", title=f"P@K {title}".strip(), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _save(plt, fig, ax, path)


def plot_losses(history: list[dict], path: str | Path, title: str = "",
                weights: dict[str, float] | None = None) -> list[str]:
    """Top: the weighted total the hashing networks minimise. Bottom: each weighted term of it (log scale).

    ``history`` holds each term unweighted and summed over the epoch; ``weights`` are alpha, beta and
    gamma by term (contrastive has weight 1). The discriminator's loss has its own optimiser and is not
    part of the total: it is drawn apart, dotted. Returns the legend labels of both panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (top, ax) = plt.subplots(2, 1, figsize=(6.4, 7.2), sharex=True, height_ratios=(1, 1.4))
    weights = {"contrastive": 1.0, **(weights or {})}
    epochs = [h["epoch"] for h in history]
    total = np.array([h["loss"]["total"] for h in history])
    top.plot(epochs, total, color="black", linewidth=2, marker="o", markersize=3,
             label="total = L_c + alpha L_adv + beta L_q + gamma L_bb")
    top.set(ylabel="weighted total", title=f"training losses {title}".strip())
    top.grid(alpha=0.3)
    top.legend(loc="best", frameon=True, fontsize="small")  # "best" places it where it covers no point
    symbols = {"contrastive": "L_c", "adversarial": "alpha L_adv", "quantization": "beta L_q",
               "bit_balance": "gamma L_bb"}
    for style, (term, symbol) in zip(_STYLES, symbols.items()):
        if term not in weights or term not in history[0]["loss"]:
            continue
        values = np.array([h["loss"][term] for h in history]) * weights[term]
        if (values > 0).any():
            ax.plot(epochs, values, linewidth=1.2, markersize=3, label=f"{symbol} (x {weights[term]:g})", **style)
    if "discriminator" in history[0]["loss"]:
        values = np.array([h["loss"]["discriminator"] for h in history])
        if (values > 0).any():
            ax.plot(epochs, values, color="0.5", linewidth=1, linestyle=(0, (1, 1)), marker=".",
                    label="discriminator loss (own optimiser, not in total)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(set(epochs)) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    ax.set(xlabel="epoch (1-based)", ylabel="weighted term (as labelled)", yscale="log")
    ax.grid(alpha=0.3)
    _legend_below(ax, ncol=2)
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    return labels + _save(plt, fig, ax, path)
