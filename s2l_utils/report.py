"""The report: the experiments' result tables (never the models) turned into the README's results section.

``collect`` reads the summary tables notebooks 11-13 wrote, ``from_sweep`` recomputes the main one from a sweep's
collected raw scores; ``verdicts`` sets each of the paper's claims next to what the tables say, with numbers;
``markdown`` renders the section; ``write_section`` puts it between a profile's markers in the README.

The verdict rule (``stats``): a membership estimate counts on attack *strength*, the advantage |AUC - 0.5|, so
an inverted attack moving towards 0.5 is weaker; an estimate is "up" or "down" only when its bootstrap p-value,
adjusted for multiplicity within its family (one comparison and metric over every method x attack), is below
5%; a claim agrees "partly" only when its ups exceed both the downs and what chance gives (2.5% of the
estimates each way). Ups of methods with a textual-inversion token are flagged: under the cross-domain control
their token never trains, so their S2L effect is confounded.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from . import finetune, stats, synthesis
from .config import Params
from .experiment import AFTER, EFFECT, summarize
from .finetune.textual_inversion import TextualInversion

TRANSFER = "DomainTrans - S2L"
TABLES = {"main": ("11_s2l_main", "s2l_summary"), "ablations": ("12_ablations", "ablation_summary"),
          "map": ("12_ablations", "s2l_map"), "transfer": ("13_domain_transfer", "transfer_summary")}
SWEEP_TABLES = ("s2l_scores", "s2l_extraction")  # what a sweep of notebook 11 collects for the report
SWEEP_COLUMNS = ("table", "run_dir", "notebook")  # the collector's bookkeeping, not the cells' labels
# what the paper claims (arXiv 2403.09450 v1 abstract and its third-party summaries; see shared notes)
PAPER_MIA_GAIN = 0.054
PAPER_EXTRACTED = 16.3


def collect(roots: list[Path]) -> dict[str, pd.DataFrame]:
    """The summary tables that exist under the run roots (first root wins), by name: main, ablations, map,
    transfer. The main table is required."""
    found = {}
    for name, (notebook, table) in TABLES.items():
        for root in roots:
            path = root / notebook / f"{table}.parquet"
            if path.is_file():
                found[name] = pd.read_parquet(path)
                break
    if "main" not in found:
        raise FileNotFoundError(f"no main results (11_s2l_main/s2l_summary.parquet) under "
                                f"{', '.join(map(str, roots))}: run notebook 11 first")
    return found


def _sweep_part(collected: pd.DataFrame, name: str) -> pd.DataFrame:
    """One collected table's rows, without the collector's columns and the grid's list-valued ones (each cell
    already carries its labels), once per cell even when several runs read the same cell back."""
    rows = collected[collected["table"] == name].dropna(axis=1, how="all")
    listed = [c for c in rows if rows[c].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any()]
    return rows.drop(columns=[*listed, *(c for c in SWEEP_COLUMNS if c in rows)]).drop_duplicates()


def from_sweep(path: str | Path, n_bootstrap: int = 2000, seed: int = 0, correction: str = "holm") -> dict:
    """The main summary recomputed from a sweep's collected table (``python -m s2l_utils.sweep``): its raw
    ``s2l_scores`` and ``s2l_extraction`` rows of every shard, through the very ``summarize`` notebook 11 uses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep results not found: {path} (run python -m s2l_utils.sweep ... first)")
    collected = pd.read_parquet(path)
    found = set(collected["table"]) if "table" in collected else set()
    if not set(SWEEP_TABLES) <= found:
        raise ValueError(f"{path} lacks the tables {sorted(set(SWEEP_TABLES) - found)}: collect the sweep with "
                         f"tables: [{', '.join(SWEEP_TABLES)}]")
    scores, matches = (_sweep_part(collected, name) for name in SWEEP_TABLES)
    return {"main": summarize(scores, matches, ["method", "comparison", "attack", "metric"], n_bootstrap, seed,
                              correction)}


def confounded_methods(methods) -> list[str]:
    """The methods that attack through a textual-inversion token (textual inversion and its combinations): under
    the cross-domain control the captions name another identity, so the token never trains and their S2L
    effect also measures what losing the name costs the attacks."""
    defaults = Params()
    return [m for m in methods if m in finetune.METHODS
            and any(isinstance(part, TextualInversion) for part in finetune.METHODS[m].parts(defaults))]


