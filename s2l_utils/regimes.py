"""The regime study (issue 13): where S2L's effect shows in the miniature, where it does not, and why.

The grid is a set of *shards*, one sweep file each (``sweeps/regimes_*.yaml``): a world (members duplicated or not,
non-members shifted or not) and two of the methods, over SP guidance x every private domain x seeds, each cell with
its three conditions. A finished shard is *published*: its collected raw scores and extraction matches are copied to
``data/results/regimes/<shard>.parquet`` (``publish``; ``python -m s2l_utils.regimes publish <sweep>``), committed
with the commit that produced them, so the study goes on from what is committed, shard by shard. Notebook 15 reads
every published shard (``load``) and judges the pre-registered hypotheses (``data/results/regimes/
preregistration.md``) from them, with the statistics of the main experiment (``stats``):

* ``summary``: every comparison per regime (world, shift, guidance) and method, Holm within each comparison x
  metric family over methods x regimes;
* ``contrasts``: the same per-cell effects at one setting minus another (guidance 7.5 - 1, shift 0.5 - 0, the
  wider target minus the grid's: ``capacity_contrast``), paired by method, domain and seed, with the cluster
  bootstrap;
* ``h1_memorisation``, ``h2_drift``, ``h3_shift``, ``h4_capacity``: each hypothesis's verdict by its
  pre-registered rule, with the numbers it rests on; ``zero_knowledge``: the noise-only fine-tunes against the target.

H4's shards (``CAPACITY``) attack a wider target (UNet widths ``WIDE_CHANNELS``) of the duplicated world, labelled as
a world of its own (``WIDE``): it shares the duplicated world's data, so both are estimated together and their
effects contrasted cell by cell (``contrasts(..., "world", WIDE, DUPLICATED)``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import experiment, finetune, paths, report, stats, sweep
from .config import ConfigError
from .notebook import PARAMS_FILE, write_json

WORLDS = ("regimes_duplicated", "regimes_iid", "regimes_duplicated_shift", "regimes_iid_shift")
# each world in two shards of 6 points (about 80 minutes each on 2 cores), so that a session can finish and commit one
SHARDS = tuple(f"{world}_{part}" for world in WORLDS for part in ("lora_dreambooth", "ti_dblora"))
ZERO_KNOWLEDGE = "regimes_zero_knowledge"
# H4: the wider target, duplicated world, SP guidance 3, every method (two shards: its cells cost about 3x the grid's)
CAPACITY = tuple(f"regimes_capacity_{part}" for part in ("lora_dreambooth", "ti_dblora"))
DUPLICATED, IID = "duplicated", "i.i.d."
WIDE_CHANNELS = (32, 64)  # H4's wider target (pre-registered); the grid's targets have their profile's widths
WIDE_MARK = f", UNet {WIDE_CHANNELS[0]}-{WIDE_CHANNELS[1]}"  # added to a world's label on the wider target
WIDE = DUPLICATED + WIDE_MARK
H4_GUIDANCE = 3.0  # the SP guidance H4 compares the targets at (pre-registered)
REGIME = ("world", "nonmember_shift", "sp_guidance")
REAL_NONMEMBER = "S2L - real non-member"
COMPARED = (experiment.AFTER, experiment.EFFECT, "S2L - cross-domain", REAL_NONMEMBER)
HEAVIEST = stats.class_metric("own_copies", 32)  # the most duplicated class of members (32 copies)
MIA_ATTACKS = ("loss", "secmi_ldm", "pia")  # the attacks the figure and the paper's table show
SHARDS_FILE = "shards.json"
# who can lend a cell its model (the kinds a cell.json records; publish counts each as lent_by_<kind>): a lender
# may be any finished cell of the same cache, in this shard or not, so a shard's model_seconds leave its time out
LENDERS = {"twin": "the unshifted twin", "sibling": "a cell at other SP parameters"}
WEIGHT_METHODS = "weight methods"  # a contrast pooled over the methods that change weights (no token)
H1_MARGIN = 0.25  # copies per cell: a quarter of the target's own 32x rate (pre-registered refutation bound)
# domains in which the target must copy for a copies verdict: with fewer, the cluster bootstrap leaves them all out
# of many draws (one domain: (7/8)^8, a third), so every CI reaches 0 and "refuted" or "not smaller" is forced
MIN_COPYING_DOMAINS = 3


# where the analysis departs from data/results/regimes/preregistration.md, and why (stated wherever verdicts are)
DEVIATIONS = (
    "16 cells per condition had run before the pre-registration: issue 12's `mini` (duplicated world, LoRA and "
    "textual inversion, seed 0, SP guidance 3, S2L and control), which H1's prior quotes; the grid reads them "
    "from the cell cache.",
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
    "The zero-knowledge shake (issue 13, item 3) is exploratory: the pre-registration does not name it.",
    f"Copies are judged only where the target copies in at least {MIN_COPYING_DOMAINS} domains: with fewer, more "
    "than 2.5% of the bootstrap draws of 8 domains leave out every copying domain ((7/8)^8 = 0.34 with one, "
    "(6/8)^8 = 0.10 with two; (5/8)^8 = 0.023 with three), so a 95% CI of a copies effect reaches 0 unless a "
    "fine-tune copies where the target does not. H1 is then \"not testable\" and H2's copies "
    "term is left out (both state it). H1's literal refutation rule (every CI below +0.25) would read \"refuted\" there.",
    "H3's \"some MIA effect\" is read on both comparisons its measure names, each judged apart, and the verdict "
    "names those that confirm: the S2L effect against each method's own control (token methods bracketed) and "
    "S2L − real non-member (weight methods; for textual inversion it is one end of its bracket). Notebook 15 read "
    "the first alone until 6 of 8 shards were in, when a referee pointed out that the pre-registration measures both. "
    "Its \"i.i.d. world\" is read as the same duplication world at shift 0, which shares the target and the "
    "members as its measure says, not the grid's world without duplicated members.",
    "H4's wider target is pretrained with the grid's recipe (1600 steps of batch 32), so the UNet width is its one "
    "difference; the pre-registration's cost line quoted a 2000-step prototype. H4 is judged on the contrast "
    "pooled over the weight methods, whose control (the cross-domain fine-tune) sees no real image of the domain; "
    "textual inversion's bracket is shown apart. Its copies term counts only where the wider target copies in at "
    f"least {MIN_COPYING_DOMAINS} domains, and the wider target's verdicts form Holm families of their own.",
)
CAVEAT = ("With 8 domains, no test that treats the domain as the unit can give a p-value below 2/256, so a verdict "
          "that survives Holm over a family of hundreds rests on all domains agreeing and on the within-domain "
          "resampling: the summary's `domains_up` / `domains_down` say how many domains agree, and `p_sign_flip` "
          "gives the exact sign-flip test over domains as a check.")


def results_dir() -> Path:
    """Where published shards, the pre-registration and notebook 15's tables live."""
    return paths.data_dir() / "results" / "regimes"


