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
# # 09 · Membership inference: loss, SecMI and PIA, on any list of models
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/09_membership_inference.ipynb)
#
# Which private images did the model see in pre-training? Each attack gives every image a score (higher = more
# likely a member); the private domains' members and held-out non-members are the ground truth. The models
# are the pretrained target and any fine-tuned runs, side by side, on the same images and the same noise.
#
# | attack | score (minus) | UNet calls per image |
# | --- | --- | --- |
# | `loss` | mean ε-prediction error over a fixed grid of timesteps and seeded noises | timesteps x draws |
# | `secmi_paper` | the paper's SecMI t-error: invert x0 to x̃_t, one step to t−k and back, distance to x̃_t | t/k + 2 |
# | `secmi_ldm` | the order of S2L's released LDM code: invert to t+k, one step to t, distance to x̃_t | t/k + 2 |
# | `pia` | PIA: ε0 = ε(x0, 0) taken as the noise, one jump to x_t, Σ\|ε(x_t, t) − ε0\|⁴ | 2 |
# | `pian` | PIAN: the same with ε0 normalised to a Gaussian's mean absolute value | 2 |
#
# Every attack conditions on the image's own caption without guidance, and encodes latents with the VAE's
# mean (real SD), so scores repeat exactly. SecMI's and PIA's timesteps are parameters fixed beforehand, never
# chosen on these images. No sign is flipped: an AUC below 0.5 is reported as it is.
#
# Beside them stands the **blind baseline** (`blind (no model)`): a classifier that never sees a model and
# tells members from non-members by simple image statistics alone (colour, brightness, saturation, edges, a
# tiny thumbnail), cross-fitted so that every image is scored by a classifier that did not train on it, and
# averaged over 20 fold splits so that its AUC does not hinge on one split.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/09_membership_inference
models = None  # list: target, runs (every finished fine-tuning run of this profile), run names, artefact folders
attacks = None  # list of loss, secmi_paper, secmi_ldm, pia, pian
attack_domains = None  # attack the first N private domains; 0 means all
secmi_t = None  # SecMI timestep of the t-error
secmi_k = None  # SecMI DDIM stride
pia_t = None  # PIA / PIAN timestep
loss_timesteps = None  # loss attack: timesteps averaged per image
loss_noise_draws = None  # loss attack: noise draws per timestep
attack_batch_size = None  # images per batch
seed = None  # seed of the loss attack's noise and of the bootstrap

# %%
import time

import pandas as pd

from s2l_utils import notebook, plots, world
from s2l_utils.attacks import blind, metrics, suite

run = notebook.start("09_membership_inference", profile, run_dir, models=models, attacks=attacks,
                     attack_domains=attack_domains, secmi_t=secmi_t, secmi_k=secmi_k, pia_t=pia_t,
                     loss_timesteps=loss_timesteps, loss_noise_draws=loss_noise_draws,
                     attack_batch_size=attack_batch_size, seed=seed)
params = run.params
data = world.load_data(params)
domains = suite.attacked_domains(data, params)
refs = suite.resolve_models(params.models, run.runs_roots)
pd.DataFrame([{"model": r.label, "method": r.method, "artefact": str(r.artefact or "pretrained target")}
              for r in refs])

# %% [markdown]
# ## Scores
# Each model is loaded in turn, every attack scores every member and non-member of the attacked domains, and
# the model is released before the next one loads.

# %%
# papermill_description=scoring
tables, seconds = [], {}
for ref in refs:
    started = time.perf_counter()
    pipe, rewrite = ref.load(params, str(run.device))
    scores = suite.membership_scores(pipe, data, domains, params, rewrite)
    tables.append(scores.assign(model=ref.label, method=ref.method))
    seconds[ref.label] = time.perf_counter() - started
    del pipe
scores = pd.concat(tables, ignore_index=True)
run.save_table(scores, "mia_scores")
print({label: f"{s:.0f} s" for label, s in seconds.items()})

# %% [markdown]
# ## Metrics with bootstrap 95% CIs
# - `auc`, and `advantage` = |AUC − 0.5|, the attack's strength whichever way its score points (an AUC of 0.3
#   is as strong as 0.7; a move from 0.3 towards 0.5 is a weaker attack, not a stronger one);
# - `asr`, the attack success rate as *balanced* accuracy of the best threshold (mean of TPR and TNR), so a
#   constant score gives 0.5 however unequal the numbers of members and non-members;
# - `tpr@0fp`, the TPR of the best threshold that admits no non-member, always computable;
# - `tpr@1%fpr` and `tpr@0.1%fpr`, the strict way (the largest TPR whose FPR does not exceed the target), only
#   where there are at least 100 / 1000 non-members: with fewer, "at most 1% false positives" means none, which
#   `tpr@0fp` already says, so these are NaN there (per domain, and pooled on small worlds).
#
# One tidy table: model, method, domain (and `pooled`), attack, metric, value, lo, hi.