def _ci(row) -> str:
    return f"{row['delta']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]"


def _counted(counts: dict) -> str:
    return (f"up {counts['up']}, down {counts['down']} of {counts['total']} after the correction "
            f"(uncorrected {counts['raw_up']} / {counts['raw_down']}; chance {counts['chance']:.1f} each way)")


def _confounded_ups(rows: pd.DataFrame, label) -> str:
    """Which ups come from a method whose control is confounded, and the verdict without them."""
    confounded = confounded_methods(dict.fromkeys(rows["method"]))
    ups = rows[(rows["verdict"] == "up") & rows["method"].isin(confounded)]
    if ups.empty:
        return ""
    rest = rows[~rows["method"].isin(confounded)]
    return (f"; confounded control ({', '.join(confounded)}: their token never trains under it) for the ups of "
            + ", ".join(label(r) for r in ups.itertuples())
            + f"; without them: {stats.agreement(stats.tally(rest)) if len(rest) else 'no estimates left'}")


def verdicts(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """Each claim of the paper, what this reproduction measured, and whether it agrees (``stats.agreement``)."""
    main = tables["main"]
    out = []
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
                        f"{rows['delta'].mean():+.3f}; {_counted(counts)}; largest {best['method']} {_ci(best)}. "
                        f"AUC target {before_after['before'].mean():.3f}, after S2L {before_after['after'].mean():.3f}"
                        + _confounded_ups(rows, lambda r: r.method),
            "agrees": stats.agreement(counts)})
    if len(strength):
        counts = stats.tally(strength)
        out.append({"claim": "S2L makes membership inference stronger — over every method x attack",
                    "measured": f"{_counted(counts)}" + _confounded_ups(strength, lambda r: f"{r.method}/{r.attack}"),
                    "agrees": stats.agreement(counts)})
    extraction = main[main["attack"] == stats.EXTRACTION]
    if len(extraction):
        after = extraction[extraction["comparison"] == AFTER].set_index(["method", "metric"])
        gain = extraction[(extraction["comparison"] == EFFECT) & (extraction["metric"] == "own_copies")]
        distinct, copies = after.xs("own_distinct", level="metric"), after.xs("own_copies", level="metric")
        other = after.xs("other_copies", level="metric")
        counts = stats.tally(gain)
        out.append({
            "claim": f"S2L raises extraction from about 0 to {PAPER_EXTRACTED} distinct images per domain",
            "measured": f"distinct own members copied per cell: target {distinct['before'].mean():.2f}, after S2L "
                        f"{distinct['after'].mean():.2f} (max over methods {distinct['after'].max():.2f}); copies of "
                        f"own members per cell {copies['before'].mean():.2f} → {copies['after'].mean():.2f}, of "
                        f"other domains' images {other['before'].mean():.2f} → {other['after'].mean():.2f}; S2L "
                        f"effect on copies of own members: {_counted(counts)}",
            "agrees": stats.agreement(counts)})
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
                                     "class prompt, so S2L equals its control by construction)"
                                     if "class" in by_level else ""),
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
        up = cells[cells["verdict"] == "up"]
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
             "The S2L effect is S2L minus the cross-domain control (fine-tuning on another domain's SP set).", "",
             _rule(tables["main"]), "",
             claims.to_markdown(index=False), "",
             "Main table (AUC before and after S2L; the S2L effect on attack strength |AUC − 0.5| with its 95% CI, "
             "↑ / ↓ where the corrected verdict is up / down; copies of the attacked domain's own members per "
             "cell):", "",
             main_table.round(3).to_markdown(), ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_section(readme: Path, profile: str, text: str) -> None:
    """Replace (or append) the README block between ``<!-- results:<profile>:start/end -->``, atomically."""
    start, end = f"<!-- results:{profile}:start -->", f"<!-- results:{profile}:end -->"
    current = readme.read_text()
    block = f"{start}\n{text}{end}"
    if start in current and end in current:
        before, rest = current.split(start, 1)
        updated = before + block + rest.split(end, 1)[1]
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    fd, tmp = tempfile.mkstemp(dir=readme.parent, prefix=".README-")
    with os.fdopen(fd, "w") as handle:
        handle.write(updated)
    os.replace(tmp, readme)