def world_of(params: dict) -> str:
    """A run's world label from its parameters: duplicated or i.i.d. members, marked ``WIDE`` when its target is
    H4's wider one (any other width is its profile's grid target, e.g. the smoke stand-in's)."""
    world = DUPLICATED if len(params["member_duplicates"]) else IID
    return world + WIDE_MARK if tuple(params["unet_channels"]) == WIDE_CHANNELS else world


def data_of(world: str) -> str:
    """The data a world label attacks (``DUPLICATED`` or ``IID``), whatever its target."""
    return world.split(", ")[0]


def publish(sweep_file: str | Path, folder: Path | None = None, allow_dirty: bool = False, log=print) -> Path:
    """Copy a finished shard's collected table (every point done) to ``folder/<shard>.parquet``, each run's rows
    labelled with the regime its own ``params.json`` records, and record in ``folder/shards.json`` the commit(s)
    the runs recorded (refused when unknown or "+dirty", unless ``allow_dirty``), the cells, the fine-tuned models,
    how many of them the unshifted twin (``experiment.SHIFT_FREE``) or a cell at other SP parameters
    (``experiment.SP_FREE``) lent, and their evaluation seconds (each model's
    ``cell.json``, refused when missing)."""
    shard = sweep.load_sweep(sweep_file)
    unfinished = [p for p in shard.points() if sweep.point_state(shard, p) != "done"]
    if unfinished:
        raise ConfigError(f"shard {shard.name}: {len(unfinished)} of {len(shard.points())} points are not done; "
                          f"run python -m s2l_utils.sweep {shard.path} --jobs 2 first")
    collected = sweep.collect(shard, log=log)
    runs = {run_dir: json.loads((Path(run_dir) / PARAMS_FILE).read_text()) for run_dir in collected["run_dir"].unique()}
    commits = sorted({str(run["git_commit"]) for run in runs.values()})
    if not allow_dirty and any(c == "None" or c.endswith("+dirty") for c in commits):
        raise ConfigError(f"shard {shard.name} was computed at {commits}: publish only runs of committed code")
    regime = {run_dir: (world_of(run["params"]), run["params"]["nonmember_shift"],
                        run["params"]["sp_guidance"]) for run_dir, run in runs.items()}
    labels = pd.DataFrame(collected["run_dir"].map(regime).tolist(), columns=list(REGIME), index=collected.index)
    collected = collected.drop(columns=[c for c in (*REGIME, "member_duplicates") if c in collected]).join(labels)
    table = pd.concat([report.sweep_part(collected, name).assign(table=name) for name in report.SWEEP_TABLES],
                      ignore_index=True)
    tuned = table.loc[table["condition"] != experiment.BEFORE, ["cell", "condition"]].drop_duplicates()
    infos = [paths.cache_dir("cells") / c / k / experiment.CELL_INFO for c, k in tuned.itertuples(index=False)]
    missing = [str(info) for info in infos if not info.is_file()]
    if missing:
        raise FileNotFoundError(f"shard {shard.name}: {len(missing)} fine-tuned models lack their {experiment.CELL_INFO} "
                                f"(e.g. {missing[0]}): publish where the shard ran")
    folder = folder or results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{shard.name}.parquet"
    sweep.replace_atomically(out, lambda tmp: table.to_parquet(tmp, index=False, compression="zstd"))
    models = [json.loads(info.read_text()) for info in infos]
    record = shard_records(folder)
    record[shard.name] = {"commit": ", ".join(commits), "points": len(shard.points()),
                          "cells": int(table["cell"].nunique()), "finetuned_models": len(tuned),
                          **{f"lent_by_{kind}": sum(bool(m.get(kind)) for m in models) for kind in LENDERS},
                          "model_seconds": round(sum(m["seconds"] for m in models)), "rows": len(table)}
    write_json(folder / SHARDS_FILE, record)
    log(f"published {shard.name}: {record[shard.name]} -> {out}")
    return out


