"""The pre-registered hypotheses (``data/results/regimes/preregistration.md``), each judged by its rule: a
``Verdict`` holds the outcome, what qualifies it (``reason``) and the numbers it rests on (``basis``: rows of the
study's tables and counts); ``render`` words them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .. import experiment, finetune, stats
from .analysis import (CAPACITY, GUIDANCE, H4_GUIDANCE, HEAVIEST, SHIFT, WEIGHT_METHODS, bracketed, bracketed_each,
                       copying_domains, regime_rows)
from .worlds import DATA, DUPLICATED, GRID, IID, TARGET, WIDE

# the hypotheses, in the order judged
H1, H2, H3, H4, ZERO_KNOWLEDGE_SHAKE = "H1", "H2", "H3", "H4", "zero-knowledge shake"
CONFIRMED, REFUTED, NOT_SHOWN, NOT_TESTABLE = "confirmed", "refuted", "not shown", "not testable"
PENDING, NOT_RUN = "pending", "not run"  # not judged: its shards are not published, or it was not run
AROUND_ZERO = "around zero"  # refuted by the hypothesis's own rule (a CI around 0), not shown by the shared rule
EXPLORATORY = "exploratory"  # read family by family, by no pre-registered rule (the zero-knowledge shake)
UNJUDGED = (PENDING, NOT_RUN)

# reasons: what qualifies an outcome (``Verdict.reason``)
MISSING_WORLD = "missing world"  # PENDING: a world or setting it reads is not published
MISSING_IID = "i.i.d. world pending"  # NOT_SHOWN: H1's i.i.d. half is not published
UNKNOWN_RATE = "unknown copy rate"  # NOT_TESTABLE: the target's copy rate is undefined
FEW_COPYING = "too few copying domains"  # the target copies in fewer than MIN_COPYING_DOMAINS domains
IID_RISES = "the i.i.d. world rises too"  # NOT_SHOWN (H1)
UNDEFINED = "undefined contrast"  # NOT_SHOWN: the drift contrast's CI is undefined
SMALLER_AT_1 = "smaller at g = 1"  # NOT_SHOWN (H2): drift ordered, but S2L's effect is smaller at g = 1
WORLDS_DISAGREE = "the worlds disagree"  # NOT_SHOWN (H2): the unshifted worlds' verdicts differ
NO_WEIGHT_METHOD = "no weight method"  # PENDING: no weight method has both settings of the contrast
NO_MIA = "no MIA comparison"  # PENDING (H3): no MIA comparison is published on both sides
SHARD_PENDING = "shard pending"  # NOT_RUN: its shard is not published

H1_MARGIN = 0.25  # copies per cell: a quarter of the target's own 32x rate (pre-registered refutation bound)
# domains in which the target must copy for a copies verdict: with fewer, the cluster bootstrap leaves them all out
# of many draws (one domain: (7/8)^8, a third), so every CI reaches 0 and "refuted" or "not smaller" is forced
MIN_COPYING_DOMAINS = 3
# H3's two measured MIA comparisons (pre-registered): each method's S2L effect against its own control (token
# methods bracketed), and S2L - real non-member, whose control learns the shifted photos (weight methods: for a
# token method it is its own control, one end of its bracket)
H3_COMPARISONS = (experiment.EFFECT, experiment.VS_REAL_NONMEMBER)


@dataclass(frozen=True)
class Verdict:
    """One hypothesis judged: its ``outcome``, the ``reason`` that qualifies it ("" for none), the numbers it
    rests on (``basis``, named per rule), and (drawn, needed) when fewer bootstrap draws were drawn than the
    largest Holm family needs (``too_few_draws``)."""

    hypothesis: str
    outcome: str
    reason: str = ""
    basis: dict = field(default_factory=dict, compare=False)
    too_few_draws: tuple[int, int] | None = None

    @property
    def judged(self) -> bool:
        """Whether a rule was applied (not ``PENDING`` or ``NOT_RUN``)."""
        return self.outcome not in UNJUDGED


def not_run(hypothesis: str, reason: str = SHARD_PENDING) -> Verdict:
    """A hypothesis the study did not test, with the reason."""
    return Verdict(hypothesis, NOT_RUN, reason)


def with_draws(verdicts: list[Verdict], drawn: int, needed: int) -> list[Verdict]:
    """``verdicts`` with every judged one marked ``too_few_draws`` when ``drawn`` < ``needed`` (``draws_needed``):
    then no estimate can survive Holm, so no verdict can rest on an "up" or "down"."""
    if drawn >= needed:
        return list(verdicts)
    return [replace(v, too_few_draws=(drawn, needed)) if v.judged else v for v in verdicts]


def _of(rows: pd.DataFrame, method: str, comparison: str, metric: str) -> pd.DataFrame:
    """The rows of a contrast table for one method (or pool), comparison and metric."""
    return rows[(rows["method"] == method) & (rows["comparison"] == comparison) & (rows["metric"] == metric)]


def _refutation(hi: float) -> str:
    """A hypothesis's own refutation rule ("CI below or around 0") against the shared one (the opposite
    verdict): both are pre-registered, so a CI around 0 is reported under both (``AROUND_ZERO``)."""
    return REFUTED if hi < 0 else AROUND_ZERO


def h1_memorisation(summary_table: pd.DataFrame) -> Verdict:
    """H1: where the target copies the 32x members, S2L raises those copies in the duplicated world (some method
    x guidance with a Holm-surviving "up", bracketed for token methods), and nothing rises in the i.i.d. world
    (bracketed too); refuted when every duplicated-world effect is "down" or "no change" with its CI below
    ``H1_MARGIN`` copies per cell; not testable where the target copies in fewer than ``MIN_COPYING_DOMAINS``
    domains. Basis: ``copy_rate`` (the target's 32x copies per cell), ``copying_domains``, ``duplicated`` and
    ``iid`` (``bracketed`` rows)."""
    rows = regime_rows(summary_table, DUPLICATED, attack=stats.EXTRACTION, metric=HEAVIEST)
    dup = bracketed(rows)
    if dup.empty:
        return Verdict(H1, PENDING, MISSING_WORLD)
    rate = rows.loc[rows["comparison"] == experiment.AFTER, "before"].mean()
    copying = copying_domains(summary_table)
    iid = bracketed(regime_rows(summary_table, IID, attack=stats.EXTRACTION, metric="own_copies"))
    basis = {"copy_rate": rate, "copying_domains": copying, "duplicated": dup, "iid": iid}
    if pd.isna(rate):
        return Verdict(H1, NOT_TESTABLE, UNKNOWN_RATE, basis)
    if copying < MIN_COPYING_DOMAINS:
        return Verdict(H1, NOT_TESTABLE, FEW_COPYING, basis)
    if (dup["verdict"] == stats.UP).any():
        if iid.empty:
            return Verdict(H1, NOT_SHOWN, MISSING_IID, basis)
        return (Verdict(H1, CONFIRMED, "", basis) if not (iid["verdict"] == stats.UP).any()
                else Verdict(H1, NOT_SHOWN, IID_RISES, basis))
    if (dup["hi"] < H1_MARGIN).all():
        return Verdict(H1, REFUTED, "", basis)
    return Verdict(H1, NOT_SHOWN, "", basis)


def h2_drift(summary_table: pd.DataFrame, guidance: pd.DataFrame) -> Verdict:
    """H2, from the guidance contrast (the per-cell effect at 7.5 minus that at 1), pooled over the weight
    methods (a token method's control does not depend on the guidance; it is shown apart), in each unshifted
    world: confirmed when the S2L effect on the median nearest distance rises with guidance (CI above 0) and S2L's
    effect on MIA strength and on 32x copies (only where the target copies in ``MIN_COPYING_DOMAINS`` domains) is
    not smaller at 1 than at 7.5 (no such contrast's CI wholly above 0); refuted by its own rule when the drift
    contrast's CI is around or below 0 (``_refutation``); it stands only where the worlds agree. Basis:
    ``judge_copies``, and per world (``worlds``: data, target, outcome, reason, and the contrast rows ``drift``,
    ``after``, ``copies``, ``mia``, ``token``, and ``lower_at_75``: the attacks and metrics whose contrast lies
    wholly below 0)."""
    if guidance.empty:
        return Verdict(H2, PENDING, MISSING_WORLD)
    unshifted = guidance[guidance["nonmember_shift"] == 0.0]
    judge_copies = copying_domains(summary_table) >= MIN_COPYING_DOMAINS
    judged = []
    for (data, target), rows in unshifted.groupby([DATA, TARGET], sort=False):
        drift = _of(rows, WEIGHT_METHODS, experiment.EFFECT, "nearest_median")
        if drift.empty:
            continue
        row = drift.iloc[0]
        copies = _of(rows, WEIGHT_METHODS, experiment.EFFECT, HEAVIEST)
        mia = _of(rows, WEIGHT_METHODS, experiment.EFFECT, stats.STRENGTH)
        read = pd.concat([copies, mia]) if judge_copies else mia
        smaller_at_1 = (read["lo"] > 0).any()
        if pd.isna(row["lo"]) or pd.isna(row["hi"]):
            outcome = (NOT_SHOWN, UNDEFINED)
        elif row["lo"] > 0:
            outcome = (NOT_SHOWN, SMALLER_AT_1) if smaller_at_1 else (CONFIRMED, "")
        else:
            outcome = (_refutation(row["hi"]), "")
        token = rows[(rows["metric"] == "nearest_median") & rows["method"].map(finetune.is_token_method)]
        judged.append({DATA: data, TARGET: target, "outcome": outcome, "drift": row,
                       "after": _of(rows, WEIGHT_METHODS, experiment.AFTER, "nearest_median"), "copies": copies,
                       "mia": mia, "token": token,
                       "lower_at_75": [f"{r['attack']} {r['metric']}" for _, r in read.iterrows() if r["hi"] < 0]})
    if not judged:
        return Verdict(H2, PENDING, NO_WEIGHT_METHOD)
    outcomes = {world["outcome"] for world in judged}
    outcome, reason = judged[0]["outcome"] if len(outcomes) == 1 else (NOT_SHOWN, WORLDS_DISAGREE)
    return Verdict(H2, outcome, reason, {"judge_copies": judge_copies, "worlds": judged})


def _per_method(table: pd.DataFrame, own: bool) -> pd.DataFrame:
    """The rows of single methods (no pool); for a comparison other than the own-control one (``own`` False),
    weight methods only: a token method's real-non-member comparison is an end of its own bracket."""
    token = np.array([finetune.is_token_method(m) for m in table["method"]], dtype=bool)
    return table[~table["method"].isin([experiment.ALL_METHODS, WEIGHT_METHODS]).to_numpy() & (own | ~token)]


def h3_shift(summary_table: pd.DataFrame, blind_auc: pd.DataFrame, shift: pd.DataFrame) -> Verdict:
    """H3, judged on each of ``H3_COMPARISONS``: confirmed when the blind AUC exceeds 0.5 only in the shifted
    worlds, and some MIA strength comparison is "up" (Holm) with shifted non-members while its unshifted twin (same
    world, guidance, method, attack) is not, with a paired shift contrast whose CI lies above 0; refuted by its
    own rule when no paired contrast's CI excludes 0 (``AROUND_ZERO``). Basis: ``blind`` (``blind_auc``), and per
    comparison judged (``comparisons``: comparison, ``candidates`` (the pairs of twins), ``found`` (the contrast
    rows that confirm), ``excluding`` (contrasts whose CI excludes 0) and ``contrasts`` (how many)); ``confirming``
    lists the comparisons that confirm."""
    basis = {"blind": blind_auc}
    if shift.empty:
        return Verdict(H3, PENDING, MISSING_WORLD, basis)
    blind_ok = all((r["lo"] > 0.5) == (r["nonmember_shift"] > 0) for _, r in blind_auc.iterrows())
    keys = [DATA, TARGET, "sp_guidance", "method", "attack"]
    strength = summary_table[summary_table["metric"] == stats.STRENGTH]
    judged = []
    for comparison in H3_COMPARISONS if len(strength) else ():
        own = comparison == experiment.EFFECT
        rows = _per_method(bracketed_each(strength) if own else strength[strength["comparison"] == comparison], own)
        contrast = _per_method(shift[(shift["metric"] == stats.STRENGTH) & (shift["comparison"] == comparison)], own)
        if rows.empty or contrast.empty:
            continue
        up = rows.pivot_table(index=keys, columns="nonmember_shift", values="verdict", aggfunc="first")
        contrast = contrast.set_index(keys)
        found = [key for key, row in up.iterrows() if row.get(0.5) == stats.UP and row.get(0.0) != stats.UP
                 and key in contrast.index and contrast.loc[key, "lo"] > 0]
        judged.append({"comparison": comparison, "candidates": len(up), "found": contrast.loc[found].reset_index(),
                       "excluding": int(((contrast["lo"] > 0) | (contrast["hi"] < 0)).sum()),
                       "contrasts": len(contrast)})
    if not judged:
        return Verdict(H3, PENDING, NO_MIA, basis)
    confirming = [c["comparison"] for c in judged if len(c["found"])]
    basis = {**basis, "comparisons": judged, "confirming": confirming}
    if confirming and blind_ok:
        return Verdict(H3, CONFIRMED, "", basis)
    if sum(c["excluding"] for c in judged) == 0:
        return Verdict(H3, AROUND_ZERO, "", basis)
    return Verdict(H3, NOT_SHOWN, "", basis)


def h4_capacity(summary_table: pd.DataFrame, capacity: pd.DataFrame) -> Verdict:
    """H4, from ``capacity_contrast`` (duplicated world, i.i.d. non-members, SP guidance ``H4_GUIDANCE``), pooled
    over the weight methods: confirmed when the S2L effect on the median nearest distance is smaller on the wider
    target (CI below 0) and its effect on 32x copies larger (CI above 0; judged only where the wider target copies
    in ``MIN_COPYING_DOMAINS`` domains); refuted (shared rule) when either CI lies on the opposite side; else not
    shown. Basis: the contrast rows ``drift``, ``after``, ``copies`` and ``token`` (textual inversion, both ends of
    its bracket), ``pooled`` (the weight methods), ``judge_copies``, ``copying_domains`` per target,
    ``nearest_median`` and ``copy_rate`` of each target before S2L, and ``wide_h1`` (H1's ``bracketed`` rows read
    on the wider target)."""
    if capacity.empty:
        return Verdict(H4, PENDING, MISSING_WORLD)
    at = capacity[(capacity["nonmember_shift"] == 0.0) & (capacity["sp_guidance"] == H4_GUIDANCE)]
    drift = _of(at, WEIGHT_METHODS, experiment.EFFECT, "nearest_median")
    if drift.empty:
        return Verdict(H4, PENDING, NO_WEIGHT_METHOD)
    drift, copies = drift.iloc[0], _of(at, WEIGHT_METHODS, experiment.EFFECT, HEAVIEST)
    copying = copying_domains(summary_table, WIDE)
    judge_copies = copying >= MIN_COPYING_DOMAINS and len(copies) > 0
    more = judge_copies and copies.iloc[0]["lo"] > 0
    fewer = judge_copies and copies.iloc[0]["hi"] < 0

    def before(target, metric):
        return regime_rows(summary_table, DUPLICATED, target, sp_guidance=H4_GUIDANCE, comparison=experiment.AFTER,
                           metric=metric)["before"].mean()

    basis = {"drift": drift, "after": _of(at, WEIGHT_METHODS, experiment.AFTER, "nearest_median"), "copies": copies,
             "token": at[at["method"].map(finetune.is_token_method) & at["metric"].isin(["nearest_median", HEAVIEST])
                         & at["comparison"].isin([experiment.AFTER, experiment.EFFECT])],
             "pooled": sorted(m for m in set(at["method"]) if m not in (experiment.ALL_METHODS, WEIGHT_METHODS)
                              and not finetune.is_token_method(m)),
             "judge_copies": judge_copies,
             "copying_domains": {WIDE: copying, GRID: copying_domains(summary_table)},
             "nearest_median": {t: before(t, "nearest_median") for t in (WIDE, GRID)},
             "copy_rate": {t: before(t, HEAVIEST) for t in (WIDE, GRID)},
             "wide_h1": bracketed(regime_rows(summary_table, DUPLICATED, WIDE, attack=stats.EXTRACTION,
                                              metric=HEAVIEST))}
    if pd.isna(drift["lo"]) or pd.isna(drift["hi"]):
        return Verdict(H4, NOT_SHOWN, UNDEFINED, basis)
    if drift["lo"] > 0 or fewer:
        return Verdict(H4, REFUTED, "", basis)
    if drift["hi"] < 0 and more:
        return Verdict(H4, CONFIRMED, "", basis)
    if drift["hi"] < 0 and not judge_copies:
        return Verdict(H4, NOT_SHOWN, FEW_COPYING, basis)
    return Verdict(H4, NOT_SHOWN, "", basis)


ZERO_KNOWLEDGE_FAMILIES = (stats.STRENGTH, HEAVIEST)  # MIA strength over methods x attacks; copies of 32x members


def zero_knowledge(summary_table: pd.DataFrame) -> Verdict:
    """The paper's zero-knowledge claim on the duplicated world, exploratory (not pre-registered): fine-tuning on
    Gaussian-noise images (or noising the weights) strengthens the attacks. After − before, each family of
    ``ZERO_KNOWLEDGE_FAMILIES`` on its own. Basis: ``families`` (metric -> its rows) and ``tallies`` (metric ->
    ``stats.tally``), for the families that have rows."""
    after = summary_table[summary_table["comparison"] == experiment.AFTER]
    families = {metric: after[after["metric"] == metric] for metric in ZERO_KNOWLEDGE_FAMILIES}
    families = {metric: rows for metric, rows in families.items() if len(rows)}
    return Verdict(ZERO_KNOWLEDGE_SHAKE, EXPLORATORY, "", {"families": families,
                                                     "tallies": {m: stats.tally(r) for m, r in families.items()}})


def judge_all(summary_table: pd.DataFrame, contrasts: dict[str, pd.DataFrame], blind_auc: pd.DataFrame,
          zero: pd.DataFrame | None, drawn: int, needed: int) -> list[Verdict]:
    """Every hypothesis by its rule (H1-H4, then the zero-knowledge shake, ``not_run`` while its shard is not
    published), from the summary, ``setting_contrasts`` and the blind baseline per world, each judged one marked
    when ``drawn`` bootstrap draws are fewer than ``needed`` (``with_draws``)."""
    verdicts = [h1_memorisation(summary_table), h2_drift(summary_table, contrasts[GUIDANCE]),
                h3_shift(summary_table, blind_auc, contrasts[SHIFT]), h4_capacity(summary_table, contrasts[CAPACITY]),
                zero_knowledge(zero) if zero is not None else not_run(ZERO_KNOWLEDGE_SHAKE)]
    return with_draws(verdicts, drawn, needed)
