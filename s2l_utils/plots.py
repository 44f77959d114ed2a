"""Figures the notebooks draw; each returns a matplotlib figure (``Run.savefig`` stores it)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.metrics import roc_curve

from .world import ImageFolderData


def _show(ax, image: torch.Tensor, title: str | None = None, fontsize: int = 6) -> None:
    ax.imshow(((image.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def world_overview(data: ImageFolderData, size: int, per_split: int = 4):
    """One row per domain: ``per_split`` member then ``per_split`` non-member images (public: members only)."""
    domains = data.private_domains + data.public_domains
    cols = 2 * per_split
    fig, axes = plt.subplots(len(domains), cols, figsize=(cols * 0.8 + 1.8, len(domains) * 0.8 + 0.4),
                             squeeze=False)
    for row, domain in enumerate(domains):
        picks = pd.concat([data.split(domain, s).head(per_split if data.split(domain, "nonmember").size else cols)
                           for s in ("member", "nonmember")])
        images = data.load_images(picks, size) if len(picks) else []
        for col, ax in enumerate(axes[row]):
            ax.axis("off")
            if col < len(picks):
                _show(ax, images[col])
                ax.axis("on")
                for spine in ax.spines.values():
                    spine.set_color("tab:red" if picks.iloc[col]["split"] == "nonmember" else "tab:blue")
        private = domain in data.private_domains
        axes[row, 0].set_ylabel(f"{domain}\n({'private' if private else 'public'})", rotation=0, ha="right",
                                va="center", fontsize=7)
    fig.suptitle("The miniature world: blue frame = pre-training member, red = held-out non-member", fontsize=9)
    fig.tight_layout()
    return fig


def loss_curve(history: pd.DataFrame, window: int = 50, title: str = "Pretraining loss of the target"):
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(history["step"], history["loss"], alpha=0.3, lw=0.8, label="per step")
    ax.plot(history["step"], history["loss"].rolling(window, min_periods=1).mean(), lw=1.5,
            label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="ε-MSE", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def roc_curves(scores: pd.DataFrame, title: str = "Loss attack ROC"):
    """ROC per domain (thin) and pooled (thick) from a table with columns domain, is_member, score."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    palette = sns.color_palette("husl", scores["domain"].nunique())
    for ax, log in zip(axes, (False, True)):
        for color, (domain, group) in zip(palette, scores.groupby("domain", sort=False)):
            fpr, tpr, _ = roc_curve(group["is_member"], group["score"])
            ax.plot(fpr, tpr, color=color, lw=0.8, alpha=0.7, label=domain)
        fpr, tpr, _ = roc_curve(scores["is_member"], scores["score"])
        ax.plot(fpr, tpr, color="black", lw=2, label="pooled")
        lo = 1e-3 if log else 0
        ax.plot([max(lo, 1e-3), 1], [max(lo, 1e-3), 1], ls="--", color="grey", lw=0.8)
        ax.set(xlabel="false positive rate", ylabel="true positive rate")
        if log:
            ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1.05), title="log scale")
        else:
            ax.set(title=title)
    axes[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def nearest_pairs(samples: torch.Tensor, neighbours: torch.Tensor, distances, labels: list[str]):
    """Each generation (top) above its nearest training image (bottom), with the distance."""
    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(n * 0.95, 2.5), squeeze=False)
    for i in range(n):
        _show(axes[0, i], samples[i], labels[i], fontsize=5)
        _show(axes[1, i], neighbours[i], f"d={float(distances[i]):.3f}", fontsize=6)
    axes[0, 0].set_ylabel("generated", fontsize=7)
    axes[1, 0].set_ylabel("nearest\ntraining", fontsize=7)
    fig.tight_layout()
    return fig


def domain_bars(table: pd.DataFrame, value: str, lo: str | None = None, hi: str | None = None,
                chance: float | None = 0.5, title: str = ""):
    """A horizontal bar per domain with optional CI whiskers and a chance line."""
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(table) + 1))
    y = np.arange(len(table))
    err = None
    if lo and hi:
        err = np.vstack([table[value] - table[lo], table[hi] - table[value]])
    ax.barh(y, table[value], xerr=err, color="tab:blue", alpha=0.8, capsize=2)
    ax.set_yticks(y, table["domain"], fontsize=7)
    if chance is not None:
        ax.axvline(chance, color="grey", ls="--", lw=0.8)
    ax.set(xlabel=value, title=title)
    fig.tight_layout()
    return fig


def image_rows(rows: dict[str, torch.Tensor], title: str = "", per_row: int = 8):
    """One labelled row of images per entry (e.g. real members / SP set, or target / fine-tuned)."""
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 0.9 + 1.5, len(rows) * 0.95 + 0.4),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            if c < len(images):
                _show(ax, images[c])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
