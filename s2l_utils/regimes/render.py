"""The study in words: each ``Verdict``'s label and evidence from the numbers it rests on, the tables shown as
text, the figure's panels and the Markdown results page; where the analysis departs from the pre-registration
(``DEVIATIONS``) and a caveat on its statistics (``CAVEAT``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import experiment, report, stats, store
from . import hypotheses as h
from .analysis import H4_GUIDANCE, HEAVIEST, MIA_ATTACKS, REGIME, bracketed, bracketed_each, regime_rows
from .shards import CAPACITY, SHARDS, ZERO_KNOWLEDGE
from .worlds import DATA, DUPLICATED, GRID, IID, TARGET, WIDE, label

HYPOTHESES = {h.H1: "H1 memorisation", h.H2: "H2 drift", h.H3: "H3 shift", h.H4: "H4 capacity",
              h.ZERO_KNOWLEDGE_SHAKE: "zero-knowledge shake (exploratory)"}
LENDERS = {store.TWIN: "the unshifted twin", store.SIBLING: "a cell at other SP parameters"}  # lent_by_<kind>
H3_AGAINST = {experiment.EFFECT: "against each method's own control",
              experiment.VS_REAL_NONMEMBER: "against the real-non-member control"}
ZERO_KNOWLEDGE_FAMILIES = {stats.STRENGTH: "MIA strength", HEAVIEST: "32x copies"}

# where the analysis departs from data/results/regimes/preregistration.md, and why (stated wherever verdicts are)
DEVIATIONS = (
    "16 cells per condition had run before the pre-registration: the `mini` profile's main experiment (notebook "
    "11: duplicated world, LoRA and textual inversion, seed 0, SP guidance 3, S2L and control), which H1's prior "
    "quotes; the grid reads them from the cell cache.",
    "10,000 bootstrap draws instead of 2,000: with families of up to 240 verdicts, 2,000 draws (smallest p "
    "2/2001) cannot let any estimate survive Holm.",
    "H2 is judged on the guidance contrast pooled over the weight methods (LoRA, DreamBooth, DreamBooth+LoRA); "
    "textual inversion is shown apart, because its real-non-member control does not depend on the guidance. Its "
    "second condition is read as \"S2L's effect at g = 1 is not smaller than at 7.5\": no 7.5 − 1 contrast of it "
    "lies wholly above 0. Its verdict also says whether any such contrast lies wholly below 0, which the claim's "
    "\"and so lower extraction and MIA\" needs and the rule does not ask. It is judged in each unshifted world "
    "apart and stands only where the worlds agree (the pre-registration names no world).",
    "Where a hypothesis's own refutation rule (\"CI around 0\") and the shared rule (the opposite verdict, or CIs "
    "that exclude the predicted size) disagree, the verdict gives both.",
    "The zero-knowledge shake is exploratory: the pre-registration does not name it.",
    f"Copies are judged only where the target copies in at least {h.MIN_COPYING_DOMAINS} domains: with fewer, more "
    "than 2.5% of the bootstrap draws of 8 domains leave out every copying domain ((7/8)^8 = 0.34 with one, "
    "(6/8)^8 = 0.10 with two; (5/8)^8 = 0.023 with three), so a 95% CI of a copies effect reaches 0 unless a "
    "fine-tune copies where the target does not. H1 is then \"not testable\" and H2's copies term is left out (both "
    "state it). H1's literal refutation rule (every CI below +0.25) would read \"refuted\" there.",
    "H3's \"some MIA effect\" is read on both comparisons its measure names, each judged apart, and the verdict "
    "names those that confirm: the S2L effect against each method's own control (token methods bracketed) and "
    "S2L − real non-member (weight methods; for textual inversion it is one end of its bracket). Until 6 of the 8 "
    "grid shards were published, only the first was read. "
    "Its \"i.i.d. world\" is read as the same duplication world at shift 0, which shares the target and the "
    "members as its measure says, not the grid's world without duplicated members.",
    "H4's wider target is pretrained with the grid's recipe (1600 steps of batch 32), so the UNet width is its one "
    "difference; the pre-registration's cost line quoted a 2000-step prototype. H4 is judged on the contrast "
    "pooled over the weight methods, whose control (the cross-domain fine-tune) sees no real image of the domain; "
    "textual inversion's bracket is shown apart. Its copies term counts only where the wider target copies in at "
    f"least {h.MIN_COPYING_DOMAINS} domains, and the wider target's verdicts form Holm families of their own.",
)
CAVEAT = ("With 8 domains, no test that treats the domain as the unit can give a p-value below 2/256, so a verdict "
          "that survives Holm over a family of hundreds rests on all domains agreeing and on the within-domain "
          "resampling: the summary's `domains_up` / `domains_down` say how many domains agree, and `p_sign_flip` "
          "gives the exact sign-flip test over domains as a check.")


def deviations() -> str:
    """``DEVIATIONS`` as a Markdown list, then ``CAVEAT``."""
    return "\n".join(f"- {d}" for d in DEVIATIONS) + f"\n\n**Caveat.** {CAVEAT}"


def world_label(row) -> str:
    """The label of a row's world (its ``DATA`` and ``TARGET``)."""
    return label(row[DATA], row[TARGET])


