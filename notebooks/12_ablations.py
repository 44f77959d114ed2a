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
# # 12 · Ablations, and a map of where S2L appears
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/12_ablations.ipynb)
#
# One method (`method`), cells of `ablation_domains` domains x `ablation_seeds` seeds with the main
# experiment's conditions, and one parameter varied at a time:
#
# 1. **prior knowledge** (`sp_level`: noise, class, name, captions), plus the data-free `weight_noise` shake
#    (Gaussian noise on the weights, no data; it has no cross-domain control, so only after − before);
# 2. **SP-set size**; 3. **fine-tuning steps**; 4. **learning rate**.
#
# Then **the S2L map**: the S2L effect (S2L − the method's control, with CIs) over fine-tuning strength
# (learning rate x steps, down to the paper's gentle lr 1e-6) and over how strongly the target memorised
# (targets pretrained for `map_pretrain_steps` steps; each is trained once and cached). A heat map per attack
# says where S2L appears, if anywhere. Every cell is cached, so cells shared with notebook 11 are not rerun.
#
# Statistics as in notebook 11: changes of attack strength |AUC − 0.5| (so an inverted attack moving towards
# 0.5 is weaker), cluster-bootstrap CIs over domains then images, and verdicts corrected for multiplicity
# (`multiplicity`) within each family: one ablation's or the map's comparison x metric over all its values and
# attacks. With many map cells, some 95% CIs exclude 0 by chance alone (2.5% each way); the correction keeps
# those from counting.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | full | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/12_ablations
method = None  # the fine-tuning method of every ablation
ablation_domains = None  # attack the first N private domains; 0 means all
ablation_seeds = None  # list of seeds
conditions = None  # list of s2l, cross_domain, real_nonmember, domain_transfer, control (the method's own)
attacks = None  # list of loss, secmi_paper, secmi_ldm, pia, pian
ablation_levels = None  # list of prior-knowledge levels
ablation_sp_sizes = None  # list of SP-set sizes
ablation_steps = None  # list of fine-tuning steps
ablation_lrs = None  # list of learning rates
map_lrs = None  # S2L map: list of learning rates
map_steps = None  # S2L map: list of fine-tuning steps
map_pretrain_steps = None  # S2L map: list of pretraining steps of the target
main_extraction_samples = None  # generations per model for the extraction counts
n_bootstrap = None  # bootstrap draws per confidence interval and p-value
multiplicity = None  # correction of the verdicts for multiple comparisons: holm | bh

# %%
import dataclasses

import pandas as pd

from s2l_utils import experiment, notebook, plots, pretrain, stats, world

run = notebook.start("12_ablations", profile, run_dir, method=method, ablation_domains=ablation_domains,
                     ablation_seeds=ablation_seeds, conditions=conditions, attacks=attacks,
                     ablation_levels=ablation_levels,
                     ablation_sp_sizes=ablation_sp_sizes, ablation_steps=ablation_steps, ablation_lrs=ablation_lrs,
                     map_lrs=map_lrs, map_steps=map_steps, map_pretrain_steps=map_pretrain_steps,
                     main_extraction_samples=main_extraction_samples, n_bootstrap=n_bootstrap,
                     multiplicity=multiplicity)
params = dataclasses.replace(run.params, methods=[run.params.method], experiment_domains=run.params.ablation_domains,
                             seeds=run.params.ablation_seeds)
experiment.check_conditions(params.conditions)
data = world.load_data(params)
target = pretrain.load_target(params, str(run.device))
axes = {"sp_level": params.ablation_levels, "sp_size": params.ablation_sp_sizes, "ft_steps": params.ablation_steps,
        "ft_lr": params.ablation_lrs}
plans = {axis: experiment.plan(params, data, **{axis: values}) for axis, values in axes.items()}
no_data = dataclasses.replace(params, methods=["weight_noise"])
plans["weight_noise"] = experiment.plan(no_data, data)
strength = experiment.plan(params, data, pretrain_steps=params.map_pretrain_steps, ft_lr=params.map_lrs,
                           ft_steps=params.map_steps)
