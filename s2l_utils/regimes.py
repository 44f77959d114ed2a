"""The regime study (issue 13): where S2L's effect shows in the miniature, where it does not, and why.

The grid is a set of *shards*, one sweep file each (``sweeps/regimes_*.yaml``): a world (members duplicated or not,
non-members shifted or not) over SP guidance x methods x every private domain x seeds, each cell with its three
conditions. A finished shard is *published*: its collected raw scores and extraction matches are copied to
``data/results/regimes/<shard>.parquet`` (``publish``; ``python -m s2l_utils.regimes publish <sweep>``), committed
with the commit that produced them, so the study goes on from what is committed, shard by shard. Notebook 15 reads
every published shard (``load``) and judges the pre-registered hypotheses (``data/results/regimes/
preregistration.md``) from them, with the statistics of the main experiment (``stats``):

* ``summary``: every comparison per regime (world, shift, guidance) and method, Holm within each comparison x
  metric family over methods x regimes;
* ``contrasts``: the same per-cell effects at one setting minus another (guidance 7.5 - 1, shift 0.5 - 0), paired
  by method, domain and seed, with the cluster bootstrap;
* ``h1_memorisation``, ``h2_drift``, ``h3_shift``: each hypothesis's verdict by its pre-registered rule, with the
  numbers it rests on; ``zero_knowledge``: the noise-only fine-tunes against the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import experiment, finetune, paths, report, stats, sweep
from .config import ConfigError, load_profile
from .notebook import PARAMS_FILE, write_json

SHARDS = ("regimes_duplicated", "regimes_iid", "regimes_duplicated_shift", "regimes_iid_shift")
ZERO_KNOWLEDGE = "regimes_zero_knowledge"
DUPLICATED, IID = "duplicated", "i.i.d."
REGIME = ("world", "nonmember_shift", "sp_guidance")
COMPARED = (experiment.AFTER, experiment.EFFECT, "S2L - cross-domain", "S2L - real non-member")
HEAVIEST = stats.class_metric("own_copies", 32)  # the most duplicated class of members (32 copies)
MIA_ATTACKS = ("loss", "secmi_ldm", "pia")  # the attacks the figure and the paper's table show
SHARDS_FILE = "shards.json"
H1_MARGIN = 0.25  # copies per cell: a quarter of the target's own 32x rate (pre-registered refutation bound)


def results_dir() -> Path:
    """Where published shards, the pre-registration and notebook 15's tables live."""
    return paths.data_dir() / "results" / "regimes"


def world_of(member_duplicates) -> str:
    return DUPLICATED if len(member_duplicates) else IID


def publish(sweep_file: str | Path, folder: Path | None = None, log=print) -> Path:
    """Copy a finished shard's collected table (every point done) to ``folder/<shard>.parquet`` with its world
    label, and record its commit, cells and model-evaluation seconds in ``folder/shards.json``."""
    shard = sweep.load_sweep(sweep_file)
    unfinished = [p for p in shard.points() if sweep.point_state(shard, p) != "done"]
    if unfinished:
        raise ConfigError(f"shard {shard.name}: {len(unfinished)} of {len(shard.points())} points are not done; "
                          f"run python -m s2l_utils.sweep {shard.path} --jobs 2 first")
    collected = sweep.collect(shard, log=log)
    # each point's regime from its effective parameters (a shard need not name what its profile already sets)
    regime = {}
    for point in shard.points():
        params = load_profile(shard.profile, **point)
        for nb in shard.notebooks:
            regime[str(shard.run_root(point) / nb.stem)] = (world_of(params.member_duplicates),
                                                           params.nonmember_shift, params.sp_guidance)
    labels = pd.DataFrame(collected["run_dir"].map(regime).tolist(), columns=list(REGIME), index=collected.index)
    collected = collected.drop(columns=[c for c in (*REGIME, "member_duplicates") if c in collected]).join(labels)
    table = pd.concat([report.sweep_part(collected, name).assign(table=name) for name in report.SWEEP_TABLES],
                      ignore_index=True)
    folder = folder or results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{shard.name}.parquet"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False, compression="zstd")
    os.replace(tmp, out)
    cells = table[["cell", "condition"]].drop_duplicates()
    seconds = sum(json.loads(info.read_text())["seconds"] for info in
                  (paths.cache_dir("cells") / c / k / experiment.CELL_INFO for c, k in cells.itertuples(index=False))
                  if info.is_file())
    record = json.loads((folder / SHARDS_FILE).read_text()) if (folder / SHARDS_FILE).is_file() else {}
    # the commit(s) whose notebook runs computed the shard, as each run recorded it (not the publishing one)
    commits = sorted({str(json.loads((Path(run_folder) / PARAMS_FILE).read_text()).get("git_commit"))
                      for run_folder in collected["run_dir"].unique()})
    record[shard.name] = {"commit": ", ".join(commits), "points": len(shard.points()), "cells": int(table["cell"].nunique()),
                          "models": len(cells), "model_seconds": round(seconds), "rows": len(table)}
    write_json(folder / SHARDS_FILE, record)
    log(f"published {shard.name}: {record[shard.name]} -> {out}")
    return out