# verdicts --------------------------------------------------------------------------------------------------------

_OUTCOMES = {h.CONFIRMED: "confirmed", h.REFUTED: "refuted", h.NOT_SHOWN: "not shown", h.PENDING: "pending",
             h.NOT_RUN: "not run", h.AROUND_ZERO: "refuted by its own rule (CI around 0); not shown by the shared rule"}


def verdict_text(verdict: h.Verdict) -> str:
    """A verdict's label, as the hypotheses table stores it: the outcome with what qualifies it, and whether the
    draws were too few."""
    b, reason = verdict.basis, verdict.reason
    if verdict.outcome == h.EXPLORATORY:
        text = "; ".join(f"{ZERO_KNOWLEDGE_FAMILIES[m]}: {stats.agreement(t)}" for m, t in b["tallies"].items())
    elif verdict.outcome == h.NOT_TESTABLE:
        text = ("not testable (the target's copy rate is unknown)" if reason == h.UNKNOWN_RATE else
                f"not testable (the target copies in {b['copying_domains']} of 8 domains; a verdict needs "
                f"{h.MIN_COPYING_DOMAINS})")
    elif verdict.outcome == h.CONFIRMED and verdict.hypothesis == h.H2:
        lower = "; ".join(f"{label(w[DATA], w[TARGET])} world: {', '.join(w['lower_at_75'])}" for w in b["worlds"]
                          if w["lower_at_75"])
        text = (f"confirmed (guidance orders the drift; S2L's effect is lower at g = 7.5 on {lower})" if lower else
                "confirmed (guidance orders the drift; that the drift lowers extraction and MIA is not shown)")
    elif verdict.outcome == h.CONFIRMED and verdict.hypothesis == h.H3:
        others = [c["comparison"] for c in b["comparisons"] if c["comparison"] not in b["confirming"]]
        text = "confirmed" + (f" ({', '.join(H3_AGAINST[c] for c in b['confirming'])}; not shown "
                              f"{', '.join(H3_AGAINST[c] for c in others)})" if others else "")
    elif verdict.outcome == h.NOT_SHOWN and reason == h.FEW_COPYING:  # H4: the wider target copies too little
        text = (f"not shown (drift smaller; copies not testable: the wider target copies in "
                f"{b['copying_domains'][WIDE]} of 8 domains)")
    elif verdict.outcome == h.NOT_SHOWN and reason:
        text = "not shown (" + {
            h.MISSING_IID: "i.i.d. world pending", h.IID_RISES: "the i.i.d. world rises too",
            h.UNDEFINED: "the drift contrast is undefined",
            h.SMALLER_AT_1: "drift ordered, but S2L's effect is smaller at g = 1",
            h.WORLDS_DISAGREE: "the worlds disagree"}[reason] + ")"
    else:
        text = _OUTCOMES[verdict.outcome]
    if verdict.too_few_draws:
        drawn, needed = verdict.too_few_draws
        text += f" (too few draws: {drawn:,} < {needed:,})"
    return text


