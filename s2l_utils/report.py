"""The report: the experiments' result tables (never the models) turned into a results page.

``collect`` reads the summary tables notebooks 11-13 wrote and ``from_sweep`` recomputes the main one from a
sweep's collected raw scores; ``verdicts`` sets each of the paper's claims beside what the tables say, with
numbers; ``markdown`` renders the page; ``publish`` writes tables, page and figures where the repository keeps
them (``data/results/<profile>/``, ``docs/results/<profile>.md``, ``figures/<profile>/``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import finetune, notebook, paths, stats, synthesis
from .attacks import blind
from .experiment import (AFTER, ALL_METHODS, EFFECT, TRANSFER, auc_text, blind_summary, drift_table,
                         duplication_classes, extraction_by_class, summarize)

TABLES = {"main": ("11_s2l_main", "s2l_summary"), "blind": ("11_s2l_main", "blind_summary"),
          "ablations": ("12_ablations", "ablation_summary"),
          "map": ("12_ablations", "s2l_map"), "transfer": ("13_domain_transfer", "transfer_summary")}
SWEEP_TABLES = ("s2l_scores", "s2l_extraction")  # what a sweep of notebook 11 collects for the report
SWEEP_COLUMNS = ("table", "run_dir", "notebook")  # the collector's bookkeeping, not the cells' labels
TOKEN_CONTROL = ("Methods that change weights are set against the cross-domain control (S2L run for another "
                 "domain); textual inversion and TI+LoRA, which reach the domain through a token, against the "
                 "real-non-member control (a token for this domain trained the same steps on its real photos that "
                 "were never in pre-training). That control is biased upwards (real photos teach the identity "
                 "better than generations, and 8 photos get more epochs than 64), after − before downwards (a "
                 "learned token is a lossy copy of the name), so a token method's effect is bracketed by the two.")
# what the paper claims (arXiv 2403.09450 v1: +5.4 AUC points for SecMI, 16.3 extracted images per domain)
PAPER_MIA_GAIN = 0.054
PAPER_EXTRACTED = 16.3


def collect(roots: list[Path]) -> dict[str, pd.DataFrame]:
    """The summary tables that exist under the run roots (first root wins), by name: main, ablations, map,
    transfer. The main table is required."""
    found = {}
    for name, (producer, table) in TABLES.items():
        for root in roots:
            path = root / producer / f"{table}.parquet"
            if path.is_file():
                found[name] = pd.read_parquet(path)
                break
    if "main" not in found:
        raise FileNotFoundError(f"no main results (11_s2l_main/s2l_summary.parquet) under "
                                f"{', '.join(map(str, roots))}: run notebook 11 first")
    return found


def sweep_part(collected: pd.DataFrame, name: str) -> pd.DataFrame:
    """One collected table's rows, without the collector's columns and the grid's list-valued ones (each cell
    already carries its labels), once per cell even when several runs read the same cell back."""
    rows = collected[collected["table"] == name].dropna(axis=1, how="all")
    listed = [c for c in rows if rows[c].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any()]
    return rows.drop(columns=[*listed, *(c for c in SWEEP_COLUMNS if c in rows)]).drop_duplicates()


def from_sweep(path: str | Path, n_bootstrap: int = 2000, seed: int = 0, correction: str = "holm") -> dict:
    """The main summary (and the blind baseline's, when the cells hold it) recomputed from a sweep's collected
    table (``python -m s2l_utils.sweep``): its raw ``s2l_scores`` and ``s2l_extraction`` rows of every shard,
    through the very ``summarize`` and ``blind_summary`` notebook 11 uses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep results not found: {path} (run python -m s2l_utils.sweep ... first)")
    collected = pd.read_parquet(path)
    found = set(collected["table"]) if "table" in collected else set()
    if not set(SWEEP_TABLES) <= found:
        raise ValueError(f"{path} lacks the tables {sorted(set(SWEEP_TABLES) - found)}: collect the sweep with "
                         f"tables: [{', '.join(SWEEP_TABLES)}]")
    scores, matches = (sweep_part(collected, name) for name in SWEEP_TABLES)
    tables = {"main": summarize(scores, matches, ["method", "comparison", "attack", "metric"], n_bootstrap, seed,
                                correction)}
    if (scores["attack"] == blind.ATTACK).any():
        tables["blind"] = blind_summary(scores, n_bootstrap, seed)
    return tables


def ci_text(row, prefix: str = "") -> str:
    """A row's ``{prefix}delta`` with its 95% CI, e.g. "+0.012 [-0.004, +0.031]"."""
    return f"{row[prefix + 'delta']:+.3f} [{row[prefix + 'lo']:+.3f}, {row[prefix + 'hi']:+.3f}]"


def _counted(counts: dict) -> str:
    return (f"up {counts['up']}, down {counts['down']} of {counts['total']} after the correction "
            f"(uncorrected {counts['raw_up']} / {counts['raw_down']}; chance {counts['chance']:.1f} each way)")


def blind_claim(table: pd.DataFrame) -> dict:
    """What the blind baseline's AUC over every cell means for the MIA numbers, in words."""
    row = table[table["method"] == ALL_METHODS].iloc[0]
    shifted = row["lo"] > 0.5
    meaning = (f"members and non-members differ without any model: an MIA AUC up to about {row['auc']:.2f} needs "
               "no leakage, so only an attack well above it, or a difference between models scored on the same "
               "images (the S2L effect), speaks of the model" if shifted else
               "no separation detected by simple image statistics (a lower bound: a stronger model-free "
               "classifier might find some), so the MIA AUCs are read as what the model leaks, as far as this "
               "baseline can tell")
    return {"claim": "(the data) a membership-inference AUC measures leakage, not a difference between members "
                     "and non-members that needs no model (blind baseline)",
            "measured": f"blind AUC {auc_text(row)} over {int(row['domains'])} domain(s): {meaning}",
            "agrees": "no: separable without the model" if shifted else "yes, as far as simple image statistics tell"}


def drift_claim(main: pd.DataFrame) -> dict | None:
    """Whether S2L moved the attacked domain's generations towards the training images or away from them: the
    S2L effect on the median distance of a generation to its nearest training image, per method."""
    drift = main[main["metric"] == "nearest_median"]
    gain, after = drift[drift["comparison"] == EFFECT], drift[drift["comparison"] == AFTER]
    if gain.empty:
        return None
    towards = {stats.UP: "away", stats.DOWN: "towards", stats.NO_CHANGE: "no shown change"}
    per_method = "; ".join(f"{r['method']} {ci_text(r)} ({towards.get(r['verdict'], r['verdict'])})"
                           for _, r in gain.iterrows())
    means = main[(main["comparison"] == AFTER) & main["metric"].isin(["own_nearest_median", "identity_accuracy"])]
    means = means.groupby("metric")[["before", "after"]].mean()
    others = "".join(f"; {name} {means.loc[metric, 'before']:.3f} → {means.loc[metric, 'after']:.3f}"
                     for metric, name in (("own_nearest_median", "to the nearest own member"),
                                          ("identity_accuracy", "identity accuracy")) if metric in means.index)
    # moving towards the training data is a fall of the distance: count it as the claim's "up". Token methods'
    # effects are shown as brackets, not counted: their real-non-member control learns the non-member photos and
    # so drifts away by construction, which makes S2L read "towards" against it
    counted = gain[~gain["method"].map(finetune.is_token_method)]
    counts = stats.tally(counted.assign(delta=-counted["delta"], verdict=counted["verdict"].map(
        {stats.UP: stats.DOWN, stats.DOWN: stats.UP}).fillna(counted["verdict"])))
    bracket = token_bracket(main, stats.EXTRACTION, "nearest_median")
    return {"claim": "(drift) S2L moves the attacked domain's generations towards its training images (a fall of "
                     "their median distance to the nearest one)",
            "measured": f"S2L effect on the median distance of a generation to its nearest training image "
                        f"(+ = away): {per_method}. Target {after['before'].mean():.3f} → after S2L "
                        f"{after['after'].mean():.3f}{others}"
                        + (f"{bracket} (counted: the {len(counted)} methods without a token)" if bracket else ""),
            "agrees": stats.agreement(counts) if len(counted) else "not shown (only token methods, bracketed)"}


def token_bracket(main: pd.DataFrame, attack: str, metric: str = stats.STRENGTH) -> str:
    """For the token methods of a summary, their S2L effect between two controls biased in opposite directions
    (``TOKEN_CONTROL``): against the real-non-member control (upwards) and after − before (downwards; for textual
    inversion alone the cross-domain control is the target); "" without token methods."""
    rows = main[(main["attack"] == attack) & (main["metric"] == metric)
                & main["method"].map(finetune.is_token_method)
                & main["comparison"].isin([EFFECT, AFTER])]
    parts = []
    for method, group in rows.groupby("method", sort=False):
        by = group.set_index("comparison")
        if {EFFECT, AFTER} <= set(by.index):
            parts.append(f"{method} between {ci_text(by.loc[AFTER])} (after − before, biased down) and "
                         f"{ci_text(by.loc[EFFECT])} (against its real-non-member control, biased up)")
    return ("; token methods: " + "; ".join(parts)) if parts else ""


def verdicts(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """Each claim of the paper, what this reproduction measured, and whether it agrees (``stats.agreement``);
    with the blind baseline (``tables["blind"]``), what its AUC means for the MIA numbers."""
    main = tables["main"]
    out = []
    blind_auc = (f"; blind AUC {auc_text(tables['blind'].set_index('method').loc[ALL_METHODS])}"
                 if "blind" in tables else "")
    strength = main[(main["comparison"] == EFFECT) & (main["metric"] == stats.STRENGTH)]
    auc = main[(main["comparison"] == AFTER) & (main["metric"] == "auc")]
    for attack in dict.fromkeys(strength["attack"]):
        rows = strength[strength["attack"] == attack]
        counts, best = stats.tally(rows), rows.loc[rows["delta"].idxmax()]
        before_after = auc[auc["attack"] == attack]
        out.append({
            "claim": f"S2L makes membership inference stronger (paper: AUC +{PAPER_MIA_GAIN:.3f} for SecMI) — "
                     f"{attack}",
            "measured": f"S2L effect on strength |AUC − 0.5| over {len(rows)} methods: mean "
                        f"{rows['delta'].mean():+.3f}; {_counted(counts)}; largest {best['method']} {ci_text(best)}. "
                        f"AUC target {before_after['before'].mean():.3f}, after S2L "
                        f"{before_after['after'].mean():.3f}{blind_auc}{token_bracket(main, attack)}",
            "agrees": stats.agreement(counts)})
    if len(strength):
        counts = stats.tally(strength)
        out.append({"claim": "S2L makes membership inference stronger — over every method x attack",
                    "measured": _counted(counts), "agrees": stats.agreement(counts)})
    if "blind" in tables:
        out.append(blind_claim(tables["blind"]))
    extraction = main[main["attack"] == stats.EXTRACTION]
    if len(extraction):
        after = extraction[extraction["comparison"] == AFTER].set_index(["method", "metric"])
        gain = extraction[(extraction["comparison"] == EFFECT) & (extraction["metric"] == "own_copies")]
        distinct, copies = after.xs("own_distinct", level="metric"), after.xs("own_copies", level="metric")
        other = after.xs("other_copies", level="metric")
        by_class = [(k, after.xs(stats.class_metric("own_copies", k), level="metric"))
                    for k in duplication_classes(extraction)]
        counts = stats.tally(gain)
        out.append({
            "claim": f"S2L raises extraction from about 0 to {PAPER_EXTRACTED} distinct images per domain",
            "measured": f"distinct own members copied per cell: target {distinct['before'].mean():.2f}, after S2L "
                        f"{distinct['after'].mean():.2f} (max over methods {distinct['after'].max():.2f}); copies of "
                        f"own members per cell {copies['before'].mean():.2f} → {copies['after'].mean():.2f}"
                        + "".join(f" ({k}x members {c['before'].mean():.2f} → {c['after'].mean():.2f})"
                                  for k, c in by_class) +
                        f", of other domains' images {other['before'].mean():.2f} → {other['after'].mean():.2f}; S2L "
                        f"effect on copies of own members: {_counted(counts)}",
            "agrees": stats.agreement(counts)})
    drift = drift_claim(main)
    if drift:
        out.append(drift)
    if "ablations" in tables:
        levels = tables["ablations"]
        levels = levels[(levels["ablation"] == "sp_level") & (levels["comparison"] == EFFECT)
                        & (levels["metric"] == stats.STRENGTH)]
        if len(levels):
            by_level = levels.groupby("sp_level")["delta"].mean()
            by_level = by_level.reindex([level for level in synthesis.LEVELS if level in by_level.index])
            top = stats.tally(levels[levels["sp_level"] == by_level.index[-1]])
            rises = by_level.is_monotonic_increasing and by_level.iloc[-1] > 0
            shown = stats.agreement(top).startswith(("yes", "partly"))
            out.append({"claim": "more prior knowledge, more leakage (noise < class < name < captions)",
                        "measured": "mean S2L effect on strength over attacks: " +
                                    ", ".join(f"{k} {v:+.3f}" for k, v in by_level.items()) +
                                    f"; at {by_level.index[-1]}: {_counted(top)}" +
                                    (" (at the class level both domains' SP sets are the same generations of the "
                                     "class prompt, so S2L equals its cross-domain control by construction for "
                                     "methods that change weights)" if "class" in by_level else ""),
                        "agrees": "yes" if rises and shown else
                                  ("no" if stats.agreement(top).startswith("no:") else "not shown")})
    if "transfer" in tables:
        transfer = tables["transfer"]
        gain = transfer[transfer["comparison"] == TRANSFER]
        power, copies = gain[gain["metric"] == stats.STRENGTH], gain[gain["metric"] == "own_distinct"]
        counts = stats.tally(power)
        out.append({"claim": "S2L-DomainTrans leaks more than S2L (paper: up to 44.8 extracted images)",
                    "measured": f"DomainTrans − S2L on strength: mean {power['delta'].mean():+.3f}, "
                                f"{_counted(counts)}; on distinct own members copied: mean "
                                f"{copies['delta'].mean():+.2f}",
                    "agrees": stats.agreement(counts)})
    if "map" in tables:
        cells = tables["map"][tables["map"]["metric"] == stats.STRENGTH]
        up = cells[cells["verdict"] == stats.UP]
        counts = stats.tally(cells)
        out.append({"claim": "(the S2L map) there is a fine-tuning strength where S2L appears",
                    "measured": f"{len(cells)} (lr, steps, target, attack) cells: {_counted(counts)}" +
                                ("; up: " + "; ".join(f"{r.attack} lr {r.ft_lr:g} x {r.ft_steps} steps "
                                                      f"{r.delta:+.3f}" for r in up.itertuples())
                                 if len(up) else ""),
                    "agrees": stats.agreement(counts)})
    return out


def _rule(main: pd.DataFrame) -> str:
    """How the verdicts were reached, in words, with this table's correction, family size and draws."""
    family = main[(main["comparison"] == EFFECT) & (main["metric"] == stats.STRENGTH)]
    correction = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[main["correction"].iloc[0]]
    text = (f"Verdicts: membership inference is judged on attack strength, the advantage |AUC − 0.5| (an attack "
            f"whose AUC is below 0.5 and moves towards 0.5 gets weaker), extraction on copies of the attacked "
            f"domain's own members. An estimate is up or down when its bootstrap p-value, {correction}-adjusted "
            f"within its family (one comparison and metric over every method x attack: {len(family)} estimates for "
            f"the S2L effect on strength), is below {stats.ALPHA:g}. CIs are 95% cluster-bootstrap intervals "
            f"(domains, then images within each domain). A claim agrees \"partly\" only when some of its ups survive "
            f"the correction, they outnumber its downs, and its uncorrected ups exceed chance ({stats.ALPHA / 2:.1%} "
            f"of the estimates each way: how many 95% CIs lie above 0 when nothing changes); \"yes\" needs more "
            f"than half of them up.")
    if main["domains"].max() == 1:
        text += (" With one attacked domain the CIs resample its images only: " +
                 ("every verdict describes this one SP set and fine-tune per method, not the variation between runs."
                  if main["cells"].max() == 1 else "its seeds' cells are averaged, not resampled."))
    draws = int(main["draws"].iloc[0])
    # a p-value is 2 (k + 1) / (draws + 1) with k draws on the far side of 0: fewer than 3 draws of slack at the
    # strictest Holm step means one stray draw decides a verdict
    if len(family) and 6 / (draws + 1) > stats.ALPHA / len(family):
        text += (f" With {draws} bootstrap draws the smallest p-value is {2 / (draws + 1):.4f} and the strictest "
                 f"Holm step needs {stats.ALPHA / len(family):.4f}: an estimate survives it only if (almost) no "
                 "draw falls on the other side of 0; raise n_bootstrap for a finer test.")
    return text


def markdown(tables: dict[str, pd.DataFrame], profile: str, main_table: pd.DataFrame, commit: str | None,
             figures: list[str]) -> str:
    """The results section, from the tables only."""
    claims = pd.DataFrame(verdicts(tables))
    lines = [f"### Results on `{profile}`", "",
             f"Generated by `notebooks/14_report` from the result tables (code at commit `{commit or 'unknown'}`). "
             "The S2L effect is S2L minus the method's control. " + TOKEN_CONTROL, "",
             _rule(tables["main"]), "",
             claims.to_markdown(index=False), "",
             "Main table (the blind baseline's AUC, a classifier that never sees a model; AUC before and after S2L; "
             "the S2L effect on attack strength |AUC − 0.5| with its 95% CI, ↑ / ↓ where the corrected verdict is "
             "up / down; copies of the attacked domain's own members per cell, also of its most duplicated "
             "members):", "",
             main_table.round(3).to_markdown(), ""]
    for caption, table in (("Extraction per duplication class of the attacked domain's members (copies per cell "
                            "and distinct members copied):", extraction_by_class(tables["main"])),
                           ("Drift of the attacked domain's generations (median distance to the nearest training "
                            "image, to the nearest of its own members, identity accuracy; + = away):",
                            drift_table(tables["main"]))):
        if len(table):
            lines += [caption, "", table.round(3).reset_index().to_markdown(index=False), ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


RUN_FOLDER = re.compile(r"\d\d_[a-z0-9_]+")  # a finished notebook run (not .running, not .failed)


def run_figures(run: notebook.Run) -> list[Path]:
    """The figures of this run and of every finished run of a notebook before it in its run roots
    (``run.runs_roots``, first root wins per notebook), this run's last; later notebooks publish their own."""
    found = {}
    for root in run.runs_roots:
        for folder in sorted(root.iterdir()) if root.is_dir() else ():
            if RUN_FOLDER.fullmatch(folder.name) and folder.name not in found and folder.name < run.notebook:
                found[folder.name] = sorted((folder / "figures").glob("*.png"))
    return [*(f for figures in found.values() for f in figures), *sorted((run.dir / "figures").glob("*.png"))]


def publish(run: notebook.Run, tables: dict[str, pd.DataFrame], page, log=print) -> dict[str, list[Path]]:
    """Publish a report run (``Run.publish``): every figure of it and of the runs before it (``run_figures``)
    into ``figures/<name>/``, the tables into ``data/results/<name>/`` and ``page(links)`` (``links``: the
    report's own figures relative to the page) into ``docs/results/<name>.md``, where ``name`` is
    ``notebook.results_name``; refused before anything is written when it would drop a committed table."""
    name = notebook.results_name(run.profile)
    folder = paths.data_dir() / "results" / name
    committed = {p.stem for p in folder.glob("*.csv")} if folder.is_dir() else set()
    makers = sorted({nb for t, (nb, _) in TABLES.items() if t in committed - set(tables)})
    written = run.publish(tables, folder, paths.results_page(name), page, run_figures(run),
                          sorted((run.dir / "figures").glob("*.png")),
                          f"run the notebooks that make them ({', '.join(makers)}) before the report")
    log(f"published {len(written['figures'])} figures into {run.figures_dir}, {len(tables)} tables into {folder} "
        f"and the page {written['page'][0]}")
    return written
