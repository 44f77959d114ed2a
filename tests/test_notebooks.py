"""The notebooks run top to bottom under papermill on the smoke profile, through the runner users call."""

import json
import os
from pathlib import Path

import pytest

from s2l_utils import experiment, paths, regimes, run, stats, sweep
from s2l_utils.attacks import metrics
from s2l_utils.config import ConfigError

pytestmark = pytest.mark.notebooks
SMOKE_SHARD = Path(__file__).parent / "sweeps" / "regimes_duplicated_lora_dreambooth.yaml"


@pytest.fixture(scope="module")
def smoke_runs():
    """Every notebook on smoke; before the regime study (15), a smoke stand-in of its first shard is swept and
    published, as ``make regimes`` does."""
    logs = []
    notebooks = [nb.stem for nb in run.available_notebooks()]
    folders = run.run("smoke", notebooks[:-1], log=logs.append)
    sweep.run_sweep(sweep.load_sweep(SMOKE_SHARD), log=logs.append)
    regimes.publish(SMOKE_SHARD, allow_dirty=True, log=logs.append)  # a working tree under test may be dirty
    folders += run.run("smoke", notebooks[-1:], log=logs.append)
    return folders, logs


def test_every_notebook_has_a_tagged_parameters_cell_with_profile_and_run_dir():
    for nb in run.available_notebooks():
        cells = json.loads(nb.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, nb.name
        assert {"profile", "run_dir"} <= run.declared_parameters(nb), nb.name
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb.name} has outputs"
        assert nb.with_suffix(".py").is_file(), f"{nb.name} lacks its py:percent twin"


def test_smoke_run_writes_params_metrics_and_the_executed_notebook(smoke_runs):
    folders, _ = smoke_runs
    assert [f.name for f in folders] == [nb.stem for nb in run.available_notebooks()]
    for folder in folders:
        params = json.loads((folder / "params.json").read_text())
        assert params["profile"] == "smoke" and params["params"]["pretrain_steps"] == 12
        assert (folder / f"{folder.name}.ipynb").is_file()
    setup = json.loads((folders[0] / "metrics.json").read_text())
    assert setup["n_private_domains"] == 3 and setup["n_pretraining_images"] == 3 * 6 + 2 * 4
    assert setup["n_nonmembers"] == 3 * 6
    target = json.loads((folders[1] / "metrics.json").read_text())
    assert 0.0 <= target["pooled_auc"] <= 1.0 and target["pooled_auc_lo"] <= target["pooled_auc"]
    assert len(target["domain_auc"]) == 3
    assert Path(target["target"], "model_index.json").is_file()
    figures = {p.name for folder in folders[:2] for p in (folder / "figures").iterdir()}
    assert {"world.png", "loss_roc.png", "samples_vs_nearest.png"} <= figures


def test_fine_tuning_notebooks_record_their_method_and_a_loadable_artefact(smoke_runs):
    from s2l_utils import finetune

    folders, _ = smoke_runs
    by_name = {f.name: f for f in folders}
    sp = json.loads((by_name["02_sp_synthesis"] / "metrics.json").read_text())
    assert sp["sp_size"] == 6 and sp["sp_level"] == "name" and 0 <= sp["sp_share_closest_to_domain"] <= 1
    expected = {"03_dreambooth": "dreambooth", "04_textual_inversion": "textual_inversion", "05_lora": "lora",
                "06_hypernetwork": "hypernetwork", "07_end2end": "end2end", "08_combinations": "dreambooth_lora"}
    for name, method in expected.items():
        metrics = json.loads((by_name[name] / "metrics.json").read_text())
        assert metrics["method"] == method and metrics["domain"] == sp["domain"]
        assert 0 <= metrics["loss_auc_before"] <= 1 and 0 <= metrics["loss_auc_after"] <= 1
        assert metrics["trainable_parameters"] > 0 and metrics["final_loss"] > 0
        assert finetune.load_finetuned(by_name[name] / metrics["artefact"], device="cpu").method == method


