"""Membership-inference metrics: ROC AUC, advantage, ASR (balanced accuracy), strict TPR at low FPR, bootstrap CIs.

A higher score means "more likely a member". ``advantage`` = |AUC - 0.5| is the attack's strength whichever way
its score points; ``asr`` is the balanced accuracy of the best threshold (0.5 for a constant score);
``tpr@0fp`` is the TPR of the best threshold that admits no non-member; ``tpr@1%fpr`` (and ``tpr@0.1%fpr``) are
NaN with fewer than 1/FPR non-members.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MEMBERSHIP_METRICS = ("auc", "advantage", "asr", "tpr@0fp", "tpr@1%fpr", "tpr@0.1%fpr")
POOLED = "pooled"  # the domain of a row over every domain
_ELEMENTS_PER_CHUNK = 4_000_000  # bounds the (rows, resamples, thresholds) arrays of one pass


def tpr_name(max_fpr: float) -> str:
    """``tpr@0fp`` for 0, else e.g. ``tpr@1%fpr``."""
    return "tpr@0fp" if max_fpr == 0 else f"tpr@{max_fpr:.1%}fpr".replace(".0%", "%")


def _checked(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    members, nonmembers = np.asarray(member_scores, float).ravel(), np.asarray(nonmember_scores, float).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError(f"need members and non-members, got {members.size} and {nonmembers.size} scores")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("scores contain NaN or infinity")
    return members, nonmembers


def bootstrap_counts(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """(draws, n) multiplicities of ``draws`` bootstrap resamples of n items (the resamples of
    ``rng.integers(0, n, (draws, n))``, so a seed gives the same draws as indexing would)."""
    index = rng.integers(0, n, (draws, n))
    return np.bincount((index + n * np.arange(draws)[:, None]).ravel(), minlength=draws * n).reshape(draws, n)


def resampled_metrics(members: np.ndarray, nonmembers: np.ndarray, member_counts: np.ndarray | None = None,
                      nonmember_counts: np.ndarray | None = None, max_fprs: tuple[float, ...] = (0.01,)) -> dict:
    """Every metric of V score vectors (rows of (V, M) member and (V, N) non-member scores) under each of B
    resamples given as multiplicities ((B, M) and (B, N); None: every score once): a dict of (V, B) arrays.

    The thresholds are the row's own scores (plus one above them all), so TPR and false positives under every
    resample are matrix products of the multiplicities.
    """
    members, nonmembers = np.atleast_2d(np.asarray(members, float)), np.atleast_2d(np.asarray(nonmembers, float))
    n_m, n_n = members.shape[1], nonmembers.shape[1]
    wm = np.ones((1, n_m)) if member_counts is None else np.asarray(member_counts, float)
    wn = np.ones((1, n_n)) if nonmember_counts is None else np.asarray(nonmember_counts, float)
    names = ["auc", "advantage", "asr", "tpr@0fp", *(tpr_name(x) for x in max_fprs if x > 0)]
    out = {name: np.empty((len(members), len(wm))) for name in names}
    chunk = max(1, _ELEMENTS_PER_CHUNK // (len(wm) * (n_m + n_n + 1)))
    for start in range(0, len(members), chunk):
        rows = slice(start, start + chunk)
        m, n = members[rows], nonmembers[rows]
        # AUC = P(member > non-member) + ½ P(tie), each pair weighted by both multiplicities
        pairs = (m[:, :, None] > n[:, None, :]) + 0.5 * (m[:, :, None] == n[:, None, :])
        auc = np.einsum("vmb,bm->vb", pairs @ wn.T, wm) / (wm.sum(1) * wn.sum(1))
        # thresholds "score >= t" at every score of the row and above them all
        cuts = np.concatenate([m, n, np.full((len(m), 1), np.inf)], axis=1)[:, None, :]
        # (V, B, T) counts of members and non-members at or above each threshold: exact integers in float32
        hits = np.matmul(wm.astype(np.float32), (m[:, :, None] >= cuts).astype(np.float32))
        false_positives = np.matmul(wn.astype(np.float32), (n[:, :, None] >= cuts).astype(np.float32))
        tpr = hits / wm.sum(1)[:, None]
        out["auc"][rows], out["advantage"][rows] = auc, np.abs(auc - 0.5)
        out["asr"][rows] = ((tpr + 1 - false_positives / wn.sum(1)[:, None]) / 2).max(2)
        for x in (0, *max_fprs):
            if x == 0 or n_n * x >= 1 - 1e-9:  # at most floor(xN) non-members may pass the threshold
                allowed = false_positives <= np.floor(x * n_n + 1e-9)
                out[tpr_name(x)][rows] = np.where(allowed, tpr, 0).max(2)
            else:
                out[tpr_name(x)][rows] = np.nan
    return out


def _single(member_scores, nonmember_scores, name: str, max_fprs: tuple[float, ...] = ()) -> float:
    members, nonmembers = _checked(member_scores, nonmember_scores)
    return float(resampled_metrics(members, nonmembers, max_fprs=max_fprs)[name][0, 0])


def roc_auc(member_scores, nonmember_scores) -> float:
    return _single(member_scores, nonmember_scores, "auc")


def tpr_at_fpr(member_scores, nonmember_scores, max_fpr: float) -> float:
    """Largest TPR among thresholds whose FPR is <= ``max_fpr`` (never the point with the closest FPR); NaN when
    there are fewer than 1 / ``max_fpr`` non-members (``max_fpr`` 0: TPR at zero false positives)."""
    return _single(member_scores, nonmember_scores, tpr_name(max_fpr), (max_fpr,) if max_fpr else ())


def attack_accuracy(member_scores, nonmember_scores) -> float:
    """ASR: balanced accuracy (mean of TPR and TNR) of the best single threshold; 0.5 for a constant score."""
    return _single(member_scores, nonmember_scores, "asr")


def membership_metrics(member_scores, nonmember_scores, n_bootstrap: int = 500, seed: int = 0) -> dict:
    """``MEMBERSHIP_METRICS``, with stratified bootstrap 95% CIs (``*_lo``, ``*_hi``; NaN where the metric is)."""
    members, nonmembers = _checked(member_scores, nonmember_scores)
    fprs = (0.01, 0.001)
    out = {name: float(v[0, 0]) for name, v in resampled_metrics(members, nonmembers, max_fprs=fprs).items()}
    out.update(n_members=int(members.size), n_nonmembers=int(nonmembers.size))
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        counts = bootstrap_counts(rng, members.size, n_bootstrap), bootstrap_counts(rng, nonmembers.size, n_bootstrap)
        for name, values in resampled_metrics(members, nonmembers, *counts, max_fprs=fprs).items():
            out[f"{name}_lo"], out[f"{name}_hi"] = (float(v) for v in np.percentile(values[0], [2.5, 97.5]))
    return out


def metrics_by_domain(scores, n_bootstrap: int = 500, seed: int = 0):
    """One row per domain plus a ``POOLED`` row, from a table with columns domain, is_member, score."""
    rows = []
    groups = [*scores.groupby("domain", sort=False), (POOLED, scores)]
    for domain, group in groups:
        member = group.loc[group["is_member"], "score"]
        nonmember = group.loc[~group["is_member"], "score"]
        rows.append({"domain": domain, **membership_metrics(member, nonmember, n_bootstrap, seed)})
    return pd.DataFrame(rows)