def evidence(verdict: h.Verdict) -> str:
    """The numbers a verdict rests on, in words (for one not run, why)."""
    if verdict.outcome == h.NOT_RUN:
        return {h.SHARD_PENDING: "shard pending"}.get(verdict.reason, verdict.reason)
    return _EVIDENCE[verdict.hypothesis](verdict)


def hypotheses_table(verdicts: list[h.Verdict]) -> pd.DataFrame:
    """One row per verdict: hypothesis, verdict and evidence (the published ``hypotheses.csv``)."""
    return pd.DataFrame([{"hypothesis": HYPOTHESES[v.hypothesis], "verdict": verdict_text(v), "evidence": evidence(v)}
                         for v in verdicts])


def _rows_text(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r['method']} {report.ci_text(r)}"
                     + (f" (after − before {report.ci_text(r, 'after_')})"
                        if pd.notna(r.get("after_delta", np.nan)) else "")
                     + (f" {r['verdict']}" if r["verdict"] != stats.NO_CHANGE else "") for _, r in rows.iterrows())


def _h1_evidence(verdict: h.Verdict) -> str:
    if verdict.outcome == h.PENDING:
        return "the duplicated world's shard is not published yet"
    b = verdict.basis
    per_guidance = "; ".join(f"g = {g:g}: {_rows_text(part)}" for g, part in b["duplicated"].groupby("sp_guidance"))
    iid = b["iid"]
    iid_text = (f" I.i.d. world, own copies: {int((iid['verdict'] == stats.UP).sum())} up of {len(iid)} (bracketed "
                f"S2L effects, every method x guidance)." if len(iid) else " The i.i.d. world is not published yet.")
    text = (f"The target copies {b['copy_rate']:.3f} 32x members per cell, in {b['copying_domains']} of 8 domains. "
            f"S2L effect on those copies (duplicated world): {per_guidance}.{iid_text}")
    if verdict.outcome == h.REFUTED:
        text += (f" Every CI lies below +{h.H1_MARGIN} copies per cell (a quarter of the target's own rate, the "
                 "pre-registered bound).")
    return text


def _h2_evidence(verdict: h.Verdict) -> str:
    if verdict.outcome == h.PENDING:
        return {h.MISSING_WORLD: "needs SP guidance 1 and 7.5 in a published shard",
                h.NO_WEIGHT_METHOD: "no weight method has both guidance settings"}[verdict.reason]
    judge_copies, parts = verdict.basis["judge_copies"], []
    for world in verdict.basis["worlds"]:
        row = world["drift"]
        parts.append(
            f"{label(world[DATA], world[TARGET])} world, weight methods, contrast 7.5 − 1 of the S2L effect on the "
            f"median nearest distance: {report.ci_text(row)} (up in {int(row['domains_up'])} of "
            f"{int(row['domains'])} domains, sign-flip p {row['p_sign_flip']:.3f})"
            + "".join(f"; of after − before: {report.ci_text(r)}" for _, r in world["after"].iterrows())
            + "".join(f"; on 32x copies {report.ci_text(r)}"
                      + ("" if judge_copies else " (not judged: too few copying domains)")
                      for _, r in world["copies"].iterrows())
            + "; on MIA strength " + ", ".join(f"{r['attack']} {report.ci_text(r)}" for _, r in world["mia"].iterrows())
            + "".join(f"; {r['method']} ({r['comparison']}) {report.ci_text(r)}" for _, r in world["token"].iterrows()))
    return ". ".join(parts) + "."


