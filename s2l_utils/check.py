"""Does a run reproduce the committed results? ``python -m s2l_utils.check --profile mini``.

Compares the tables a report run wrote (``runs/<profile>/14_report/tables/``) with the committed ones
(``data/results/<profile>/``) row by row, and the paper's claims (``report.verdicts``) computed from each,
then prints one closing line naming the tables it rests on. Exits 1 when a verdict or a claim's agreement
flips, a row is missing or extra, a value differs beyond its tolerance (``TOLERANCE``, ``P_TOLERANCE``; counts
and labels exactly), or a run was computed at another commit than the checkout's; 0 otherwise, and when the
profile has no committed results. Writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths, report
from .notebook import PARAMS_FILE, git_commit, profile_name

# the largest |difference| of an estimate, and of a p-value, that a run on another CPU may show (measured, with the
# margin chosen: docs/reproducing.md); a larger one is a difference, a flipped verdict always is
TOLERANCE = 0.01
P_TOLERANCE = 0.1
VERDICT, CLAIM = "verdict", "claim"
# what a results table measures (``stats``' estimates and the blind baseline's AUC); every other column but the
# verdict and the correction identifies the row (method, comparison, attack, metric, swept parameters)
MEASURES = ("before", "after", "delta", "lo", "hi", "p", "p_adjusted", "auc", "cells", "domains", "draws")
# held to P_TOLERANCE: a p-value moves by whole bootstrap draws, and Holm multiplies that by the family's size
P_VALUES = ("p", "p_adjusted")
LABEL_COLUMNS = ("correction",)
REPORT_NOTEBOOK = "14_report"
TABLES_DIR = "tables"


@dataclass
class Comparison:
    """Row-by-row comparison of committed and reproduced tables, plus the claims of both."""

    rows: pd.DataFrame  # table, key, committed, reproduced, committed_verdict, reproduced_verdict, largest_delta
    claims: pd.DataFrame  # claim, committed, reproduced
    missing: list[str]  # "<table>: <key>" committed but not reproduced (or the reverse, marked "extra")
    not_rerun: list[str]  # committed tables the run did not produce
    differing: list[str]  # "<table>: <key> <column>": numbers beyond the tolerances, counts or labels not equal
    tolerance: float
    p_tolerance: float = P_TOLERANCE
    p_delta: float = 0.0  # the largest |Δ| of a p-value (``P_VALUES``)
    stale: list[str] = field(default_factory=list)  # run folders computed at another commit than the checkout's

    @property
    def compared(self) -> list[str]:
        return list(dict.fromkeys(self.rows["table"]))

    @property
    def verdicts(self) -> pd.DataFrame:
        """The rows that carry a verdict in the committed table or in the run's."""
        return self.rows[self.rows["committed_verdict"].notna() | self.rows["reproduced_verdict"].notna()]

    @property
    def flipped(self) -> pd.DataFrame:
        judged = self.verdicts
        return judged[judged["committed_verdict"].fillna("") != judged["reproduced_verdict"].fillna("")]

    @property
    def flipped_claims(self) -> pd.DataFrame:
        return self.claims[self.claims["committed"] != self.claims["reproduced"]]

    @property
    def largest_delta(self) -> float:
        return float(self.rows["largest_delta"].max()) if len(self.rows) else 0.0

    @property
    def ok(self) -> bool:
        return not (len(self.flipped) or len(self.flipped_claims) or self.missing or self.differing or self.stale)

    def summary_line(self) -> str:
        """One line: verdicts and claims identical or not, which tables they rest on, the largest differences."""
        judged, claims = len(self.verdicts), len(self.claims)
        scope = f"tables {', '.join(self.compared)}" + (f"; {', '.join(self.not_rerun)} not run" if self.not_rerun
                                                        else "")
        line = (f"{judged - len(self.flipped)} of {judged} verdicts identical and {claims - len(self.flipped_claims)} "
                f"of {claims} claims ({scope}); largest |Δ| {self.largest_delta:.4f} of an estimate, "
                f"{self.p_delta:.4f} of a p-value")
        if self.ok:
            return line + (f": reproduced, within the tolerances for float differences across CPUs "
                           f"({self.tolerance:g}, {self.p_tolerance:g})")
        problems = [f"{len(self.flipped)} verdict(s) flipped" if len(self.flipped) else "",
                    f"{len(self.flipped_claims)} claim(s) flipped" if len(self.flipped_claims) else "",
                    f"{len(self.differing)} value(s) differ" if self.differing else "",
                    f"{len(self.missing)} row(s) missing or extra" if self.missing else "",
                    f"{len(self.stale)} run(s) computed at another commit" if self.stale else ""]
        return line + ": NOT REPRODUCED (" + ", ".join(p for p in problems if p) + ")"


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every ``<name>.csv`` in ``folder``, by name (empty when the folder is missing)."""
    folder = Path(folder)
    return {path.stem: pd.read_csv(path) for path in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}


def _key_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in (*MEASURES, VERDICT, *LABEL_COLUMNS)]


def _key_text(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(str(row[k]) for k in keys)


def compare_table(name: str, committed: pd.DataFrame, reproduced: pd.DataFrame, tolerance: float = TOLERANCE,
                  p_tolerance: float = P_TOLERANCE):
    """(rows, missing, differing, largest |Δ| of a p-value) for one table: rows matched on their key (every column
    but ``MEASURES``, the verdict and ``LABEL_COLUMNS``); each matched row's estimates held to ``tolerance``, its
    p-values to ``p_tolerance``, its counts and labels to equality (NaN equals NaN). Raises ValueError when the
    key does not identify a row or the run's table lacks a key column."""
    keys = _key_columns(committed)
    absent = [c for c in keys if c not in reproduced]
    if absent:
        raise ValueError(f"{name}: the run's table lacks the columns {absent}")
    for side, table in (("committed", committed), ("run's", reproduced)):
        if table.duplicated(keys).any():
            raise ValueError(f"{name}: the columns {keys} do not identify a row of the {side} table")
    merged = committed.merge(reproduced, on=keys, how="outer", suffixes=("", " reproduced"), indicator=True)
    missing = [f"{name}: {_key_text(r, keys)} ({'not reproduced' if r['_merge'] == 'left_only' else 'extra'})"
               for _, r in merged[merged["_merge"] != "both"].iterrows()]
    both = merged[merged["_merge"] == "both"].reset_index(drop=True)
    differing, largest, p_delta = [], np.zeros(len(both)), 0.0
    for column in [c for c in committed.columns if c in (*MEASURES, *LABEL_COLUMNS)]:
        if f"{column} reproduced" not in both:
            differing.append(f"{name}: column {column} not reproduced")
            continue
        if column in LABEL_COLUMNS:
            a, b = both[column].fillna(""), both[f"{column} reproduced"].fillna("")
            differing += [f"{name}: {_key_text(both.iloc[i], keys)} {column} {a[i]} -> {b[i]}"
                          for i in np.flatnonzero((a != b).to_numpy())]
            continue
        a, b = both[column].astype(float).to_numpy(), both[f"{column} reproduced"].astype(float).to_numpy()
        delta = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        delta = np.where(np.isnan(a) == np.isnan(b), delta, np.inf)
        if column in P_VALUES:
            p_delta, allowed = max(p_delta, float(delta.max(initial=0.0))), p_tolerance
        else:
            largest = np.maximum(largest, delta)
            # counts (cells, domains, draws) must be equal
            allowed = 0.0 if pd.api.types.is_integer_dtype(committed[column]) else tolerance
        differing += [f"{name}: {_key_text(both.iloc[i], keys)} {column} {a[i]:g} -> {b[i]:g}"
                      for i in np.flatnonzero(delta > allowed)]
    numeric = [c for c in committed.columns if c in MEASURES]
    shown = "delta" if "delta" in numeric else next((c for c in numeric if c not in ("cells", "domains", "draws")),
                                                   numeric[0] if numeric else None)
    rows = pd.DataFrame({
        "table": name, "key": [_key_text(r, keys) for _, r in both.iterrows()],
        "committed": both[shown] if shown else np.nan,
        "reproduced": both[f"{shown} reproduced"] if shown and f"{shown} reproduced" in both else np.nan,
        "committed_verdict": both.get(VERDICT),
        "reproduced_verdict": both.get(f"{VERDICT} reproduced"),
        "largest_delta": largest})
    return rows, missing, differing, p_delta