def shard_records(folder: Path | None = None) -> dict:
    """What ``publish`` recorded per shard (commit, cells, fine-tuned models, seconds); empty before any."""
    path = (folder or results_dir()) / SHARDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load(folder: Path | None = None, shards=SHARDS + CAPACITY) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(scores, matches, names) of the published shards among ``shards`` in ``folder``; raises when none is."""
    folder = folder or results_dir()
    names = [name for name in shards if (folder / f"{name}.parquet").is_file()]
    if not names:
        raise FileNotFoundError(f"no published shard of {list(shards)} in {folder}: run `make regimes` (or a "
                                f"sweep, then python -m s2l_utils.regimes publish <sweep file>)")
    table = pd.concat([pd.read_parquet(folder / f"{name}.parquet") for name in names], ignore_index=True)
    scores, matches = (report.sweep_part(table, name) for name in report.SWEEP_TABLES)
    return scores, matches, names


def effects(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int, seed: int = 0) -> stats.Estimates:
    """Every cell's comparisons (``COMPARED``) with paired draws, estimated per data set (``data_of``: the
    duplicated world with either target, the i.i.d. world): its duplication classes are its own, and within it the
    cells of a domain share their draws (settings, and targets of one data set, are contrasted paired:
    ``contrasts``). The two data sets are never differenced with each other."""
    chosen = {name: experiment.COMPARISONS[name] for name in COMPARED}
    parts = []
    data = scores["world"].map(data_of)
    for name in dict.fromkeys(data):
        estimates = stats.cell_estimates(scores[data == name], matches[matches["world"].map(data_of) == name],
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
    if "world" in judged:
        keys.append(judged["world"] == judged["world"].map(data_of))
    family = judged.groupby(keys).size().max()
    return int(np.ceil(2 * family / stats.ALPHA))


def summary(cell_effects: stats.Estimates, seed: int = 0, correction: str = "holm") -> pd.DataFrame:
    """The comparisons per regime and method, averaged over domains and seeds, judged within each comparison x
    metric family over every method and regime of the grid (the pre-registered families); a world on another
    target (H4's ``WIDE``) is judged in families of its own, so it neither joins nor enlarges the grid's."""
    by = [c for c in (*REGIME, "method", "comparison", "attack", "metric") if c in cell_effects.rows]
    grid = (cell_effects.rows["world"] == cell_effects.rows["world"].map(data_of)).to_numpy()
    parts = [stats.Estimates(cell_effects.rows[keep].reset_index(drop=True), cell_effects.draws[keep])
             for keep in (grid, ~grid) if keep.any()]
    return pd.concat([experiment.judged_summary(part, by, seed, correction).merge(domain_signs(part, by), on=by,
                                                                                 how="left") for part in parts],
                     ignore_index=True)


def domain_signs(estimates: stats.Estimates, by: list[str]) -> pd.DataFrame:
    """Per group of ``by``: how many domains' mean estimate lies above 0 (``domains_up``) and below it
    (``domains_down``), in how many the reference is non-zero (``domains_reference``, e.g. where the target
    copies), and the exact sign-flip p-value over the domains (``p_sign_flip``, ``stats.sign_flip_p``).
    With 8 domains no test that treats the domain as the unit can give a two-sided p below 2/256, so a verdict
    that survives Holm over a large family rests on every domain agreeing and on the within-domain resampling:
    these columns show how far the domains agree."""
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
              metrics=(stats.STRENGTH, HEAVIEST, "own_copies", *stats.DRIFT_JUDGED)) -> pd.DataFrame:
    """Each comparison's per-cell effect at ``column`` = ``high`` minus that at ``low``, paired by the other
    regime columns, method, domain and seed; per method and over all methods (``experiment.ALL_METHODS``, the
    comparisons every method has), with
    cluster-bootstrap 95% CIs and p-values (not corrected: each hypothesis names the contrast it reads), and pooled
    over the methods that change weights (``WEIGHT_METHODS``): their control is fine-tuned at the same setting,
    while a token method's real-non-member control does not depend on the SP guidance at all."""
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
    return table.assign(contrast=f"{column} {high} - {low}").rename(columns={"value": "delta"})


def blind_by_world(scores: pd.DataFrame, n_bootstrap: int, seed: int = 0) -> pd.DataFrame:
    """The blind baseline's AUC (over every cell of every method) per world and non-member shift."""
    parts = []
    for (world, shift), rows in scores.groupby(["world", "nonmember_shift"], sort=False):
        table = experiment.blind_summary(rows, n_bootstrap, seed)
        parts.append(table[table["method"] == experiment.ALL_METHODS].assign(world=world, nonmember_shift=shift))
    return pd.concat(parts, ignore_index=True).drop(columns="method")


def figure_panels(summary_table: pd.DataFrame, comparison: str = experiment.EFFECT) -> dict[str, pd.DataFrame]:
    """``comparison``'s deltas for ``plots.regime_grid``: one regime per world and shift; panels: MIA strength of
    each of ``MIA_ATTACKS``, copies of the 32x members (of all members in the i.i.d. world, which has no class),
    and the drift of the median nearest distance."""
    rows = summary_table[summary_table["comparison"] == comparison]
    rows = rows.assign(regime=[f"{w}, shift {s:g}" for w, s in zip(rows["world"], rows["nonmember_shift"])],
                       x=rows["sp_guidance"])
    copies = (((rows["world"].map(data_of) == DUPLICATED) & (rows["metric"] == HEAVIEST))
              | ((rows["world"] == IID) & (rows["metric"] == "own_copies")))
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
    out["verdict"] = np.where(token, np.where(agree, out["verdict"], "no change"), out["verdict"])
    return out.drop(columns="after_verdict").reset_index()


def _rows_text(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r['method']} {report.ci_text(r)}"
                     + (f" (after − before {report.ci_text(r, 'after_')})"
                        if pd.notna(r.get("after_delta", np.nan)) else "")
                     + (f" {r['verdict']}" if r["verdict"] != "no change" else "") for _, r in rows.iterrows())