def _h3_evidence(verdict: h.Verdict) -> str:
    blind = "; ".join(f"{world_label(r)} shift {r['nonmember_shift']:g}: {experiment.auc_text(r)}"
                      for _, r in verdict.basis["blind"].iterrows())
    if verdict.outcome == h.PENDING:
        return f"blind AUC {blind}; " + {h.MISSING_WORLD: "no shifted shard published yet",
                                         h.NO_MIA: "no MIA comparison published on both sides"}[verdict.reason]
    parts = []
    for c in verdict.basis["comparisons"]:
        found = c["found"]
        parts.append(f"{H3_AGAINST[c['comparison']]}: {len(found)} of {c['candidates']} method x attack x guidance x "
                     "world \"up\" only with shifted non-members and a paired contrast above 0"
                     + (" (" + "; ".join(f"{world_label(r)} g = {r['sp_guidance']:g} {r['method']} {r['attack']} "
                                         f"{report.ci_text(r)}" for _, r in found.iterrows()) + ")"
                        if len(found) else "")
                     + f"; {c['excluding']} of {c['contrasts']} paired contrasts (shift 0.5 − 0, uncorrected) "
                       "exclude 0")
    return f"blind AUC {blind}. " + ". ".join(parts) + "."


def _h4_evidence(verdict: h.Verdict) -> str:
    if verdict.outcome == h.PENDING:
        return {h.MISSING_WORLD: f"needs the wider target's shards ({', '.join(CAPACITY)}) and the grid's "
                                 f"duplicated world at g = {H4_GUIDANCE:g}",
                h.NO_WEIGHT_METHOD: "no weight method is published on both targets"}[verdict.reason]
    b = verdict.basis
    drift, copying = b["drift"], b["copying_domains"]
    return (f"duplicated world, g = {H4_GUIDANCE:g}, weight methods ({', '.join(b['pooled'])}), S2L effect on the "
            f"wider target minus that on the grid's: median nearest distance {report.ci_text(drift)} (down in "
            f"{int(drift['domains_down'])} of {int(drift['domains'])} domains, sign-flip p "
            f"{drift['p_sign_flip']:.3f})"
            + "".join(f"; of after − before {report.ci_text(r)}" for _, r in b["after"].iterrows())
            + "".join(f"; 32x copies {report.ci_text(r)}" + ("" if b["judge_copies"] else " (not judged: too few "
                                                             "copying domains)") for _, r in b["copies"].iterrows())
            + "".join(f"; {r['method']} ({r['comparison']}) {r['metric']} {report.ci_text(r)}"
                      for _, r in b["token"].iterrows())
            + f". The targets' median nearest distance: wider {b['nearest_median'][WIDE]:.3f}, grid "
              f"{b['nearest_median'][GRID]:.3f}; the wider target copies {b['copy_rate'][WIDE]:.3f} 32x members per "
              f"cell, in {copying[WIDE]} of 8 domains (the grid's: {b['copy_rate'][GRID]:.3f}, in {copying[GRID]})"
            + (f". H1 read on the wider target (S2L effect on its 32x copies): {_rows_text(b['wide_h1'])}."
               if len(b["wide_h1"]) else "."))


def _zero_knowledge_evidence(verdict: h.Verdict) -> str:
    listed = "; ".join(f"{r['method']} {r['attack'] if r['metric'] == stats.STRENGTH else '32x copies'} "
                       f"{report.ci_text(r)}" + (f" {r['verdict']}" if r["verdict"] in (stats.UP, stats.DOWN) else "")
                       for rows in verdict.basis["families"].values() for _, r in rows.iterrows())
    return (f"after − before: {listed}. One dose only (the profile's steps and learning rate; weight noise 0.05); the "
            "noise images are captioned with the domain's name, so the name is known.")


_EVIDENCE = {h.H1: _h1_evidence, h.H2: _h2_evidence, h.H3: _h3_evidence, h.H4: _h4_evidence,
             h.ZERO_KNOWLEDGE_SHAKE: _zero_knowledge_evidence}


# tables as text --------------------------------------------------------------------------------------------------

