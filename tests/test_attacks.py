import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from s2l_utils import models, world
from s2l_utils.attacks import extraction, metrics, mia, suite
from s2l_utils.config import load_profile
from s2l_utils.sampling import noise_seed


def test_auc_and_strict_tpr_at_fpr_on_hand_computed_cases():
    members, nonmembers = [0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.1]
    assert metrics.roc_auc(members, nonmembers) == pytest.approx(11 / 12)  # 0.4 loses only to 0.7
    # thresholds: zero false positives reach TPR 2/3; 1% FPR needs 100 non-members, so it is not measured
    assert metrics.tpr_at_fpr(members, nonmembers, 0.0) == pytest.approx(2 / 3)
    assert np.isnan(metrics.tpr_at_fpr(members, nonmembers, 0.01))
    assert metrics.tpr_at_fpr(members, nonmembers, 0.25) == pytest.approx(1.0)
    # best threshold (> 0.35): TPR 3/3, TNR 3/4 -> balanced accuracy 7/8 (plain accuracy would be 6/7)
    assert metrics.attack_accuracy(members, nonmembers) == pytest.approx(7 / 8)


def test_strict_rule_never_takes_the_closest_fpr_and_handles_ties():
    # a tie between a member and a non-member at the top score: no threshold has FPR 0 with TPR > 0
    members, nonmembers = [1.0, 0.5], [1.0] + [0.0] * 9
    assert metrics.tpr_at_fpr(members, nonmembers, 0.0) == 0.0
    assert metrics.tpr_at_fpr(members, nonmembers, 0.1) == pytest.approx(1.0)
    assert metrics.roc_auc(members, nonmembers) == pytest.approx(roc_auc_score([1, 1] + [0] * 10,
                                                                               members + nonmembers))


def test_vectorised_metrics_agree_with_sklearn_roc_curves_on_random_tied_scores():
    rng = np.random.default_rng(3)
    for _ in range(30):
        members = rng.integers(0, 12, rng.integers(1, 40)).astype(float)
        nonmembers = rng.integers(0, 10, rng.integers(1, 300)).astype(float)
        labels, scores = np.r_[np.ones(members.size), np.zeros(nonmembers.size)], np.r_[members, nonmembers]
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        assert metrics.roc_auc(members, nonmembers) == pytest.approx(roc_auc_score(labels, scores))
        for x in (0.0, 0.01, 0.1, 0.5):
            expected = tpr[fpr <= x + 1e-12].max() if x == 0 or nonmembers.size * x >= 1 else np.nan
            assert metrics.tpr_at_fpr(members, nonmembers, x) == pytest.approx(expected, nan_ok=True)
        brute = max((((scores >= t) & (labels == 1)).sum() / members.size
                     + ((scores < t) & (labels == 0)).sum() / nonmembers.size) / 2
                    for t in [*np.unique(scores), np.inf])
        assert metrics.attack_accuracy(members, nonmembers) == pytest.approx(brute)


def test_small_samples_get_honest_metrics():
    """8 non-members: TPR at 1% FPR is TPR at zero false positives, so it is NaN and ``tpr@0fp`` says it; a
    constant score is a coin flip (0.5), however unbalanced the sets (plain accuracy: 16/24 = 0.667)."""
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1, 1, 16), rng.normal(0, 1, 8)
    out = metrics.membership_metrics(members, nonmembers, n_bootstrap=100)
    assert set(metrics.MEMBERSHIP_METRICS) <= set(out)
    assert np.isnan(out["tpr@1%fpr"]) and np.isnan(out["tpr@1%fpr_lo"]) and np.isnan(out["tpr@0.1%fpr"])
    assert out["tpr@0fp"] == pytest.approx((members > nonmembers.max()).mean())
    assert out["advantage"] == pytest.approx(abs(out["auc"] - 0.5))
    many = rng.normal(0, 1, 100)
    assert metrics.tpr_at_fpr(members, many, 0.01) == pytest.approx((members > np.sort(many)[-2]).mean())
    assert metrics.attack_accuracy(np.ones(16), np.ones(8)) == 0.5
    assert metrics.attack_accuracy(np.zeros(16), np.ones(8)) == 0.5, "an inverted attack is not credited"
    inverted = metrics.membership_metrics(-members, -nonmembers, n_bootstrap=0)
    assert inverted["auc"] < 0.5 and inverted["advantage"] == pytest.approx(out["advantage"])


