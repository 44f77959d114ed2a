"""Membership-inference metrics: ROC AUC, attack accuracy, strict TPR at low FPR, bootstrap CIs.

Convention everywhere: a higher score means "more likely a member".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve


def _labelled(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    members, nonmembers = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(f"need members and non-members, got {members.size} and {nonmembers.size} scores")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("scores contain NaN or infinity")
    labels = np.r_[np.ones(members.size), np.zeros(nonmembers.size)]
    return labels, np.r_[members, nonmembers]


def roc_auc(member_scores, nonmember_scores) -> float:
    labels, scores = _labelled(member_scores, nonmember_scores)
    return float(roc_auc_score(labels, scores))


def tpr_at_fpr(member_scores, nonmember_scores, max_fpr: float) -> float:
    """Largest TPR among thresholds whose FPR is <= ``max_fpr`` (never the point with the closest FPR)."""
    labels, scores = _labelled(member_scores, nonmember_scores)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def attack_accuracy(member_scores, nonmember_scores) -> float:
    """ASR: accuracy of the best single threshold, with members and non-members weighted as given."""
    labels, scores = _labelled(member_scores, nonmember_scores)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    n_pos, n_neg = labels.sum(), labels.size - labels.sum()
    return float(((tpr * n_pos + (1 - fpr) * n_neg) / labels.size).max())


def membership_metrics(member_scores, nonmember_scores, n_bootstrap: int = 500, seed: int = 0) -> dict:
    """AUC, ASR and TPR at 1% / 0.1% FPR, with stratified bootstrap 95% CIs (``*_lo``, ``*_hi``)."""
    members, nonmembers = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    metrics = {"auc": roc_auc, "asr": attack_accuracy,
               "tpr@1%fpr": lambda m, n: tpr_at_fpr(m, n, 0.01),
               "tpr@0.1%fpr": lambda m, n: tpr_at_fpr(m, n, 0.001)}
    out = {name: fn(members, nonmembers) for name, fn in metrics.items()}
    out.update(n_members=int(members.size), n_nonmembers=int(nonmembers.size))
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        draws = {name: [] for name in metrics}
        for _ in range(n_bootstrap):
            m = members[rng.integers(0, members.size, members.size)]
            n = nonmembers[rng.integers(0, nonmembers.size, nonmembers.size)]
            for name, fn in metrics.items():
                draws[name].append(fn(m, n))
        for name, values in draws.items():
            out[f"{name}_lo"], out[f"{name}_hi"] = (float(v) for v in np.percentile(values, [2.5, 97.5]))
    return out


def metrics_by_domain(scores, n_bootstrap: int = 500, seed: int = 0):
    """One row per domain plus a ``pooled`` row, from a table with columns domain, is_member, score."""
    rows = []
    groups = [*scores.groupby("domain", sort=False), ("pooled", scores)]
    for domain, group in groups:
        member = group.loc[group["is_member"], "score"]
        nonmember = group.loc[~group["is_member"], "score"]
        rows.append({"domain": domain, **membership_metrics(member, nonmember, n_bootstrap, seed)})
    return pd.DataFrame(rows)
