"""The study's statistics, as tables keyed by regime (``REGIME``: the world's keys, non-member shift, SP guidance):
each cell's comparisons with paired draws (``effects``), their summary judged within the pre-registered families
(``summary``), contrasts between settings of the same cells (``contrasts``, ``setting_contrasts``), the blind
baseline per world, the paper's table and claims per regime, and the zero-knowledge shard's summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import experiment, finetune, report, stats
from .worlds import DATA, DUPLICATED, GRID, LABEL, TARGET, WIDE, label

REGIME = (DATA, TARGET, "nonmember_shift", "sp_guidance")
COMPARED = (experiment.AFTER, experiment.EFFECT, experiment.VS_CROSS_DOMAIN, experiment.VS_REAL_NONMEMBER)
HEAVIEST = stats.class_metric("own_copies", 32)  # the most duplicated class of members (32 copies)
MIA_ATTACKS = ("loss", "secmi_ldm", "pia")  # the attacks the figure and the paper's table show
WEIGHT_METHODS = "weight methods"  # a contrast pooled over the methods that change weights (no token)
H4_GUIDANCE = 3.0  # the SP guidance H4 compares the targets at (pre-registered)
# the contrasts between settings (``setting_contrasts``) and the name each stores in its ``contrast`` column
GUIDANCE, SHIFT, CAPACITY = "guidance", "shift", "capacity"
CAPACITY_CONTRAST = f"{LABEL} {label(DUPLICATED, WIDE)} - {label(DUPLICATED, GRID)}"


def effects(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int, seed: int = 0) -> stats.Estimates:
    """Every cell's comparisons (``COMPARED``) with paired draws, estimated per data set (``DATA``: the duplicated
    world with either target, the i.i.d. world): its duplication classes are its own, and within it the cells of
    a domain share their draws (settings, and targets of one data set, are contrasted paired: ``contrasts``). The
    two data sets are never differenced with each other."""
    chosen = {name: experiment.COMPARISONS[name] for name in COMPARED}
    parts = []
    for data in dict.fromkeys(scores[DATA]):
        estimates = stats.cell_estimates(scores[scores[DATA] == data], matches[matches[DATA] == data],
                                         n_bootstrap, seed)
        kept = estimates.rows["metric"].map(_analysed).to_numpy()
        # float32 draws: the grid's families need ~10,000 draws (``draws_needed``) over ~10^5 rows
        estimates = stats.Estimates(estimates.rows[kept].reset_index(drop=True),
                                    estimates.draws[kept].astype(np.float32))
        parts.append(experiment.compare_cells(estimates, chosen))
    return stats.Estimates(pd.concat([p.rows for p in parts], ignore_index=True),
                           np.concatenate([p.draws for p in parts]))


def _analysed(metric: str) -> bool:
    """The metrics the study reads: every judged one, and AUC for the paper's table."""
    return metric == "auc" or stats.is_judged(metric)


def draws_needed(summary_table: pd.DataFrame) -> int:
    """The bootstrap draws that let an estimate survive Holm in the largest family of ``summary_table``: the
    smallest p-value, 2 / (draws + 1), must lie below alpha / (family size). A world on another target (H4's)
    forms families of its own, as in ``summary``."""
    judged = summary_table[summary_table["p_adjusted"].notna()]
    keys = [judged["comparison"], judged["metric"].map(stats.verdict_family)]
    if TARGET in judged:
        keys.append(judged[TARGET] == GRID)
    family = judged.groupby(keys).size().max()
    return int(np.ceil(2 * family / stats.ALPHA))


def summary(cell_effects: stats.Estimates, seed: int = 0, correction: str = "holm") -> pd.DataFrame:
    """The comparisons per regime and method, averaged over domains and seeds, judged within each comparison x
    metric family over every method and regime of the grid (the pre-registered families); a world on another
    target (H4's ``WIDE``) is judged in families of its own, so it neither joins nor enlarges the grid's."""
    by = [c for c in (*REGIME, "method", "comparison", "attack", "metric") if c in cell_effects.rows]
    grid = (cell_effects.rows[TARGET] == GRID).to_numpy()
    parts = [stats.Estimates(cell_effects.rows[keep].reset_index(drop=True), cell_effects.draws[keep])
             for keep in (grid, ~grid) if keep.any()]
    return pd.concat([experiment.judged_summary(part, by, seed, correction).merge(domain_signs(part, by), on=by,
                                                                                 how="left") for part in parts],
                     ignore_index=True)


