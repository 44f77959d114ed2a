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
# | duplication of members | off / on (`member_duplicates: [32, 16, 8, 4]`) | LAION's duplicated images, the ones SD copies |
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
publish = None  # write the README Regimes block and the tables into data/results/regimes/

# %%
import os
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from s2l_utils import experiment, notebook, paths, plots, regimes, report, stats

run = notebook.start("15_regimes", profile, run_dir, regimes_results=regimes_results,
                     regimes_bootstrap=regimes_bootstrap, multiplicity=multiplicity, publish=publish)
params = run.params
folder = Path(params.regimes_results) if params.regimes_results else regimes.results_dir()
scores, matches, shards = regimes.load(folder)
record = regimes.shard_records(folder)
print(f"published: {', '.join(shards)}; pending: {', '.join(s for s in regimes.SHARDS if s not in shards) or 'none'}")
pd.DataFrame.from_dict(record, orient="index")

# %% [markdown]
# ## The pre-registration
# Committed before any cell of the grid ran (its git date precedes every shard's), and read here unchanged.

# %%
display(Markdown(regimes.preregistration()))

# %% [markdown]
# ### Where this analysis departs from the pre-registration, and a caveat

# %%
display(Markdown("\n".join(f"- {d}" for d in regimes.DEVIATIONS) + f"\n\n**Caveat.** {regimes.CAVEAT}"))

# %% [markdown]
# ## Every comparison, per regime
# The S2L effect (and after − before, and each control) per world, shift, guidance and method, averaged over
# domains and seeds, judged within the pre-registered families. Then the paper's table, read per regime.

# %%
# papermill_description=bootstrap
effects = regimes.effects(scores, matches, params.regimes_bootstrap, params.seed)
summary = regimes.summary(effects, params.seed, params.multiplicity)
run.save_table(summary, "regimes_summary")
needed = regimes.draws_needed(summary)
print(f"{len(summary)} estimates; the largest family needs {needed:,} draws to let an estimate survive Holm, "
      f"{params.regimes_bootstrap:,} drawn" + ("" if params.regimes_bootstrap >= needed else
                                               ": TOO FEW, no verdict can be up or down"))
paper = pd.concat({regime: experiment.paper_table(rows) for regime, rows in
                   summary.groupby([*regimes.REGIME], sort=False)}, names=[*regimes.REGIME, "method"])
claims = regimes.claims_by_regime(summary)
run.save_table(paper.reset_index(), "regimes_paper_table")
with pd.option_context("display.max_colwidth", 80):
    display(claims)
paper.round(3)

# %% [markdown]
# ## Between settings: guidance, shift and capacity
# The guidance contrast (the per-cell effect at SP guidance 7.5 minus that at 1) is H2's measure: a positive
# contrast on the median nearest distance means stronger guidance moved S2L's generations further from the
# training images. The shift contrast (non-members shifted minus i.i.d., same cells otherwise) is H3's. The
# capacity contrast (the wider target's effect minus the grid target's, same data, guidance 3) is H4's.

# %%
guidance_values = set(summary["sp_guidance"])
guidance = (regimes.contrasts(effects, "sp_guidance", 7.5, 1.0, params.seed) if {1.0, 7.5} <= guidance_values
            else pd.DataFrame())
shift_values = set(summary["nonmember_shift"])
shift = (regimes.contrasts(effects, "nonmember_shift", 0.5, 0.0, params.seed) if {0.0, 0.5} <= shift_values
         else pd.DataFrame())
capacity = regimes.capacity_contrast(effects, params.seed)
contrasts = pd.concat([guidance, shift, capacity], ignore_index=True)
run.save_table(contrasts, "regimes_contrasts")
contrasts[contrasts["method"] == experiment.ALL_METHODS].round(3) if len(contrasts) else contrasts

# %% [markdown]
# ## The blind baseline per world
# A model-free classifier's AUC: near 0.5 on i.i.d. non-members, well above it when non-members are shifted.

# %%
blind_auc = regimes.blind_by_world(scores, params.regimes_bootstrap, params.seed)
run.save_table(blind_auc, "regimes_blind")
blind_auc.round(3)

# %% [markdown]
# ## The zero-knowledge shake
# The paper reports that fine-tuning on pure Gaussian noise amplifies the leakage of small diffusion models. On the
# duplicated world: LoRA and DreamBooth on an SP set of noise images, and noise added to the UNet's weights,
# each against the target before it (no domain control is needed: no domain knowledge enters).

# %%
try:
    zk_scores, zk_matches, _ = regimes.load(folder, [regimes.ZERO_KNOWLEDGE])
    zero = experiment.summarize(zk_scores, zk_matches, ["method", "comparison", "attack", "metric"],
                                params.regimes_bootstrap, params.seed, params.multiplicity,
                                comparisons=[experiment.AFTER])
    run.save_table(zero, "regimes_zero_knowledge")
except FileNotFoundError as missing:
    print(missing)
    zero = None
(zero[zero["metric"].isin([stats.STRENGTH, "own_copies", "nearest_median"])].round(3) if zero is not None
 else "zero-knowledge shard pending")

# %% [markdown]
# ## The verdicts, by the pre-registered rules
# Each hypothesis is confirmed, refuted or not shown by its rule in the pre-registration; "pending" where its
# shard is not published yet.

# %%
hypotheses = pd.DataFrame([
    regimes.h1_memorisation(summary),
    regimes.h2_drift(summary, guidance),
    regimes.h3_shift(summary, blind_auc, shift),
    regimes.h4_capacity(summary, capacity),
    regimes.zero_knowledge(zero) if zero is not None else regimes.not_run("zero-knowledge shake", "shard pending"),
])
if params.regimes_bootstrap < needed:
    judged = ~hypotheses["verdict"].isin(["pending", "not run"])
    hypotheses.loc[judged, "verdict"] += f" (too few draws: {params.regimes_bootstrap:,} < {needed:,})"
run.save_table(hypotheses, "regimes_hypotheses")
with pd.option_context("display.max_colwidth", None):
    display(hypotheses)
regimes.heaviest_by_guidance(summary)

# %% [markdown]
# ## The figure
# S2L's effect (S2L − the method's control, 95% CI; a filled marker: the Holm verdict is up or down) on three
# MIAs' strength, on copies of the 32x members, and on the drift of the generations, per world and SP guidance.

# %%
figures = [run.savefig(plots.regime_grid(regimes.figure_panels(summary),
                                         title="S2L effect across the regimes (S2L − control, 95% CI)"),
                       "regimes_effects")]

# %%
readme = paths.repo_root() / "README.md"
relative = [os.path.relpath(f, readme.parent) for f in figures]
text = regimes.markdown(hypotheses, summary, record, relative, notebook.git_commit())
(run.dir / "regimes.md").write_text(text)
if params.publish:
    report.write_section(readme, "regimes", text)
    for name, table in {"summary": summary, "contrasts": contrasts, "blind": blind_auc, "hypotheses": hypotheses,
                        "paper_table": paper.reset_index(), "claims": claims.reset_index(),
                        **({"zero_knowledge": zero} if zero is not None else {})}.items():
        table.to_csv(folder / f"{name}.csv", index=False)
    print(f"wrote the Regimes block into {readme} and the tables into {folder}")
print(text)
run.log_metrics(shards=shards, hypotheses=dict(zip(hypotheses["hypothesis"], hypotheses["verdict"])),
                draws_needed=needed, published=params.publish)
