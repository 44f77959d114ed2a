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
# # 01 · Pretrain the target model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/01_pretrain_target.ipynb)
#
# The *target* is the released pre-trained model whose pre-training data the attacker wants. Here it is a
# miniature Stable Diffusion (CLIP text encoder + conditional UNet + DDIM scheduler, a diffusers pipeline folder)
# that denoises 16 px pixels directly instead of VAE latents. It is trained on every *member* image of the world
# (private and public domains), never on the held-out non-members.
#
# For S2L to have anything to amplify, the target must **leak measurably but not totally**: the loss attack
# (lower denoising error on training images) should separate private members from non-members with a pooled
# ROC AUC between 0.70 and 0.95. Below 0.70 there is little to amplify; near 1.0 the model has memorised
# everything and fine-tuning can only dilute it.
#
# Training is cached by its parameters in `runs/cache/targets/<hash>/`: a rerun loads the pipeline instead of
# retraining, and an interrupted run resumes from its last checkpoint. With the `sd` profile the target is the
# real checkpoint (`base_model`) and nothing is trained.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/01_pretrain_target
seed = None  # training seed (batches, noise, timesteps)
pretrain_steps = None  # optimisation steps
pretrain_batch_size = None  # batch size
pretrain_lr = None  # peak learning rate (AdamW, cosine decay)
checkpoint_every = None  # steps between resumable checkpoints
caption_dropout = None  # share of captions replaced by the empty prompt (SD v1: 0.1)
unet_channels = None  # UNet block widths, e.g. [32, 64]
text_width = None  # width of the CLIP text encoder
loss_timesteps = None  # loss attack: timesteps averaged per image
loss_noise_draws = None  # loss attack: noise draws per timestep
sample_steps = None  # DDIM steps for the sample preview
guidance_scale = None  # classifier-free guidance for the preview
preview_samples = None  # generations shown beside their nearest training images

# %%
import time

import pandas as pd

from s2l_utils import models, notebook, plots, pretrain, sampling, world
from s2l_utils.attacks import extraction, metrics, mia

run = notebook.start("01_pretrain_target", profile, run_dir, seed=seed, pretrain_steps=pretrain_steps,
                     pretrain_batch_size=pretrain_batch_size, pretrain_lr=pretrain_lr,
                     checkpoint_every=checkpoint_every, caption_dropout=caption_dropout,
                     unet_channels=unet_channels, text_width=text_width,
                     loss_timesteps=loss_timesteps, loss_noise_draws=loss_noise_draws, sample_steps=sample_steps,
                     guidance_scale=guidance_scale, preview_samples=preview_samples)
params = run.params
data = world.load_data(params)
print(f"{len(data.pretraining_set())} pre-training images, private domains: {', '.join(data.private_domains)}")

# %% [markdown]
# ## Pretraining
# One shared training loop (`s2l_utils.training`) serves pretraining and, later, every fine-tuning method:
# ε-prediction MSE, AdamW with cosine decay, accelerate for devices and mixed precision, and checkpoints whose
# randomness is keyed by (seed, step) so a resumed run is bit-identical to an uninterrupted one. As SD v1 did,
# a share `caption_dropout` of the training captions is replaced by the empty prompt, so that the unconditional
# branch of classifier-free guidance is learned rather than left to chance.

# %%
# papermill_description=pretraining
started = time.perf_counter()
if params.base_model:
    pipe, history = pretrain.load_target(params, str(run.device)), None
    print(f"target = {params.base_model} (nothing to pretrain)")
else:
    cached = (pretrain.target_dir(params) / pretrain.PIPELINE).exists()
    pipe, history = pretrain.pretrain_target(params, data, str(run.device))
    print(("loaded cached target from " if cached else "trained target into ") + str(pretrain.target_dir(params)))
train_seconds = time.perf_counter() - started
model = models.DiffusionModel(pipe)
print(f"UNet parameters: {sum(p.numel() for p in pipe.unet.parameters()):,}; "
      f"text encoder: {sum(p.numel() for p in pipe.text_encoder.parameters()):,}")

# %%
if history is not None:
    run.savefig(plots.loss_curve(history), "pretrain_loss")

# %% [markdown]
# ## How much does the target leak? The loss attack
# The simplest membership inference: a model denoises its training images better. The score of an image is
# minus its ε-prediction error averaged over a fixed grid of timesteps and seeded noises (the same noises for
# every model, so later comparisons before / after fine-tuning are paired). AUC 0.5 = no leak, 1.0 = total.

# %%
# papermill_description=loss-attack
scores = mia.score_domains(mia.loss_scores, model, data, timesteps=params.loss_timesteps,
                           noise_draws=params.loss_noise_draws, seed=params.seed)
table = metrics.metrics_by_domain(scores, seed=params.seed)
run.save_table(scores, "loss_scores")
run.save_table(table, "loss_attack_metrics")
table.round(3)

# %%
run.savefig(plots.domain_bars(table, "auc", "auc_lo", "auc_hi", title="Loss attack AUC (95% CI)"), "loss_auc")
run.savefig(plots.roc_curves(scores, "Loss attack on the pretrained target"), "loss_roc")
pooled = table.set_index("domain").loc[metrics.POOLED]
regime = ("in the target regime" if 0.70 <= pooled["auc"] <= 0.95 else
          "BELOW the target regime (little to amplify)" if pooled["auc"] < 0.70 else
          "ABOVE the target regime (near-total memorisation)")
print(f"pooled AUC {pooled['auc']:.3f} [{pooled['auc_lo']:.3f}, {pooled['auc_hi']:.3f}]: {regime}")

# %% [markdown]
# ## Which prompts does the target know? ε-MSE by caption
# The mean denoising error of the private members (same timesteps and noises for every row) under their own
# caption, the empty prompt, another image's caption, and the attack prompt "photo of <Name>". Guidance
# extrapolates from the *empty* prompt's prediction towards the prompt's: that direction is meaningful only if
# the empty prompt is a learned unconditional branch, i.e. its error lies well below the shuffled captions' and
# near the own captions'. The name prompt's error says how familiar the S2L prompt is to the target.

# %%
# papermill_description=caption-errors
private_members = data.pretraining_set().query("private").reset_index(drop=True)
caption_table = pretrain.caption_errors(model, data.load_images(private_members, model.image_size),
                                        list(private_members["text"]), list(private_members["domain"]),
                                        timesteps=params.loss_timesteps, noise_draws=params.loss_noise_draws,
                                        seed=params.seed, batch_size=params.attack_batch_size)
run.save_table(caption_table, "caption_errors")
errors = caption_table.set_index("condition")["eps_mse"]
print(f"the empty prompt's ε-MSE lies {(errors['empty'] - errors['own']) / (errors['shuffled'] - errors['own']):.0%} "
      "of the way from the own captions' (0%) to the shuffled captions' (100%)")
caption_table.round(4)

# %% [markdown]
# ## What does it generate? Samples beside their nearest training images
# One generation per private-domain prompt ("photo of <Name>"), and the closest image of the whole pre-training
# set (per-pixel RMS distance in [-1, 1] units). A small distance means a near-copy of a training image.

# %%
# papermill_description=sampling
pretraining = data.pretraining_set()
domains = (data.private_domains * params.preview_samples)[:params.preview_samples]
samples = sampling.generate(pipe, [world.domain_prompt(d) for d in domains], "preview", seed=params.seed,
                            steps=params.sample_steps, guidance_scale=params.guidance_scale)
train_images = data.load_images(pretraining, model.image_size)
distances, nearest = extraction.nearest_neighbours(samples, train_images)
nearest_rows = pretraining.iloc[nearest.numpy()]
preview = pd.DataFrame({"prompted_domain": domains, "nearest_domain": nearest_rows["domain"].tolist(),
                        "nearest_file": nearest_rows["file_name"].tolist(), "distance": distances.numpy()})
same_identity = float((preview["nearest_domain"] == preview["prompted_domain"]).mean())
run.savefig(plots.nearest_pairs(samples, train_images[nearest], distances, domains), "samples_vs_nearest")
print(f"{same_identity:.0%} of generations are closest to a training image of the prompted identity")
preview.round(3)

# %%
run.log_metrics(
    pooled_auc=pooled["auc"], pooled_auc_lo=pooled["auc_lo"], pooled_auc_hi=pooled["auc_hi"],
    pooled_tpr_at_1pct_fpr=pooled["tpr@1%fpr"], pooled_asr=pooled["asr"], leak_regime=regime,
    domain_auc={r.domain: r.auc for r in table.itertuples() if r.domain != metrics.POOLED},
    final_loss=None if history is None else float(history["loss"].tail(50).mean()),
    train_seconds=train_seconds, target=params.base_model or str(pretrain.target_dir(params) / pretrain.PIPELINE),
    preview_same_identity=same_identity, preview_mean_nearest_distance=float(distances.mean()),
    caption_eps_mse=dict(zip(caption_table["condition"], caption_table["eps_mse"].astype(float), strict=True)))
