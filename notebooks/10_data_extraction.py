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
# - **Threshold, calibrated so that new images essentially never count**: the private domains' real non-member
#   images were never trained on, so their nearest distances to the training set show how close a *new*
#   picture of a known identity gets. A Weibull law (the extreme-value law of minima) is fitted to the lower
#   half of those distances, and the threshold is the distance at which a model's whole budget of
#   generations is expected to hold only `extraction_false_positives` (0.05) novel images counted as copies,
#   and never more than half the smallest held-out distance. The expected false positives are reported beside
#   every count.
# - **Counts** per domain and model, split by whose image was copied: copies of the prompted domain's *own*
#   training images (what S2L claims to raise) and copies of *other* domains' images, each as extracted
#   generations and as *distinct* training images (many generations of one memorised image count once). The
#   number comparable with the paper's 16.3 is the distinct own-domain images.
# - **Copies per duplication class**: the same own-domain counts split by how often the copied member appears
#   in the pre-training set (`member_duplicates` of the world; 1x everywhere when nothing is duplicated), beside
#   the members of each class. Stable Diffusion's extracted images are mostly heavily duplicated ones.
# - **Drift of the generations**: the distribution of each generation's distance to its nearest training image
#   and to the nearest training image of the prompted identity, and the *identity accuracy* (the share of
#   generations whose nearest training image is of the prompted identity). Comparing models shows whether a
#   fine-tune moved a domain's generations towards the training data or away from it.
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
extraction_false_positives = None  # novel images expected to count as copies over a model's whole budget
guidance_scale = None  # classifier-free guidance of the generations
clip_model = None  # optional local CLIP vision model folder for the pre-filter
clip_candidates = None  # training images the pre-filter keeps per generation
seed = None  # seed of the generations

# %%
import time

import pandas as pd

from s2l_utils import notebook, plots, stats, world
from s2l_utils.attacks import extraction, metrics, suite

run = notebook.start("10_data_extraction", profile, run_dir, models=models, attack_domains=attack_domains,
                     extraction_samples=extraction_samples, extraction_steps=extraction_steps,
                     extraction_tiles=extraction_tiles, extraction_false_positives=extraction_false_positives,
                     guidance_scale=guidance_scale, clip_model=clip_model, clip_candidates=clip_candidates,
                     seed=seed)
params = run.params
data = world.load_data(params)
domains = suite.attacked_domains(data, params)
refs = suite.resolve_models(params.models, run.runs_roots)
print(f"{len(refs)} models x {len(domains)} domains x {params.extraction_samples} generations")

# %% [markdown]
# ## The threshold
# Held-out non-members give the calibration distances. The fitted tail says how often a new image would come
# within the threshold of some training image; times the generations a model draws, that is the number of
# "extracted" generations to expect even from a model that copies nothing. As a check that the matcher finds
# copies, the training members themselves (exact copies by definition) are matched too: their distance must be 0.
# The calibration assumes held-out images from the members' own distribution: on a miniature world with a
# `nonmember_shift` it reads the same non-members before the shift, while on real data a blind baseline AUC above
# 0.5 (notebook 09) flags held-out images from another distribution, which would loosen the threshold.

# %%
training_rows, training = suite.training_images(data, params.image_size)
heldout = pd.concat([data.split(d, "nonmember") for d in domains])
heldout_images = world.unshifted_twin(data, params).load_images(heldout, params.image_size)  # as calibrated
heldout_distances, _ = extraction.nearest_neighbours(heldout_images, training, params.extraction_tiles)
calibration = suite.extraction_calibration(data, domains, training, params)
threshold = calibration.threshold
members = pd.concat([data.split(d, "member") for d in domains])
member_distances, _ = extraction.nearest_neighbours(data.load_images(members, params.image_size), training,
                                                    params.extraction_tiles)
print(f"threshold = {threshold:.4f}. The {len(heldout)} held-out non-members lie at least "
      f"{calibration.tail.smallest:.3f} from the training set (median {heldout_distances.median():.3f}); "
      f"the threshold is at most half that smallest distance.\n"
      f"A new image falls within the threshold with probability {calibration.false_positive_rate:.1e}, so among "
      f"the {calibration.budget} generations of each model about {calibration.expected_false_positives():.2g} "
      f"would count as extracted without being copies (the target: at most {params.extraction_false_positives:g}).\n"
      f"Training members match themselves at distance {member_distances.max():.1e}.")

