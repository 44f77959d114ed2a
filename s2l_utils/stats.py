"""The statistics behind every number and verdict of the experiments (``experiment`` and ``report`` call it).

* ``cell_estimates``: every cell's membership metrics, extraction counts (also per duplication class) and drift
  of its generations, each with bootstrap draws paired across the cells and conditions of a domain;
* ``compare`` and ``contrast``: paired differences of those estimates;
* ``combine``: means over cells with cluster-bootstrap (domains, then images) 95% CIs and two-sided p-values;
* ``judge``: multiplicity-corrected verdicts ``UP`` / ``DOWN`` / ``NO_CHANGE`` within families (``verdict_family``)
  of the judged metrics (``is_judged``); ``tally`` and ``agreement``: a claim's verdicts against chance.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from .attacks import extraction, metrics

ALPHA = 0.05
CORRECTIONS = ("holm", "bh")
UP, DOWN, NO_CHANGE = "up", "down", "no change"  # the verdicts of judged metrics ("" for the others)
STRENGTH = "advantage"  # attack strength |AUC - 0.5|: every membership verdict is on it
EXTRACTION = extraction.ATTACK  # the "attack" of the extraction counts
EXTRACTION_METRICS = ("own_copies", "own_distinct", "other_copies")
# the drift metrics that get a verdict (one family), each a statistic of a column of the matches or their share
DRIFT_JUDGED = ("nearest_median", "own_nearest_median", "identity_accuracy")
# the per-cell drift quantiles (``extraction.DRIFT_QUANTILES``, by name) of the matches' nearest-distance columns
CELL_DRIFT_QUANTILES = {"distance": {f"nearest_{q}": extraction.DRIFT_QUANTILES[q] for q in ("median", "q10", "q90")},
                        "own_distance": {"own_nearest_median": extraction.DRIFT_QUANTILES["median"]}}
CELL_MEMBERSHIP_METRICS = ("auc", "advantage", "asr", "tpr@0fp", "tpr@1%fpr")
# metrics whose change gets a verdict: never AUC, the per-class distinct counts or the drift's outer quantiles
JUDGED = (STRENGTH, *EXTRACTION_METRICS, *DRIFT_JUDGED)
JUDGED_PER_CLASS = re.compile(r"own_copies_\d+x")
_SCORE_ROW_COLUMNS = ("attack", "file_name", "is_member", "score", "condition")
_GATHER_ELEMENTS = 4_000_000


@dataclass
class Estimates:
    """Point estimates of a set of per-cell quantities (``rows``: cell, domain, the cell's labels, and condition
    or comparison, attack, metric, value) and their bootstrap draws (``draws[i, r]``: row i under draw r of its
    domain's images and generations; the same r for every row of a domain)."""

    rows: pd.DataFrame
    draws: np.ndarray


def _domain_rng(seed: int, domain: str, stream: int) -> np.random.Generator:
    """A domain's own random stream: its draws do not depend on which other domains a table holds."""
    return np.random.default_rng([seed, zlib.crc32(str(domain).encode()), stream])


def _wide(rows: pd.DataFrame, index: list[str], column: str, value: str, what: str) -> pd.DataFrame:
    table = rows.set_index([*index, column])[value].unstack(column)
    if table.isna().any().any():
        raise ValueError(f"the cells of domain {rows['domain'].iloc[0]!r} do not all have the same {what}: the "
                         f"cluster bootstrap pairs them by {column}")
    return table


def cell_estimates(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int, seed: int = 0) -> Estimates:
    """Every cell's membership metrics (per condition and attack) and extraction counts (per condition), with
    ``n_bootstrap`` draws. ``scores``: cell, domain, condition, attack, file_name, is_member, score and the
    cells' labels; ``matches``: cell, domain, condition, generation and the match columns of
    ``extraction.match_generations`` (``extraction.MATCH_COLUMNS``; matches lacking one are refused)."""
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1 for CIs and verdicts, got {n_bootstrap}")
    if scores.groupby("cell")["domain"].nunique().max() > 1:
        raise ValueError("each cell must score the images of one domain (its attacked domain)")
    labels = scores.drop(columns=[c for c in _SCORE_ROW_COLUMNS if c in scores]).drop_duplicates("cell")
    frames, draws = [], []
    for domain, part in scores.groupby("domain", sort=True):
        table = _wide(part, ["cell", "condition", "attack"], "file_name", "score", "scored images")
        member = part.drop_duplicates("file_name").set_index("file_name")["is_member"].reindex(table.columns)
        member, values = member.to_numpy(bool), table.to_numpy(float)
        members, nonmembers = values[:, member], values[:, ~member]
        rng = _domain_rng(seed, domain, 0)
        counts = (metrics.bootstrap_counts(rng, members.shape[1], n_bootstrap),
                  metrics.bootstrap_counts(rng, nonmembers.shape[1], n_bootstrap))
        point = metrics.resampled_metrics(members, nonmembers, max_fprs=(0.01,))
        drawn = metrics.resampled_metrics(members, nonmembers, *counts, max_fprs=(0.01,))
        for name in CELL_MEMBERSHIP_METRICS:
            frames.append(table.index.to_frame(index=False).assign(metric=name, value=point[name][:, 0]))
            draws.append(drawn[name])
        found = matches[matches["domain"] == domain]
        if len(found):
            frame, drawn = _extraction_estimates(found, n_bootstrap, _domain_rng(seed, domain, 1))
            frames.append(frame)
            draws.append(drawn)
    rows = pd.concat(frames, ignore_index=True).merge(labels, on="cell", how="left")
    return Estimates(rows, np.concatenate(draws))


def class_metric(metric: str, duplicates: int) -> str:
    """A per-class extraction metric's name: ``own_copies`` of the 32x members is ``own_copies_32x``."""
    return f"{metric}_{duplicates}x"


DRIFT_FAMILY, PER_CLASS_FAMILY = "drift", "own_copies by duplication class"


def verdict_family(metric: str) -> str:
    """The multiplicity family a judged metric belongs to: the per-class copies together, the drift metrics
    together, every other metric its own."""
    if JUDGED_PER_CLASS.fullmatch(metric):
        return PER_CLASS_FAMILY
    return DRIFT_FAMILY if metric in DRIFT_JUDGED else metric


def is_judged(metric: str) -> bool:
    """Whether a change of ``metric`` gets a verdict (``JUDGED``, and ``own_copies`` per duplication class)."""
    return metric in JUDGED or JUDGED_PER_CLASS.fullmatch(metric) is not None


def _extraction_estimates(found: pd.DataFrame, n_bootstrap: int, rng: np.random.Generator):
    """The extraction metrics of each (cell, condition) of one domain, resampling generation indices (generation
    i of every model shares its seed and prompt, so the draws are paired): own copies, distinct own members
    copied and other-domain copies, the first two also per duplication class the domain's matches list, and
    the drift statistics (quantiles of the nearest distances from the resampled generations' weights)."""
    extraction.check_matches(found)
    found = found.assign(own=found["extracted"] & (found["nearest_domain"] == found["domain"]),
                         other=found["extracted"] & (found["nearest_domain"] != found["domain"]),
                         identity=found["nearest_domain"] == found["domain"])

    def wide(column: str) -> pd.DataFrame:
        return _wide(found, ["cell", "condition"], "generation", column, "generations")

    own_table = wide("own")
    keys = own_table.index.to_frame(index=False).assign(attack=EXTRACTION)
    own, other = own_table.to_numpy(bool), wide("other").to_numpy(float)
    files, duplicates = wide("nearest_file").to_numpy(), wide("nearest_duplicates").to_numpy(int)
    identity = wide("identity").to_numpy(float)
    codes, _ = pd.factorize(files[own])
    copied = np.zeros((*own.shape, codes.max(initial=-1) + 1))  # (model, generation, own member copied)
    copied[(*np.nonzero(own), codes)] = 1
    member_class = np.zeros(copied.shape[2], int)
    member_class[codes] = duplicates[own]
    counts = metrics.bootstrap_counts(rng, own.shape[1], n_bootstrap)
    weights = counts.astype(float)
    reached = np.matmul(copied.transpose(0, 2, 1), weights.T) > 0  # (model, own member, draw): copied in the draw
    values = {"own_copies": (own.sum(1), own @ weights.T),
              "own_distinct": (copied.any(1).sum(1), reached.sum(1)),
              "other_copies": (other.sum(1), other @ weights.T)}
    for k in extraction.listed_classes(found):
        of_class, members = own & (duplicates == k), member_class == k
        values[class_metric("own_copies", k)] = (of_class.sum(1), of_class @ weights.T)
        values[class_metric("own_distinct", k)] = (copied[:, :, members].any(1).sum(1), reached[:, members].sum(1))
    for column, quantiles in CELL_DRIFT_QUANTILES.items():
        if found[column].isna().all():  # own_distance: the domain has no training images
            continue
        distances = wide(column).to_numpy(float)
        point = resampled_quantiles(distances, np.ones((1, own.shape[1]), int), list(quantiles.values()))
        drawn = resampled_quantiles(distances, counts, list(quantiles.values()))
        values |= {name: (point[i, :, 0], drawn[i]) for i, name in enumerate(quantiles)}
    values["identity_accuracy"] = (identity.mean(1), identity @ weights.T / own.shape[1])
    frame = pd.concat([keys.assign(metric=name, value=point.astype(float)) for name, (point, _) in values.items()],
                      ignore_index=True)
    return frame, np.concatenate([drawn.astype(float) for _, drawn in values.values()])


def resampled_quantiles(values: np.ndarray, counts: np.ndarray, quantiles) -> np.ndarray:
    """(Q, V, B): each quantile (linear interpolation, as ``np.quantile``) of each row of ``values`` (V, n) in
    each resample given as multiplicities ``counts`` (B, n). The j-th smallest value of a resample is the first
    sorted value whose cumulative count exceeds j; one search over all draws' cumulative counts (offset so that
    they form one increasing sequence) finds it for every draw at once."""
    n_draws, n = counts.shape
    total = counts.sum(1)
    stride = int(total.max()) + 1
    dtype = np.int32 if n_draws * stride < 2**31 else np.int64  # int32 halves the memory traffic
    offsets, counts = (np.arange(n_draws) * stride).astype(dtype), counts.astype(dtype)
    position = np.asarray(quantiles, float)[:, None] * (total - 1)  # (Q, B)
    lower = np.floor(position).astype(int)
    fraction, upper = position - lower, np.minimum(lower + 1, total - 1)
    lower, upper, start = (lower + offsets).astype(dtype), (upper + offsets).astype(dtype), np.arange(n_draws) * n
    out = np.empty((len(position), len(values), n_draws))
    for row, order in enumerate(np.argsort(values, axis=1)):
        cumulative = np.cumsum(counts[:, order], axis=1, dtype=dtype)
        cumulative += offsets[:, None]
        ordered = values[row, order]
        low, high = (ordered[np.searchsorted(cumulative.ravel(), j, side="right") - start] for j in (lower, upper))
        out[:, row] = low + fraction * (high - low)
    return out


def compare(estimates: Estimates, comparisons: dict[str, tuple[str, str]]) -> Estimates:
    """Per cell, ``model`` minus ``reference`` for each comparison (name -> (model, reference)) whose two
    conditions the cell has: value (the difference), model_value, reference_value, and paired draws."""
    rows = estimates.rows.reset_index(drop=True)
    key = ["cell", "attack", "metric"]
    frames, draws = [], []
    for name, (model, reference) in comparisons.items():
        pair = rows[rows["condition"] == model].reset_index(names="at").merge(
            rows.loc[rows["condition"] == reference, [*key, "value"]].reset_index(names="at_reference"),
            on=key, suffixes=("", "_reference"))
        if pair.empty:
            continue
        frames.append(pair.drop(columns=["condition", "at", "at_reference"]).assign(
            comparison=name, model_value=pair["value"], reference_value=pair["value_reference"],
            value=pair["value"] - pair["value_reference"]).drop(columns="value_reference"))
        draws.append(estimates.draws[pair["at"]] - estimates.draws[pair["at_reference"]])
    if not frames:
        raise ValueError(f"no cell has both conditions of any of {list(comparisons)}")
    return Estimates(pd.concat(frames, ignore_index=True), np.concatenate(draws))


def contrast(estimates: Estimates, column: str, high, low, pair_on: list[str]) -> Estimates:
    """Rows whose ``column`` is ``high`` minus the rows they pair with (equal on ``pair_on``, which must hold
    ``domain``) whose ``column`` is ``low``: a contrast between settings of the same cells, e.g. an effect at SP
    guidance 7.5 minus the same method's, domain's and seed's effect at 1. The draws stay paired when both were
    estimated in one ``cell_estimates`` call (a domain's rows share its draws); the rows keep the ``high`` row's
    labels, with ``column`` set to "high - low"."""
    if "domain" not in pair_on:
        raise ValueError("a contrast pairs rows within a domain: pair_on needs 'domain' (the bootstrap's cluster)")
    rows = estimates.rows.reset_index(drop=True)
    high_rows = rows[rows[column] == high].reset_index(names="at")
    low_rows = rows.loc[rows[column] == low, [*pair_on, "value"]].reset_index(names="at_low")
    if low_rows.duplicated(pair_on).any() or high_rows.duplicated(pair_on).any():
        raise ValueError(f"pair_on {pair_on} does not identify one row per setting of {column!r}")
    pair = high_rows.merge(low_rows, on=pair_on, suffixes=("", "_low"))
    if pair.empty:
        raise ValueError(f"no row with {column} = {high!r} has a partner with {column} = {low!r}")
    out = pair.drop(columns=["at", "at_low", "value_low"]).assign(
        **{column: f"{high} - {low}"}, value=pair["value"] - pair["value_low"])
    return Estimates(out, estimates.draws[pair["at"]] - estimates.draws[pair["at_low"]])


def sign_flip_p(domain_means: np.ndarray) -> np.ndarray:
    """Exact two-sided sign-flip p-values over domains, one per row of ``domain_means`` (groups x domains; NaN
    where a group lacks a domain): the share of the 2^K sign assignments whose |sum| reaches the observed one
    (never below 2 / 2^K). At most 16 domains."""
    values = np.nan_to_num(np.asarray(domain_means, float))  # a missing domain adds 0 under every sign
    k = values.shape[1]
    if k > 16:
        raise ValueError(f"the exact sign-flip test enumerates 2^K sign vectors; K = {k} is too many")
    signs = 1 - 2 * ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1)  # (2^K, K) of +1 / -1
    observed = np.abs(values.sum(1))
    flipped = np.abs(values @ signs.T)  # (groups, 2^K)
    return (flipped >= observed[:, None] - 1e-12).mean(1)


