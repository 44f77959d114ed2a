# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 15 · Regimes: where S2L shows in the miniature, where it does not, and why
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/15_regimes.ipynb)
#
# The main experiment (11) asks whether S2L amplifies leakage in one world. This notebook asks *where* it does:
# over a grid of regimes that mirror what real Stable Diffusion training data has or lacks.
#
# | axis | values | what it mirrors |
# | --- | --- | --- |
# | duplication of members | off / on (`member_duplicates: [32, 16, 8, 4]`) | LAION's duplicates, the images SD copies |
# | non-member shift | off / 0.5 | held-out photos taken differently from the training ones (a confound of MIA) |
# | SP guidance | 1, 3, 7.5 | how the attacker samples the SP set: the model's own conditional (1) or CFG (> 1) |
#
# Each regime runs LoRA, DreamBooth, textual inversion and DreamBooth+LoRA on all 8 private domains, seeds 0 and
# 1, each cell under the three conditions (S2L, cross-domain, real non-member), with every MIA, the blind
# baseline, extraction per duplication class and the drift of the generations (notebook 11's cells).
#
# **Shards.** The grid is run in eight shards, two per world (LoRA + DreamBooth, textual inversion +
# DreamBooth+LoRA; `sweeps/regimes_*.yaml`, about 80 minutes each on 2 cores); a finished shard's raw scores and
# matches are published to `data/results/regimes/` and committed with the commit that produced them (`make regimes
# SHARDS=...`). H4's wider target (UNet widths 32-64, the duplicated world, SP guidance 3, all four methods) takes
# two more shards, `regimes_capacity_*`, run after the grid. This notebook reads whatever shards are published; a
# hypothesis whose world is missing reads "pending", and the verdicts are marked interim until all eight are in.
# With `publish`, the tables go to `data/results/regimes/`, the figure to `figures/<profile>/` and the results page
# to `docs/results/regimes.md`; without it, everything stays in the run folder.
#
# **Statistics.** As in 11: the cluster bootstrap (domains, then images and generations), the S2L effect against
# each method's own control, token methods bracketed. Holm runs within each comparison x metric family over
# methods x regimes, as pre-registered; such a family holds up to 240 verdicts, so the study draws
# `regimes_bootstrap` (10,000) resamples: the smallest p-value, 2 / (draws + 1), must lie below 0.05 / 240.
# Contrasts between settings (guidance 7.5 − 1, shift 0.5 − 0) subtract the same method's, domain's and seed's
# effects draw by draw.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | full | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/15_regimes
regimes_results = None  # folder of the published regime shards; empty means data/results/regimes
regimes_bootstrap = None  # bootstrap draws per confidence interval and p-value of the regime study
multiplicity = None  # correction of the verdicts for multiple comparisons: holm | bh
publish = None  # also write the tables, the figure and docs/results/regimes.md where the repository keeps them

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from s2l_utils import experiment, notebook, plots, regimes, stats
from s2l_utils.regimes import render

run = notebook.start("15_regimes", profile, run_dir, regimes_results=regimes_results,
                     regimes_bootstrap=regimes_bootstrap, multiplicity=multiplicity, publish=publish)
params = run.params
folder = Path(params.regimes_results) if params.regimes_results else regimes.results_dir()
scores, matches, shards = regimes.load(folder)
record = regimes.shard_records(folder)
print(render.shards_line(shards))
pd.DataFrame.from_dict(record, orient="index")

# %% [markdown]
# ## The pre-registration
# Committed before any cell of the grid ran (its git date precedes every shard's), and read here unchanged.

# %%
display(Markdown(regimes.preregistration()))

# %% [markdown]
# ### Where this analysis departs from the pre-registration, and a caveat

# %%
display(Markdown(render.deviations()))

# %% [markdown]
# ## Every comparison, per regime
# The S2L effect (and after − before, and each control) per world, shift, guidance and method, averaged over
# domains and seeds, judged within the pre-registered families; the contrasts between settings, the blind baseline
# per world, the zero-knowledge shake and every hypothesis's verdict (`regimes.judge`). Then the paper's table,
# read per regime.

# %%
# papermill_description=bootstrap
study = regimes.judge(scores, matches, params.regimes_bootstrap, params.seed, params.multiplicity,
                      zero_knowledge=regimes.load_zero_knowledge(folder))
tables = study.tables()
print(render.draws_line(len(study.summary), study.draws_needed, study.draws))
with pd.option_context("display.max_colwidth", 80):
    display(tables["claims"])
tables["paper_table"].round(3)

# %% [markdown]
# ## Between settings: guidance, shift and capacity
# The guidance contrast (the per-cell effect at SP guidance 7.5 minus that at 1) is H2's measure: a positive
# contrast on the median nearest distance means stronger guidance moved S2L's generations further from the
# training images. The shift contrast (non-members shifted minus i.i.d., same cells otherwise) is H3's. The
# capacity contrast (the wider target's effect minus the grid's target's, same data, guidance 3) is H4's.

# %%
contrasts = tables["contrasts"]
contrasts[contrasts["method"] == experiment.ALL_METHODS].round(3) if len(contrasts) else contrasts

# %% [markdown]
# ## The blind baseline per world
# A model-free classifier's AUC: near 0.5 on i.i.d. non-members, well above it when non-members are shifted.

# %%
tables["blind"].round(3)

# %% [markdown]
# ## The zero-knowledge shake
# The paper reports that fine-tuning on pure Gaussian noise amplifies the leakage of small diffusion models. On the
# duplicated world: LoRA and DreamBooth on an SP set of noise images, and noise added to the UNet's weights,
# each against the target before it (no domain control is needed: no domain knowledge enters).

# %%
zero = study.zero_knowledge
(zero[zero["metric"].isin([stats.STRENGTH, "own_copies", "nearest_median"])].round(3) if zero is not None
 else "zero-knowledge shard pending")

# %% [markdown]
# ## The verdicts, by the pre-registered rules
# Each hypothesis is confirmed, refuted or not shown by its rule in the pre-registration; "pending" where its
# shard is not published yet, and marked "too few draws" where the draws cannot let any estimate survive Holm.

# %%
with pd.option_context("display.max_colwidth", None):
    display(tables["hypotheses"])
render.heaviest_by_guidance(study.summary)

# %% [markdown]
# ## The figure
# S2L's effect (S2L − the method's control, 95% CI; a filled marker: the Holm verdict is up or down) on three
# MIAs' strength, on copies of the 32x members, and on the drift of the generations, per world and SP guidance.

# %%
figure = run.savefig(plots.regime_grid(render.figure_panels(study.summary), title=render.FIGURE_TITLE),
                     "regimes_effects")

# %% [markdown]
# ## The results page
# The tables and the page go into the run folder; with `publish`, also into the repository.

# %%
written = regimes.write_results(study, run, record, figure, notebook.git_commit(), params.publish, folder)
for kind, files in written.items():
    print(f"{kind}: {', '.join(str(f) for f in files)}")
run.log_metrics(shards=shards, **study.metrics(), published=params.publish)
display(Markdown((run.dir / "regimes.md").read_text()))
