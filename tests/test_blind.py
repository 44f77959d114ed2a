"""The blind baseline: a model-free member / non-member classifier, cross-fitted, in the MIA score format."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from s2l_utils import world
from s2l_utils.attacks import blind, suite
from s2l_utils.config import ConfigError

COLUMNS = ["attack", "domain", "file_name", "is_member", "score"]


def world_data(**spec) -> world.ImageFolderData:
    return world.ImageFolderData(world.ensure_world(world.WorldSpec(public_domains=0, **spec)))


def pooled_auc(scores: pd.DataFrame) -> pd.Series:
    """The pooled AUC row (value, lo, hi) through the suite's metric code, as 09 computes it."""
    table = suite.membership_table(scores.assign(model="data", method="none"), seed=0)
    return table[(table["domain"] == "pooled") & (table["metric"] == "auc")].iloc[0]


def constructed_folder(tmp_path, sizes, domains=("Ann Example", "Bo Sample"), members=6, nonmembers=6,
                       fmt="png") -> world.ImageFolderData:
    """A real-data-like imagefolder: random photos of the given (width, height) sizes, no ``private`` column."""
    rng = np.random.default_rng(0)
    images, rows = [], []
    for domain in domains:
        for split, count in (("member", members), ("nonmember", nonmembers)):
            for k in range(count):
                w, h = sizes[k % len(sizes)]
                images.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
                rows.append({"file_name": f"{domain[:3].lower()}/{split}_{k}.{fmt}", "text": f"photo of {domain}",
                             "domain": domain, "split": split})
    return world.ImageFolderData(world.write_imagefolder(tmp_path / "real", images, pd.DataFrame(rows)))


def test_blind_auc_is_at_chance_on_the_iid_world():
    data = world_data(private_domains=8, members_per_domain=16, nonmembers_per_domain=16)
    scores = blind.blind_scores(data, data.private_domains, image_size=16)
    assert list(scores.columns) == COLUMNS and len(scores) == 8 * 32
    assert (scores["attack"] == "blind").all() and scores["score"].between(0, 1).all()
    auc = pooled_auc(scores)
    assert auc["lo"] < 0.5 < auc["hi"], f"i.i.d. members and non-members separated without a model: {auc.to_dict()}"


def test_blind_auc_is_far_above_chance_on_a_shifted_world():
    data = world_data(private_domains=4, members_per_domain=8, nonmembers_per_domain=8, nonmember_shift=1.0)
    auc = pooled_auc(blind.blind_scores(data, data.private_domains, image_size=16))
    assert auc["lo"] > 0.75, auc.to_dict()


def test_no_image_is_scored_by_a_classifier_that_saw_it(monkeypatch):
    """In every repeat, every classifier scores only feature rows it was not fitted on and every image is scored
    exactly once; an image's score is the mean of its out-of-fold probabilities over the repeats."""
    data = world_data(private_domains=3, members_per_domain=6, nonmembers_per_domain=6)
    fitted, scored = [], {}
    real_pipeline = blind.make_pipeline

    class Spy:
        def __init__(self, *steps):
            self.inner = real_pipeline(*steps)

        def fit(self, x, y):
            fitted.append({row.tobytes() for row in x})
            return self.inner.fit(x, y)

        def predict_proba(self, x):
            rows = [row.tobytes() for row in x]
            assert not fitted[-1] & set(rows), "an image was scored by a classifier fitted on it"
            probabilities = self.inner.predict_proba(x)
            for row, p in zip(rows, probabilities[:, 1], strict=True):
                scored.setdefault(row, []).append(p)
            return probabilities

    monkeypatch.setattr(blind, "make_pipeline", Spy)
    scores = blind.blind_scores(data, data.private_domains, image_size=16, folds=4, repeats=3)
    assert len(fitted) == 4 * 3 and len(scored) == len(scores) == 36
    assert all(len(p) == 3 for p in scored.values()), "each image is scored once per repeat"
    assert len({frozenset(f) for f in fitted}) == 12, "the three repeats split the images differently"
    np.testing.assert_allclose(sorted(scores["score"]), sorted(np.mean(p) for p in scored.values()))


def test_repeated_cross_fitting_steadies_the_auc_across_fold_seeds():
    """On an i.i.d. world shaped like mini's evaluation view (16 members, 8 non-members per domain), one fold
    split's pooled AUC moves with the fold seed (SD ~0.03 over 6 seeds); averaged over the default repeats, the
    scores do not hinge on the split (SD ~0.005)."""
    data = world_data(private_domains=8, members_per_domain=16, nonmembers_per_domain=8)

    def auc_sd(repeats: int) -> float:
        aucs = [roc_auc_score(s["is_member"], s["score"]) for s in
                (blind.blind_scores(data, data.private_domains, 16, seed=seed, repeats=repeats) for seed in range(6))]
        return float(np.std(aucs, ddof=1))

    single, repeated = auc_sd(1), auc_sd(blind.REPEATS)
    assert single > 0.015, f"one split's AUC should move with the fold seed, SD {single:.4f}"
    assert repeated < 0.35 * single, f"repeated cross-fitting: SD {repeated:.4f} against one split's {single:.4f}"


