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
# # 10 · Data extraction: generate, match, count near-copies
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/10_data_extraction.ipynb)
#
# Carlini et al.'s generate-and-filter attack: prompt each model `extraction_samples` times for a private domain
# ("photo of <Name>", each generation with its own seed), match every generation against **every** image of
# the pre-training set, and call it *extracted* when it is closer to a training image than a threshold.
#
# - **Distance**: tiled L2. The images are cut into `extraction_tiles` x `extraction_tiles` tiles and the
#   distance is the largest per-tile RMS difference (in [-1, 1] pixel units), so a copy must match everywhere.
# - **Threshold, calibrated on held-out data**: the private domains' real non-member images were never trained
#   on, so their nearest distances to the training set show how close a *new* picture of a known identity
#   gets. The threshold is a low percentile (`extraction_percentile`) of those distances.
# - **Counts** per domain and model: extracted generations, and *distinct* training images copied (many
#   generations of the same memorised image count once), of which how many belong to the prompted domain.
#
# With `clip_model` set to a local CLIP vision model folder, an embedding pre-filter keeps the
# `clip_candidates` most similar training images per generation before the tiled L2 (for large real sets).

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/10_data_extraction
models = None  # list: target, runs (every finished fine-tuning run of this profile), run names, artefact folders
attack_domains = None  # attack the first N private domains; 0 means all
extraction_samples = None  # generations per domain prompt
extraction_steps = None  # DDIM steps per generation
extraction_tiles = None  # tiled L2 over N x N tiles
extraction_percentile = None  # threshold percentile of held-out nearest distances
guidance_scale = None  # classifier-free guidance of the generations
clip_model = None  # optional local CLIP vision model folder for the pre-filter
clip_candidates = None  # training images the pre-filter keeps per generation
seed = None  # seed of the generations

# %%
import time

import pandas as pd

from s2l_utils import notebook, plots, world
from s2l_utils.attacks import extraction, suite

run = notebook.start("10_data_extraction", profile, run_dir, models=models, attack_domains=attack_domains,
                     extraction_samples=extraction_samples, extraction_steps=extraction_steps,
                     extraction_tiles=extraction_tiles, extraction_percentile=extraction_percentile,
                     guidance_scale=guidance_scale, clip_model=clip_model, clip_candidates=clip_candidates,
                     seed=seed)
params = run.params
data = world.load_data(params)
domains = suite.attacked_domains(data, params)
refs = suite.resolve_models(params.models, run.runs_roots)
print(f"{len(refs)} models x {len(domains)} domains x {params.extraction_samples} generations")

# %% [markdown]
# ## The threshold
# Held-out non-members give the calibration distances. As a check that the matcher finds copies, the training
# members themselves (exact copies by definition) are matched too: their distance must be 0.

# %%
training_rows, training = suite.training_images(data, params.image_size)
heldout = pd.concat([data.split(d, "nonmember") for d in domains])
heldout_distances, _ = extraction.nearest_neighbours(data.load_images(heldout, params.image_size), training,
                                                     params.extraction_tiles)
threshold = suite.extraction_threshold(data, domains, training, params)
members = pd.concat([data.split(d, "member") for d in domains])
member_distances, _ = extraction.nearest_neighbours(data.load_images(members, params.image_size), training,
                                                    params.extraction_tiles)
print(f"threshold = {threshold:.4f}: percentile {params.extraction_percentile:g} of {len(heldout)} held-out "
      f"non-members' nearest distances (median {heldout_distances.median():.3f}); "
      f"training members match themselves at distance {member_distances.max():.1e}")

# %% [markdown]
# ## Generate and match

# %%
# papermill_description=generating
tables, seconds = [], {}
for ref in refs:
    started = time.perf_counter()
    pipe, rewrite = ref.load(params, str(run.device))
    generations, prompted = suite.generate_for_domains(pipe, domains, params, rewrite)
    matches = suite.extraction_matches(generations, prompted, training_rows, training, threshold, params)
    tables.append((ref, generations, matches.assign(model=ref.label, method=ref.method)))
    seconds[ref.label] = time.perf_counter() - started
    del pipe
matches = pd.concat([m for _, _, m in tables], ignore_index=True)
run.save_table(matches, "extraction_matches")
counts = pd.concat([extraction.extraction_counts(m).assign(model=r.label, method=r.method) for r, _, m in tables],
                   ignore_index=True)
table = suite.extraction_table(counts)
run.save_table(table, "extraction_metrics")
counts.set_index(["model", "domain"])

# %%
run.savefig(plots.distance_histogram(matches, heldout_distances.numpy(), threshold,
                                     title="Nearest training image: generations vs held-out real images"),
            "extraction_distances")

# %% [markdown]
# ## The extracted pairs
# Every extracted generation above the training image it copies (up to 24). When nothing is extracted, the
# closest generations are shown instead, so the gap to the threshold can be seen.

# %%
for ref, generations, found in tables:
    hits = found[found["extracted"]].sort_values("distance").head(24)
    shown = hits if len(hits) else found.sort_values("distance").head(8)
    label = "extracted" if len(hits) else "closest (none extracted)"
    fig = plots.nearest_pairs(generations[shown["generation"].to_numpy()], training[shown["nearest_index"].to_numpy()],
                              shown["distance"].to_numpy(), [f"{d[:10]}" for d in shown["domain"]])
    fig.suptitle(f"{ref.label}: {label}, threshold {threshold:.3f}", fontsize=8)
    run.savefig(fig, f"extraction_pairs_{ref.label}")

# %%
pooled = table[(table["domain"] == "pooled")].pivot_table(index="model", columns="metric", values="value", sort=False)
run.log_metrics(
    models=[r.label for r in refs], domains=domains, threshold=threshold,
    threshold_rule=f"percentile {params.extraction_percentile:g} of held-out non-members' nearest "
                   f"tiled-L2 ({params.extraction_tiles}x{params.extraction_tiles}) distances",
    extracted={m: int(v) for m, v in pooled["extracted"].items()},
    distinct_images={m: int(v) for m, v in pooled["distinct_images"].items()},
    min_distance={m: float(g["distance"].min()) for m, g in matches.groupby("model", sort=False)},
    seconds_per_model=seconds, metrics_table="extraction_metrics.parquet")
pooled
