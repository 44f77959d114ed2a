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
# # 14 · The report: what the miniature reproduction says about the paper's claims
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/s2l-research/s2l/blob/main/notebooks/14_report.ipynb)
#
# Built only from result tables, those of notebooks 11-13 or a sweep's collected table (`report_results`);
# nothing is recomputed from models: the paper-shaped main table, the figures, and each claim of the paper next
# to what was measured, with numbers (the verdict rule: `docs/attacks.md`). The run keeps its tables in
# `tables/` and its page in `results.md`; `python -m s2l_utils.check` compares them with the committed ones.
# With `publish`, the tables go to `data/results/<profile>/`, the page to `docs/results/<profile>.md` and the
# figures of every run it read to `figures/<profile>/`.

# %%
# Colab: install this repository into the running kernel (does nothing elsewhere).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "s2l[notebooks] @ git+https://github.com/s2l-research/s2l@main"], check=True)

# %% tags=["parameters"]
profile = "mini"  # smoke | mini | full | sd, or a YAML file: sizes for every parameter left at None
run_dir = ""  # where this run writes; empty means runs/<profile>/14_report
report_results = None  # a sweep's collected results.parquet; empty means this profile's runs of 11-13
publish = None  # write the tables, the page and the figures where the repository keeps them
n_bootstrap = None  # a sweep's summary: bootstrap draws per confidence interval and p-value
multiplicity = None  # a sweep's summary: correction of the verdicts for multiple comparisons: holm | bh

# %%
import os

import pandas as pd

from s2l_utils import check, experiment, notebook, plots, report, stats

run = notebook.start("14_report", profile, run_dir, report_results=report_results, publish=publish,
                     n_bootstrap=n_bootstrap, multiplicity=multiplicity)
params = run.params
tables = (report.from_sweep(params.report_results, params.n_bootstrap, params.seed, params.multiplicity)
          if params.report_results else report.collect(run.runs_roots))
print("result tables found:", ", ".join(tables))

# %%
main_table = experiment.paper_table(tables["main"], attacks=[a for a in params.attacks if a != "secmi_paper"],
                                    blind_auc=tables.get("blind"))
figures = [run.savefig(plots.effect_forest(tables["main"], stats.STRENGTH,
                                           [experiment.AFTER, experiment.EFFECT, experiment.VS_CROSS_DOMAIN,
                                            experiment.VS_REAL_NONMEMBER],
                                           title="S2L: change of membership-inference strength |AUC − 0.5| (95% CI)"),
                       "report_s2l_effect"),
           run.savefig(plots.effect_panels(experiment.effect_panels(tables["main"]),
                                           title="S2L effect (S2L − control, 95% CI)"),
                       "report_s2l_overview")]
if "ablations" in tables:
    levels = tables["ablations"][(tables["ablations"]["ablation"] == "sp_level")
                                 & tables["ablations"]["comparison"].isin([experiment.AFTER, experiment.EFFECT])]
    figures.append(run.savefig(plots.ablation_lines(levels, "sp_level", stats.STRENGTH,
                                                    title="S2L effect on attack strength by prior knowledge"),
                               "report_prior_knowledge"))
if "map" in tables:
    first = tables["map"][tables["map"]["pretrain_steps"] == tables["map"]["pretrain_steps"].max()]
    for attack in dict.fromkeys(first["attack"]):
        if attack != stats.EXTRACTION:
            figures.append(run.savefig(plots.effect_heatmap(first, "ft_steps", "ft_lr", attack),
                                       f"report_map_{attack}"))
if "transfer" in tables:
    figures.append(run.savefig(plots.effect_forest(tables["transfer"], stats.STRENGTH,
                                                   [experiment.EFFECT, experiment.TRANSFER],
                                                   title="S2L-DomainTrans vs S2L: change of attack strength"),
                               "report_domain_transfer"))
main_table.round(3)

# %%
experiment.extraction_by_class(tables["main"]).round(3)

# %%
experiment.drift_table(tables["main"]).round(3)

# %%
pd.DataFrame(report.verdicts(tables))

# %%
name = notebook.results_name(profile)  # a sweep's report publishes under the sweep's profile
commit = notebook.git_commit()
page = lambda links: report.markdown(tables, name, main_table, commit, links)
text = page([os.path.relpath(f, run.dir) for f in figures])
notebook.write_text(run.dir / "results.md", text)
notebook.write_tables(tables, run.dir / check.TABLES_DIR)
if params.publish:
    report.publish(run, tables, page)
print(text)

# %%
run.log_metrics(tables=list(tables), figures=[str(f) for f in figures], published=params.publish,
                claims={c["claim"]: c["agrees"] for c in report.verdicts(tables)})