def combine(estimates: Estimates, by: list[str], seed: int = 0, means: tuple[str, ...] = ()) -> pd.DataFrame:
    """The mean over cells of each group of ``by``, with a cluster-bootstrap 95% CI and two-sided p-value:
    columns ``by``, value, lo, hi, p, cells, domains, draws, and the mean of each column in ``means``."""
    rows, draws = estimates.rows, estimates.draws
    grouping = rows.groupby(list(by), sort=False, dropna=False)
    group = grouping.ngroup().to_numpy()
    out = grouping[list(means)].mean().reset_index() if means else grouping.size().reset_index()[list(by)]
    domains, domain = np.unique(rows["domain"].astype(str), return_inverse=True)
    n_groups, n_domains, n_draws = len(out), len(domains), draws.shape[1]
    pick = sparse.csr_matrix((np.ones(len(rows)), (domain * n_groups + group, np.arange(len(rows)))),
                             shape=(n_domains * n_groups, len(rows)))
    sums = (pick @ draws).reshape(n_domains, n_groups, n_draws)
    cells = np.asarray(pick.sum(1)).reshape(n_domains, n_groups)
    point = (pick @ rows["value"].to_numpy(float)).reshape(n_domains, n_groups).sum(0) / cells.sum(0)
    resampled = np.empty((n_draws, n_groups))
    present = cells > 0
    signatures = pd.Series([tuple(np.flatnonzero(present[:, g])) for g in range(n_groups)])
    for signature, members in signatures.groupby(signatures, sort=False).groups.items():
        resampled[:, members] = _cluster_means(sums, cells, np.array(signature), np.asarray(members),
                                               _signature_rng(seed, domains[list(signature)]))
    lo, hi = np.percentile(resampled, [2.5, 97.5], axis=0)
    below, above = (resampled <= 0).sum(0), (resampled >= 0).sum(0)
    p = np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (n_draws + 1))
    return out.assign(value=point, lo=lo, hi=hi, p=np.where(np.isnan(point), np.nan, p),
                      cells=cells.sum(0).astype(int), domains=present.sum(0), draws=n_draws)