def _select(table: pd.DataFrame, world: str, shift: float = 0.0, **equal) -> pd.DataFrame:
    rows = table[(table["world"] == world) & (table["nonmember_shift"] == shift)]
    for column, value in equal.items():
        rows = rows[rows[column] == value]
    return rows


def _of(rows: pd.DataFrame, method: str, comparison: str, metric: str) -> pd.DataFrame:
    """The rows of a contrast table for one method (or pool), comparison and metric."""
    return rows[(rows["method"] == method) & (rows["comparison"] == comparison) & (rows["metric"] == metric)]


AROUND_ZERO = "refuted by its own rule (CI around 0); not shown by the shared rule"


def _refutation(hi: float) -> str:
    """A hypothesis's own refutation rule ("CI below or around 0") against the shared one (the opposite
    verdict): both are pre-registered, so a CI around 0 is reported under both."""
    return "refuted" if hi < 0 else AROUND_ZERO


def copying_domains(summary_table: pd.DataFrame, world: str = DUPLICATED) -> int:
    """In how many domains the target copies its 32x members (the most in any regime of ``world``)."""
    rows = _select(summary_table, world, attack=stats.EXTRACTION, metric=HEAVIEST,
                   comparison=experiment.AFTER)
    return int(rows["domains_reference"].max()) if len(rows) and "domains_reference" in rows else 0


def h1_memorisation(summary_table: pd.DataFrame) -> dict:
    """H1: where the target copies the 32x members, S2L raises those copies in the duplicated world (some method
    x guidance with a Holm-surviving "up", bracketed for token methods), and nothing rises in the i.i.d. world
    (bracketed too); refuted when every duplicated-world effect is "down" or "no change" with its CI below
    ``H1_MARGIN`` copies per cell. Not testable where the target copies in fewer than ``MIN_COPYING_DOMAINS``
    domains: then more than 2.5% of the bootstrap draws leave every copying domain out, so a CI reaches 0
    whatever S2L does there."""
    rows = _select(summary_table, DUPLICATED, attack=stats.EXTRACTION, metric=HEAVIEST)
    dup = bracketed(rows)
    if dup.empty:
        return _verdict("H1 memorisation", "pending", "the duplicated world's shard is not published yet")
    rate = rows.loc[rows["comparison"] == experiment.AFTER, "before"].mean()
    copying = copying_domains(summary_table)
    per_guidance = "; ".join(f"g = {g:g}: {_rows_text(part)}" for g, part in dup.groupby("sp_guidance"))
    iid = bracketed(_select(summary_table, IID, attack=stats.EXTRACTION, metric="own_copies"))
    iid_text = (f" I.i.d. world, own copies: {int((iid['verdict'] == 'up').sum())} up of {len(iid)} (bracketed S2L "
                f"effects, every method x guidance)." if len(iid) else " The i.i.d. world is not published yet.")
    evidence = (f"The target copies {rate:.3f} 32x members per cell, in {copying} of 8 domains. S2L effect on "
                f"those copies (duplicated world): {per_guidance}.{iid_text}")
    if pd.isna(rate):
        return _verdict("H1 memorisation", "not testable (the target's copy rate is unknown)", evidence)
    if copying < MIN_COPYING_DOMAINS:
        return _verdict("H1 memorisation", f"not testable (the target copies in {copying} of 8 domains; a verdict "
                                           f"needs {MIN_COPYING_DOMAINS})", evidence)
    if (dup["verdict"] == "up").any():
        if iid.empty:
            return _verdict("H1 memorisation", "not shown (i.i.d. world pending)", evidence)
        verdict = "confirmed" if not (iid["verdict"] == "up").any() else "not shown (the i.i.d. world rises too)"
        return _verdict("H1 memorisation", verdict, evidence)
    if (dup["hi"] < H1_MARGIN).all():
        return _verdict("H1 memorisation", "refuted",
                        evidence + f" Every CI lies below +{H1_MARGIN} copies per cell (a quarter of the target's "
                                   "rate in issue 12).")
    return _verdict("H1 memorisation", "not shown", evidence)


