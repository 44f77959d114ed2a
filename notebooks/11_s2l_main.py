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
# # 11 · Does S2L amplify the privacy attacks? The main experiment, with controls
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/11_s2l_main.ipynb)
#
# For every fine-tuning method (and combination), attacked domain and seed, the target is fine-tuned under
# several **conditions**, and the target and every fine-tuned model are attacked on the same images:
#
# | condition | fine-tuned on | what it isolates |
# | --- | --- | --- |
# | `s2l` | the attacked domain's SP set ("photo of <Name>" generations of the target) | the attack |
# | `cross_domain` | S2L of another private domain: its SP set, name, token | synthetic data without this domain |
# | `real_nonmember` | real held-out images of the attacked domain (below) | fresh real data of the domain |
#
# **The S2L effect is S2L minus the method's control** (`conditions: [s2l, control]`), not after minus before:
# any fine-tuning moves the attacks' scores, and only what S2L does beyond its control is domain-specific
# leakage. Methods that change weights are set against the cross-domain control; token methods against the
# real-non-member one (below). Each domain's non-members are split in two: the first half trains the real-data
# control, the second half is what every model is scored on. Attacks: membership inference (`attacks`: AUC, attack
# strength |AUC − 0.5|, balanced accuracy, TPR at zero false positives; TPR at 1% FPR only with at least 100
# non-members, NaN below) and extraction (`main_extraction_samples` generations of the domain prompt per
# model, matched with the threshold calibrated on held-out data as in notebook 10: copies of the attacked
# domain's own members, the distinct members copied, and copies of other domains' images, also per duplication
# class of the members; and the drift of the generations: their distance to the nearest training image, to the
# nearest of the domain's own members, and the share nearest to the domain's own members).
#
# Beside the attacks stands the **blind baseline** (notebook 09): a classifier that never sees a model, fitted
# on simple image features to tell the members from the non-members, cross-fitted on disjoint folds and averaged
# over 20 fold splits. Its AUC says how much of an MIA AUC the data give away by themselves: near 0.5, no
# separation is detected by simple image statistics (a lower bound: a stronger model-free classifier might find
# some), and the MIA AUCs are read as what the model leaks; well above 0.5, that much separation needs no model,
# and an MIA AUC up to about the blind one needs no leakage at all. It needs no model, so it is computed once per
# cell, with the target.
#
# CIs: a cluster bootstrap. The domain is the unit of independence (a domain's cells score the same images),
# so every draw resamples the domains a summary combines, then the images and generations within each drawn
# domain, the same draw for every cell and condition of that domain (comparisons stay paired), recomputes the
# cells' metrics from the raw scores and averages them. With one domain it is the image bootstrap.
#
# Each cell is cached by its parameters (`runs/cache/cells/`), so a rerun or an interrupted run resumes, and
# the sweep driver (`python -m s2l_utils.sweep`) can split the methods, domains and seeds across machines.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | full | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/11_s2l_main
methods = None  # list of fine-tuning methods and combinations
experiment_domains = None  # attack the first N private domains; 0 means all
seeds = None  # list of seeds
conditions = None  # list of s2l, cross_domain, real_nonmember, domain_transfer, control (the method's own)
attacks = None  # list of loss, secmi_paper, secmi_ldm, pia, pian
sp_level = None  # prior knowledge of the SP set
sp_size = None  # images in the SP set
sp_guidance = None  # classifier-free guidance of the SP synthesis; 1 samples the conditional model itself
ft_steps = None  # fine-tuning steps
ft_lr = None  # fine-tuning learning rate; 0 means each method's default
main_extraction_samples = None  # generations per model for the extraction counts
n_bootstrap = None  # bootstrap draws per confidence interval and p-value
multiplicity = None  # correction of the verdicts for multiple comparisons: holm | bh

# %%
from s2l_utils import experiment, notebook, plots, pretrain, report, stats, world

run = notebook.start("11_s2l_main", profile, run_dir, methods=methods, experiment_domains=experiment_domains,
                     seeds=seeds, conditions=conditions, attacks=attacks, sp_level=sp_level, sp_size=sp_size,
                     sp_guidance=sp_guidance, ft_steps=ft_steps, ft_lr=ft_lr,
                     main_extraction_samples=main_extraction_samples, n_bootstrap=n_bootstrap,
                     multiplicity=multiplicity)
params = run.params
experiment.check_conditions(params.conditions)
data = world.load_data(params)
cells = experiment.plan(params, data)
target = pretrain.load_target(params, str(run.device))
print(f"{len(cells)} cells ({len(params.methods)} methods x {len({c['domain'] for _, c in cells})} domains x "
      f"{len(params.seeds)} seeds), each fine-tuned under {', '.join(params.conditions)}")

# %%
# papermill_description=cells
scores, matches = experiment.run_cells(cells, data, lambda p: target, params.conditions, str(run.device))
cell_metrics, effects = experiment.results(scores, matches, params.n_bootstrap, params.seed)
for name, df in {"s2l_scores": scores, "s2l_extraction": matches, "s2l_metrics": cell_metrics,
                 "s2l_effects": effects}.items():
    run.save_table(df, name)

# %% [markdown]
# ## The main table
# Per method, averaged over cells: each attack's AUC on the target (before) and after S2L, and the S2L effect
# (S2L − the method's control) on attack strength |AUC − 0.5| with its 95% CI (↑ / ↓: the corrected verdict);
# copies of the attacked domain's own members per cell, and the distinct members copied.

# %%
summary = experiment.summarize(scores, matches, ["method", "comparison", "attack", "metric"], params.n_bootstrap,
                               params.seed, params.multiplicity)