def test_attack_notebooks_compare_the_target_with_every_fine_tuned_run(smoke_runs):
    import pandas as pd

    folders, _ = smoke_runs
    by_name = {f.name: f for f in folders}
    fine_tuned = ["03_dreambooth", "04_textual_inversion", "05_lora", "06_hypernetwork", "07_end2end",
                  "08_combinations"]
    mia = json.loads((by_name["09_membership_inference"] / "metrics.json").read_text())
    assert mia["models"] == ["target", *fine_tuned]
    table = pd.read_parquet(by_name["09_membership_inference"] / "mia_metrics.parquet")
    assert set(table["attack"]) == {"loss", "secmi_paper", "secmi_ldm", "pia", "pian"}
    assert table.groupby(["model", "attack", "domain"]).size().eq(6).all()  # auc, advantage, asr, three TPRs
    undefined = table["metric"].isin(["tpr@1%fpr", "tpr@0.1%fpr"])  # fewer than 1/FPR non-members: NaN
    assert table.loc[undefined, "value"].isna().all()
    assert table.loc[~undefined, "value"].between(0, 1).all() and len(table) == 7 * 5 * 4 * 6
    assert 0 <= mia["blind_auc_lo"] <= mia["blind_auc"] <= mia["blind_auc_hi"] <= 1, "the blind baseline beside MIAs"
    blind = pd.read_parquet(by_name["09_membership_inference"] / "blind_metrics.parquet")
    assert set(blind["domain"]) == {*table["domain"]}
    assert blind.loc[blind["metric"] == "auc", "value"].between(0, 1).all()
    extraction = json.loads((by_name["10_data_extraction"] / "metrics.json").read_text())
    assert set(extraction["extracted_own_by_class"]["target"]) >= {"32x", "1x"}, "copies per duplication class"
    assert 0 <= extraction["identity_accuracy"]["target"] <= 1
    assert extraction["threshold"] > 0 and "Weibull lower tail" in extraction["threshold_rule"]
    assert 0 < extraction["expected_false_positives"] <= 0.05 + 1e-9
    counts = pd.read_parquet(by_name["10_data_extraction"] / "extraction_metrics.parquet")
    generations = counts[(counts["metric"] == "generations") & (counts["domain"] != metrics.POOLED)]
    assert generations["value"].eq(6).all() and len(generations) == 7 * 3  # 6 per domain, 3 domains, 7 models
    figures = {p.name for name in ("09_membership_inference", "10_data_extraction")
               for p in (by_name[name] / "figures").iterdir()}
    assert {"mia_auc.png", "mia_roc.png", "extraction_distances.png", "extraction_pairs_target.png"} <= figures


def test_experiment_notebooks_write_effects_and_the_report_restates_them(smoke_runs):
    import pandas as pd

    folders, _ = smoke_runs
    by_name = {f.name: f for f in folders}
    main = by_name["11_s2l_main"]
    summary = pd.read_parquet(main / "s2l_summary.parquet")
    assert set(summary["method"]) == {"lora", "textual_inversion"}
    assert {experiment.AFTER, experiment.EFFECT, experiment.VS_REAL_NONMEMBER, experiment.VS_CROSS_DOMAIN} == \
        set(summary["comparison"]), "lora: S2L - real non-member beside its effect; TI: S2L - cross-domain"
    membership = summary[summary["attack"] != stats.EXTRACTION].dropna(subset=["delta"])  # tpr@1%fpr: NaN
    assert (membership["lo"] <= membership["hi"]).all() and membership[["lo", "hi"]].abs().le(1).all().all()
    assert set(summary.loc[summary["metric"] == "advantage", "verdict"]) <= {stats.UP, stats.DOWN, stats.NO_CHANGE}
    assert json.loads((main / "metrics.json").read_text())["cells"] == 2
    ablations = pd.read_parquet(by_name["12_ablations"] / "ablation_summary.parquet")
    assert set(ablations["ablation"]) == {"sp_level", "sp_size", "ft_steps", "ft_lr", "weight_noise"}
    heat = pd.read_parquet(by_name["12_ablations"] / "s2l_map.parquet")
    assert set(heat["ft_steps"]) == {2, 4} and set(heat["comparison"]) == {experiment.EFFECT}
    transfer = pd.read_parquet(by_name["13_domain_transfer"] / "transfer_summary.parquet")
    assert experiment.TRANSFER in set(transfer["comparison"])
    text = (by_name["14_report"] / "results.md").read_text()
    effect = summary[(summary["comparison"] == experiment.EFFECT) & (summary["attack"] == "pia")
                     & (summary["metric"] == "advantage")]
    assert f"mean {effect['delta'].mean():+.3f}" in text, "the report quotes the table's numbers"
    report_metrics = json.loads((by_name["14_report"] / "metrics.json").read_text())
    assert report_metrics["published"] is False
    assert set(report_metrics["tables"]) == {"main", "blind", "ablations", "map", "transfer"}
    kept = pd.read_csv(by_name["14_report"] / "tables" / "main.csv")
    assert kept[["method", "comparison", "attack", "metric"]].equals(
        summary[["method", "comparison", "attack", "metric"]]), "the run keeps the tables it would publish"