print({axis: len(cells) for axis, cells in plans.items()}, f"map: {len(strength)} cells")


# %%
def target_for(cell):
    """The cell's target: the profile's, or one pretrained for the cell's pretrain_steps (cached)."""
    if cell.pretrain_steps == params.pretrain_steps or cell.base_model:
        return target
    return pretrain.pretrain_target(cell, data, str(run.device))[0]


# %%
# papermill_description=ablations
summaries, effects_all = {}, []
for axis, cells in plans.items():
    conditions = ["s2l"] if axis == "weight_noise" else params.conditions
    scores, matches = experiment.run_cells(cells, data, target_for, conditions, str(run.device))
    _, effects = experiment.results(scores, matches, params.n_bootstrap, params.seed)
    key = "method" if axis == "weight_noise" else axis
    summaries[axis] = experiment.summarize(scores, matches, [key, "comparison", "attack", "metric"],
                                           params.n_bootstrap, params.seed, params.multiplicity).assign(ablation=axis)
    effects_all.append(effects.assign(ablation=axis))
ablation_table = pd.concat(summaries.values(), ignore_index=True)
run.save_table(ablation_table, "ablation_summary")
run.save_table(pd.concat(effects_all, ignore_index=True), "ablation_effects")

# %%
comparisons = [experiment.AFTER, experiment.EFFECT]
for axis, summary in summaries.items():
    if axis == "weight_noise":
        continue
    shown = summary[summary["comparison"].isin(comparisons)]
    run.savefig(plots.ablation_lines(shown, axis, stats.STRENGTH, log_x=axis in ("ft_lr", "sp_size", "ft_steps"),
                                     title=f"{params.method}: change of attack strength against {axis} (95% CI)"),
                f"ablation_{axis}")
summaries["weight_noise"][summaries["weight_noise"]["metric"].isin(["auc", stats.STRENGTH])].round(3)

# %% [markdown]
# ## The S2L map
# The S2L effect on attack strength over learning rate x fine-tuning steps, one heat map per attack and
# target. A star marks a cell whose verdict, after the multiplicity correction over the whole map, is up or
# down.

# %%
# papermill_description=s2l-map
scores, matches = experiment.run_cells(strength, data, target_for, params.conditions, str(run.device))
map_summary = experiment.summarize(scores, matches,
                                   ["pretrain_steps", "ft_lr", "ft_steps", "comparison", "attack", "metric"],
                                   params.n_bootstrap, params.seed, params.multiplicity, [experiment.EFFECT])
run.save_table(map_summary, "s2l_map")
for steps in params.map_pretrain_steps:
    for attack in params.attacks:
        part = map_summary[map_summary["pretrain_steps"] == steps]
        run.savefig(plots.effect_heatmap(part, "ft_steps", "ft_lr", attack,
                                         title=f"S2L effect on {attack} strength, target pretrained {steps} steps"),
                    f"s2l_map_{attack}_pretrain{steps}")
map_strength = map_summary[map_summary["metric"] == stats.STRENGTH]
significant = map_strength[map_strength["verdict"] != stats.NO_CHANGE]
counts = stats.tally(map_strength)
print(f"{len(map_strength)} map cells x attacks: {counts['up']} up, {counts['down']} down after the "
      f"{params.multiplicity} correction (uncorrected {counts['raw_up']} / {counts['raw_down']}; chance "
      f"{counts['chance']:.1f} each way): {stats.agreement(counts)}")
significant.round(3)

# %%
run.log_metrics(
    ablation_cells={axis: len(cells) for axis, cells in plans.items()}, map_cells=len(strength),
    map_significant=len(significant), map_significant_up=int((significant["verdict"] == stats.UP).sum()),
    results_tables=["ablation_summary.parquet", "ablation_effects.parquet", "s2l_map.parquet"])
