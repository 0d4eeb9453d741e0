"""PNG plots of a run: PR curves, P@K curves and training losses (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

from utils.retrieval.evaluation import DIRECTION_TITLES
from utils.io import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 4.5))


def _save(plt, fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def plot_pr_curves(metrics: dict, path: str | Path, title: str = "") -> None:
    plt, fig, ax = _figure()
    for name, precision in metrics["precision_radius"].items():
        ax.plot(metrics["recall_radius"][name], precision, marker=".", label=DIRECTION_TITLES[name])
    ax.set(xlabel="recall", ylabel="precision", title=f"PR curve over Hamming radii {title}".strip(), xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    _save(plt, fig, path)


def plot_p_at_k(metrics: dict, path: str | Path, title: str = "") -> None:
    plt, fig, ax = _figure()
    for name, curve in metrics["p@k"].items():
        ks = [int(k) for k in curve]
        ax.plot(ks, list(curve.values()), marker=".", label=DIRECTION_TITLES[name])
    ax.set(xlabel="K (top retrieved)", ylabel="precision@K", title=f"P@K {title}".strip(), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    _save(plt, fig, path)


def plot_losses(history: list[dict], path: str | Path, title: str = "") -> None:
    plt, fig, ax = _figure()
    epochs = [h["epoch"] for h in history]
    for term in history[0]["loss"] if history else []:
        values = [h["loss"][term] for h in history]
        if any(v > 0 for v in values):
            ax.plot(epochs, values, label=term)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch (from 0)", ylabel="unweighted loss term, summed over the epoch", yscale="log", title=f"training losses {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend()
    _save(plt, fig, path)