def _signature_rng(seed: int, domains) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(",".join(domains).encode()), 2])


def _cluster_means(sums: np.ndarray, cells: np.ndarray, domains: np.ndarray, groups: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(draws, groups) means over cells when the K ``domains`` are resampled with replacement and each drawn
    domain brings its own image draw: draw r of the domain's pool, and an independent one from the pool when
    the domain is drawn again in the same replicate. With one domain: exactly the image bootstrap."""
    n_draws, k = sums.shape[2], len(domains)
    slots = domains[rng.integers(0, k, (n_draws, k))]
    repeated = ((slots[:, :, None] == slots[:, None, :]) & np.tri(k, k, -1, bool)[None]).any(2)
    image_draw = np.where(repeated, rng.integers(0, n_draws, (n_draws, k)), np.arange(n_draws)[:, None])
    out = np.empty((n_draws, len(groups)))
    step = max(1, _GATHER_ELEMENTS // (n_draws * k))
    for start in range(0, len(groups), step):
        chosen = groups[start:start + step]
        total = sums[slots[:, :, None], chosen[None, None, :], image_draw[:, :, None]].sum(1)
        out[:, start:start + step] = total / cells[slots[:, :, None], chosen[None, None, :]].sum(1)
    return out


def adjust_pvalues(p, correction: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values of one family: ``holm`` (family-wise error, valid under any dependence)
    or ``bh`` (Benjamini-Hochberg false discovery rate). NaNs stay NaN and do not count as tests."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose from {', '.join(CORRECTIONS)}")
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m, rank = len(order), np.arange(1, len(order) + 1)
    if correction == "holm":
        adjusted = np.maximum.accumulate((m - rank + 1) * p[order])
    else:
        adjusted = np.minimum.accumulate(((m / rank) * p[order])[::-1])[::-1]
    out[order] = np.minimum(adjusted, 1.0)
    return out


def judge(summary: pd.DataFrame, correction: str = "holm", alpha: float = ALPHA,
          family: tuple[str, ...] = ("comparison", "metric")) -> pd.DataFrame:
    """Adds p_adjusted (within each family of judged metrics: the columns ``family``, where ``metric`` stands
    for its ``verdict_family``) and a verdict: ``UP`` / ``DOWN`` when the adjusted p is below ``alpha`` and the
    change positive / negative, else ``NO_CHANGE``; "" for metrics not judged."""
    summary = summary.copy()
    judged = summary["metric"].map(is_judged) & summary["p"].notna()
    summary["p_adjusted"] = np.nan
    keys = [summary["metric"].map(verdict_family) if name == "metric" else summary[name] for name in family]
    for _, index in summary[judged].groupby([k[judged] for k in keys], sort=False).groups.items():
        summary.loc[index, "p_adjusted"] = adjust_pvalues(summary.loc[index, "p"], correction)
    significant = summary["p_adjusted"] < alpha
    verdict = np.select([significant & (summary["value"] > 0), significant & (summary["value"] < 0)],
                        [UP, DOWN], NO_CHANGE)
    return summary.assign(verdict=np.where(judged, verdict, ""), correction=correction)


def tally(summary: pd.DataFrame, alpha: float = ALPHA) -> dict:
    """A claim's estimates (rows of a summary: delta, p, verdict) counted: ups and downs after the correction
    (``verdict``), before it (p < alpha), and what chance gives: with no change anywhere, each 95% CI lies above
    0 with probability alpha / 2."""
    raw = summary["p"] < alpha
    return {"total": len(summary), "up": int((summary["verdict"] == UP).sum()),
            "down": int((summary["verdict"] == DOWN).sum()), "raw_up": int((raw & (summary["delta"] > 0)).sum()),
            "raw_down": int((raw & (summary["delta"] < 0)).sum()), "chance": len(summary) * alpha / 2}


def agreement(counts: dict) -> str:
    """Whether a claim of an increase holds, from ``tally``'s counts: "yes" when more than half the estimates
    are up; "partly (k of n)" when k > 0 ups survive the correction, they outnumber the downs, and the
    uncorrected ups exceed what chance gives; "no" in the mirror case; otherwise "not shown"."""
    up, down, total, chance = counts["up"], counts["down"], counts["total"], counts["chance"]
    if up and up > down and counts["raw_up"] > chance:
        return "yes" if up > total / 2 else f"partly ({up} of {total})"
    if down and down > up and counts["raw_down"] > chance:
        return f"no: lower for {down} of {total}" + (f" (higher for {up})" if up else "")
    if up or down:
        return f"not shown ({up} up, {down} down of {total}; chance {chance:.1f} each way)"
    return "not shown (no change survives the correction)"