def test_bootstrap_interval_contains_the_estimate_and_bad_input_is_rejected():
    rng = np.random.default_rng(0)
    out = metrics.membership_metrics(rng.normal(1, 1, 200), rng.normal(0, 1, 200), n_bootstrap=200)
    assert out["auc_lo"] < out["auc"] < out["auc_hi"] and 0.7 < out["auc"] < 0.85
    with pytest.raises(ValueError, match="need members and non-members"):
        metrics.roc_auc([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([np.nan], [0.1])


def test_metrics_by_domain_has_a_pooled_row():
    scores = pd.DataFrame({"domain": ["a"] * 4 + ["b"] * 4, "is_member": [True, True, False, False] * 2,
                           "score": [3, 2, 1, 0, 0, 1, 2, 3]})
    table = metrics.metrics_by_domain(scores, n_bootstrap=0).set_index("domain")
    assert table.loc["a", "auc"] == 1.0 and table.loc["b", "auc"] == 0.0 and table.loc["pooled", "auc"] == 0.5


def test_loss_scores_are_repeatable_and_independent_of_batch_size(smoke_params, smoke_data):
    model = models.DiffusionModel(models.build_miniature(smoke_params, smoke_data.meta["text"]))
    rows = smoke_data.pretraining_set().head(5)
    images, captions = smoke_data.load_images(rows, 16), list(rows["text"])
    a = mia.loss_scores(model, images, captions, timesteps=2, noise_draws=2, batch_size=5)
    b = mia.loss_scores(model, images, captions, timesteps=2, noise_draws=2, batch_size=2)
    assert a.shape == (5,) and (a < 0).all()
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, mia.loss_scores(model, images, captions, timesteps=2, noise_draws=2, seed=1))


def test_loss_score_equals_a_hand_rolled_denoising_error(smoke_params, smoke_data):
    model = models.DiffusionModel(models.build_miniature(smoke_params, smoke_data.meta["text"]))
    rows = smoke_data.pretraining_set().head(1)
    x0, text = smoke_data.load_images(rows, 16), list(rows["text"])
    noise = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(noise_seed("attack", 7, 0)))
    expected = 0.0
    with torch.no_grad():
        for k, t in enumerate([250, 750]):
            tt = torch.tensor([t])
            a = model.alphas_cumprod[t]
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise[k:k + 1]
            expected += (model.predict_noise(xt, tt, model.encode_text(text)) - noise[k:k + 1]).pow(2).mean().item()
    got = mia.loss_scores(model, x0, text, timesteps=2, noise_draws=1, seed=7)
    assert got[0] == pytest.approx(-expected / 2, rel=1e-4)


