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
# # 06 · Hypernetwork: reshaping the attention context
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/06_hypernetwork.ipynb)
#
# A hypernetwork (the AUTOMATIC1111 kind) adds, for each attention site of the UNet (self- or cross-attention,
# and the width of its context), two small residual MLPs (layer widths `hn_layer_structure` x d) that
# transform the context the key and the value projections see. Like A1111 it covers self-attention too; unlike
# A1111's width-only key, self- and cross-attention never share an MLP pair, even where the text width equals
# a UNet width (32 on `mini`). It runs as a diffusers attention processor around the stock one and stays out
# of the UNet's state dict. Its output layer starts at zero, so before training it changes nothing. The
# artefact is `hypernetwork.safetensors` with its format version, sites and structure in the metadata.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/06_hypernetwork
target_domain = None  # private domain under attack; empty means the first
sp_level = None  # prior knowledge of the SP set: noise | class | name | captions
sp_size = None  # images in the SP set
ft_steps = None  # fine-tuning steps
ft_batch_size = None  # fine-tuning batch size
ft_lr = None  # learning rate; 0 means the method's default
seed = None  # seed of everything random
hn_layer_structure = None  # MLP widths relative to the attention width, e.g. [1, 2, 1]

# %%
import torch

from s2l_utils import finetune, notebook, s2l

run = notebook.start("06_hypernetwork", profile, run_dir, method="hypernetwork",
                     target_domain=target_domain, sp_level=sp_level, sp_size=sp_size, ft_steps=ft_steps,
                     ft_batch_size=ft_batch_size, ft_lr=ft_lr, seed=seed,
                     hn_layer_structure=hn_layer_structure)
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
# The UNet's own weights are untouched; the hypernetwork holds all the change.

# %%
from s2l_utils.finetune import hypernetwork

net = hypernetwork.load_hypernetwork(result.folder / hypernetwork.WEIGHTS)
base, state = setting.target.unet.state_dict(), tuned.pipe.unet.state_dict()
same = base.keys() == state.keys() and all(torch.equal(base[k], state[k]) for k in base)
print(f"sites {net.sites}, structure {net.structure}, {sum(p.numel() for p in net.parameters()):,} parameters; "
      f"UNet state dict unchanged: {same}")

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