run.save_table(summary, "s2l_summary")
blind_auc = experiment.blind_summary(scores, params.n_bootstrap, params.seed)
run.save_table(blind_auc, "blind_summary")
main_table = experiment.paper_table(summary, attacks=[a for a in params.attacks if a != "secmi_paper"],
                                    blind_auc=blind_auc)
run.save_table(main_table.reset_index(names="method"), "s2l_main_table")
print(report.blind_claim(blind_auc)["measured"])
main_table.round(3)

# %%
run.savefig(plots.effect_forest(summary, stats.STRENGTH,
                                [experiment.AFTER, experiment.EFFECT, experiment.VS_CROSS_DOMAIN,
                                 experiment.VS_REAL_NONMEMBER],
                                title="Membership inference: change of attack strength |AUC − 0.5| (95% CI)"),
            "s2l_effect_strength")
run.savefig(plots.effect_forest(summary, "tpr@0fp", [experiment.AFTER, experiment.EFFECT],
                                title="Membership inference: change of TPR at zero false positives (95% CI)"),
            "s2l_effect_tpr")

# %% [markdown]
# ## Extraction per duplication class, and where the generations moved
# Copies of the attacked domain's own members and the distinct members copied, per class of how often a member
# appears in pre-training (`member_duplicates`), before and after S2L, with after − before and the S2L effect
# (95% CIs). Then the drift of the domain's generations: the median distance to the nearest training image
# (`nearest_median`; a rise moved the generations away from the training data), to the nearest of the domain's
# own members (`own_nearest_median`), and the share whose nearest training image is the domain's
# (`identity_accuracy`). The figure sets the S2L effect on extraction per class and on MIA strength beside it.

# %%
experiment.extraction_by_class(summary).round(3)

# %%
drift = experiment.drift_table(summary)
claim = report.drift_claim(summary)
print(claim["measured"] if claim else "no drift statistics in these cells")
drift.round(3)

# %%
run.savefig(plots.effect_panels(experiment.effect_panels(summary),
                                title="S2L effect (S2L − control, 95% CI)"), "s2l_effect_overview")

# %% [markdown]
# ## What the numbers say
# A verdict per method and attack for the S2L effect, by these rules:
#
# - **Strength, not AUC.** Membership inference is judged on the attack's strength |AUC − 0.5|: an attack
#   whose AUC is below 0.5 (its score points the wrong way on this target) and moves towards 0.5 gets weaker,
#   so it counts as "down", never as leakage. Extraction is judged on copies of the attacked domain's own
#   members.
# - **Corrected for multiplicity.** Each estimate has a bootstrap p-value; within a family (one comparison and
#   one metric over every method x attack) they are adjusted (`multiplicity`: Holm by default). "up" / "down"
#   means the adjusted p is below 5% and the change is positive / negative; anything else is "no change".
# - **Against chance.** With no effect anywhere, 2.5% of the 95% CIs still lie above 0 (and 2.5% below). S2L
#   "partly" agrees with the paper only when its corrected ups exceed both that chance count and the downs;
#   "yes" needs more than half of the estimates up.
#
# **The control of token methods.** Textual inversion and TI+LoRA reach a domain through a placeholder token that
# replaces its name in captions and prompts, so their control reaches it through a token too, trained as long,
# but without the members: the real-non-member control, a token for *this* domain trained for the same steps on
# real photos of it that were never in pre-training (the first half of its non-members; the second half is what
# every model is scored on). It is meant to learn the identity, not the members, but it is not neutral either:
# real photos teach the identity better than generations, its 8 photos get 8x the epochs of 64 SP images, and it
# is fitted to the very population the scored non-members come from, so it can weaken the attacks without any
# leakage: S2L against it is **biased upwards**. After − before (for textual inversion the cross-domain control
# equals the target) is **biased downwards**. The report therefore gives each token method's effect as a bracket
# between the two; a clean null would need a shadow target pretrained without the members. The token controls
# considered and not used are described in `docs/experiments.md`. The other control stays in the table
# (`S2L - cross-domain`, `S2L - real non-member`) where both ran (`full`, `sd`).

# %%
effect = summary[(summary["comparison"] == experiment.EFFECT)
                 & summary["metric"].isin([stats.STRENGTH, "own_copies"])]
verdicts = effect.pivot_table(index="method", columns="attack", values="verdict", aggfunc="first", sort=False)
strength = stats.tally(effect[effect["metric"] == stats.STRENGTH])
counts = effect["verdict"].value_counts().to_dict()
print(f"S2L effect on strength across {strength['total']} method x attack pairs, {params.multiplicity}-corrected: "
      f"{strength['up']} up, {strength['down']} down (uncorrected {strength['raw_up']} / {strength['raw_down']}; "
      f"chance {strength['chance']:.1f} each way): {stats.agreement(strength)}")
verdicts

# %%
run.log_metrics(
    cells=len(cells), methods=list(params.methods), conditions=list(params.conditions),
    s2l_effect_verdicts={k: int(v) for k, v in counts.items()},
    s2l_effect_strength={f"{r.method}/{r.attack}": [r.delta, r.lo, r.hi] for r in effect.itertuples()
                         if r.metric == stats.STRENGTH},
    s2l_effect_agrees=stats.agreement(strength), multiplicity=params.multiplicity,
    blind_auc={r.method: [r.auc, r.lo, r.hi] for r in blind_auc.itertuples()},
    results_tables=["s2l_scores.parquet", "s2l_extraction.parquet", "s2l_metrics.parquet", "s2l_effects.parquet",
                    "s2l_summary.parquet", "blind_summary.parquet"])
