"""The report: the experiments' result tables (never the models) turned into the README's results section.

``collect`` reads the summary tables notebooks 11-13 wrote; ``verdicts`` sets each of the paper's claims next
to what the tables say, with numbers; ``markdown`` renders the section; ``write_section`` puts it between a
profile's markers in the README, replacing the previous version.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

EFFECT = "S2L effect (S2L - cross-domain)"
AFTER = "after - before"
TABLES = {"main": ("11_s2l_main", "s2l_summary"), "ablations": ("12_ablations", "ablation_summary"),
          "map": ("12_ablations", "s2l_map"), "transfer": ("13_domain_transfer", "transfer_summary")}
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


def from_sweep(path: str | Path) -> dict[str, pd.DataFrame]:
    """The main summary from a sweep's collected table (``python -m s2l_utils.sweep``): its ``s2l_effects``
    rows, from every shard, averaged over cells exactly as notebook 11 does."""
    from .experiment import summarize

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep results not found: {path} (run python -m s2l_utils.sweep ... first)")
    collected = pd.read_parquet(path)
    effects = collected[collected["table"] == "s2l_effects"] if "table" in collected else collected
    if effects.empty:
        raise ValueError(f"{path} has no s2l_effects rows: collect the sweep with tables: [s2l_effects]")
    return {"main": summarize(effects, ["method", "comparison", "attack", "metric"])}


def _agreement(up: int, down: int, total: int) -> str:
    """How a claim of an increase fares over ``total`` estimates, of which ``up`` / ``down`` have a CI
    entirely above / below 0. A CI that includes 0 is "not shown", not a contradiction."""
    if up > total / 2:
        return "yes"
    if up:
        return f"partly ({up} of {total})"
    if down:
        return f"no: lower for {down} of {total}"
    return "not shown (every CI includes 0)"


def _ci(row) -> str:
    return f"{row['delta']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]"


def verdicts(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """Each claim of the paper, what this reproduction measured, and whether it agrees."""
    main = tables["main"]
    out = []
    effect = main[(main["comparison"] == EFFECT) & (main["metric"] == "auc")]
    after = main[(main["comparison"] == AFTER) & (main["metric"] == "auc")]
    for attack in dict.fromkeys(effect["attack"]):
        rows = effect[effect["attack"] == attack]
        raw = after[after["attack"] == attack]
        up, down = int((rows["verdict"] == "up").sum()), int((rows["verdict"] == "down").sum())
        best = rows.loc[rows["delta"].idxmax()]
        out.append({
            "claim": f"S2L raises membership-inference AUC (paper: +{PAPER_MIA_GAIN:.3f} for SecMI) — {attack}",
            "measured": f"S2L effect over {len(rows)} methods: mean {rows['delta'].mean():+.3f}; CI above 0 for {up}, "
                        f"below 0 for {down}; largest {best['method']} {_ci(best)}. After − before: mean "
                        f"{raw['delta'].mean():+.3f}",
            "agrees": _agreement(up, down, len(rows))})
    extracted = main[(main["attack"] == "extraction") & (main["metric"] == "extracted")]
    if len(extracted):
        before = extracted[extracted["comparison"] == AFTER]
        gain = extracted[extracted["comparison"] == EFFECT]
        out.append({
            "claim": f"S2L raises extraction from about 0 to {PAPER_EXTRACTED} images per domain",
            "measured": f"extracted generations per cell: target {before['before'].mean():.1f}, after S2L "
                        f"{before['after'].mean():.1f} (max over methods {before['after'].max():.1f}); S2L effect CI "
                        f"above 0 for {int((gain['verdict'] == 'up').sum())} of {len(gain)} methods",
            "agrees": _agreement(int((gain["verdict"] == "up").sum()), int((gain["verdict"] == "down").sum()),
                                 len(gain))})
    if "ablations" in tables:
        levels = tables["ablations"]
        levels = levels[(levels["ablation"] == "sp_level") & (levels["comparison"] == EFFECT)
                        & (levels["metric"] == "auc")]
        if len(levels):
            by_level = levels.groupby("sp_level", sort=False)["delta"].mean()
            out.append({"claim": "more prior knowledge, more leakage (noise < class < name < captions)",
                        "measured": "mean S2L effect on AUC over attacks: " +
                                    ", ".join(f"{k} {v:+.3f}" for k, v in by_level.items()) +
                                    (" (at the class level both domains' SP sets are the same generations of the "
                                     "class prompt, so S2L equals its control by construction)"
                                     if "class" in by_level else ""),
                        "agrees": "yes" if by_level.is_monotonic_increasing and by_level.iloc[-1] > 0 else "no"})
    if "transfer" in tables:
        transfer = tables["transfer"]
        gain = transfer[(transfer["comparison"] == "DomainTrans - S2L")]
        auc, ext = gain[gain["metric"] == "auc"], gain[gain["metric"] == "extracted"]
        out.append({"claim": "S2L-DomainTrans leaks more than S2L (paper: up to 44.8 extracted images)",
                    "measured": f"DomainTrans − S2L: AUC mean {auc['delta'].mean():+.3f} (CI above 0 for "
                                f"{int((auc['verdict'] == 'up').sum())} of {len(auc)}), extracted mean "
                                f"{ext['delta'].mean():+.1f}",
                    "agrees": _agreement(int((auc["verdict"] == "up").sum()), int((auc["verdict"] == "down").sum()),
                                         len(auc))})
    if "map" in tables:
        cells = tables["map"][tables["map"]["metric"] == "auc"]
        up, down = cells[cells["verdict"] == "up"], cells[cells["verdict"] == "down"]
        out.append({"claim": "(the S2L map) there is a fine-tuning strength where S2L appears",
                    "measured": f"{len(up)} of {len(cells)} (lr, steps, target, attack) cells have an S2L effect whose "
                                f"CI lies above 0 and {len(down)} below; 95% CIs over {len(cells)} cells leave about "
                                f"{0.05 * len(cells):.1f} excluding 0 by chance" +
                                ("; above 0: " + "; ".join(f"{r.attack} lr {r.ft_lr:g} x {r.ft_steps} steps "
                                                           f"{r.delta:+.3f}" for r in up.itertuples())
                                 if len(up) else ""),
                    "agrees": _agreement(len(up), len(down), len(cells))})
    return out


def markdown(tables: dict[str, pd.DataFrame], profile: str, main_table: pd.DataFrame, commit: str | None,
             figures: list[str]) -> str:
    """The results section, from the tables only."""
    claims = pd.DataFrame(verdicts(tables))
    lines = [f"### Results on `{profile}`", "",
             f"Generated by `notebooks/14_report` from the result tables (code at commit `{commit or 'unknown'}`). "
             "The S2L effect is S2L minus the cross-domain control (fine-tuning on another domain's SP set), with "
             "95% CIs; \"CI above 0\" is the only thing counted as an increase.", "",
             claims.to_markdown(index=False), "",
             "Main table (AUC before and after S2L, and the S2L effect with its CI; extraction counts per cell):", "",
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