def heaviest_by_guidance(summary_table: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods, columns = SP guidance: the S2L effect on copies of the 32x members per cell in the
    duplicated world with i.i.d. non-members (token methods: both ends of their bracket), verdict marked."""
    rows = bracketed(regime_rows(summary_table, DUPLICATED, attack=stats.EXTRACTION, metric=HEAVIEST))
    if rows.empty:
        return pd.DataFrame()
    text = [report.ci_text(r) + {stats.UP: " ↑", stats.DOWN: " ↓"}.get(r["verdict"], "")
            + (f"; after − before {report.ci_text(r, 'after_')}"
               if pd.notna(r["after_delta"]) else "") for _, r in rows.iterrows()]
    return rows.assign(text=text).pivot_table(index="method", columns="sp_guidance", values="text", aggfunc="first",
                                              sort=False).sort_index(axis=1).rename(columns=lambda g: f"g = {g:g}")


def regime_label(data: str, target: str, shift: float, guidance: float) -> str:
    """A regime as the claims table heads it, e.g. "duplicated, shift 0, g = 3"."""
    return f"{label(data, target)}, shift {shift:g}, g = {guidance:g}"


def claims_table(claims: pd.DataFrame) -> pd.DataFrame:
    """``analysis.claims_by_regime`` as the published ``claims.csv`` shows it: rows = claims, columns = regimes
    (``regime_label``), values = whether the regime agrees with the claim."""
    out = {regime_label(*regime): dict(zip(rows["claim"], rows["agrees"], strict=True))
           for regime, rows in claims.groupby([*REGIME], sort=False)}
    return pd.DataFrame(out).rename_axis("claim")


def figure_panels(summary_table: pd.DataFrame, comparison: str = experiment.EFFECT) -> dict[str, pd.DataFrame]:
    """``comparison``'s deltas for ``plots.regime_grid``: one regime per world and shift; panels: MIA strength of
    each of ``MIA_ATTACKS``, copies of the 32x members (of all members in the i.i.d. world, which has no class),
    and the drift of the median nearest distance."""
    rows = summary_table[summary_table["comparison"] == comparison]
    rows = rows.assign(regime=[f"{label(d, t)}, shift {s:g}" for d, t, s in
                               zip(rows[DATA], rows[TARGET], rows["nonmember_shift"], strict=True)],
                       x=rows["sp_guidance"])
    copies = (((rows[DATA] == DUPLICATED) & (rows["metric"] == HEAVIEST))
              | ((rows[DATA] == IID) & (rows["metric"] == "own_copies")))
    panels = {f"MIA {attack}: Δ |AUC − 0.5|": rows[(rows["attack"] == attack) & (rows["metric"] == stats.STRENGTH)]
              for attack in MIA_ATTACKS}
    panels["Δ copies / cell (32x; i.i.d.: all)"] = rows[copies]
    panels["drift: Δ median nearest (+ = away)"] = rows[rows["metric"] == "nearest_median"]
    columns = ["regime", "x", "method", "delta", "lo", "hi", "verdict"]
    return {title: _bracket_verdicts(panel, summary_table)[columns] for title, panel in panels.items() if len(panel)}


def _bracket_verdicts(rows: pd.DataFrame, summary_table: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (S2L effects) with each verdict replaced by its bracketed one (``bracketed_each``)."""
    keys = [*REGIME, "method", "attack", "metric"]
    judged = bracketed_each(summary_table[summary_table["metric"].isin(set(rows["metric"]))])
    return rows.drop(columns="verdict").merge(judged[[*keys, "verdict"]], on=keys, how="left")


FIGURE_TITLE = "S2L effect across the regimes (S2L − control, 95% CI)"


# lines and the page ----------------------------------------------------------------------------------------------

def shards_line(published: list[str]) -> str:
    """Which grid and capacity shards are published and which are pending."""
    pending = [s for s in SHARDS if s not in published]
    return f"published: {', '.join(published)}; pending: {', '.join(pending) or 'none'}"


def draws_line(estimates: int, needed: int, drawn: int) -> str:
    """How many draws the largest family needs against how many were drawn."""
    return (f"{estimates} estimates; the largest family needs {needed:,} draws to let an estimate survive Holm, "
            f"{drawn:,} drawn" + ("" if drawn >= needed else ": TOO FEW, no verdict can be up or down"))


def _page_claim(claim: str) -> str | None:
    """The column header of a claim of ``report.verdicts`` that the page shows per regime, or None."""
    if claim.startswith("(drift)"):
        return "S2L moves generations towards the training images"
    if "extraction" in claim:
        return "S2L raises extraction"
    return "S2L strengthens MIA (every method x attack)" if "over every method x attack" in claim else None


def page(hypotheses: pd.DataFrame, summary_table: pd.DataFrame, claims: pd.DataFrame, shards: dict,
         figures: list[str], commit: str | None) -> str:
    """The study's results page in Markdown: which shards are in (commit, cells, cost), the verdict per hypothesis
    with its evidence (``hypotheses_table``), the 32x copies effect per guidance, the paper's claims per regime
    (``claims_table``), the deviations, the caveat and the figures (``figures``: links relative to the page)."""
    lines = ["# Regimes: where S2L shows in the miniature", "",
             f"Built by notebook 15 at `{commit}` from the published shards in `data/results/regimes/` (the "
             "pre-registration is `data/results/regimes/preregistration.md`).", ""]
    published = [name for name in SHARDS if name in shards]
    if len(published) < len(SHARDS):
        lines += [f"**Interim: {len(published)} of {len(SHARDS)} grid shards are published.** The Holm families hold "
                  "only the published regimes, and each verdict reads only the worlds and methods published so far "
                  "(its evidence names them): every verdict can change when the rest are in.", ""]
    for name in SHARDS + CAPACITY + (ZERO_KNOWLEDGE,):
        record = shards.get(name)
        lent = "; ".join(f"{record[f'lent_by_{kind}']} lent by {lender}" for kind, lender in LENDERS.items()
                         if record and record.get(f"lent_by_{kind}"))
        lines.append(f"- `{name}`: " + (f"{record['cells']} cells, {record['finetuned_models']} fine-tuned models"
                                         + (f" ({lent})" if lent else "") + ", "
                                         f"{record['model_seconds'] / 3600:.1f} core-hours of model evaluation, "
                                         f"commit `{record['commit']}`" if record else "not run yet"))
    lines += ["", "| hypothesis | verdict | evidence |", "| --- | --- | --- |"]
    lines += [f"| {r['hypothesis']} | **{r['verdict']}** | {r['evidence']} |" for _, r in hypotheses.iterrows()]
    table = heaviest_by_guidance(summary_table)
    if len(table):
        lines += ["", "S2L effect on copies of the 32x members per cell (S2L − control, 95% CI; ↑ / ↓ = Holm "
                      "verdict; token methods also after − before), duplicated world, i.i.d. non-members:", "",
                  "| method | " + " | ".join(table.columns) + " |", "|" + " --- |" * (len(table.columns) + 1)]
        lines += [f"| {method} | " + " | ".join(str(v) for v in row) + " |" for method, row in table.iterrows()]
    wide = claims_table(claims) if len(claims) else pd.DataFrame()
    shown = {c: _page_claim(c) for c in wide.index if _page_claim(c)}
    if shown:
        lines += ["", "The paper's claims, read per regime (verdicts of the pre-registered families; every claim "
                      "and attack in `data/results/regimes/claims.csv`):", "",
                  "| regime | " + " | ".join(shown.values()) + " |", "|" + " --- |" * (len(shown) + 1)]
        lines += [f"| {regime} | " + " | ".join(str(wide.loc[c, regime]) for c in shown) + " |"
                  for regime in wide.columns]
    lines += ["", "Deviations from the pre-registration:", ""] + [f"- {d}" for d in DEVIATIONS]
    lines += ["", f"Caveat: {CAVEAT}"]
    lines += [""] + [f"![regimes]({path})" for path in figures]
    return "\n".join(lines) + "\n"


