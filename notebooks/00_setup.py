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
# # 00 · Set-up: environment, the miniature world, where things are
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/00_setup.ipynb)
#
# Shake-to-Leak (S2L) asks whether fine-tuning a text-to-image diffusion model on images *it generated itself*
# for a private domain (e.g. "photo of <Name>") makes the model leak that domain's *pre-training* images more.
# To study this on a laptop we need a world where we know exactly which images were in pre-training.
#
# This notebook checks the environment, builds that **miniature world** and shows where every artefact lives.
# The world is deterministic: the same parameters give byte-identical images.
#
# * A **domain** is an identity with a made-up name. Its traits (skin, hair, eyes, face shape, glasses, beard,
#   shirt) are fixed; each photo varies framing, expression, lighting and background clutter, so every image is
#   unique but clearly the same identity.
# * **Private** domains have *member* images (in the pre-training set) and *non-member* images (held out, same
#   distribution): the attacks try to tell them apart.
# * **Public** domains are filler pre-training data, and later the related domains for domain transfer.
# * Captions vary in detail as web alt-texts do: a share `name_only_captions` (0.25 on `mini`) is only
#   "photo of <Name>", the attack prompt; the others read "photo of <Name>, <expression>, <colour> background",
#   or carry only the expression or only the background (uniformly, with `varied_captions`).
# * Two knobs make the world leak the way Stable Diffusion's data does; at their neutral values (`[]`, `0`) the
#   world is bit for bit the plain one. `member_duplicates` (e.g. `[32, 16, 8, 4]`) puts the first members of
#   every private domain into the pre-training set that many times, as exact copies: the images SD memorises
#   are mostly ones LAION holds many times. `nonmember_shift` (0 to 1) takes the non-members with "another
#   camera, another year": a warm colour cast, more contrast, tighter framing, darker cluttered backgrounds,
#   as web non-members differ from LAION members, which a model-free classifier can tell apart.
#
# Real data (e.g. a LAION subset of celebrities) in the same imagefolder layout plugs in through `data_dir`.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/00_setup
world_seed = None  # seed of the procedural world
image_size = None  # image side in pixels
private_domains = None  # number of private identities
members_per_domain = None  # pre-training images per private identity
nonmembers_per_domain = None  # held-out images per private identity
public_domains = None  # public filler identities
images_per_public_domain = None  # pre-training images per public identity
name_only_captions = None  # share of captions that are only "photo of <Name>"
varied_captions = None  # other captions carry expression and / or background (false: always both)
member_duplicates = None  # pre-training copies of each domain's first members, e.g. [32, 16, 8, 4]
nonmember_shift = None  # 0-1: how far non-members come from another photo distribution (camera, year)
data_dir = None  # an imagefolder of real data instead of the miniature world

# %%
import pandas as pd

from s2l_utils import notebook, paths, plots, world

run = notebook.start("00_setup", profile, run_dir, world_seed=world_seed, image_size=image_size,
                     private_domains=private_domains, members_per_domain=members_per_domain,
                     nonmembers_per_domain=nonmembers_per_domain, public_domains=public_domains,
                     images_per_public_domain=images_per_public_domain, name_only_captions=name_only_captions,
                     varied_captions=varied_captions, member_duplicates=member_duplicates,
                     nonmember_shift=nonmember_shift, data_dir=data_dir)
params = run.params
pd.Series(params.to_dict(), name="value").to_frame()

# %% [markdown]
# ## Environment
# Package versions and the device every notebook will use (`device: auto` takes CUDA when there is one).

# %%
env = notebook.environment()
pd.Series({**env, "device": str(run.device), "git commit": notebook.git_commit()}, name="value").to_frame()

# %% [markdown]
# ## Where things are
# Paths come from the package, never from the working directory, so this notebook behaves the same in
# JupyterLab, under papermill and on Colab. Environment variables `S2L_DATA_DIR`, `S2L_RUNS_DIR` and
# `S2L_FIGURES_DIR` move them.

# %%
pd.Series({"repository": paths.repo_root(), "data": paths.data_dir(), "runs (this run)": run.dir,
           "caches (worlds, targets)": paths.cache_dir(""), "published figures": run.figures_dir},
          name="path").to_frame()

# %% [markdown]
# ## The world
# Generated once into `data/worlds/<key>/` in the imagefolder layout (images + `metadata.jsonl`), then read
# back through the same loader that reads real data. The figure labels each duplicated member with its number
# of copies (×k) and shows a private domain's non-members (shifted, if `nonmember_shift` > 0) beside its members.

# %%
data = world.load_data(params)
summary = (data.meta.groupby(["domain", "private", "split"], sort=False).size().unstack("split", fill_value=0)
           .reset_index())
summary

# %%
data.meta.sample(8, random_state=0)[["domain", "split", "text", "file_name"]]

# %%
fig = plots.world_overview(data, params.image_size, knobs={"member_duplicates": params.member_duplicates,
                                                          "nonmember_shift": params.nonmember_shift})
run.savefig(fig, "world")

# %%
pretraining = data.pretraining_set()
run.log_metrics(
    data_folder=str(data.folder), n_images=len(data), n_pretraining_images=len(pretraining),
    n_pretraining_samples=len(data.pretraining_samples()),
    n_private_domains=len(data.private_domains), n_public_domains=len(data.public_domains),
    n_members=int(((data.meta["split"] == "member") & data.meta["private"]).sum()),
    n_nonmembers=int((data.meta["split"] == "nonmember").sum()), device=str(run.device))