def compare(committed: dict[str, pd.DataFrame], reproduced: dict[str, pd.DataFrame],
            tolerance: float = TOLERANCE, p_tolerance: float = P_TOLERANCE) -> Comparison:
    """Compare every committed table that the run reproduced, and the claims computed from those tables alone
    on each side (a claim resting on a table the run did not produce is left out of both, and the closing line
    names the tables the comparison rests on)."""
    if not committed:
        raise FileNotFoundError("no committed tables to compare with")
    shared = [name for name in committed if name in reproduced]
    if not shared:
        raise FileNotFoundError(f"the run reproduced none of the committed tables {sorted(committed)}")
    parts, missing, differing, p_delta = [], [], [], 0.0
    for name in shared:
        rows, gone, moved, p_moved = compare_table(name, committed[name], reproduced[name], tolerance, p_tolerance)
        p_delta = max(p_delta, p_moved)
        parts.append(rows)
        missing += gone
        differing += moved
    claims = pd.DataFrame(columns=[CLAIM, "committed", "reproduced"])
    if "main" in shared:
        before = {c[CLAIM]: c["agrees"] for c in report.verdicts({n: committed[n] for n in shared})}
        after = {c[CLAIM]: c["agrees"] for c in report.verdicts({n: reproduced[n] for n in shared})}
        claims = pd.DataFrame([{CLAIM: c, "committed": before.get(c), "reproduced": after.get(c)}
                               for c in dict.fromkeys([*before, *after])])
    return Comparison(pd.concat(parts, ignore_index=True), claims, missing,
                      [n for n in committed if n not in reproduced], differing, tolerance, p_tolerance, p_delta)


