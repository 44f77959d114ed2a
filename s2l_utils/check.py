"""Does a run reproduce the committed results? ``python -m s2l_utils.check --profile mini``.

Compares the tables a report run wrote (``runs/<profile>/14_report/tables/``) with the committed ones
(``data/results/<profile>/``) row by row, and the paper's claims (``report.verdicts``) computed from each,
then prints one closing line. Exits 1 when a verdict or a claim's agreement flips, a row is missing or
extra, or a number differs by more than ``TOLERANCE``; 0 otherwise, and when the profile has no committed
results. Writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths, report
from .notebook import profile_name

# the largest |difference| of any number in the committed tables that a run on another CPU may show (measured:
# docs/reproducing.md); a larger one is reported as a difference, a flipped verdict always is
TOLERANCE = 0.01
VERDICT, CLAIM = "verdict", "claim"
# what a results table measures (``stats``' estimates and the blind baseline's AUC); every other column but the
# verdict and the correction identifies the row (method, comparison, attack, metric, swept parameters)
MEASURES = ("before", "after", "delta", "lo", "hi", "p", "p_adjusted", "auc", "cells", "domains", "draws")
# judged through the verdicts they decide, not by the tolerance: a p-value near a verdict's threshold moves by
# whole bootstrap draws, and Holm multiplies that by the family's size (their largest |Δ| is still reported)
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
    differing: list[str]  # "<table>: <key> <column>" whose numbers or integer counts differ beyond TOLERANCE
    tolerance: float
    p_delta: float = 0.0  # the largest |Δ| of a p-value (``P_VALUES``)

    @property
    def verdicts(self) -> pd.DataFrame:
        """The rows that carry a verdict in the committed table."""
        return self.rows[self.rows["committed_verdict"].notna()]

    @property
    def flipped(self) -> pd.DataFrame:
        judged = self.verdicts
        return judged[judged["committed_verdict"] != judged["reproduced_verdict"]]

    @property
    def flipped_claims(self) -> pd.DataFrame:
        return self.claims[self.claims["committed"] != self.claims["reproduced"]]

    @property
    def largest_delta(self) -> float:
        return float(self.rows["largest_delta"].max()) if len(self.rows) else 0.0

    @property
    def ok(self) -> bool:
        return not (len(self.flipped) or len(self.flipped_claims) or self.missing or self.differing)

    def summary_line(self) -> str:
        """One line: verdicts and claims identical or not, and the largest difference of any number."""
        judged, claims = len(self.verdicts), len(self.claims)
        line = (f"{judged - len(self.flipped)} of {judged} verdicts identical, {claims - len(self.flipped_claims)} "
                f"of {claims} claims; largest |Δ| {self.largest_delta:.4f} (of a p-value {self.p_delta:.4f})")
        if self.ok:
            return line + f" (within {self.tolerance:g}, the float differences measured across CPUs): reproduced"
        problems = [f"{len(self.flipped)} verdict(s) flipped" if len(self.flipped) else "",
                    f"{len(self.flipped_claims)} claim(s) flipped" if len(self.flipped_claims) else "",
                    f"{len(self.differing)} number(s) beyond {self.tolerance:g}" if self.differing else "",
                    f"{len(self.missing)} row(s) missing or extra" if self.missing else ""]
        return line + ": NOT REPRODUCED (" + ", ".join(p for p in problems if p) + ")"


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every ``<name>.csv`` in ``folder``, by name (empty when the folder is missing)."""
    folder = Path(folder)
    return {path.stem: pd.read_csv(path) for path in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}


def _key_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in (*MEASURES, VERDICT, *LABEL_COLUMNS)]