# %%
table = suite.membership_table(scores, seed=params.seed)
run.save_table(table, "mia_metrics")
pooled = table[(table["domain"] == metrics.POOLED)].pivot_table(index=["model", "method"], columns=["attack", "metric"],
                                                        values="value", sort=False)
pooled.xs("auc", axis=1, level="metric").round(3)

# %% [markdown]
# ## The blind baseline: can members be told from non-members without any model?
# The same members and non-members, scored by a model-free classifier on simple image features (cross-fitted
# on 5 disjoint folds, each image's score averaged over 20 independent fold splits, pooled over the attacked
# domains), with the same metrics and bootstrap CIs.
#
# - **Blind AUC near 0.5** (its CI contains 0.5): no separation detected by simple image statistics. This is a
#   lower bound, not a proof that members and non-members look alike: a stronger model-free classifier might
#   find some. An MIA's AUC above 0.5 then is evidence that the model remembers its training images, to the
#   extent that no subtler difference between the two sets explains it.
# - **Blind AUC well above 0.5**: members and non-members differ as images (another camera, another time,
#   another source), and they are separable without the model. Then every MIA number on this data is an upper
#   bound on leakage: an MIA AUC up to the blind AUC may be that distribution shift, not memorisation. Only an
#   MIA that clearly beats the blind baseline is evidence that the model leaks; one at or below it shows
#   nothing about the model, however high it looks.
#
# The real data of the `sd` profile (LAION members against later web photos, as in the paper) is the case to
# watch; the i.i.d. miniature world should sit near 0.5 (out-of-fold AUCs run a little below it when there is
# nothing to find), and `nonmember_shift` moves it away on purpose.

# %%
# papermill_description=blind_baseline
BLIND = "blind (no model)"
blind_scores = blind.blind_scores(data, domains, params.image_size, seed=params.seed)
blind_table = suite.membership_table(blind_scores.assign(model=BLIND, method="none"), seed=params.seed)
run.save_table(blind_scores, "blind_scores")
run.save_table(blind_table, "blind_metrics")
blind_auc = blind_table[(blind_table["metric"] == "auc")].set_index("domain")[["value", "lo", "hi"]]
with_blind = pd.concat([table, blind_table], ignore_index=True)
# pooled AUC [95% CI] of every model and attack, and under every attack the blind baseline it must beat
auc_ci = table[(table["domain"] == metrics.POOLED) & (table["metric"] == "auc")]
auc_ci = auc_ci.assign(auc=[f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in auc_ci[["value", "lo", "hi"]].values])
auc_ci = auc_ci.pivot_table(index=["model", "method"], columns="attack", values="auc", aggfunc="first", sort=False)
auc_ci.loc[(BLIND, "none"), :] = "{:.3f} [{:.3f}, {:.3f}]".format(*blind_auc.loc[metrics.POOLED])
auc_ci

# %%
run.savefig(plots.metric_comparison(with_blind, "auc", title="Membership inference AUC per model, and the blind "
                                    "baseline"), "mia_auc")
run.savefig(plots.metric_comparison(table, "tpr@0fp", chance=None, title="TPR at zero false positives per model"),
            "mia_tpr_0fp")
run.savefig(plots.roc_by_attack(scores), "mia_roc")

# %% [markdown]
# ## Per domain
# The pooled numbers hide how different the identities are; here is the AUC of every attack per domain for
# the first model (usually the target), with the blind baseline of each domain beside it.

# %%
first = with_blind[with_blind["model"].isin([refs[0].label, BLIND]) & (with_blind["metric"] == "auc")]
first.pivot_table(index="domain", columns="attack", values="value", sort=False).round(3)

# %%
auc = table[(table["domain"] == metrics.POOLED) & (table["metric"] == "auc")]
run.log_metrics(
    models=[r.label for r in refs], attacks=list(params.attacks), domains=domains,
    pooled_auc={f"{r.model}/{r.attack}": r.value for r in auc.itertuples()},
    unet_calls_per_image={a: suite.UNET_CALLS[a](params) for a in params.attacks},
    seconds_per_model=seconds, metrics_table="mia_metrics.parquet",
    blind_auc=blind_auc.loc[metrics.POOLED, "value"], blind_auc_lo=blind_auc.loc[metrics.POOLED, "lo"],
    blind_auc_hi=blind_auc.loc[metrics.POOLED, "hi"], blind_table="blind_metrics.parquet")
