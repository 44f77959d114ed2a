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
# # 08 · Combinations: DreamBooth+LoRA, TI+LoRA, LoRA+hypernetwork
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/08_combinations.ipynb)
#
# Combinations are composed from the parts of the single methods, not re-implemented:
#
# * `dreambooth_lora`: the released S2L code's main setting, DreamBooth's recipe (instance prompts, optional
#   prior preservation) with LoRA adapters on both the UNet and the text encoder;
# * `ti_lora`: pivotal tuning, a textual-inversion token and UNet LoRA trained together;
# * `lora_hypernetwork`: LoRA adapters and a hypernetwork trained together.
#
# Choose one with `method`; the artefact holds each part's file and loads back in one call.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/08_combinations
method = "dreambooth_lora"  # dreambooth_lora | ti_lora | lora_hypernetwork
target_domain = None  # private domain under attack; empty means the first
sp_level = None  # prior knowledge of the SP set: noise | class | name | captions
sp_size = None  # images in the SP set
ft_steps = None  # fine-tuning steps
ft_batch_size = None  # fine-tuning batch size
ft_lr = None  # learning rate; 0 means the method's default
seed = None  # seed of everything random
lora_rank = None  # LoRA rank r
lora_alpha = None  # LoRA alpha
ti_num_vectors = None  # textual inversion vectors (ti_lora)
hn_layer_structure = None  # hypernetwork widths (lora_hypernetwork)
prior_preservation = None  # add the prior-preservation loss on class images

# %%
import pandas as pd

from s2l_utils import finetune, notebook, s2l

run = notebook.start("08_combinations", profile, run_dir,
                     target_domain=target_domain, sp_level=sp_level, sp_size=sp_size, ft_steps=ft_steps,
                     ft_batch_size=ft_batch_size, ft_lr=ft_lr, seed=seed, lora_rank=lora_rank,
                     lora_alpha=lora_alpha, ti_num_vectors=ti_num_vectors,
                     hn_layer_structure=hn_layer_structure,
                     prior_preservation=prior_preservation, method=method)
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
# ## What it is made of
# The artefact's parts, each saved in its own standard format.

# %%
pd.DataFrame(tuned.info["parts"])

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