def _key_text(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(str(row[k]) for k in keys)


def compare_table(name: str, committed: pd.DataFrame, reproduced: pd.DataFrame, tolerance: float):
    """(rows, missing, differing, largest |Δ| of a p-value) for one table: rows matched on their key (every column
    but ``MEASURES``, the verdict and ``LABEL_COLUMNS``); the measures of each matched row compared column by
    column (NaN equals NaN, counts exactly, p-values only reported)."""
    keys = _key_columns(committed)
    numeric = [c for c in committed.columns if c in MEASURES]
    if committed.duplicated(keys).any():
        raise ValueError(f"{name}: the columns {keys} do not identify a row")
    merged = committed.merge(reproduced, on=keys, how="outer", suffixes=("", " reproduced"), indicator=True)
    missing = [f"{name}: {_key_text(r, keys)} ({'not reproduced' if r['_merge'] == 'left_only' else 'extra'})"
               for _, r in merged[merged["_merge"] != "both"].iterrows()]
    both = merged[merged["_merge"] == "both"].reset_index(drop=True)
    differing, largest, p_delta = [], np.zeros(len(both)), 0.0
    for column in numeric:
        if f"{column} reproduced" not in both:
            differing.append(f"{name}: column {column} not reproduced")
            continue
        a, b = both[column].astype(float).to_numpy(), both[f"{column} reproduced"].astype(float).to_numpy()
        same_nan = np.isnan(a) == np.isnan(b)
        delta = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        delta = np.where(same_nan, delta, np.inf)
        if column in P_VALUES:
            p_delta = max(p_delta, float(delta.max(initial=0.0)))
            continue
        largest = np.maximum(largest, delta)
        exact = pd.api.types.is_integer_dtype(committed[column])  # counts (cells, domains, draws) must be equal
        for i in np.flatnonzero(delta > (0 if exact else tolerance)):
            differing.append(f"{name}: {_key_text(both.iloc[i], keys)} {column} {a[i]:g} -> {b[i]:g}")
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
            tolerance: float = TOLERANCE) -> Comparison:
    """Compare every committed table that the run reproduced, and the claims computed from those tables alone
    on each side (a claim resting on a table the run did not produce is left out of both)."""
    if not committed:
        raise FileNotFoundError("no committed tables to compare with")
    shared = [name for name in committed if name in reproduced]
    if not shared:
        raise FileNotFoundError(f"the run reproduced none of the committed tables {sorted(committed)}")
    parts, missing, differing, p_delta = [], [], [], 0.0
    for name in shared:
        rows, gone, moved, p_moved = compare_table(name, committed[name], reproduced[name], tolerance)
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
                      [n for n in committed if n not in reproduced], differing, tolerance, p_delta)


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
        mark = "  " if r["committed_verdict"] == r["reproduced_verdict"] else "!!"
        lines.append(f"{mark} {r['table']}: {r['key']}: {r['committed']:+.4f} {r['committed_verdict']} -> "
                     f"{r['reproduced']:+.4f} {r['reproduced_verdict']} (|Δ| {r['largest_delta']:.4f})")
    for title, items in (("Numbers beyond the tolerance", result.differing),
                         ("Rows missing or extra", result.missing)):
        if items:
            lines += ["", f"{title} ({len(items)}):", *(f"!! {i}" for i in items[:limit])]
            lines += [f"   … and {len(items) - limit} more"] if len(items) > limit else []
    if result.not_rerun:
        lines += ["", f"Committed but not computed by this run (their notebooks were not run): "
                      f"{', '.join(result.not_rerun)}"]
    return "\n".join([*lines, "", result.summary_line()])


def report_tables_dir(profile: str) -> Path:
    """Where a report run of ``profile`` keeps the tables it would publish."""
    return paths.runs_dir() / profile_name(profile) / REPORT_NOTEBOOK / TABLES_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2l_utils.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini", help="the profile whose run is checked (default: mini)")
    parser.add_argument("--run", type=Path, default=None,
                        help="the report run's tables folder (default: runs/<profile>/14_report/tables)")
    parser.add_argument("--committed", type=Path, default=None,
                        help="the committed tables (default: data/results/<profile>)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"default {TOLERANCE}")
    args = parser.parse_args(argv)
    run = args.run or report_tables_dir(args.profile)
    committed = args.committed or paths.data_dir() / "results" / profile_name(args.profile)
    if not read_tables(committed):
        print(f"no committed results in {committed}: nothing to compare (make publish commits a profile's results)")
        return 0
    try:
        result = compare(read_tables(committed), read_tables(run), args.tolerance)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc} (committed: {committed}; run: {run})", file=sys.stderr)
        return 2
    print(f"Comparing {run} with the committed {committed}\n")
    print(render(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
