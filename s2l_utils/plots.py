"""Figures the notebooks draw; each returns a matplotlib figure (``Run.savefig`` stores it)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from sklearn.metrics import roc_curve

from .attacks.metrics import POOLED
from .stats import DOWN, UP
from .world import ImageFolderData


def _show(ax, image: torch.Tensor, title: str | None = None, fontsize: int = 6) -> None:
    ax.imshow(((image.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def world_overview(data: ImageFolderData, size: int, per_split: int = 4, knobs: dict | None = None):
    """One row per domain: ``per_split`` member then ``per_split`` non-member images (public: members only).
    A member that appears more than once in the pre-training set is labelled with its count (×k); ``knobs``
    (name -> value, e.g. the world's ``member_duplicates`` and ``nonmember_shift``) are stated in the title."""
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
                copies = int(picks.iloc[col]["duplicates"])
                _show(ax, images[col], f"×{copies}" if copies > 1 else None)
                ax.axis("on")
                for spine in ax.spines.values():
                    spine.set_color("tab:red" if picks.iloc[col]["split"] == "nonmember" else "tab:blue")
        private = domain in data.private_domains
        axes[row, 0].set_ylabel(f"{domain}\n({'private' if private else 'public'})", rotation=0, ha="right",
                                va="center", fontsize=7)
    title = "The miniature world: blue frame = pre-training member (×k: in it k times), red = held-out non-member"
    if knobs:
        title += "\n" + ", ".join(f"{name} = {value}" for name, value in knobs.items())
    fig.suptitle(title, fontsize=9)
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
    for ax, log in zip(axes, (False, True), strict=True):
        for color, (domain, group) in zip(palette, scores.groupby("domain", sort=False), strict=True):
            fpr, tpr, _ = roc_curve(group["is_member"], group["score"])
            ax.plot(fpr, tpr, color=color, lw=0.8, alpha=0.7, label=domain)
        fpr, tpr, _ = roc_curve(scores["is_member"], scores["score"])
        ax.plot(fpr, tpr, color="black", lw=2, label=POOLED)
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


def roc_by_attack(scores: pd.DataFrame, title: str = "Membership inference, pooled over domains"):
    """One panel per attack (log-log ROC, where low-FPR differences show), one curve per model."""
    attacks = list(dict.fromkeys(scores["attack"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(2.8 * len(attacks), 3), squeeze=False)
    palette = dict(zip(dict.fromkeys(scores["model"]), sns.color_palette("tab10"), strict=False))  # up to 10 models
    for ax, attack in zip(axes[0], attacks, strict=True):
        for model, group in scores[scores["attack"] == attack].groupby("model", sort=False):
            fpr, tpr, _ = roc_curve(group["is_member"], group["score"])
            ax.plot(np.maximum(fpr, 1e-3), np.maximum(tpr, 1e-3), color=palette[model], lw=1.2, label=model)
        ax.plot([1e-3, 1], [1e-3, 1], ls="--", color="grey", lw=0.8)
        ax.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1.05), title=attack, xlabel="FPR")
    axes[0, 0].set_ylabel("TPR")
    axes[0, -1].legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def metric_comparison(table: pd.DataFrame, metric: str = "auc", chance: float | None = 0.5, title: str = ""):
    """Pooled ``metric`` per attack (groups) and model (bars) with 95% CI whiskers, from a tidy metrics table."""
    rows = table[(table["domain"] == POOLED) & (table["metric"] == metric)]
    if rows.empty:
        raise ValueError(f"no pooled {metric!r} rows in the table; it has {', '.join(dict.fromkeys(table['metric']))}")
    attacks, models = list(dict.fromkeys(rows["attack"])), list(dict.fromkeys(rows["model"]))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(attacks) * len(models) + 2), 3.2))
    for j, (model, color) in enumerate(zip(models, sns.color_palette("tab10", len(models)), strict=True)):
        mine = rows[rows["model"] == model].set_index("attack").reindex(attacks)
        x = np.arange(len(attacks)) - 0.4 + width * (j + 0.5)
        err = np.vstack([mine["value"] - mine["lo"], mine["hi"] - mine["value"]]).astype(float)
        ax.bar(x, mine["value"], width, color=color, alpha=0.85, label=model,
               yerr=None if np.isnan(err).all() else err, capsize=1.5, error_kw={"lw": 0.7})
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(attacks)), attacks)
    ax.set(ylabel=f"{metric} (pooled, 95% CI)", title=title)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def distance_histogram(generated: pd.DataFrame, heldout: np.ndarray, threshold: float, title: str = ""):
    """Nearest-training-image distances of generations (per model) and of held-out real images, with the
    extraction threshold: generations left of the line are called copies."""
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.linspace(0, max(generated["distance"].max(), heldout.max()) * 1.05, 40)
    ax.hist(heldout, bins=bins, density=True, color="grey", alpha=0.5, label="held-out non-members")
    for model, group in generated.groupby("model", sort=False):
        ax.hist(group["distance"], bins=bins, density=True, histtype="step", lw=1.3, label=f"generations: {model}")
    ax.axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="distance to nearest training image (tiled RMS)", ylabel="density", title=title)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def copies_by_duplication(table: pd.DataFrame, title: str = ""):
    """Copies per duplication class (``extraction.counts_by_duplication`` rows, with a ``model`` column), one
    bar per model: distinct own members copied (left; a grey bar behind shows the members of the class when
    the table has them) and generations copying them (right). Read: memorisation concentrated on the heavily
    duplicated members shows as bars on the left of each panel only."""
    classes = sorted(table["duplicates"].unique(), reverse=True)
    models = list(dict.fromkeys(table["model"]))
    x, width = np.arange(len(classes)), 0.8 / len(models)
    fig, axes = plt.subplots(1, 2, figsize=(1.2 * len(classes) + 3.5, 2.8))
    for ax, value, label in ((axes[0], "distinct_own", "distinct own members copied"),
                             (axes[1], "extracted_own", "generations copying them")):
        if value == "distinct_own" and "members" in table:
            members = table.groupby("duplicates")["members"].max().reindex(classes)
            ax.bar(x, members, 0.9, color="lightgrey", label="members of the class")
        for k, (model, color) in enumerate(zip(models, sns.color_palette("Set1", len(models)), strict=True)):
            rows = table[table["model"] == model].set_index("duplicates").reindex(classes)
            ax.bar(x + (k - (len(models) - 1) / 2) * width, rows[value].fillna(0), width, color=color, label=model)
        ax.set_xticks(x, [f"{k}x" for k in classes], fontsize=7)
        ax.set(xlabel="times the member appears in pre-training", ylabel=label)
    axes[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def nearest_distance_boxes(matches: pd.DataFrame, threshold: float, title: str = ""):
    """Per model, the distribution of its generations' distance to the nearest training image and to the
    nearest training image of the prompted identity (boxes: quartiles and median; whiskers: 10% and 90%), with
    the extraction threshold: generations left of it are copies. Boxes further right than another model's:
    generations further from the training data."""
    models = list(dict.fromkeys(matches["model"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(models) + 1.2))
    y = np.arange(len(models))
    for offset, column, color, label in ((-0.18, "distance", "tab:blue", "nearest training image"),
                                         (0.18, "own_distance", "tab:orange", "nearest of the prompted identity")):
        data = [matches.loc[matches["model"] == m, column].dropna().to_numpy() for m in models]
        ax.boxplot(data, positions=y + offset, widths=0.3, orientation="horizontal", whis=(10, 90), showfliers=False,
                   patch_artist=True, boxprops={"facecolor": color, "alpha": 0.5},
                   medianprops={"color": "black"}, label=label)
    ax.axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_yticks(y, models, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="distance (tiled RMS)", title=title)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def effect_forest(summary: pd.DataFrame, metric: str = "auc", comparisons: list[str] | None = None,
                  row: str = "method", title: str = ""):
    """Deltas with 95% CIs, one panel per attack, one row per ``row`` value, one colour per comparison; a line
    at 0. Read: a CI entirely right of 0 is an increase the data support."""
    rows = summary[summary["metric"] == metric]
    if comparisons:
        rows = rows[rows["comparison"].isin(comparisons)]
    attacks = list(dict.fromkeys(rows["attack"]))
    labels = list(dict.fromkeys(rows[row].astype(str)))
    kinds = list(dict.fromkeys(rows["comparison"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(2.6 * len(attacks) + 1.5, 0.35 * len(labels) * len(kinds) + 1.2),
                             squeeze=False, sharey=True)
    colors = dict(zip(kinds, sns.color_palette("Set1", len(kinds)), strict=True))
    for ax, attack in zip(axes[0], attacks, strict=True):
        for k, kind in enumerate(kinds):
            sub = rows[(rows["attack"] == attack) & (rows["comparison"] == kind)]
            sub = sub.set_index(sub[row].astype(str)).reindex(labels)
            y = np.arange(len(labels)) + (k - (len(kinds) - 1) / 2) * 0.8 / len(kinds)
            ax.errorbar(sub["delta"], y, xerr=[sub["delta"] - sub["lo"], sub["hi"] - sub["delta"]], fmt="o", ms=3,
                        lw=1, color=colors[kind], label=kind)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(title=attack, xlabel=f"Δ {metric}")
    axes[0, 0].set_yticks(np.arange(len(labels)), labels, fontsize=7)
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(fontsize=6, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def effect_panels(panels: dict[str, pd.DataFrame], row: str = "method", title: str = ""):
    """Deltas with 95% CIs side by side, one panel per entry of ``panels`` (title -> rows with ``row``, series,
    delta, lo, hi; e.g. ``experiment.effect_panels``), one colour per series, a line at 0."""
    labels = list(dict.fromkeys(str(v) for panel in panels.values() for v in panel[row]))
    most = max((panel["series"].nunique() for panel in panels.values()), default=1)
    width = max(len(panels), 1)
    fig, axes = plt.subplots(1, width, figsize=(3.2 * width + 1.5, 0.3 * len(labels) * most + 1.4), squeeze=False,
                             sharey=True)
    for ax, (name, panel) in zip(axes[0], panels.items(), strict=False):  # no panels: one empty axis
        series = list(dict.fromkeys(panel["series"]))
        colors = dict(zip(series, sns.color_palette("Set1", len(series)), strict=True))
        for k, label in enumerate(series):
            sub = panel[panel["series"] == label]
            sub = sub.set_index(sub[row].astype(str)).reindex(labels)
            y = np.arange(len(labels)) + (k - (len(series) - 1) / 2) * 0.8 / len(series)
            ax.errorbar(sub["delta"], y, xerr=[sub["delta"] - sub["lo"], sub["hi"] - sub["delta"]], fmt="o", ms=3,
                        lw=1, color=colors[label], label=label)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=8)
        ax.legend(fontsize=6, loc="best")
    axes[0, 0].set_yticks(np.arange(len(labels)), labels, fontsize=7)
    axes[0, 0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def effect_heatmap(summary: pd.DataFrame, x: str, y: str, attack: str, metric: str = "advantage", title: str = ""):
    """The S2L effect over two swept parameters for one attack: colour = delta, text = delta and its CI; cells
    whose verdict (after the multiplicity correction) is up or down are marked with *."""
    rows = summary[(summary["attack"] == attack) & (summary["metric"] == metric)]
    value = rows.pivot_table(index=y, columns=x, values="delta", sort=True)
    text = rows.assign(label=[f"{d:+.3f}{'*' if verdict in (UP, DOWN) else ''}\n[{lo:+.2f},{hi:+.2f}]"
                              for d, lo, hi, verdict in zip(rows["delta"], rows["lo"], rows["hi"], rows["verdict"],
                                                            strict=True)])
    labels = text.pivot_table(index=y, columns=x, values="label", aggfunc="first", sort=True)
    fig, ax = plt.subplots(figsize=(1.5 * value.shape[1] + 2, 0.9 * value.shape[0] + 1.2))
    limit = max(float(np.nanmax(np.abs(value.to_numpy()))), 1e-3)
    sns.heatmap(value, annot=labels.reindex_like(value), fmt="", cmap="RdBu_r", vmin=-limit, vmax=limit, ax=ax,
                annot_kws={"fontsize": 6}, cbar_kws={"label": f"Δ {metric}"})
    ax.set(title=title or f"S2L effect on {attack} {metric} (S2L − control); * = corrected verdict up/down")
    fig.tight_layout()
    return fig


def ablation_lines(summary: pd.DataFrame, axis: str, metric: str = "auc", log_x: bool = False, title: str = ""):
    """Delta (95% CI band) against one swept parameter, one panel per attack, one line per comparison."""
    rows = summary[summary["metric"] == metric]
    attacks = list(dict.fromkeys(rows["attack"]))
    fig, axes = plt.subplots(1, len(attacks), figsize=(2.6 * len(attacks) + 1, 2.8), squeeze=False, sharey=True)
    categorical = not pd.api.types.is_numeric_dtype(rows[axis])
    order = list(dict.fromkeys(rows[axis])) if categorical else sorted(rows[axis].unique())
    for ax, attack in zip(axes[0], attacks, strict=True):
        for (kind, group), color in zip(rows[rows["attack"] == attack].groupby("comparison", sort=False),
                                        sns.color_palette("Set1"), strict=False):  # up to 9 comparisons
            group = group.set_index(axis).reindex(order)
            x = np.arange(len(order)) if categorical else np.asarray(order, float)
            ax.plot(x, group["delta"], marker="o", ms=3, color=color, label=kind)
            ax.fill_between(x, group["lo"].astype(float), group["hi"].astype(float), color=color, alpha=0.2)
        ax.axhline(0, color="grey", lw=0.8)
        if categorical:
            ax.set_xticks(np.arange(len(order)), order, fontsize=7, rotation=30)
        elif log_x:
            ax.set_xscale("log")
        ax.set(title=attack, xlabel=axis)
    axes[0, 0].set_ylabel(f"Δ {metric}")
    axes[0, -1].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def regime_grid(panels: dict[str, pd.DataFrame], x_label: str = "SP guidance", title: str = ""):
    """Effects across a regime grid: one row of panels per regime (``regime`` column), one column per entry of
    ``panels`` (title -> rows with regime, x, method, delta, lo, hi, verdict), the x values (``x_label``) on the
    x axis, one colour per method, 95% CIs as bars, a filled marker where the corrected verdict is up or
    down, a line at 0."""
    regimes = list(dict.fromkeys(r for panel in panels.values() for r in panel["regime"]))
    methods = list(dict.fromkeys(m for panel in panels.values() for m in panel["method"]))
    colors = dict(zip(methods, sns.color_palette("Set1", len(methods)), strict=True))
    fig, axes = plt.subplots(len(regimes), len(panels), figsize=(2.9 * len(panels) + 0.6, 2.3 * len(regimes) + 0.8),
                             squeeze=False, sharex=True, sharey="col")
    for j, (name, panel) in enumerate(panels.items()):
        xs = sorted(panel["x"].unique())
        for i, regime in enumerate(regimes):
            ax = axes[i, j]
            for k, method in enumerate(methods):
                sub = panel[(panel["regime"] == regime) & (panel["method"] == method)].set_index("x").reindex(xs)
                x = np.arange(len(xs)) + (k - (len(methods) - 1) / 2) * 0.6 / max(len(methods), 1)
                # a percentile CI need not contain its point estimate (e.g. a median over few generations)
                spread = np.clip([sub["delta"] - sub["lo"], sub["hi"] - sub["delta"]], 0, None)
                ax.errorbar(x, sub["delta"], yerr=spread, fmt="none", lw=1, color=colors[method])
                judged = sub["verdict"].isin([UP, DOWN]).to_numpy()
                ax.scatter(x, sub["delta"], s=14, color=colors[method], label=method if i == j == 0 else None,
                           facecolors=[colors[method] if v else "white" for v in judged], zorder=3)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(np.arange(len(xs)), [f"{v:g}" for v in xs], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(regime, fontsize=8)
            if i == len(regimes) - 1:
                ax.set_xlabel(x_label, fontsize=7)
    fig.legend(loc="upper right", fontsize=7, ncol=len(methods))
    if title:
        fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig
