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
# # 02 · The synthetic private (SP) set
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/02_sp_synthesis.ipynb)
#
# The attacker cannot see the private domain's training images. What they can do is ask the target for the
# domain and keep what it generates: the *synthetic private set*. How much the attacker knows about the domain
# is the **prior-knowledge level**:
#
# | level | the attacker knows | SP images | captions |
# | --- | --- | --- | --- |
# | `noise` | nothing about the appearance (zero-knowledge "shake") | clipped Gaussian noise | "photo of <Name>" |
# | `class` | only the class | generated from `class_prompt` ("photo of a person") | that prompt |
# | `name` | the domain's name (the paper's default) | generated from "photo of <Name>" | that prompt |
# | `captions` | the real captions of the domain's training images | one generation per caption | the caption |
#
# The paper also reports S2L "with zero prior knowledge" on small models through "Gaussian noise
# perturbation", which reads two ways: fine-tuning on noise images (the `noise` level), or perturbing the
# weights with Gaussian noise and no data at all. The second is the `weight_noise` method, shown at the end.
#
# SP sets are cached by everything that determines them (target, domain, level, size, sampler, steps,
# guidance, seed), so the fine-tuning notebooks reuse this one.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/02_sp_synthesis
target_domain = None  # private domain under attack; empty means the first
sp_level = None  # prior knowledge: noise | class | name | captions
sp_size = None  # images in the SP set
sp_sampler = None  # ddim | ddpm | dpmsolver
sp_steps = None  # sampling steps
sp_guidance = None  # classifier-free guidance scale
class_prompt = None  # prompt of the class level
seed = None  # seed of the generations
weight_noise_scale = None  # weight_noise: noise std relative to each weight tensor's std

# %%
import dataclasses

from s2l_utils import finetune, notebook, plots, pretrain, sampling, synthesis, world
from s2l_utils.attacks import extraction

run = notebook.start("02_sp_synthesis", profile, run_dir, target_domain=target_domain, sp_level=sp_level,
                     sp_size=sp_size, sp_sampler=sp_sampler, sp_steps=sp_steps, sp_guidance=sp_guidance,
                     class_prompt=class_prompt, seed=seed, weight_noise_scale=weight_noise_scale)
params = run.params
data = world.load_data(params)
domain = synthesis.resolve_domain(params, data)
target = pretrain.load_target(params, str(run.device))
print(f"attacking {domain!r}; level {params.sp_level}, {params.sp_size} images, "
      f"{params.sp_sampler} x {params.sp_steps} steps")

# %%
# papermill_description=synthesis
sp_set = synthesis.ensure_sp_set(params, data, target, domain)
sp_images = sp_set.load_images(sp_set.meta, params.image_size)
print(f"SP set in {sp_set.folder}")
sp_set.meta.head()

# %% [markdown]
# ## The SP set beside the domain's real training images
# And, for each SP image, its nearest image in the whole pre-training set: an SP set that resembles the
# domain's members is what gives fine-tuning something to "shake" loose.

# %%
members = data.split(domain, "member")
rows = {"real members": data.load_images(members.head(8), params.image_size), f"SP ({params.sp_level})": sp_images[:8]}
run.savefig(plots.image_rows(rows, f"{domain}: real training images and the SP set"), "sp_set")
pretraining = data.pretraining_set()
distances, nearest = extraction.nearest_neighbours(sp_images, data.load_images(pretraining, params.image_size))
closest_domain = pretraining["domain"].iloc[nearest.numpy()]
share_of_domain = float((closest_domain == domain).mean())
print(f"{share_of_domain:.0%} of SP images are closest to a training image of {domain}; "
      f"nearest distance median {distances.median():.3f}")

# %% [markdown]
# ## The four levels side by side (8 images each)

# %%
# papermill_description=levels
levels = {}
for level in synthesis.LEVELS:
    images, _ = synthesis.synthesize(target, data, domain, dataclasses.replace(params, sp_level=level, sp_size=8),
                                     progress=False)
    levels[level] = images
run.savefig(plots.image_rows(levels, f"SP sets of {domain} by prior-knowledge level"), "sp_levels")

# %% [markdown]
# ## Zero knowledge without data: `weight_noise`
# Gaussian noise on every UNet weight tensor (std = `weight_noise_scale` x that tensor's std), nothing trained.
# The artefact is the recipe (scale, seed); loading it reproduces the perturbed model exactly.

# %%
shaken = finetune.finetune("weight_noise", params, sp_set, run.dir / "weight_noise", domain, device=str(run.device))
noisy = finetune.load_finetuned(shaken.folder, str(run.device)).pipe
prompt = [world.domain_prompt(domain)] * 8
run.savefig(plots.image_rows({"target": sampling.generate(target, prompt, "preview", params.seed,
                                                          params.sample_steps, params.guidance_scale, progress=False),
                              f"weight noise {params.weight_noise_scale}": sampling.generate(
                                  noisy, prompt, "preview", params.seed, params.sample_steps, params.guidance_scale,
                                  progress=False)},
                             f"{domain}: generations before and after weight noise"), "weight_noise")

# %%
run.log_metrics(domain=domain, sp_level=params.sp_level, sp_size=len(sp_set), sp_folder=str(sp_set.folder),
                sp_share_closest_to_domain=share_of_domain, sp_median_nearest_distance=float(distances.median()),
                weight_noise_artefact=str(shaken.folder.relative_to(run.dir)))