def test_nearest_neighbours_find_planted_copies():
    gen = torch.Generator().manual_seed(0)
    refs = torch.rand((50, 3, 8, 8), generator=gen) * 2 - 1
    queries = torch.cat([refs[[7, 31]], torch.rand((3, 3, 8, 8), generator=gen) * 2 - 1])
    d, i = extraction.nearest_neighbours(queries, refs, batch_size=2)  # whole-image RMS (tiles=1)
    assert i[:2].tolist() == [7, 31] and torch.allclose(d[:2], torch.zeros(2), atol=1e-4)
    assert (d[2:] > 0.3).all()
    brute = ((queries[:, None] - refs[None]) ** 2).flatten(2).mean(-1)
    assert torch.equal(i, brute.argmin(1)) and torch.allclose(d, brute.min(1).values.sqrt(), atol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        extraction.nearest_neighbours(queries, refs[:, :, :4])


def test_tiled_distance_is_the_largest_per_tile_rms():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand((3, 3, 8, 8), generator=gen), torch.rand((5, 3, 8, 8), generator=gen)
    d, i = extraction.nearest_neighbours(a, b, tiles=2)
    tiles = [(slice(r, r + 4), slice(c, c + 4)) for r in (0, 4) for c in (0, 4)]
    brute = torch.stack([((a[:, None, :, r, c] - b[None, :, :, r, c]) ** 2).flatten(2).mean(-1).sqrt()
                         for r, c in tiles]).amax(0)
    assert torch.equal(i, brute.argmin(1)) and torch.allclose(d, brute.min(1).values, atol=1e-5)
    with pytest.raises(ValueError, match="tile grid"):
        extraction.nearest_neighbours(a, b, tiles=3)


def test_extraction_counts_planted_copies_once_per_training_image_and_ignores_non_copies():
    gen = torch.Generator().manual_seed(2)
    training = torch.rand((40, 3, 16, 16), generator=gen) * 2 - 1
    rows = pd.DataFrame({"file_name": [f"img{i}.png" for i in range(40)], "domain": ["A"] * 20 + ["B"] * 20})
    heldout = torch.rand((30, 3, 16, 16), generator=gen) * 2 - 1
    calibration = extraction.calibrate_threshold(heldout, training, budget=10, false_positives=0.05, tiles=4)
    threshold = calibration.threshold
    # a copy that is only half right: close on average, far on one half; tiled L2 must not call it a copy
    half = training[5].clone()
    half[:, :8] = torch.rand((3, 8, 16), generator=gen) * 2 - 1
    noisy_copy = training[12] + 0.01 * torch.randn((3, 16, 16), generator=gen)
    generations = torch.stack([training[3], training[3], noisy_copy, training[25], half,
                               *(torch.rand((5, 3, 16, 16), generator=gen) * 2 - 1)])
    prompted = ["A"] * 5 + ["B"] * 5
    matches = extraction.match_generations(generations, prompted, training, rows, threshold, tiles=4)
    assert matches["extracted"].tolist() == [True, True, True, True] + [False] * 6
    assert matches["nearest_file"].tolist()[:4] == ["img3.png", "img3.png", "img12.png", "img25.png"]
    counts = extraction.extraction_counts(matches, calibration.false_positive_rate).set_index("domain")
    # domain A's prompt copied its own img3 (twice) and img12, and domain B's img25
    assert counts.loc["A", list(extraction.COUNTS)].tolist() == [5, 3, 1, 2, 1]
    assert counts.loc["B", list(extraction.COUNTS)].tolist() == [5, 0, 0, 0, 0]
    assert counts["expected_false_positives"].tolist() == pytest.approx([5 * calibration.false_positive_rate] * 2)
    whole_image, _ = extraction.nearest_neighbours(half[None], training)
    assert whole_image.item() < matches["distance"].iloc[4], "the half copy is closer on average than per tile"
    with pytest.raises(ValueError, match="prompted domains"):
        extraction.match_generations(generations, prompted[:3], training, rows, threshold)
    with pytest.raises(ValueError, match="false_positives"):
        extraction.calibrate_threshold(heldout, training, budget=10, false_positives=1.5)


def _world_tensors(params):
    images, meta = world.generate_world(world.WorldSpec.from_params(params))
    pixels = torch.stack([torch.from_numpy(np.array(i, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                          for i in images])
    return pixels, meta


def test_novel_images_almost_never_count_as_extracted_while_near_copies_do():
    # the mini world with 300 more non-members per identity: the first 16 calibrate (as on mini), the rest are
    # realistic new photos of the same identities that no threshold has seen
    mini = load_profile("mini")
    pixels, meta = _world_tensors(dataclasses.replace(mini, nonmembers_per_domain=316))
    photo = meta.groupby(["domain", "split"]).cumcount().to_numpy()
    heldout = meta["split"].eq("nonmember").to_numpy()
    training, calibration_set, novel = pixels[~heldout], pixels[heldout & (photo < 16)], pixels[heldout & (photo >= 16)]
    budget = mini.extraction_samples * mini.private_domains
    calibration = extraction.calibrate_threshold(calibration_set, training, budget, false_positives=0.05, tiles=4)
    assert calibration.expected_false_positives() <= 0.05 + 1e-9
    assert calibration.threshold <= extraction.CAP_FRACTION * calibration.tail.smallest
    novel_distances, _ = extraction.nearest_neighbours(novel, training, tiles=4)
    assert int((novel_distances <= calibration.threshold).sum()) == 0, "a new photo counted as a copy"
    # a naive rule, the 1st percentile of the calibration distances, calls about 1% of new photos copies
    naive, _ = extraction.nearest_neighbours(calibration_set, training, tiles=4)
    assert (novel_distances <= float(np.percentile(naive.numpy(), 1))).float().mean() > 0.005
    # near-copies: re-rendering noise, 3% brighter, an eighth of a pixel to the side
    gen = torch.Generator().manual_seed(0)
    near = torch.cat([training + 0.03 * torch.randn(training.shape, generator=gen), (training + 1) * 1.03 - 1,
                      0.875 * training + 0.125 * torch.roll(training, 1, dims=3)])
    near_distances, _ = extraction.nearest_neighbours(near, training, tiles=4)
    assert bool((near_distances <= calibration.threshold).all()), "a near-copy of a training image was missed"


def test_nonmember_shift_leaves_the_extraction_threshold_as_it_is(monkeypatch):
    # the threshold describes novel images of the members' distribution: on a shifted mini world it is
    # calibrated on the unshifted twins of the same non-members (same file names), so it equals the plain one
    calibrate, heldout = extraction.calibrate_threshold, {}

    def recording(images, *args):
        heldout[shift] = images
        return calibrate(images, *args)

    monkeypatch.setattr(extraction, "calibrate_threshold", recording)
    thresholds, training, data = {}, {}, {}
    for shift in (0.0, 1.0):
        params = load_profile("mini", nonmember_shift=shift)
        data[shift] = world.load_data(params)
        rows, training[shift] = suite.training_images(data[shift], params.image_size)
        thresholds[shift] = suite.extraction_calibration(data[shift], data[shift].private_domains, training[shift],
                                                         params, generations=400).threshold
    assert torch.equal(training[1.0], training[0.0]), "the shift leaves the members as they are"
    assert thresholds[1.0] == thresholds[0.0]
    assert torch.equal(heldout[1.0], heldout[0.0]), "the held-out images used are the unshifted ones"
    rows = pd.concat([data[1.0].split(d, "nonmember") for d in data[1.0].private_domains])
    shifted = data[1.0].load_images(rows, params.image_size)
    assert not torch.equal(shifted, heldout[0.0])
    # what the shifted non-members themselves would give: a looser threshold, more copies counted
    leaked = calibrate(shifted, training[1.0], 400, params.extraction_false_positives, params.extraction_tiles)
    assert leaked.threshold > 1.2 * thresholds[0.0]


def test_novelty_tail_recovers_a_weibull_and_refuses_what_it_cannot_fit():
    rng = np.random.default_rng(0)
    tail = extraction.fit_novelty_tail(0.5 * rng.weibull(6.0, 4000))
    assert tail.shape == pytest.approx(6.0, rel=0.1) and tail.scale == pytest.approx(0.5, rel=0.03)
    assert tail.rate(tail.quantile(1e-5)) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="at least 3"):
        extraction.fit_novelty_tail(np.array([0.3, 0.4]))
    with pytest.raises(ValueError, match="identical to a training image"):
        extraction.fit_novelty_tail(np.array([0.0, 0.3, 0.4]))


def test_matches_carry_the_copied_members_duplication_class_and_the_distance_to_the_prompted_identity():
    gen = torch.Generator().manual_seed(3)
    training = torch.rand((12, 3, 8, 8), generator=gen) * 2 - 1
    rows = pd.DataFrame({"file_name": [f"img{i}.png" for i in range(12)], "domain": ["A"] * 6 + ["B"] * 6,
                         "duplicates": [32, 8, 1, 1, 1, 1, 4, 1, 1, 1, 1, 1]})
    novel = torch.rand((1, 3, 8, 8), generator=gen) * 2 - 1
    # A's 32x member; B's 4x member under A's prompt; a novel image under A's prompt; C has no training images
    generations = torch.cat([training[[0, 6]], novel, training[[1]]])
    prompted = ["A", "A", "A", "C"]
    matches = extraction.match_generations(generations, prompted, training, rows, threshold=0.01)
    brute = ((generations[:, None] - training[None]) ** 2).flatten(2).mean(-1).sqrt()  # whole-image RMS
    assert matches["extracted"].tolist() == [True, True, False, True]
    assert matches["nearest_duplicates"].tolist() == [32, 4, int(rows["duplicates"].iloc[int(brute[2].argmin())]), 8]
    assert matches["distance"].tolist()[:2] == [0, 0]
    assert matches["own_distance"].iloc[0] == 0, "a copy of an own member is at distance 0 from its identity"
    own = brute[:, :6].min(1).values  # the nearest of domain A's images
    assert matches["own_distance"].iloc[1] == pytest.approx(own[1].item(), abs=1e-5) and own[1] > 0.3
    assert matches["own_distance"].iloc[2] == pytest.approx(own[2].item(), abs=1e-5)
    assert np.isnan(matches["own_distance"].iloc[3]) and matches["own_classes"].tolist() == ["1,8,32"] * 3 + [""]
    assert (matches["own_distance"].fillna(np.inf) >= matches["distance"] - 1e-6).all()
    # CLIP candidates that leave out the prompted domain: the nearest is searched among the candidates only, for
    # every domain alike (searching the prompted domain in full would favour it), so A's copy goes unseen there,
    # while own_distance still searches A's images exhaustively and lies below the approximate nearest
    other = [torch.arange(6, 12)] * 4
    restricted = extraction.match_generations(generations, prompted, training, rows, 0.01, candidates=other)
    assert restricted["nearest_domain"].tolist() == ["B"] * 4
    assert restricted["nearest_file"].iloc[1] == "img6.png"
    assert restricted["distance"].to_numpy() == pytest.approx(brute[:, 6:].min(1).values.numpy(), abs=1e-5)
    assert restricted["extracted"].tolist() == [False, True, False, False]
    pd.testing.assert_series_equal(restricted["own_distance"], matches["own_distance"])
    assert restricted["own_distance"].iloc[0] == 0 < restricted["distance"].iloc[0]
    everything = extraction.match_generations(generations, prompted, training, rows, 0.01,
                                              candidates=[torch.arange(12)] * 4)
    pd.testing.assert_frame_equal(everything, matches, check_exact=False, atol=1e-6)
    unlabelled = extraction.match_generations(generations, prompted, training, rows.drop(columns="duplicates"), 0.01)
    assert unlabelled["nearest_duplicates"].tolist() == [1] * 4 and set(unlabelled["own_classes"]) == {"1", ""}


def _matches(nearest: list, domain: str = "A", classes: str = "1,8,32") -> pd.DataFrame:
    """Per generation (file, its domain, its duplicates, distance, own distance); a distance 0 is a copy."""
    file, owner, duplicates, distance, own_distance = zip(*nearest, strict=True)
    return pd.DataFrame({"domain": domain, "generation": range(len(nearest)), "nearest_file": file,
                         "nearest_domain": owner, "nearest_duplicates": duplicates, "distance": distance,
                         "own_distance": own_distance, "extracted": np.array(distance) == 0, "own_classes": classes})


def test_counts_by_duplication_class_and_drift_on_a_constructed_case():
    a = _matches([("a32", "A", 32, 0.0, 0.0), ("a32", "A", 32, 0.0, 0.0), ("a8", "A", 8, 0.0, 0.0),
                  ("b4", "B", 4, 0.0, 0.3), ("a1", "A", 1, 0.2, 0.2), ("a1", "A", 1, 0.4, 0.4)])
    b = _matches([("b4", "B", 4, 0.0, 0.0), ("a1", "A", 1, 0.5, 0.6)], domain="B", classes="1,4")
    matches = pd.concat([a, b], ignore_index=True)
    training = pd.DataFrame({"domain": ["A"] * 5 + ["B"] * 3, "duplicates": [32, 8, 1, 1, 1, 4, 1, 1]})
    table = extraction.counts_by_duplication(matches, training).set_index(["domain", "duplicates"])
    assert table.index.tolist() == [("A", 32), ("A", 8), ("A", 1), ("B", 4), ("B", 1),
                                    ("pooled", 32), ("pooled", 8), ("pooled", 4), ("pooled", 1)]
    columns = ["members", "distinct_own", "extracted_own", "generations"]
    # A copied its 32x member twice and its 8x once; its copy of B's 4x member is not an own copy
    assert table.loc["A", columns].to_numpy().tolist() == [[1, 1, 2, 6], [1, 1, 1, 6], [3, 0, 0, 6]]
    assert table.loc["B", columns].to_numpy().tolist() == [[1, 1, 1, 2], [2, 0, 0, 2]]
    assert table.loc["pooled", columns].to_numpy().tolist() == [[1, 1, 2, 6], [1, 1, 1, 6], [1, 1, 1, 2],
                                                                [5, 0, 0, 8]]
    assert "members" not in extraction.counts_by_duplication(matches)
    drift = extraction.drift_table(matches).set_index("domain")
    # A's distances 0 0 0 0 .2 .4, own distances 0 0 0 .2 .3 .4; 5 of 6 nearest images are A's
    assert drift.loc["A", ["generations", "nearest_median", "nearest_q90", "own_nearest_median",
                           "own_nearest_q75", "identity_accuracy"]].tolist() == pytest.approx([6, 0, 0.3, 0.1,
                                                                                               0.275, 5 / 6])
    assert drift.loc["B", ["nearest_median", "own_nearest_q25", "identity_accuracy"]].tolist() == \
        pytest.approx([0.25, 0.15, 0.5])
    with pytest.raises(ValueError, match="own_distance"):
        extraction.drift_table(matches.drop(columns="own_distance"))