def _h2_confirmed(lower_at_75: dict[str, list[str]]) -> str:
    """H2's "confirmed", saying whether the mechanism it names shows: the rule asks only that guidance order the
    drift and that S2L's effect at g = 1 be no smaller, so the claim that drift *lowers* extraction and MIA needs
    a 7.5 − 1 contrast wholly below 0 (``lower_at_75``: such attacks and metrics per world)."""
    lower = "; ".join(f"{world} world: {', '.join(names)}" for world, names in lower_at_75.items() if names)
    if lower:
        return f"confirmed (guidance orders the drift; S2L's effect is lower at g = 7.5 on {lower})"
    return "confirmed (guidance orders the drift; that the drift lowers extraction and MIA is not shown)"


def h2_drift(summary_table: pd.DataFrame, guidance: pd.DataFrame) -> dict:
    """H2, from the guidance contrast (the per-cell effect at 7.5 minus that at 1), pooled over the weight
    methods (a token method's control does not depend on the guidance; it is shown apart): confirmed when the
    S2L effect on the median nearest distance rises with guidance (CI above 0) and S2L's effect on MIA strength
    and on 32x copies (only where the target copies in ``MIN_COPYING_DOMAINS`` domains) is not smaller at 1 than
    at 7.5 (no such contrast's CI wholly above 0); refuted by its own rule when the drift contrast's CI is
    around or below 0 (``_refutation``); not shown when it is undefined."""
    if guidance.empty:
        return _verdict("H2 drift", "pending", "needs SP guidance 1 and 7.5 in a published shard")
    unshifted = guidance[guidance["nonmember_shift"] == 0.0]
    judge_copies = copying_domains(summary_table) >= MIN_COPYING_DOMAINS
    parts, verdicts, lower_at_75 = [], [], {}
    for world in dict.fromkeys(unshifted["world"]):
        rows = unshifted[unshifted["world"] == world]
        drift = _of(rows, WEIGHT_METHODS, experiment.EFFECT, "nearest_median")
        if drift.empty:
            continue
        row = drift.iloc[0]
        copies = _of(rows, WEIGHT_METHODS, experiment.EFFECT, HEAVIEST)
        mia = _of(rows, WEIGHT_METHODS, experiment.EFFECT, stats.STRENGTH)
        judged = pd.concat([copies, mia]) if judge_copies else mia
        smaller_at_1 = [f"{r['attack']} {r['metric']}" for _, r in judged.iterrows() if r["lo"] > 0]
        lower_at_75[world] = [f"{r['attack']} {r['metric']}" for _, r in judged.iterrows() if r["hi"] < 0]
        if pd.isna(row["lo"]) or pd.isna(row["hi"]):
            verdicts.append("not shown (the drift contrast is undefined)")
        elif row["lo"] > 0:
            verdicts.append("not shown (drift ordered, but S2L's effect is smaller at g = 1)" if smaller_at_1
                            else "confirmed")
        else:
            verdicts.append(_refutation(row["hi"]))
        after = _of(rows, WEIGHT_METHODS, experiment.AFTER, "nearest_median")
        token = [r for _, r in rows[(rows["metric"] == "nearest_median")
                                    & rows["method"].map(finetune.is_token_method)].iterrows()]
        parts.append(
            f"{world} world, weight methods, contrast 7.5 − 1 of the S2L effect on the median nearest distance: "
            f"{report.ci_text(row)} (up in {int(row['domains_up'])} of {int(row['domains'])} "
            f"domains, sign-flip p {row['p_sign_flip']:.3f})"
            + "".join(f"; of after − before: {report.ci_text(r)}" for _, r in after.iterrows())
            + "".join(f"; on 32x copies {report.ci_text(r)}"
                      + ("" if judge_copies else " (not judged: too few copying domains)") for _, r in copies.iterrows())
            + "; on MIA strength " + ", ".join(f"{r['attack']} {report.ci_text(r)}"
                                               for _, r in mia.iterrows())
            + "".join(f"; {r['method']} ({r['comparison']}) {report.ci_text(r)}" for r in token))
    if not verdicts:
        return _verdict("H2 drift", "pending", "no weight method has both guidance settings")
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "not shown (the worlds disagree)"
    return _verdict("H2 drift", _h2_confirmed(lower_at_75) if verdict == "confirmed" else verdict,
                    ". ".join(parts) + ".")