# %% [markdown]
# ## Generate and match
# Reading the table: `extracted_own` / `distinct_own` are copies of the prompted identity's own training images
# (generations / distinct images), `extracted_other` / `distinct_other` copies of other identities' images, and
# `expected_false_positives` the generations expected to pass the threshold by chance, without copying.

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
counts = pd.concat([extraction.extraction_counts(m, calibration.false_positive_rate).assign(model=r.label,
                                                                                            method=r.method)
                    for r, _, m in tables], ignore_index=True)
table = suite.extraction_table(counts)
run.save_table(table, "extraction_metrics")
counts.set_index(["model", "domain"])

# %% [markdown]
# ## Copies per duplication class
# Per model and class k (how many times a member appears in the pre-training set): `members` of the class,
# `distinct_own` of them copied, and the generations copying them (`extracted_own`), per domain and pooled.

# %%
by_class = pd.concat([extraction.counts_by_duplication(m, training_rows).assign(model=r.label, method=r.method)
                      for r, _, m in tables], ignore_index=True)
run.save_table(by_class, "extraction_by_duplication")
pooled_classes = by_class[by_class["domain"] == metrics.POOLED]
run.savefig(plots.copies_by_duplication(pooled_classes, title="Copies per duplication class, pooled over domains"),
            "extraction_by_duplication")
pooled_classes.pivot_table(index="model", columns="duplicates", values=["distinct_own", "extracted_own"],
                           aggfunc="sum", sort=False)

# %% [markdown]
# ## Drift of the generations
# Per model: quantiles of the distance to the nearest training image (`nearest_*`) and to the nearest
# training image of the prompted identity (`own_nearest_*`), and the identity accuracy, per domain and pooled.
# A model whose distances are larger than another's generates further from the training data.

# %%
drift = pd.concat([extraction.drift_table(matches, ["model", "domain"]),
                   extraction.drift_table(matches, ["model"]).assign(domain=metrics.POOLED)], ignore_index=True)
run.save_table(drift, "extraction_drift")
run.savefig(plots.nearest_distance_boxes(matches, threshold, title="Where the generations lie"), "extraction_drift")
drift.set_index(["model", "domain"])

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
pooled = table[(table["domain"] == metrics.POOLED)].pivot_table(index="model", columns="metric", values="value",
                                                                sort=False)
for model, row in pooled.iterrows():
    print(f"{model}: {int(row['distinct_own'])} distinct own-domain training images copied "
          f"({int(row['extracted_own'])} of {int(row['generations'])} generations), "
          f"{int(row['distinct_other'])} of other domains ({int(row['extracted_other'])} generations); "
          f"{row['expected_false_positives']:.2g} expected by chance")
pooled_drift = drift[drift["domain"] == metrics.POOLED].set_index("model")
run.log_metrics(
    models=[r.label for r in refs], domains=domains, threshold=threshold,
    threshold_rule=f"Weibull lower tail of {calibration.tail.count} held-out non-members' nearest tiled-L2 "
                   f"({params.extraction_tiles}x{params.extraction_tiles}) distances: at most "
                   f"{params.extraction_false_positives:g} expected false positives in {calibration.budget} "
                   f"generations, capped at half the smallest held-out distance",
    false_positive_rate=calibration.false_positive_rate,
    expected_false_positives=calibration.expected_false_positives(),
    distinct_own={m: int(v) for m, v in pooled["distinct_own"].items()},
    extracted_own={m: int(v) for m, v in pooled["extracted_own"].items()},
    distinct_other={m: int(v) for m, v in pooled["distinct_other"].items()},
    extracted_other={m: int(v) for m, v in pooled["extracted_other"].items()},
    min_distance={m: float(g["distance"].min()) for m, g in matches.groupby("model", sort=False)},
    **{f"{name}_by_class": {m: {f"{k}x": int(v) for k, v in zip(g["duplicates"], g[name], strict=True)}
                             for m, g in pooled_classes.groupby("model", sort=False)}
       for name in ("distinct_own", "extracted_own")},
    **{name: {m: float(v) for m, v in pooled_drift[name].items()}
       for name in stats.DRIFT_JUDGED},
    seconds_per_model=seconds, metrics_table="extraction_metrics.parquet",
    by_class_table="extraction_by_duplication.parquet", drift_table="extraction_drift.parquet")
pooled
