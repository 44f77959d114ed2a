"""The whole study from its published shards: ``judge`` computes every table and verdict (a ``Study``), and
``write_results`` writes them with the results page into the run folder and, when publishing, into the
repository (tables, figure, ``docs/results/regimes.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import notebook, paths
from . import analysis, hypotheses, render, shards, worlds

STUDY = "regimes"  # the name of the results page (``paths.results_page``)


@dataclass
class Study:
    """The study judged: tables keyed by regime (``analysis.REGIME``), the verdicts and the draws they used."""

    summary: pd.DataFrame
    contrasts: dict[str, pd.DataFrame]  # ``analysis.setting_contrasts``
    blind: pd.DataFrame
    paper: pd.DataFrame
    claims: pd.DataFrame
    zero_knowledge: pd.DataFrame | None  # None while its shard is not published
    verdicts: list[hypotheses.Verdict]
    draws: int
    draws_needed: int

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables as published, world keys replaced by their labels: summary, contrasts, blind, hypotheses,
        paper_table, claims and, once its shard is published, zero_knowledge."""
        out = {"summary": worlds.with_labels(self.summary),
               "contrasts": pd.concat([worlds.with_labels(c) for c in self.contrasts.values()], ignore_index=True),
               "blind": worlds.with_labels(self.blind), "hypotheses": render.hypotheses_table(self.verdicts),
               "paper_table": worlds.with_labels(self.paper.reset_index()),
               "claims": render.claims_table(self.claims).reset_index()}
        return out | ({"zero_knowledge": self.zero_knowledge} if self.zero_knowledge is not None else {})

    def metrics(self) -> dict:
        """What the run's metrics record: each hypothesis's verdict (labels) and the draws the families need."""
        table = render.hypotheses_table(self.verdicts)
        return {"hypotheses": dict(zip(table["hypothesis"], table["verdict"], strict=True)),
                "draws_needed": self.draws_needed}


def judge(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int, seed: int = 0, correction: str = "holm",
          zero_knowledge: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> Study:
    """Every table and verdict of the study from the published shards' (scores, matches) (``shards.load``) and
    the zero-knowledge shard's (``shards.load_zero_knowledge``, None while unpublished), with ``n_bootstrap``
    draws: the verdicts are marked when the draws are too few for the largest family (``hypotheses.with_draws``)."""
    cell_effects = analysis.effects(scores, matches, n_bootstrap, seed)
    summary = analysis.summary(cell_effects, seed, correction)
    needed = analysis.draws_needed(summary)
    contrasts = analysis.setting_contrasts(cell_effects, seed)
    del cell_effects  # the per-cell draws are the study's largest object
    blind = analysis.blind_by_world(scores, n_bootstrap, seed)
    zero = (analysis.zero_knowledge_summary(*zero_knowledge, n_bootstrap, seed, correction)
            if zero_knowledge is not None else None)
    verdicts = hypotheses.judge_all(summary, contrasts, blind, zero, n_bootstrap, needed)
    return Study(summary, contrasts, blind, analysis.paper_tables(summary), analysis.claims_by_regime(summary), zero,
                 verdicts, n_bootstrap, needed)


def write_results(study: Study, run: notebook.Run, record: dict, figure: Path, commit: str | None,
                  publish: bool = False, folder: Path | None = None) -> dict[str, list[Path]]:
    """Write the study's tables (``regimes_<name>``) and its page (``regimes.md``, linking ``figure``) into the
    run folder; when ``publish``, also the tables as ``<name>.csv`` into ``folder`` (``shards.results_dir()``),
    the figure into ``figures/<profile>/`` (``run.publish_figures``) and the page, its figure linked relative
    to it, to ``paths.results_page("regimes")``: refused, before any of these is written, when a table committed
    in ``folder`` is not among the study's. ``record``: ``shards.shard_records``. Returns the paths written, by
    kind (run, tables, figures, page)."""
    tables = study.tables()

    def page(links):
        return render.page(tables["hypotheses"], study.summary, study.claims, record, links, commit)

    inside = [run.save_table(table, f"regimes_{name}") for name, table in tables.items()]
    own_page = notebook.write_text(run.dir / "regimes.md", page(notebook.relative_links([figure], run.dir)))
    written = {"run": [*inside, own_page]}
    if publish:
        written |= run.publish(tables, folder or shards.results_dir(), paths.results_page(STUDY), page, [figure],
                               [figure], "publish the shards they are computed from first")
    return written