# H3's two measured MIA comparisons (pre-registered): each method's S2L effect against its own control (token
# methods bracketed), and S2L - real non-member, whose control learns the shifted photos (weight methods: for a
# token method it is its own control, one end of its bracket)
H3_COMPARISONS = {experiment.EFFECT: "against each method's own control",
                  REAL_NONMEMBER: "against the real-non-member control"}


def h3_shift(summary_table: pd.DataFrame, blind_auc: pd.DataFrame, shift: pd.DataFrame) -> dict:
    """H3, judged on each of ``H3_COMPARISONS``: confirmed when the blind AUC exceeds 0.5 only in the shifted
    worlds, and some MIA strength comparison is "up" (Holm) with shifted non-members while its unshifted twin (same
    world, guidance, method, attack) is not, with a paired shift contrast whose CI lies above 0 (the verdict names
    the comparisons that confirm); refuted by its own rule when no paired contrast's CI excludes 0
    (``AROUND_ZERO``: the shared rule would say not shown)."""
    blind_text = "; ".join(f"{r['world']} shift {r['nonmember_shift']:g}: {experiment.auc_text(r)}"
                           for _, r in blind_auc.iterrows())
    if shift.empty:
        return _verdict("H3 shift", "pending", f"blind AUC {blind_text}; no shifted shard published yet")
    blind_ok = all((r["lo"] > 0.5) == (r["nonmember_shift"] > 0) for _, r in blind_auc.iterrows())
    keys = ["world", "sp_guidance", "method", "attack"]
    strength = summary_table[summary_table["metric"] == stats.STRENGTH]
    judged, confirming, excluding, parts = [], [], 0, []
    for comparison, against in H3_COMPARISONS.items() if len(strength) else ():
        own = comparison == experiment.EFFECT

        def per_method(table):  # a token method's real-non-member comparison is an end of its own bracket
            token = np.array([finetune.is_token_method(m) for m in table["method"]], dtype=bool)
            return table[~table["method"].isin([experiment.ALL_METHODS, WEIGHT_METHODS]).to_numpy() & (own | ~token)]

        rows = per_method(bracketed_each(strength) if own else strength[strength["comparison"] == comparison])
        contrast = per_method(shift[(shift["metric"] == stats.STRENGTH) & (shift["comparison"] == comparison)])
        if rows.empty or contrast.empty:
            continue
        up = rows.pivot_table(index=keys, columns="nonmember_shift", values="verdict", aggfunc="first")
        contrast = contrast.set_index(keys)
        found = [key for key, row in up.iterrows() if row.get(0.5) == "up" and row.get(0.0) != "up"
                 and key in contrast.index and contrast.loc[key, "lo"] > 0]
        crossing = int(((contrast["lo"] > 0) | (contrast["hi"] < 0)).sum())
        excluding += crossing
        judged.append(against)
        confirming += [against] if found else []
        parts.append(f"{against}: {len(found)} of {len(up)} method x attack x guidance x world \"up\" only with "
                     "shifted non-members and a paired contrast above 0"
                     + (" (" + "; ".join(f"{w} g = {g:g} {m} {a} {report.ci_text(contrast.loc[(w, g, m, a)])}"
                                         for w, g, m, a in found) + ")" if found else "")
                     + f"; {crossing} of {len(contrast)} paired contrasts (shift 0.5 − 0, uncorrected) exclude 0")
    evidence = f"blind AUC {blind_text}. " + ". ".join(parts) + "."
    if not judged:
        return _verdict("H3 shift", "pending", f"blind AUC {blind_text}; no MIA comparison published on both sides")
    if confirming and blind_ok:
        others = [a for a in judged if a not in confirming]
        return _verdict("H3 shift", "confirmed" + (f" ({', '.join(confirming)}; not shown {', '.join(others)})"
                                                   if others else ""), evidence)
    if excluding == 0:
        return _verdict("H3 shift", AROUND_ZERO, evidence)
    return _verdict("H3 shift", "not shown", evidence)


def capacity_contrast(cell_effects: stats.Estimates, seed: int = 0) -> pd.DataFrame:
    """H4's contrast: each cell's comparisons on the wider target minus the same method's, domain's and seed's on
    the grid's target (``contrasts`` over ``world``), or an empty table until both are published with i.i.d.
    non-members at ``H4_GUIDANCE``."""
    rows = cell_effects.rows
    at = (rows["nonmember_shift"] == 0.0) & (rows["sp_guidance"] == H4_GUIDANCE)
    if not {WIDE, DUPLICATED} <= set(rows.loc[at, "world"]):
        return pd.DataFrame()
    return contrasts(cell_effects, "world", WIDE, DUPLICATED, seed)


