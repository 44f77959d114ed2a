"""The store of finished models in the cell cache, and how a cell borrows an equal one instead of computing it.

A finished folder holds one model's results: ``scores.parquet``, ``extraction.parquet`` and ``cell.json``
(written last, so a folder with it is complete); a fine-tuned model's folder also holds its run
(``finetune.RECIPE``, ``artefact/``). A cell borrows from a *lender* (a folder named by its kind,
``LENDER_KINDS``) that is finished, extracted at the cell's threshold and, for a fine-tune, trained to the
cell's recipe (``finetune.adopt``): it copies the artefact and the extraction matches, scores the model anew,
and names the lender in its own ``cell.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import finetune, notebook

CELL_SCORES, CELL_EXTRACTION, CELL_INFO = "scores.parquet", "extraction.parquet", "cell.json"
TWIN, SIBLING = "twin", "sibling"  # lender kinds: the unshifted twin world's cell, a cell at other SP parameters
LENDER_KINDS = (TWIN, SIBLING)  # in the order they are asked; each is a field of cell.json
OWN_COLUMNS = ("condition", "threshold", "expected_false_positives")  # columns of extraction.parquet a cell sets


@dataclass(frozen=True)
class Loan:
    """A finished folder (``folder``) that lends a cell its model, as a lender of ``kind``."""

    kind: str
    folder: Path


class ModelStore:
    """The finished folders under ``root`` (the cell cache); the names recorded in files are relative to it."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def finished(folder: Path | None) -> Path | None:
        """``folder`` when it holds a finished model (its ``cell.json``), else None."""
        return folder if folder is not None and (folder / CELL_INFO).is_file() else None

    @staticmethod
    def read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A finished folder's (scores, extraction matches)."""
        return pd.read_parquet(folder / CELL_SCORES), pd.read_parquet(folder / CELL_EXTRACTION)

    def find_lender(self, candidates: dict[str, Path | None], threshold: float) -> Loan | None:
        """The first candidate (kind -> folder or None, in order) that is finished and extracted at
        ``threshold``, or None."""
        for kind, folder in candidates.items():
            if self.finished(folder) and json.loads((folder / CELL_INFO).read_text())["threshold"] == threshold:
                return Loan(kind, folder)
        return None

    @staticmethod
    def borrow_finetune(loan: Loan, out_dir: Path, wanted: dict, params, base: str) -> bool:
        """Copy the lender's fine-tune into ``out_dir`` when its recipe is ``wanted`` (``finetune.adopt``);
        False, with nothing copied, when it is not."""
        return finetune.adopt(loan.folder, out_dir, wanted, params, base)

    @staticmethod
    def lent_matches(loan: Loan) -> pd.DataFrame:
        """The lender's extraction matches without the columns each cell sets itself (``OWN_COLUMNS``)."""
        return pd.read_parquet(loan.folder / CELL_EXTRACTION).drop(columns=list(OWN_COLUMNS))

    def write_finished(self, folder: Path, condition: str, scores: pd.DataFrame, matches: pd.DataFrame,
                       threshold: float, expected_false_positives: float, seconds: float, loan: Loan | None) -> None:
        """Write a model's results into ``folder``: scores, extraction matches, then ``cell.json`` (whole, by a
        rename), which names the lender of each kind (relative to ``root``; None for every other kind)."""
        folder.mkdir(parents=True, exist_ok=True)
        scores.assign(condition=condition).to_parquet(folder / CELL_SCORES, index=False)
        matches.assign(condition=condition, threshold=threshold,
                       expected_false_positives=expected_false_positives).to_parquet(folder / CELL_EXTRACTION,
                                                                                     index=False)
        notebook.write_json(folder / CELL_INFO, {
            "condition": condition, "threshold": threshold, "expected_false_positives": expected_false_positives,
            "seconds": seconds,
            **{kind: self.name(loan.folder) if loan and kind == loan.kind else None for kind in LENDER_KINDS}})

    def name(self, folder: Path) -> str:
        """``folder`` as recorded in the store's files: relative to ``root``."""
        return str(folder.relative_to(self.root))

    def register(self, record: Path, folder: Path) -> None:
        """Record ``folder`` at ``record`` (a JSON file), for ``registered`` to find."""
        notebook.write_json(record, {"folder": self.name(folder)})

    def registered(self, record: Path) -> Path | None:
        """The folder recorded at ``record`` when there is a record and the folder is finished, else None."""
        if not record.is_file():
            return None
        return self.finished(self.root / json.loads(record.read_text())["folder"])
