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
# # 05 · LoRA: low-rank adapters on the attention
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/05_lora.ipynb)
#
# LoRA freezes the model and trains low-rank updates B·A (rank `lora_rank`, scale `lora_alpha / lora_rank`) on the
# UNet's attention projections (to_q, to_k, to_v, to_out), and on the text encoder's with `train_text_encoder`.
# The adapters are saved with their metadata in `pytorch_lora_weights.safetensors`, which the standard
# `pipe.load_lora_weights` reads, so rank and alpha survive the round trip. The released S2L code uses r = 8,
# alpha = 32 on q and v.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/05_lora
target_domain = None  # private domain under attack; empty means the first
sp_level = None  # prior knowledge of the SP set: noise | class | name | captions
sp_size = None  # images in the SP set
ft_steps = None  # fine-tuning steps
ft_batch_size = None  # fine-tuning batch size
ft_lr = None  # learning rate; 0 means the method's default
seed = None  # seed of everything random
lora_rank = None  # LoRA rank r
lora_alpha = None  # LoRA alpha (scale alpha / r)
train_text_encoder = None  # also put adapters on the text encoder

# %%
import torch

from s2l_utils import finetune, notebook, s2l

run = notebook.start("05_lora", profile, run_dir, method="lora",
                     target_domain=target_domain, sp_level=sp_level, sp_size=sp_size, ft_steps=ft_steps,
                     ft_batch_size=ft_batch_size, ft_lr=ft_lr, seed=seed, lora_rank=lora_rank,
                     lora_alpha=lora_alpha, train_text_encoder=train_text_encoder)
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
# Only adapter weights: every base weight of the UNet is bit-identical to the target's.

# %%
from safetensors import safe_open

with safe_open(str(result.folder / "pytorch_lora_weights.safetensors"), "pt") as f:
    keys = list(f.keys())
base = setting.target.unet.state_dict()
state = tuned.pipe.unet.state_dict()
def wrapped_key(key):
    """The name of a base weight inside a LoRA-wrapped layer."""
    return key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")


same = all(torch.equal(v, state.get(k, state.get(wrapped_key(k)))) for k, v in base.items())
print(f"{len(keys)} LoRA tensors saved; base UNet weights unchanged: {same}; "
      f"{result.trainable_parameters:,} adapter parameters vs {sum(v.numel() for v in base.values()):,} in the UNet")

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
