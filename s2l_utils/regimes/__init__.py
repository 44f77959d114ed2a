"""The regime study: where S2L's effect shows in the miniature, where it does not, and why.

The grid is a set of shards (``shards``: one sweep file each; a finished one is published to
``data/results/regimes/`` and committed), over worlds (``worlds``: members duplicated or not, the grid's target or
H4's wider one), non-member shift and SP guidance. From the published shards, ``analysis`` computes the tables
(every comparison per regime judged within the pre-registered families, contrasts between settings, the blind
baseline), ``hypotheses`` judges each pre-registered hypothesis by its rule, ``render`` words the verdicts and
writes the results page, and ``study`` runs the whole (``judge``) and writes it (``write_results``). Notebook 15
calls and shows them; ``python -m s2l_utils.regimes publish <sweep file>`` publishes a shard.
"""

from . import analysis, hypotheses, render, shards, study, worlds
from .analysis import (CAPACITY_CONTRAST, COMPARED, GUIDANCE, H4_GUIDANCE, HEAVIEST, MIA_ATTACKS, REGIME, SHIFT,
                       WEIGHT_METHODS, blind_by_world, bracketed, bracketed_each, capacity_contrast, claims_by_regime,
                       contrasts, copying_domains, domain_signs, draws_needed, effects, paper_tables, regime_rows,
                       setting_contrasts, summary, zero_knowledge_summary)
from .hypotheses import (AROUND_ZERO, H1_MARGIN, MIN_COPYING_DOMAINS, Verdict, h1_memorisation, h2_drift, h3_shift,
                         h4_capacity, not_run, with_draws, zero_knowledge)
from .render import CAVEAT, DEVIATIONS, figure_panels, heaviest_by_guidance, hypotheses_table, page
from .shards import (CAPACITY, SHARDS, SHARDS_FILE, ZERO_KNOWLEDGE, load, load_zero_knowledge, preregistration,
                     publish, results_dir, shard_records)
from .study import Study, judge, write_results
from .worlds import DATA, DUPLICATED, GRID, IID, TARGET, WIDE, WIDE_CHANNELS, world_of

__all__ = [
                       "AROUND_ZERO",
                       "CAPACITY",
                       "CAPACITY_CONTRAST",
                       "CAVEAT",
                       "COMPARED",
                       "DATA",
                       "DEVIATIONS",
                       "DUPLICATED",
                       "GRID",
                       "GUIDANCE",
                       "H1_MARGIN",
                       "H4_GUIDANCE",
                       "HEAVIEST",
                       "IID",
                       "MIA_ATTACKS",
                       "MIN_COPYING_DOMAINS",
                       "REGIME",
                       "SHARDS",
                       "SHARDS_FILE",
                       "SHIFT",
                       "TARGET",
                       "WEIGHT_METHODS",
                       "WIDE",
                       "WIDE_CHANNELS",
                       "ZERO_KNOWLEDGE",
                       "Study",
                       "Verdict",
                       "analysis",
                       "blind_by_world",
                       "bracketed",
                       "bracketed_each",
                       "capacity_contrast",
                       "claims_by_regime",
                       "contrasts",
                       "copying_domains",
                       "domain_signs",
                       "draws_needed",
                       "effects",
                       "figure_panels",
                       "h1_memorisation",
                       "h2_drift",
                       "h3_shift",
                       "h4_capacity",
                       "heaviest_by_guidance",
                       "hypotheses",
                       "hypotheses_table",
                       "judge",
                       "load",
                       "load_zero_knowledge",
                       "not_run",
                       "page",
                       "paper_tables",
                       "preregistration",
                       "publish",
                       "regime_rows",
                       "render",
                       "results_dir",
                       "setting_contrasts",
                       "shard_records",
                       "shards",
                       "study",
                       "summary",
                       "with_draws",
                       "world_of",
                       "worlds",
                       "write_results",
                       "zero_knowledge",
                       "zero_knowledge_summary",
]
