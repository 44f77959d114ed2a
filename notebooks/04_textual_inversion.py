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
# # 04 · Textual inversion: a new word for the domain
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/04_textual_inversion.ipynb)
#
# Textual inversion leaves the model untouched and learns a new token: a placeholder (`<marzanbel-lo>`) that
# replaces the domain name in every caption, starting from the embedding of `ti_initializer` ("person"), with
# `ti_num_vectors` embedding vectors. AdamW would move every row of the embedding matrix (weight decay), so
# every other row is restored after each step. The artefact is `learned_embeds.safetensors`, which
# `pipe.load_textual_inversion` reads. The attacks then address the domain by its token.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/04_textual_inversion
target_domain = None  # private domain under attack; empty means the first
sp_level = None  # prior knowledge of the SP set: noise | class | name | captions
sp_size = None  # images in the SP set
ft_steps = None  # fine-tuning steps
ft_batch_size = None  # fine-tuning batch size
ft_lr = None  # learning rate; 0 means the method's default
seed = None  # seed of everything random
ti_num_vectors = None  # embedding vectors of the placeholder token
ti_initializer = None  # single-token word the embedding starts from

# %%
import pandas as pd
import torch

from s2l_utils import finetune, notebook, s2l

run = notebook.start("04_textual_inversion", profile, run_dir, method="textual_inversion",
                     target_domain=target_domain, sp_level=sp_level, sp_size=sp_size, ft_steps=ft_steps,
                     ft_batch_size=ft_batch_size, ft_lr=ft_lr, seed=seed,
                     ti_num_vectors=ti_num_vectors, ti_initializer=ti_initializer)
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
# Only the new rows of the embedding matrix; and which existing words the learned vector now sits closest to.

# %%
rows = tuned.pipe.text_encoder.get_input_embeddings().weight.detach()
base_rows = setting.target.text_encoder.get_input_embeddings().weight.detach()
print("existing rows unchanged:", bool((rows[:len(base_rows)] == base_rows).all()),
      "| new rows:", len(rows) - len(base_rows))
learned = rows[len(base_rows):]
similarity = torch.nn.functional.cosine_similarity(learned[:, None], base_rows[None], dim=-1)
vocab = {i: t for t, i in setting.target.tokenizer.get_vocab().items()}
pd.DataFrame([{"vector": v, "nearest tokens": ", ".join(vocab[int(i)] for i in similarity[v].topk(5).indices)}
              for v in range(len(learned))])

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