def domain_signs(estimates: stats.Estimates, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: how many domains' mean estimate lies above 0 (``domains_up``) and below it
    (``domains_down``), in how many the reference is non-zero (``domains_reference``, e.g. where the target
    copies), and the exact sign-flip p-value over the domains (``p_sign_flip``, ``stats.sign_flip_p``): how far
    the domains agree."""
    columns = ["value", *(["reference_value"] if "reference_value" in estimates.rows else [])]
    means = estimates.rows.groupby([*by, "domain"], sort=False, dropna=False)[columns].mean().reset_index()
    flags = {"domains_up": means["value"] > 0, "domains_down": means["value"] < 0}
    if "reference_value" in means:
        flags["domains_reference"] = means["reference_value"].fillna(0) != 0
    counts = means.assign(**flags).groupby(by, sort=False, dropna=False)[list(flags)].sum().reset_index()
    wide = means.set_index([*by, "domain"])["value"].unstack("domain")  # the groups present, one column per domain
    flips = wide.index.to_frame(index=False).assign(p_sign_flip=stats.sign_flip_p(wide.to_numpy()))
    return counts.merge(flips, on=by, how="left")


def contrasts(cell_effects: stats.Estimates, column: str, high, low, seed: int = 0,
              metrics=(stats.STRENGTH, HEAVIEST, "own_copies", *stats.DRIFT_JUDGED),
              name: str | None = None) -> pd.DataFrame:
    """Each comparison's per-cell effect at ``column`` = ``high`` minus that at ``low``, paired by the other
    regime columns, method, domain and seed, with cluster-bootstrap 95% CIs and p-values (not corrected: each
    hypothesis names the contrast it reads): per method, over all methods (``experiment.ALL_METHODS``, the
    comparisons every method has) and over the methods that change weights (``WEIGHT_METHODS``, whose control is
    fine-tuned at the same setting). Its ``contrast`` column holds ``name`` (default "column high - low")."""
    rows = cell_effects.rows
    keep = rows["metric"].isin(metrics).to_numpy()
    chosen = stats.Estimates(rows[keep].reset_index(drop=True), cell_effects.draws[keep])
    others = [c for c in REGIME if c != column and c in rows]
    pair_on = [*others, "method", "domain", "seed", "comparison", "attack", "metric"]
    diff = stats.contrast(chosen, column, high, low, pair_on)
    by = [*others, "method", "comparison", "attack", "metric"]
    weights = ~diff.rows["method"].map(finetune.is_token_method).to_numpy(bool)
    # the pool over all methods takes only comparisons every method has (a named control that is a method's own
    # control is folded into its S2L effect, so "S2L - cross-domain" alone would pool the token methods only)
    methods_per_comparison = diff.rows.groupby("comparison")["method"].transform("nunique")
    every = (methods_per_comparison == diff.rows["method"].nunique()).to_numpy()
    pooled = [stats.Estimates(diff.rows[every].assign(method=experiment.ALL_METHODS), diff.draws[every]),
              stats.Estimates(diff.rows[weights].assign(method=WEIGHT_METHODS), diff.draws[weights])]
    table = pd.concat([stats.combine(part, by, seed).merge(domain_signs(part, by), on=by, how="left")
                       for part in (diff, *pooled) if len(part.rows)], ignore_index=True)
    return table.assign(contrast=name or f"{column} {high} - {low}").rename(columns={"value": "delta"})


def capacity_contrast(cell_effects: stats.Estimates, seed: int = 0) -> pd.DataFrame:
    """H4's contrast: each cell's comparisons on the wider target minus the same method's, domain's and seed's on
    the grid's target (``contrasts`` over ``TARGET``), or an empty table until both are published with i.i.d.
    non-members at ``H4_GUIDANCE``."""
    rows = cell_effects.rows
    at = (rows["nonmember_shift"] == 0.0) & (rows["sp_guidance"] == H4_GUIDANCE) & (rows[DATA] == DUPLICATED)
    if not {WIDE, GRID} <= set(rows.loc[at, TARGET]):
        return pd.DataFrame()
    return contrasts(cell_effects, TARGET, WIDE, GRID, seed, name=CAPACITY_CONTRAST)


def setting_contrasts(cell_effects: stats.Estimates, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The contrasts the hypotheses read, each an empty table until both its settings are published:
    ``GUIDANCE`` (SP guidance 7.5 - 1, H2's), ``SHIFT`` (non-member shift 0.5 - 0, H3's) and ``CAPACITY`` (the
    wider target minus the grid's, H4's: ``capacity_contrast``)."""
    rows = cell_effects.rows
    guidance = set(rows["sp_guidance"]) >= {1.0, 7.5}
    shift = set(rows["nonmember_shift"]) >= {0.0, 0.5}
    return {GUIDANCE: contrasts(cell_effects, "sp_guidance", 7.5, 1.0, seed) if guidance else pd.DataFrame(),
            SHIFT: contrasts(cell_effects, "nonmember_shift", 0.5, 0.0, seed) if shift else pd.DataFrame(),
            CAPACITY: capacity_contrast(cell_effects, seed)}


def blind_by_world(scores: pd.DataFrame, n_bootstrap: int, seed: int = 0) -> pd.DataFrame:
    """The blind baseline's AUC (over every cell of every method) per world and non-member shift."""
    parts = []
    for (data, target, shift), rows in scores.groupby([DATA, TARGET, "nonmember_shift"], sort=False):
        table = experiment.blind_summary(rows, n_bootstrap, seed)
        parts.append(table[table["method"] == experiment.ALL_METHODS].assign(**{DATA: data, TARGET: target},
                                                                           nonmember_shift=shift))
    return pd.concat(parts, ignore_index=True).drop(columns="method")


def regime_rows(table: pd.DataFrame, data: str, target: str = GRID, shift: float = 0.0, **equal) -> pd.DataFrame:
    """The rows of ``table`` in the world (``data``, ``target``) at non-member ``shift``, with each column of
    ``equal`` equal to its value."""
    rows = table[(table[DATA] == data) & (table[TARGET] == target) & (table["nonmember_shift"] == shift)]
    for column, value in equal.items():
        rows = rows[rows[column] == value]
    return rows


def copying_domains(summary_table: pd.DataFrame, target: str = GRID) -> int:
    """In how many domains the duplicated world's ``target`` copies its 32x members (the most in any regime)."""
    rows = regime_rows(summary_table, DUPLICATED, target, attack=stats.EXTRACTION, metric=HEAVIEST,
                       comparison=experiment.AFTER)
    return int(rows["domains_reference"].max()) if len(rows) and "domains_reference" in rows else 0


def bracketed(summary_rows: pd.DataFrame) -> pd.DataFrame:
    """One verdict per method and regime for rows of one attack and metric: the S2L effect's for weight methods;
    for token methods "up" / "down" only when after - before and the effect (biased down and up: ``report``)
    agree, else "no change". Columns: the regime and method, delta, lo, hi, verdict, and for token methods the
    after - before end (after_delta, after_lo, after_hi)."""
    keys = [c for c in (*REGIME, "method") if c in summary_rows]
    effect = summary_rows[summary_rows["comparison"] == experiment.EFFECT].set_index(keys)
    after = summary_rows[summary_rows["comparison"] == experiment.AFTER].set_index(keys)
    out = effect[["delta", "lo", "hi", "verdict"]].copy()
    token = [finetune.is_token_method(m) for m in out.index.get_level_values("method")]
    ends = after.reindex(out.index)[["delta", "lo", "hi", "verdict"]].add_prefix("after_")
    ends.loc[~np.array(token, dtype=bool)] = np.nan
    out = out.join(ends)
    agree = out["verdict"] == out["after_verdict"]
    out["verdict"] = np.where(token, np.where(agree, out["verdict"], stats.NO_CHANGE), out["verdict"])
    return out.drop(columns="after_verdict").reset_index()


def bracketed_each(summary_rows: pd.DataFrame) -> pd.DataFrame:
    """``bracketed`` for every attack and metric of ``summary_rows``, with attack and metric as columns."""
    return pd.concat([bracketed(rows).assign(attack=attack, metric=metric)
                      for (attack, metric), rows in summary_rows.groupby(["attack", "metric"], sort=False)],
                     ignore_index=True)


def paper_tables(summary_table: pd.DataFrame) -> pd.DataFrame:
    """The paper's table (``experiment.paper_table``) per regime: indexed by ``REGIME`` and method."""
    return pd.concat({regime: experiment.paper_table(rows) for regime, rows in
                      summary_table.groupby([*REGIME], sort=False)}, names=[*REGIME, "method"])


def claims_by_regime(summary_table: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims (``report.verdicts``: MIA per attack and over all, extraction, drift) read per regime
    from the verdicts of the pre-registered families: one row per regime (``REGIME``, sorted) and claim, with
    whether the regime agrees (``agrees``)."""
    parts = []
    for regime, rows in summary_table.groupby([*REGIME], sort=True):
        found = report.verdicts({"main": rows.drop(columns=[*REGIME])})
        parts.append(pd.DataFrame({**dict(zip(REGIME, regime, strict=True)), "claim": [c["claim"] for c in found],
                                   "agrees": [c["agrees"] for c in found]}))
    return pd.concat(parts, ignore_index=True)


def zero_knowledge_summary(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int, seed: int = 0,
                           correction: str = "holm") -> pd.DataFrame:
    """The zero-knowledge shard's after − before per method, attack and metric (``experiment.summarize``)."""
    return experiment.summarize(scores, matches, ["method", "comparison", "attack", "metric"], n_bootstrap, seed,
                                correction, comparisons=[experiment.AFTER])