def h4_capacity(summary_table: pd.DataFrame, capacity: pd.DataFrame) -> dict:
    """H4, from ``capacity_contrast`` (duplicated world, i.i.d. non-members, SP guidance ``H4_GUIDANCE``), pooled
    over the weight methods: confirmed when the S2L effect on the median nearest distance is smaller on the wider
    target (CI below 0) and its effect on 32x copies larger (CI above 0; judged only where the wider target copies
    in ``MIN_COPYING_DOMAINS`` domains); refuted (shared rule) when either CI lies on the opposite side; else not
    shown. Textual inversion is shown apart, both ends of its bracket; the evidence also reads H1 on the wider
    target."""
    if capacity.empty:
        return _verdict("H4 capacity", "pending", f"needs the wider target's shards ({', '.join(CAPACITY)}) and "
                                                  f"the grid's duplicated world at g = {H4_GUIDANCE:g}")
    at = capacity[(capacity["nonmember_shift"] == 0.0) & (capacity["sp_guidance"] == H4_GUIDANCE)]
    drift = _of(at, WEIGHT_METHODS, experiment.EFFECT, "nearest_median")
    if drift.empty:
        return _verdict("H4 capacity", "pending", "no weight method is published on both targets")
    drift, copies = drift.iloc[0], _of(at, WEIGHT_METHODS, experiment.EFFECT, HEAVIEST)
    pooled = sorted(m for m in set(at["method"]) if m not in (experiment.ALL_METHODS, WEIGHT_METHODS)
                    and not finetune.is_token_method(m))
    copying = copying_domains(summary_table, WIDE)
    judge_copies = copying >= MIN_COPYING_DOMAINS and len(copies) > 0
    more = judge_copies and copies.iloc[0]["lo"] > 0
    fewer = judge_copies and copies.iloc[0]["hi"] < 0

    def target(world, metric):
        return _select(summary_table, world, sp_guidance=H4_GUIDANCE, comparison=experiment.AFTER,
                       metric=metric)["before"].mean()

    token = at[at["method"].map(finetune.is_token_method) & at["metric"].isin(["nearest_median", HEAVIEST])
               & at["comparison"].isin([experiment.AFTER, experiment.EFFECT])]
    wide_h1 = bracketed(_select(summary_table, WIDE, attack=stats.EXTRACTION, metric=HEAVIEST))
    evidence = (f"duplicated world, g = {H4_GUIDANCE:g}, weight methods ({', '.join(pooled)}), S2L effect on the "
                f"wider target minus that on the grid's: median nearest distance {report.ci_text(drift)} (down in "
                f"{int(drift['domains_down'])} of {int(drift['domains'])} domains, sign-flip p "
                f"{drift['p_sign_flip']:.3f})"
                + "".join(f"; of after − before {report.ci_text(r)}"
                          for _, r in _of(at, WEIGHT_METHODS, experiment.AFTER, "nearest_median").iterrows())
                + "".join(f"; 32x copies {report.ci_text(r)}" + ("" if judge_copies else " (not judged: too few "
                                                                 "copying domains)") for _, r in copies.iterrows())
                + "".join(f"; {r['method']} ({r['comparison']}) {r['metric']} {report.ci_text(r)}"
                          for _, r in token.iterrows())
                + f". The targets' median nearest distance: wider {target(WIDE, 'nearest_median'):.3f}, grid "
                  f"{target(DUPLICATED, 'nearest_median'):.3f}; the wider target copies "
                  f"{target(WIDE, HEAVIEST):.3f} 32x members per cell, in {copying} of 8 domains (the grid's: "
                  f"{target(DUPLICATED, HEAVIEST):.3f}, in {copying_domains(summary_table)})"
                + (f". H1 read on the wider target (S2L effect on its 32x copies): {_rows_text(wide_h1)}."
                   if len(wide_h1) else "."))
    if pd.isna(drift["lo"]) or pd.isna(drift["hi"]):
        return _verdict("H4 capacity", "not shown (the drift contrast is undefined)", evidence)
    if drift["lo"] > 0 or fewer:
        return _verdict("H4 capacity", "refuted", evidence)
    if drift["hi"] < 0 and more:
        return _verdict("H4 capacity", "confirmed", evidence)
    if drift["hi"] < 0 and not judge_copies:
        return _verdict("H4 capacity", f"not shown (drift smaller; copies not testable: the wider target copies in "
                                       f"{copying} of 8 domains)", evidence)
    return _verdict("H4 capacity", "not shown", evidence)


def bracketed_each(summary_rows: pd.DataFrame) -> pd.DataFrame:
    """``bracketed`` for every attack and metric of ``summary_rows``, with attack and metric as columns."""
    return pd.concat([bracketed(rows).assign(attack=attack, metric=metric)
                      for (attack, metric), rows in summary_rows.groupby(["attack", "metric"], sort=False)],
                     ignore_index=True)