def load(folder: Path | None = None, shards=SHARDS) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
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
    """Every cell's comparisons (``COMPARED``) with paired draws, estimated per world: its duplication classes
    are its own, and within it the cells of a domain share their draws (settings of a world are contrasted
    paired, ``contrasts``). The two worlds are never differenced with each other."""
    chosen = {name: experiment.COMPARISONS[name] for name in COMPARED}
    parts = []
    for world in dict.fromkeys(scores["world"]):
        estimates = stats.cell_estimates(scores[scores["world"] == world], matches[matches["world"] == world],
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
    smallest p-value, 2 / (draws + 1), must lie below alpha / (family size)."""
    judged = summary_table[summary_table["p_adjusted"].notna()]
    family = judged.groupby(["comparison", judged["metric"].map(stats.verdict_family)]).size().max()
    return int(np.ceil(2 * family / stats.ALPHA))


def summary(cell_effects: stats.Estimates, seed: int = 0, correction: str = "holm") -> pd.DataFrame:
    """The comparisons per regime and method, averaged over domains and seeds, judged within each comparison x
    metric family over every method and regime (the pre-registered families)."""
    by = [*REGIME, "method", "comparison", "attack", "metric"]
    return experiment.judged_summary(cell_effects, [c for c in by if c in cell_effects.rows], seed, correction)


def contrasts(cell_effects: stats.Estimates, column: str, high, low, seed: int = 0,
              metrics=(stats.STRENGTH, HEAVIEST, "own_copies", *stats.DRIFT_JUDGED)) -> pd.DataFrame:
    """Each comparison's per-cell effect at ``column`` = ``high`` minus that at ``low``, paired by the other
    regime columns, method, domain and seed; per method and over all methods (``experiment.ALL_METHODS``), with
    cluster-bootstrap 95% CIs and p-values (not corrected: each hypothesis names the contrast it reads)."""
    rows = cell_effects.rows
    keep = rows["metric"].isin(metrics).to_numpy()
    chosen = stats.Estimates(rows[keep].reset_index(drop=True), cell_effects.draws[keep])
    others = [c for c in REGIME if c != column and c in rows]
    pair_on = [*others, "method", "domain", "seed", "comparison", "attack", "metric"]
    diff = stats.contrast(chosen, column, high, low, pair_on)
    by = [*others, "method", "comparison", "attack", "metric"]
    pooled = stats.Estimates(diff.rows.assign(method=experiment.ALL_METHODS), diff.draws)
    table = pd.concat([stats.combine(part, by, seed) for part in (diff, pooled)], ignore_index=True)
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
    copies = (((rows["world"] == DUPLICATED) & (rows["metric"] == HEAVIEST))
              | ((rows["world"] == IID) & (rows["metric"] == "own_copies")))
    panels = {f"MIA {attack}: Δ |AUC − 0.5|": rows[(rows["attack"] == attack) & (rows["metric"] == stats.STRENGTH)]
              for attack in MIA_ATTACKS}
    panels["extraction: Δ copies per cell (32x members; all, i.i.d.)"] = rows[copies]
    panels["drift: Δ median nearest distance (+ = away)"] = rows[rows["metric"] == "nearest_median"]
    columns = ["regime", "x", "method", "delta", "lo", "hi", "verdict"]
    return {title: panel[columns] for title, panel in panels.items() if len(panel)}


def _is_token(method: str) -> bool:
    return method in finetune.METHODS and finetune.trains_token(method)


def bracketed(summary_rows: pd.DataFrame) -> pd.DataFrame:
    """One verdict per method and regime for rows of one attack and metric: the S2L effect's for weight methods;
    for token methods "up" / "down" only when after - before and the effect (biased down and up: ``report``)
    agree, else "no change". Columns: the regime and method, delta, lo, hi, verdict, and for token methods the
    after - before end (after_delta, after_lo, after_hi)."""
    keys = [c for c in (*REGIME, "method") if c in summary_rows]
    effect = summary_rows[summary_rows["comparison"] == experiment.EFFECT].set_index(keys)
    after = summary_rows[summary_rows["comparison"] == experiment.AFTER].set_index(keys)
    out = effect[["delta", "lo", "hi", "verdict"]].copy()
    token = [_is_token(m) for m in out.index.get_level_values("method")]
    ends = after.reindex(out.index)[["delta", "lo", "hi", "verdict"]].add_prefix("after_")
    ends.loc[~np.array(token, dtype=bool)] = np.nan
    out = out.join(ends)
    agree = out["verdict"] == out["after_verdict"]
    out["verdict"] = np.where(token, np.where(agree, out["verdict"], "no change"), out["verdict"])
    return out.drop(columns="after_verdict").reset_index()


def _ci(delta, lo, hi) -> str:
    return f"{delta:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _rows_text(rows: pd.DataFrame) -> str:
    return "; ".join(f"{r['method']} {_ci(r['delta'], r['lo'], r['hi'])}"
                     + (f" (after − before {_ci(r['after_delta'], r['after_lo'], r['after_hi'])})"
                        if pd.notna(r.get("after_delta", np.nan)) else "")
                     + (f" {r['verdict']}" if r["verdict"] != "no change" else "") for _, r in rows.iterrows())


def _select(table: pd.DataFrame, world: str, shift: float = 0.0, **equal) -> pd.DataFrame:
    rows = table[(table["world"] == world) & (table["nonmember_shift"] == shift)]
    for column, value in equal.items():
        rows = rows[rows[column] == value]
    return rows


def h1_memorisation(summary_table: pd.DataFrame) -> dict:
    """H1: S2L raises copies of the 32x members in the duplicated world (a Holm-surviving "up", bracketed for
    token methods) and does nothing in the i.i.d. world; refuted when every duplicated-world effect is "down"
    or "no change" with its CI below ``H1_MARGIN`` copies per cell."""
    dup = bracketed(_select(summary_table, DUPLICATED, attack=stats.EXTRACTION, metric=HEAVIEST))
    if dup.empty:
        return _verdict("H1 memorisation", "pending", "the duplicated world's shard is not published yet")
    per_guidance = "; ".join(f"g = {g:g}: {_rows_text(rows)}" for g, rows in dup.groupby("sp_guidance"))
    iid = _select(summary_table, IID, attack=stats.EXTRACTION, metric="own_copies")
    iid = iid[iid["comparison"].isin([experiment.AFTER, experiment.EFFECT])]
    iid_text = (f" I.i.d. world, own copies: {int((iid['verdict'] == 'up').sum())} up of {len(iid)} (after − before "
                f"and S2L effect, every method x guidance)." if len(iid) else " The i.i.d. shard is not published.")
    evidence = f"S2L effect on 32x copies per cell (duplicated world): {per_guidance}.{iid_text}"
    ups = dup[dup["verdict"] == "up"]
    if len(ups):
        if iid.empty:
            return _verdict("H1 memorisation", "not shown (i.i.d. world pending)", evidence)
        verdict = "confirmed" if not (iid["verdict"] == "up").any() else "not shown (the i.i.d. world rises too)"
        return _verdict("H1 memorisation", verdict, evidence)
    if (dup["hi"] < H1_MARGIN).all():
        return _verdict("H1 memorisation", "refuted", evidence + f" Every CI lies below +{H1_MARGIN} copies per cell.")
    return _verdict("H1 memorisation", "not shown", evidence)


def h2_drift(summary_table: pd.DataFrame, guidance: pd.DataFrame) -> dict:
    """H2: the S2L effect on the median nearest distance is larger at guidance 7.5 than at 1 (pooled contrast CI
    above 0), and S2L's effect on 32x copies and on MIA strength at 1 is at least its value at 7.5 (those
    contrasts' CIs not above 0); refuted when the drift contrast's CI does not exclude 0 or lies below it."""
    if guidance.empty:
        return _verdict("H2 drift", "pending", "needs SP guidance 1 and 7.5 in a published shard")
    pooled = guidance[(guidance["method"] == experiment.ALL_METHODS) & (guidance["nonmember_shift"] == 0.0)]

    def pick(comparison, metric, attack=stats.EXTRACTION):
        return pooled[(pooled["comparison"] == comparison) & (pooled["metric"] == metric)
                      & (pooled["attack"] == attack)]

    parts, verdicts = [], []
    for world, drift in pick(experiment.EFFECT, "nearest_median").groupby("world", sort=False):
        after = pick(experiment.AFTER, "nearest_median").query("world == @world")
        copies = pick(experiment.EFFECT, HEAVIEST).query("world == @world")
        mia = pooled[(pooled["world"] == world) & (pooled["comparison"] == experiment.EFFECT)
                     & (pooled["metric"] == stats.STRENGTH)]
        row = drift.iloc[0]
        ordered = row["lo"] > 0
        # "at g = 1 at least its value at 7.5": the 7.5 - 1 contrast must not lie wholly above 0
        weaker_at_1 = [r["attack"] for _, r in pd.concat([copies, mia]).iterrows() if r["lo"] > 0]
        verdicts.append("refuted" if not ordered else "confirmed" if not weaker_at_1 else "not shown")
        parts.append(
            f"{world} world, contrast 7.5 − 1 of the S2L effect on the median nearest distance: "
            f"{_ci(row['delta'], row['lo'], row['hi'])}"
            + (f" (of after − before: {_ci(*after.iloc[0][['delta', 'lo', 'hi']])})" if len(after) else "")
            + "".join(f"; on 32x copies {_ci(*r[['delta', 'lo', 'hi']])}" for _, r in copies.iterrows())
            + "; on MIA strength " + ", ".join(f"{r['attack']} {_ci(r['delta'], r['lo'], r['hi'])}"
                                               for _, r in mia.iterrows())
            + (f" (S2L weaker at g = 1 than at 7.5 on {', '.join(weaker_at_1)})" if weaker_at_1 else ""))
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "not shown (the worlds disagree)"
    return _verdict("H2 drift", verdict, ". ".join(parts) + ".")


def h3_shift(blind_auc: pd.DataFrame, shift: pd.DataFrame) -> dict:
    """H3: the blind AUC is above 0.5 only in the shifted worlds, and some S2L effect on MIA strength is higher
    with shifted non-members than with i.i.d. ones (a per-method paired contrast whose CI excludes 0, above it);
    refuted when no such contrast's CI excludes 0."""
    blind_text = "; ".join(f"{r['world']} shift {r['nonmember_shift']:g}: {experiment.auc_text(r)}"
                           for _, r in blind_auc.iterrows())
    if shift.empty:
        return _verdict("H3 shift", "pending", f"blind AUC {blind_text}; no shifted shard published yet")
    strength = shift[(shift["metric"] == stats.STRENGTH) & (shift["comparison"] == experiment.EFFECT)
                     & (shift["method"] != experiment.ALL_METHODS)]
    excluded = strength[(strength["lo"] > 0) | (strength["hi"] < 0)]
    blind_ok = all((r["lo"] > 0.5) == (r["nonmember_shift"] > 0) for _, r in blind_auc.iterrows())
    higher = excluded[excluded["lo"] > 0]
    evidence = (f"blind AUC {blind_text}. Paired contrast (shift 0.5 − 0) of the S2L effect on MIA strength: "
                f"{len(higher)} of {len(strength)} method x attack x guidance x world estimates above 0, "
                f"{len(excluded) - len(higher)} below (uncorrected 95% CIs)")
    if len(excluded) == 0:
        return _verdict("H3 shift", "refuted", evidence + ".")
    return _verdict("H3 shift", "confirmed" if blind_ok and len(higher) else "not shown", evidence + ".")


def zero_knowledge(summary_table: pd.DataFrame) -> dict:
    """The paper's zero-knowledge claim on the duplicated world: fine-tuning on Gaussian noise (or noising the
    weights) strengthens the attacks, judged on after - before of MIA strength and own copies."""
    after = summary_table[(summary_table["comparison"] == experiment.AFTER)
                          & summary_table["metric"].isin([stats.STRENGTH, "own_copies"])]
    counts = stats.tally(after)
    listed = "; ".join(f"{r['method']} {r['attack']} {_ci(r['delta'], r['lo'], r['hi'])}"
                       + (f" {r['verdict']}" if r["verdict"] not in ("no change", "") else "")
                       for _, r in after.iterrows())
    return _verdict("zero-knowledge shake", stats.agreement(counts), f"after − before: {listed}")


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
    text = [_ci(r["delta"], r["lo"], r["hi"]) + {"up": " ↑", "down": " ↓"}.get(r["verdict"], "")
            + (f"; after − before {_ci(r['after_delta'], r['after_lo'], r['after_hi'])}"
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
    for name in SHARDS + (ZERO_KNOWLEDGE,):
        record = shards.get(name)
        lines.append(f"- `{name}`: " + (f"{record['cells']} cells, {record['models']} models, "
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
    args = parser.parse_args(argv)
    try:
        for sweep_file in args.sweeps:
            publish(sweep_file)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