def stale_runs(root: Path, commit: str | None) -> list[str]:
    """The runs under ``root`` the report reads (its own and those of ``report.TABLES``) whose ``params.json``
    records another commit than ``commit``: runs the runner skipped as finished after the code changed; none
    when ``commit`` is unknown."""
    if not commit:
        return []
    found = []
    for notebook in sorted({REPORT_NOTEBOOK, *(nb for nb, _ in report.TABLES.values())}):
        params = Path(root) / notebook / PARAMS_FILE
        if not params.is_file():
            continue
        recorded = json.loads(params.read_text()).get("git_commit")
        if recorded != commit:
            found.append(f"{params.parent.name} at {recorded}")
    return found


def render(result: Comparison, limit: int = 20) -> str:
    """The comparison as text: the claims, every verdict, what differs, and the closing line."""
    def short(value, width=70):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        return text if len(text) <= width else text[:width - 1] + "…"

    lines = ["Claims (committed -> reproduced):"]
    for _, c in result.claims.iterrows():
        mark = "  " if c["committed"] == c["reproduced"] else "!!"
        lines.append(f"{mark} {short(c[CLAIM], 90)}: {short(c['committed'], 40)} -> {short(c['reproduced'], 40)}")
    lines += ["", "Verdicts (table: key: committed -> reproduced, largest |Δ| of the row):"]
    for _, r in result.verdicts.iterrows():
        same = str(r["committed_verdict"]) == str(r["reproduced_verdict"])
        mark = "  " if same else "!!"
        lines.append(f"{mark} {r['table']}: {r['key']}: {r['committed']:+.4f} {r['committed_verdict']} -> "
                     f"{r['reproduced']:+.4f} {r['reproduced_verdict']} (|Δ| {r['largest_delta']:.4f})")
    for title, items in (("Values that differ beyond the tolerances", result.differing),
                         ("Rows missing or extra", result.missing),
                         ("Runs computed at another commit than the checkout's (rerun them: make reproduce "
                          "FORCE=1, with WITH=\"12 13\" if 12 or 13 is listed)",
                          result.stale)):
        if items:
            lines += ["", f"{title} ({len(items)}):", *(f"!! {i}" for i in items[:limit])]
            lines += [f"   … and {len(items) - limit} more"] if len(items) > limit else []
    if result.not_rerun:
        notebooks = sorted({nb for t, (nb, _) in report.TABLES.items() if t in result.not_rerun})
        lines += ["", f"Committed but not computed by this run: {', '.join(result.not_rerun)} (their notebooks "
                      f"{', '.join(notebooks)} were not run; add them with make reproduce WITH=\"12 13\")"]
    return "\n".join([*lines, "", result.summary_line()])


def report_tables_dir(profile: str) -> Path:
    """Where a report run of ``profile`` keeps the tables it would publish."""
    return paths.runs_dir() / profile_name(profile) / REPORT_NOTEBOOK / TABLES_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2l_utils.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini", help="the profile whose run is checked (default: mini)")
    parser.add_argument("--run", type=Path, default=None,
                        help="the report run's tables folder (default: runs/<profile>/14_report/tables, whose "
                             "sibling runs must all be computed at the checkout's commit)")
    parser.add_argument("--committed", type=Path, default=None,
                        help="the committed tables (default: data/results/<profile>)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"estimates (default {TOLERANCE})")
    parser.add_argument("--p-tolerance", type=float, default=P_TOLERANCE, help=f"p-values (default {P_TOLERANCE})")
    args = parser.parse_args(argv)
    run = args.run or report_tables_dir(args.profile)
    committed = args.committed or paths.data_dir() / "results" / profile_name(args.profile)
    if not read_tables(committed):
        print(f"no committed results in {committed}: nothing to compare (make publish commits a profile's results)")
        return 0
    try:
        result = compare(read_tables(committed), read_tables(run), args.tolerance, args.p_tolerance)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc} (committed: {committed}; run: {run})", file=sys.stderr)
        return 2
    if args.run is None:
        result.stale = stale_runs(run.parent.parent, git_commit())
    print(f"Comparing {run} with the committed {committed}\n")
    print(render(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