def zero_knowledge(summary_table: pd.DataFrame) -> dict:
    """The paper's zero-knowledge claim on the duplicated world, exploratory (not pre-registered): fine-tuning on
    Gaussian-noise images (or noising the weights) strengthens the attacks. After − before, each family on its
    own: MIA strength over methods x attacks, and copies of the 32x members."""
    after = summary_table[summary_table["comparison"] == experiment.AFTER]
    families = {"MIA strength": after[after["metric"] == stats.STRENGTH], "32x copies": after[after["metric"] == HEAVIEST]}
    verdict = "; ".join(f"{name}: {stats.agreement(stats.tally(rows))}" for name, rows in families.items() if len(rows))
    listed = "; ".join(f"{r['method']} {r['attack'] if r['metric'] == stats.STRENGTH else '32x copies'} "
                       f"{report.ci_text(r)}" + (f" {r['verdict']}" if r["verdict"] == "up" or
                                                                   r["verdict"] == "down" else "")
                       for rows in families.values() for _, r in rows.iterrows())
    return _verdict("zero-knowledge shake (exploratory)", verdict,
                    f"after − before: {listed}. One dose only (the profile's steps and learning rate; weight noise "
                    "0.05); the noise images are captioned with the domain's name, so the name is known.")


def claims_by_regime(summary_table: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims (``report.verdicts``: MIA per attack and over all, extraction, drift) read per regime,
    from the verdicts of the pre-registered families: rows = claims, columns = regimes ("world, shift s, g =
    x"), values = whether the regime agrees with the claim."""
    out = {}
    for (world, shift, g), rows in summary_table.groupby([*REGIME], sort=True):
        label = f"{world}, shift {shift:g}, g = {g:g}"
        out[label] = {c["claim"]: c["agrees"] for c in report.verdicts({"main": rows.drop(columns=[*REGIME])})}
    return pd.DataFrame(out).rename_axis("claim")


def not_run(name: str, why: str) -> dict:
    """A hypothesis the grid did not test (e.g. H4 when its budget was not spent), with the reason."""
    return _verdict(name, "not run", why)


def heaviest_by_guidance(summary_table: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods, columns = SP guidance: the S2L effect on copies of the 32x members per cell in the
    duplicated world with i.i.d. non-members (token methods: both ends of their bracket), verdict marked."""
    rows = bracketed(_select(summary_table, DUPLICATED, attack=stats.EXTRACTION, metric=HEAVIEST))
    if rows.empty:
        return pd.DataFrame()
    text = [report.ci_text(r) + {"up": " ↑", "down": " ↓"}.get(r["verdict"], "")
            + (f"; after − before {report.ci_text(r, 'after_')}"
               if pd.notna(r["after_delta"]) else "") for _, r in rows.iterrows()]
    return rows.assign(text=text).pivot_table(index="method", columns="sp_guidance", values="text", aggfunc="first",
                                              sort=False).sort_index(axis=1).rename(columns=lambda g: f"g = {g:g}")


def markdown(hypotheses: pd.DataFrame, summary_table: pd.DataFrame, shards: dict, figures: list[str],
             commit: str | None) -> str:
    """The README's Regimes block: which shards are in (commit, cells, cost), the verdict per hypothesis with
    its numbers, the 32x copies effect per guidance, and the figures."""
    lines = ["### Regimes (issue 13): where S2L shows in the miniature", "",
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
    claims = claims_by_regime(summary_table)
    shown = [c for c in claims.index if "over every method x attack" in c or "extraction" in c
             or c.startswith("(drift)")]
    if shown:
        lines += ["", "The paper's claims, read per regime (verdicts of the pre-registered families; every claim "
                      "and attack in `data/results/regimes/claims.csv`):", "",
                  "| regime | " + " | ".join(_short(c) for c in shown) + " |", "|" + " --- |" * (len(shown) + 1)]
        lines += [f"| {regime} | " + " | ".join(str(claims.loc[c, regime]) for c in shown) + " |"
                  for regime in claims.columns]
    lines += ["", "Deviations from the pre-registration:", ""] + [f"- {d}" for d in DEVIATIONS]
    lines += ["", f"Caveat: {CAVEAT}"]
    lines += [""] + [f"![regimes]({path})" for path in figures]
    return "\n".join(lines) + "\n"


def _short(claim: str) -> str:
    if claim.startswith("(drift)"):
        return "S2L moves generations towards the training images"
    return "S2L raises extraction" if "extraction" in claim else "S2L strengthens MIA (every method x attack)"


def preregistration() -> str:
    """The pre-registered hypotheses, as committed before the grid ran (read, never rewritten)."""
    return (paths.repo_root() / "data" / "results" / "regimes" / "preregistration.md").read_text()


def _verdict(name: str, verdict: str, evidence: str) -> dict:
    return {"hypothesis": name, "verdict": verdict, "evidence": evidence}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2l_utils.regimes", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    publishing = commands.add_parser("publish", help="copy finished shards' collected tables to data/results/regimes/")
    publishing.add_argument("sweeps", nargs="+", help="sweep files of finished shards")
    publishing.add_argument("--allow-dirty", action="store_true",
                            help="publish runs of uncommitted code (their commit is recorded with +dirty)")
    args = parser.parse_args(argv)
    try:
        for sweep_file in args.sweeps:
            publish(sweep_file, allow_dirty=args.allow_dirty)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