def test_runs_write_nothing_outside_runs_until_published(smoke_runs):
    """Without ``publish`` no figure, table or page leaves runs/; publishing the report writes every run's figures,
    the tables and the page, which the check then finds reproduced by the unpublished run, and a flipped verdict
    in the committed tables makes it fail."""
    import pandas as pd

    from s2l_utils import check

    published = {name: Path(os.environ[var]) for name, var in (("figures", "S2L_FIGURES_DIR"),
                                                              ("docs", "S2L_DOCS_DIR"))}
    assert not any(folder.exists() and any(folder.rglob("*.png")) for folder in published.values())
    assert not (paths.data_dir() / "results" / "smoke").exists()
    run.run("smoke", ["14"], {"publish": True}, force=True, log=lambda *_: None)
    tables = paths.data_dir() / "results" / "smoke"
    assert {p.stem for p in tables.glob("*.csv")} == {"main", "blind", "ablations", "map", "transfer"}
    page = paths.results_page("smoke").read_text()
    figures = {p.name for p in (published["figures"] / "smoke").iterdir()}
    assert {"world.png", "loss_roc.png", "mia_auc.png", "report_s2l_effect.png"} <= figures, "siblings' figures too"
    own = os.path.relpath(published["figures"] / "smoke" / "report_s2l_effect.png", paths.results_page("smoke").parent)
    assert f"]({Path(own).as_posix()})" in page, "the report's figures, linked relative to the page"
    for link in page.split("](")[1:]:
        target = link.split(")")[0]
        if target.endswith(".png"):
            assert (paths.results_page("smoke").parent / target).is_file(), target
    assert check.main(["--profile", "smoke"]) == 0
    main = pd.read_csv(tables / "main.csv")
    main.loc[main["verdict"].notna().idxmax(), "verdict"] = "flipped"
    main.to_csv(tables / "main.csv", index=False)
    assert check.main(["--profile", "smoke"]) == 1
    pd.DataFrame({"x": [1]}).to_csv(tables / "ghost.csv", index=False)  # committed, but no notebook of the run makes it
    before = {p: p.read_bytes() for p in [*tables.iterdir(), paths.results_page("smoke")]}
    with pytest.raises(Exception, match="would drop"):
        run.run("smoke", ["14"], {"publish": True}, force=True, log=lambda *_: None)
    assert {p: p.read_bytes() for p in [*tables.iterdir(), paths.results_page("smoke")]} == before, "nothing written"
    (tables / "ghost.csv").unlink()