def test_folds_are_a_stratified_partition():
    strata = pd.Series([f"d{d}|{s}" for d in range(3) for s in ("member", "nonmember") for _ in range(10)])
    is_member = strata.str.endswith("|member").to_numpy()
    fold = blind.cross_fit_folds(strata, is_member, folds=5, seed=0)
    assert sorted(np.unique(fold)) == list(range(5))
    per_fold = pd.crosstab(fold, strata)
    assert (per_fold == 2).all().all(), "each of the 6 strata of 10 puts 2 images in each of 5 folds"
    # a stratum smaller than the folds: stratified on membership alone, still balanced and a partition
    small = pd.concat([strata, pd.Series(["d9|member"] * 2 + ["d9|nonmember"] * 2)], ignore_index=True)
    fold = blind.cross_fit_folds(small, small.str.endswith("|member").to_numpy(), folds=5, seed=0)
    assert len(fold) == len(small) and sorted(np.unique(fold)) == list(range(5))
    assert set(pd.crosstab(fold, small.str.endswith("|member")).to_numpy().ravel()) <= {6, 7}


def test_blind_scores_are_deterministic_given_the_seed():
    data = world_data(private_domains=3, members_per_domain=6, nonmembers_per_domain=6)
    first = blind.blind_scores(data, data.private_domains, 16, seed=3)
    pd.testing.assert_frame_equal(first, blind.blind_scores(data, data.private_domains, 16, seed=3))
    assert not np.allclose(first["score"], blind.blind_scores(data, data.private_domains, 16, seed=4)["score"])
    states = [blind.repeat_seeds(seed, blind.REPEATS) for seed in (3, 4)]
    assert len(set(states[0]) | set(states[1])) == 2 * blind.REPEATS, "each repeat of each seed splits anew"
    assert blind.repeat_seeds(3, 2) == states[0][:2]


def test_blind_runs_on_real_data_like_folders_and_views(tmp_path, monkeypatch):
    """JPEGs of mixed, non-square sizes at a 512 px image size, read at FEATURE_SIZE, and a view of the data."""
    data = constructed_folder(tmp_path, [(96, 128), (120, 80), (70, 70)], fmt="jpg")
    sizes, load = [], data.load_images
    monkeypatch.setattr(data, "load_images", lambda rows, size: sizes.append(size) or load(rows, size))
    scores = blind.blind_scores(data, data.private_domains, image_size=512)
    assert sizes == [blind.FEATURE_SIZE] and len(scores) == 24 and scores["score"].notna().all()
    view = world.ImageFolderData(data.folder)
    view.meta = data.meta[~data.meta["file_name"].str.endswith(("_0.jpg", "_1.jpg"))].reset_index(drop=True)
    assert len(blind.blind_scores(view, ["Ann Example"], image_size=512, folds=4)) == 8


def test_image_features_are_finite_per_image_and_sized_alike(monkeypatch):
    """Black and grey images (zero spread, zero value) give finite features, as many for every image size, and
    an image's features do not depend on the batch it is computed in."""
    flat = blind.image_features(torch.stack([torch.full((3, 8, 8), -1.0), torch.zeros(3, 8, 8)]))
    assert np.isfinite(flat).all()
    assert flat.shape == (2, blind.image_features(torch.zeros(1, 3, 40, 40)).shape[1])
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    whole = blind.image_features(images)
    monkeypatch.setattr(blind, "BATCH", 2)
    np.testing.assert_allclose(blind.image_features(images), whole)


@pytest.mark.parametrize("domains, kwargs, message", [
    ([], {}, "at least one domain"),
    (["Nobody Here"], {}, "unknown private domains"),
    (["Ann Example"], {"folds": 7}, "at least folds=7 members"),
    (["Ann Example"], {"folds": 1}, "folds >= 2"),
    (["Ann Example"], {"repeats": 0}, "repeats >= 1"),
])
def test_blind_rejects_bad_requests(tmp_path, domains, kwargs, message):
    data = constructed_folder(tmp_path, [(32, 32)])
    with pytest.raises(ConfigError, match=message):
        blind.blind_scores(data, domains, 16, **kwargs)


def test_blind_rejects_a_domain_without_non_members(tmp_path):
    data = constructed_folder(tmp_path, [(32, 32)])
    data.meta.loc[(data.meta["domain"] == "Bo Sample") & (data.meta["split"] == "nonmember"), "split"] = "member"
    with pytest.raises(ConfigError, match=r"none in \['Bo Sample \(nonmember\)'\]"):
        blind.blind_scores(data, ["Ann Example", "Bo Sample"], 16)
