"""The attack suite: naming models, running every attack by name, and the tidy comparison tables."""

import json

import numpy as np
import pandas as pd
import pytest

from s2l_utils import finetune, models
from s2l_utils.attacks import extraction, metrics, suite
from s2l_utils.config import ATTACKS, ConfigError, load_profile


def _fake_run(root, name, method, finished=True):
    artefact = root / name / "artefact"
    artefact.mkdir(parents=True)
    (artefact / finetune.ARTEFACT_INFO).write_text(json.dumps({"method": method}))
    if finished:
        (root / name / "metrics.json").write_text("{}")
    return artefact


def test_models_resolve_by_keyword_name_and_folder_with_clear_errors(tmp_path):
    own, base = tmp_path / "mini-ab12", tmp_path / "mini"
    _fake_run(base, "05_lora", "lora")
    _fake_run(base, "03_dreambooth", "dreambooth", finished=False)  # a run that never finished is not a model
    _fake_run(own, "05_lora", "lora")
    loose = _fake_run(tmp_path / "elsewhere", "my_run", "hypernetwork")
    refs = suite.resolve_models(["target", "runs", str(loose), "target"], [own, base])
    assert [(r.label, r.method) for r in refs] == [("target", "pretrained"), ("05_lora", "lora"),
                                                   ("my_run", "hypernetwork")]
    assert refs[1].artefact == own / "05_lora" / "artefact", "the run's own root wins over the base profile's"
    assert suite.resolve_models(["05_lora"], [base])[0].artefact == base / "05_lora" / "artefact"
    with pytest.raises(ConfigError, match=r"03_dreambooth.*05_lora|05_lora"):
        suite.resolve_models(["03_dreambooth"], [own, base])
    with pytest.raises(ConfigError, match="no models"):
        suite.resolve_models(["runs"], [tmp_path / "empty"])


def test_attack_parameters_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="unknown attacks"):
        load_profile("smoke", attacks=["loss", "gradient"])
    with pytest.raises(ConfigError, match="multiple of secmi_k"):
        load_profile("smoke", secmi_t=25, secmi_k=10)
    with pytest.raises(ConfigError, match="extraction_samples"):
        load_profile("smoke", extraction_samples=0)
    assert set(suite.SCORERS) == set(suite.UNET_CALLS) == set(ATTACKS)


def test_every_attack_scores_every_image_into_one_tidy_table(smoke_params, smoke_data):
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    domains = smoke_data.private_domains[:2]
    scores = suite.membership_scores(pipe, smoke_data, domains, smoke_params, progress=False)
    per_attack = 2 * (smoke_params.members_per_domain + smoke_params.nonmembers_per_domain)
    assert scores.groupby("attack").size().to_dict() == {a: per_attack for a in ATTACKS}
    again = suite.membership_scores(pipe, smoke_data, domains, smoke_params, progress=False)
    np.testing.assert_array_equal(scores["score"], again["score"])
    both = pd.concat([scores.assign(model="a", method="pretrained"), scores.assign(model="b", method="lora")])
    table = suite.membership_table(both, n_bootstrap=50)
    assert list(table.columns) == suite.TIDY_COLUMNS
    assert len(table) == 2 * len(ATTACKS) * (len(domains) + 1) * len(suite.METRICS)
    loss = scores[scores["attack"] == "loss"]
    expected = metrics.metrics_by_domain(loss, n_bootstrap=50).set_index("domain")
    got = table[(table["model"] == "a") & (table["attack"] == "loss") & (table["metric"] == "auc")].set_index("domain")
    assert got["value"].to_dict() == pytest.approx(expected["auc"].to_dict())
    assert (got["lo"] <= got["value"]).all() and (got["value"] <= got["hi"]).all()


def test_extraction_table_pools_counts_per_model():
    matches = pd.DataFrame({"domain": ["A", "A", "A", "B"], "generation": range(4),
                            "nearest_file": ["x", "x", "y", "z"], "nearest_domain": ["A", "A", "B", "B"],
                            "nearest_index": [0, 0, 1, 2], "distance": [0.0, 0.01, 0.02, 0.9],
                            "extracted": [True, True, True, False]})
    counts = extraction.extraction_counts(matches, false_positive_rate=0.001).assign(model="target",
                                                                                  method="pretrained")
    table = suite.extraction_table(counts).set_index(["domain", "metric"])["value"]
    assert table[("A", "extracted_own")] == 2 and table[("A", "distinct_own")] == 1
    assert table[("A", "extracted_other")] == 1 and table[("A", "distinct_other")] == 1
    assert table[("B", "extracted_own")] == 0 and table[("B", "extracted_other")] == 0
    assert table[("pooled", "extracted_own")] == 2 and table[("pooled", "generations")] == 4
    assert table[("A", "expected_false_positives")] == pytest.approx(0.003)
    assert table[("pooled", "expected_false_positives")] == pytest.approx(0.004)