def test_the_regime_notebook_reads_the_published_shard_and_judges_every_hypothesis(smoke_runs):
    import pandas as pd

    folders, _ = smoke_runs
    folder = {f.name: f for f in folders}["15_regimes"]
    summary = pd.read_parquet(folder / "regimes_summary.parquet")
    assert set(summary["sp_guidance"]) == {1.0, 7.5} and set(summary["world"]) == {regimes.DUPLICATED}
    contrasts = pd.read_parquet(folder / "regimes_contrasts.parquet")
    assert set(contrasts["contrast"]) == {"sp_guidance 7.5 - 1.0"} and (contrasts["cells"] == 1).all()
    hypotheses = pd.read_parquet(folder / "regimes_hypotheses.parquet").set_index("hypothesis")["verdict"]
    assert hypotheses["H3 shift"] == "pending" and hypotheses["H4 capacity"] == "pending"
    assert "(too few draws: 50 < " in hypotheses["H1 memorisation"]  # smoke: 50 draws, no Holm verdict possible
    assert hypotheses["H1 memorisation"] != "pending" and hypotheses["H2 drift"] != "pending"
    record = json.loads((paths.data_dir() / "results" / "regimes" / regimes.SHARDS_FILE).read_text())
    shard = record["regimes_duplicated_lora_dreambooth"]
    assert shard["cells"] == 2 and shard["finetuned_models"] == 6 and shard["model_seconds"] > 0  # 3 conditions
    assert shard["lent_by_twin"] == 0, "an unshifted world has no twin"
    # notebook 11's smoke cell (SP guidance 3) lends its real-non-member model to both guidance values
    assert shard["lent_by_sibling"] == 2
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["shards"] == ["regimes_duplicated_lora_dreambooth"] and metrics["draws_needed"] > 50
    block = (folder / "regimes.md").read_text()
    assert "| H2 drift |" in block and "6 fine-tuned models (2 lent by a cell at other SP parameters)" in block
    assert (folder / "figures" / "regimes_effects.png").is_file()
    assert not (Path(os.environ["S2L_FIGURES_DIR"]) / "smoke" / "regimes_effects.png").exists(), "not published"


def test_finished_runs_are_skipped_and_no_temporary_folder_remains(smoke_runs):
    folders, _ = smoke_runs
    stamp = (folders[1] / "metrics.json").stat().st_mtime_ns
    logs = []
    run.run("smoke", ["01"], log=logs.append)
    assert logs and logs[0].startswith("skip 01_pretrain_target")
    assert (folders[1] / "metrics.json").stat().st_mtime_ns == stamp
    assert not list(folders[0].parent.glob(".*.running"))


def test_bad_requests_fail_before_any_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown profile 'smok'"):
        run.run("smok")
    with pytest.raises(ConfigError, match="unknown notebook '77'"):
        run.run("smoke", ["77"])
    with pytest.raises(ConfigError, match="'lora_rank' is not declared by the notebooks being run"):
        run.run("smoke", ["00"], {"lora_rank": 3})
    with pytest.raises(ConfigError, match="unknown parameters: pretrain_stepz"):
        run.run("smoke", ["01"], {"pretrain_stepz": 3})
    with pytest.raises(ConfigError, match="pretrain_lr"):
        run.run("smoke", ["01"], {"pretrain_lr": -1.0})
    assert not list(tmp_path.rglob("*.ipynb")), "nothing ran"
    assert run.main(["--profile", "smok"]) == 2


def test_a_failing_notebook_is_kept_aside_and_leaves_no_finished_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    with pytest.raises(Exception, match="data folder not found"):
        run.run("smoke", ["00"], {"data_dir": str(tmp_path / "no-such-data"), "member_duplicates": []})
    roots = [p for p in tmp_path.iterdir() if p.name.startswith("smoke-")]
    assert len(roots) == 1, "overrides get their own run root with the effective profile"
    root = roots[0]
    assert (root / "profile.yaml").is_file()
    assert not (root / "00_setup").exists()
    assert "data folder not found" in (root / "00_setup.failed" / "error.txt").read_text()


def test_overrides_reach_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    (folder,) = run.run("smoke", ["00"], {"private_domains": 2, "public_domains": 1})
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_private_domains"] == 2 and metrics["n_public_domains"] == 1
    assert json.loads((folder / "params.json").read_text())["params"]["private_domains"] == 2
    assert folder.parent.name.startswith("smoke-") and folder.parent.parent == paths.runs_dir()
