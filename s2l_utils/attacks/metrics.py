"""Membership-inference metrics: ROC AUC, attack accuracy, strict TPR at low FPR, bootstrap CIs.

Convention everywhere: a higher score means "more likely a member".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def _checked(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    members, nonmembers = np.asarray(member_scores, float).ravel(), np.asarray(nonmember_scores, float).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(f"need members and non-members, got {members.size} and {nonmembers.size} scores")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("scores contain NaN or infinity")
    return members, nonmembers


def batched_metrics(members: np.ndarray, nonmembers: np.ndarray, max_fprs: tuple[float, ...]) -> dict:
    """AUC, ASR and strict TPR@FPR for each row of (B, M) member and (B, N) non-member score arrays at once,
    so thousands of bootstrap draws cost one vectorised pass instead of thousands of ROC curves."""
    n_m, n_n = members.shape[1], nonmembers.shape[1]
    combined = np.concatenate([members, nonmembers], axis=1)
    # AUC = P(member > non-member) + ½ P(tie): the Mann-Whitney statistic from average ranks
    ranks = rankdata(combined, axis=1)
    auc = (ranks[:, :n_m].sum(1) - n_m * (n_m + 1) / 2) / (n_m * n_n)
    # strict TPR at FPR <= x: at most k = floor(xN) non-members may reach the threshold, so the threshold must
    # lie above the (k+1)-th largest non-member; TPR = share of members strictly above it
    descending = -np.sort(-nonmembers, axis=1)
    tpr = {}
    for x in max_fprs:
        k = int(np.floor(x * n_n + 1e-9))
        tpr[x] = np.ones(len(members)) if k >= n_n else (members > descending[:, k:k + 1]).mean(1)
    # ASR: best accuracy over thresholds "score >= t"; cuts may only fall between distinct values
    order = np.argsort(-combined, axis=1, kind="stable")
    values = np.take_along_axis(combined, order, 1)
    is_member = order < n_m
    correct = np.cumsum(is_member, 1) + (n_n - np.cumsum(~is_member, 1))  # threshold at each sorted value
    cut_allowed = np.ones_like(values, dtype=bool)
    cut_allowed[:, :-1] = values[:, :-1] != values[:, 1:]
    best = np.where(cut_allowed, correct, 0).max(1)
    asr = np.maximum(best, n_n) / (n_m + n_n)  # n_n: the threshold above every score
    return {"auc": auc, "asr": asr, **{f"tpr@{x:.1%}fpr".replace(".0%", "%"): v for x, v in tpr.items()}}


def roc_auc(member_scores, nonmember_scores) -> float:
    members, nonmembers = _checked(member_scores, nonmember_scores)
    return float(batched_metrics(members[None], nonmembers[None], ())["auc"][0])


def tpr_at_fpr(member_scores, nonmember_scores, max_fpr: float) -> float:
    """Largest TPR among thresholds whose FPR is <= ``max_fpr`` (never the point with the closest FPR)."""
    members, nonmembers = _checked(member_scores, nonmember_scores)
    metrics = batched_metrics(members[None], nonmembers[None], (max_fpr,))
    return float(next(v for k, v in metrics.items() if k.startswith("tpr@"))[0])


def attack_accuracy(member_scores, nonmember_scores) -> float:
    """ASR: accuracy of the best single threshold, with members and non-members weighted as given."""
    members, nonmembers = _checked(member_scores, nonmember_scores)
    return float(batched_metrics(members[None], nonmembers[None], ())["asr"][0])


def membership_metrics(member_scores, nonmember_scores, n_bootstrap: int = 500, seed: int = 0) -> dict:
    """AUC, ASR and TPR at 1% / 0.1% FPR, with stratified bootstrap 95% CIs (``*_lo``, ``*_hi``)."""
    members, nonmembers = _checked(member_scores, nonmember_scores)
    fprs = (0.01, 0.001)
    out = {name: float(v[0]) for name, v in batched_metrics(members[None], nonmembers[None], fprs).items()}
    out.update(n_members=int(members.size), n_nonmembers=int(nonmembers.size))
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        draws = batched_metrics(members[rng.integers(0, members.size, (n_bootstrap, members.size))],
                                 nonmembers[rng.integers(0, nonmembers.size, (n_bootstrap, nonmembers.size))], fprs)
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
