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
# # 07 · End-to-end: every component
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/07_end2end.ipynb)
#
# End-to-end fine-tuning trains the UNet and the text encoder together, fully. The VAE of a latent model (real
# SD) stays frozen, unlike the released S2L code's `end2end.sh`: under the denoising loss alone only its encoder
# would train, towards smaller latents, its decoder never, and every attack encodes its query images with that
# encoder, which would confound end2end's membership scores. The miniature works in pixel space and has no
# VAE, so on it end2end equals DreamBooth with `train_text_encoder`.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/07_end2end
target_domain = None  # private domain under attack; empty means the first
sp_level = None  # prior knowledge of the SP set: noise | class | name | captions
sp_size = None  # images in the SP set
ft_steps = None  # fine-tuning steps
ft_batch_size = None  # fine-tuning batch size
ft_lr = None  # learning rate; 0 means the method's default
seed = None  # seed of everything random

# %%
import pandas as pd

from s2l_utils import finetune, notebook, s2l

run = notebook.start("07_end2end", profile, run_dir, method="end2end",
                     target_domain=target_domain, sp_level=sp_level, sp_size=sp_size, ft_steps=ft_steps,
                     ft_batch_size=ft_batch_size, ft_lr=ft_lr, seed=seed)
params = run.params
setting = s2l.prepare(params, str(run.device))
print(f"attacking {setting.domain!r} with {len(setting.sp_set)} SP images ({params.sp_level} level); "
      f"method {params.method}: {finetune.METHODS[params.method].description}")

# %% [markdown]
# ## Fine-tuning on the SP set
# A fresh copy of the target is fine-tuned (the target itself stays untouched for comparison). Checkpoints let
# an interrupted run resume exactly; the artefact is written to `artefact/` in this run's folder.

# %%
# papermill_description=fine-tuning
result, tuned = s2l.shake(setting, run)

# %% [markdown]
# ## What changed
# Every trained component, tensor by tensor.

# %%
changes = {name: finetune.changed_tensors(getattr(setting.target, name), getattr(tuned.pipe, name))
           for name in ("unet", "text_encoder", "vae") if getattr(setting.target, name, None) is not None}
pd.DataFrame({name: {"tensors changed": int(df["changed"].sum()), "tensors": len(df)} for name, df in changes.items()})

# %% [markdown]
# ## A first look: the attacked domain before and after
# Generations of "photo of <Name>" from the target and from the fine-tuned model, and the loss attack on the
# domain's members vs non-members before and after. This is one domain, one seed and one attack: the
# experiments notebooks measure the S2L effect properly, against controls.

# %%
# papermill_description=first-look
attack = s2l.first_look(setting, tuned, run)
s2l.log_finetune(run, setting, result, attack)
attack.round(3)
