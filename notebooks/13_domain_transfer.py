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
# # 13 · S2L-DomainTrans: borrowing prior knowledge from related public domains
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/13_domain_transfer.ipynb)
#
# The paper names a domain-transfer variant of S2L but its definition could not be recovered, so this is ours:
#
# > **S2L-DomainTrans** fine-tunes on the attacked domain's SP set *plus real images of the public domains that
# > look most like it*. "Look like" is measured without touching any private image: for each public domain,
# > the mean distance of the SP images to their nearest image of that domain; the `transfer_domains` closest
# > public domains contribute all their (public, captioned) images.
#
# The attacker can do this: public images of similar identities are available (in the miniature, the public
# domains are in the pre-training set; for SD, any public photos). The comparison is with plain S2L on the
# same cells (method x domain x seed), as the difference **DomainTrans − S2L** with a paired cluster-bootstrap
# CI (domains, then images), next to both against the method's control. As in notebook 11, membership inference
# is judged on attack strength |AUC − 0.5| and extraction on copies of the attacked domain's own members, with
# verdicts corrected for multiplicity (`multiplicity`) over every method x attack.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | full | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/13_domain_transfer
methods = None  # list of fine-tuning methods
experiment_domains = None  # attack the first N private domains; 0 means all
seeds = None  # list of seeds
transfer_domains = None  # public domains whose real images are added
attacks = None  # list of loss, secmi_paper, secmi_ldm, pia, pian
main_extraction_samples = None  # generations per model for the extraction counts
n_bootstrap = None  # bootstrap draws per confidence interval and p-value
multiplicity = None  # correction of the verdicts for multiple comparisons: holm | bh

# %%
import dataclasses

from s2l_utils import experiment, notebook, plots, pretrain, stats, synthesis, world

run = notebook.start("13_domain_transfer", profile, run_dir, methods=methods, experiment_domains=experiment_domains,
                     seeds=seeds, transfer_domains=transfer_domains, attacks=attacks,
                     main_extraction_samples=main_extraction_samples, n_bootstrap=n_bootstrap,
                     multiplicity=multiplicity)
params = dataclasses.replace(run.params, conditions=[experiment.S2L, experiment.CONTROL, experiment.DOMAIN_TRANSFER])
data = world.load_data(params)
target = pretrain.load_target(params, str(run.device))
cells = experiment.plan(params, data)
domain = cells[0][0].target_domain
sp = synthesis.ensure_sp_set(cells[0][0], data, target, domain)
borrowed = experiment.related_public_rows(data, sp.load_images(sp.pretraining_set(), params.image_size), params)
print(f"{len(cells)} cells; for {domain!r} the closest public domains are "
      f"{', '.join(dict.fromkeys(borrowed['domain']))} ({len(borrowed)} images added to {len(sp)} SP images)")

# %%
run.savefig(plots.image_rows({"SP set": sp.load_images(sp.pretraining_set().head(8), params.image_size),
                              "borrowed public": data.load_images(borrowed.head(8), params.image_size),
                              "real members (hidden)": data.load_images(data.split(domain, "member").head(8),
                                                                        params.image_size)},
                             f"{domain}: what S2L-DomainTrans fine-tunes on"), "domain_transfer_data")

# %%
# papermill_description=cells
scores, matches = experiment.run_cells(cells, data, lambda p: target, params.conditions, str(run.device))
_, effects = experiment.results(scores, matches, params.n_bootstrap, params.seed)
summary = experiment.summarize(scores, matches, ["method", "comparison", "attack", "metric"], params.n_bootstrap,
                               params.seed, params.multiplicity)
for name, df in {"transfer_scores": scores, "transfer_extraction": matches, "transfer_effects": effects,
                 "transfer_summary": summary}.items():
    run.save_table(df, name)
run.savefig(plots.effect_forest(summary, stats.STRENGTH, [experiment.EFFECT, experiment.TRANSFER],
                                title="S2L-DomainTrans vs S2L: change of attack strength |AUC − 0.5| (95% CI)"),
            "domain_transfer_strength")
gain = summary[(summary["comparison"] == experiment.TRANSFER)
               & summary["metric"].isin([stats.STRENGTH, "own_copies"])]
gain.pivot_table(index="method", columns="attack", values="delta", sort=False).round(3)

# %%
run.log_metrics(cells=len(cells), transfer_domains=params.transfer_domains,
                domain_transfer_verdicts={k: int(v) for k, v in gain["verdict"].value_counts().items()},
                results_tables=["transfer_scores.parquet", "transfer_extraction.parquet", "transfer_effects.parquet",
                                "transfer_summary.parquet"])
