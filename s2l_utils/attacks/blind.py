"""The blind baseline: how well members and non-members can be told apart WITHOUT the model.

Simple image statistics (colour, brightness, saturation, edge energy, a tiny thumbnail) and a regularised
logistic regression, cross-fitted on disjoint folds so that every image is scored by a classifier that never saw
it, averaged over ``REPEATS`` fold splits. Its scores have the MIA score format (attack ``blind``). A high AUC shows
separation that needs no model; an AUC at chance is only a lower bound on the separability.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import world
from ..config import ConfigError

ATTACK = "blind"
FEATURE_SIZE = 64  # images are read at most this large: colour and edge statistics need no more
THUMBNAIL = 4  # side of the thumbnail whose pixels are features (the coarse layout of the picture)
HISTOGRAM_BINS = 8  # per channel
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
BATCH = 256
REGULARISATION_C = 0.1  # strong L2: about 120 correlated features against a few hundred images per fold
REPEATS = 20  # independent fold splits whose out-of-fold scores are averaged


def image_features(images: torch.Tensor) -> np.ndarray:
    """(N, F) features of images (N, 3, H, W) in [-1, 1]: per-channel mean, std, quantiles and histogram,
    brightness and saturation statistics, gradient energy, and a ``THUMBNAIL``-pixel-square thumbnail.
    Computed ``BATCH`` images at a time (``torch.quantile`` refuses very large inputs)."""
    return np.concatenate([_batch_features(batch) for batch in images.split(BATCH)])


def _batch_features(images: torch.Tensor) -> np.ndarray:
    x = ((images.float() + 1) / 2).clamp(0, 1)
    pixels = x.flatten(2)  # (N, 3, H*W)
    value, low = pixels.max(1).values, pixels.min(1).values  # HSV value and the channel minimum, (N, H*W)
    saturation = (value - low) / value.clamp_min(1e-6)
    luminance = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    dx, dy = luminance.diff(dim=2).abs(), luminance.diff(dim=1).abs()
    histogram = torch.stack([torch.stack([torch.histc(channel, HISTOGRAM_BINS, 0, 1) for channel in image])
                             for image in pixels]) / pixels.shape[2]
    quantiles = torch.quantile(pixels, torch.tensor(QUANTILES), dim=2)  # (Q, N, 3)
    parts = [
        pixels.mean(2), pixels.std(2), quantiles.permute(1, 2, 0).flatten(1),
        histogram.flatten(1),
        torch.stack([value.mean(1), value.std(1), saturation.mean(1), saturation.std(1)], 1),
        torch.stack([dx.mean((1, 2)), dy.mean((1, 2)), (dx ** 2).mean((1, 2)) + (dy ** 2).mean((1, 2))], 1),
        torch.nn.functional.adaptive_avg_pool2d(x, THUMBNAIL).flatten(1),
    ]
    return torch.cat(parts, 1).double().numpy()


def cross_fit_folds(strata: pd.Series, is_member: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold (0 … folds-1): stratified on ``strata`` (e.g. domain x membership) where every stratum
    has at least ``folds`` images, else on membership alone."""
    labels = strata if strata.value_counts().min() >= folds else pd.Series(is_member)
    fold = np.empty(len(labels), int)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels.to_numpy())):
        fold[held_out] = k
    return fold


def out_of_fold_scores(features: np.ndarray, is_member: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Each image's member probability from the classifier fitted on the other folds (one cross-fit)."""
    score = np.empty(len(fold))
    for k in np.unique(fold):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=2000))
        classifier.fit(features[fold != k], is_member[fold != k])
        score[fold == k] = classifier.predict_proba(features[fold == k])[:, 1]
    return score


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """The fold-split random states of the ``repeats`` cross-fits of ``seed``: distinct, and independent of
    other seeds' (drawn from a ``SeedSequence`` of (seed, repeat))."""
    return [int(np.random.SeedSequence([seed, r]).generate_state(1)[0]) for r in range(repeats)]


def blind_scores(data: world.ImageFolderData, domains: list[str], image_size: int, seed: int = 0,
                 folds: int = 5, repeats: int = REPEATS) -> pd.DataFrame:
    """Out-of-fold member probabilities of a model-free classifier, pooled over the members and non-members of
    ``domains``: columns attack (``blind``), domain, file_name, is_member, score, one row per image. Each score
    is the mean of the image's out-of-fold probabilities over ``repeats`` independent ``folds``-fold splits.

    Images are read at ``min(image_size, FEATURE_SIZE)`` px, so 512 px real data stays cheap. Deterministic
    given ``seed``. Raises a ``ConfigError`` for ``folds < 2``, ``repeats < 1``, no or unknown domains, or
    fewer than ``folds`` members or non-members.
    """
    if folds < 2:
        raise ConfigError(f"the blind baseline needs folds >= 2, got {folds}")
    if repeats < 1:
        raise ConfigError(f"the blind baseline needs repeats >= 1, got {repeats}")
    if not domains:
        raise ConfigError("the blind baseline needs at least one domain")
    unknown = sorted(set(domains) - set(data.private_domains))
    if unknown:
        raise ConfigError(f"unknown private domains {unknown}. Private domains: {', '.join(data.private_domains)}")
    splits = {(d, s): data.split(d, s) for d in domains for s in world.SPLITS}
    empty = [f"{d} ({s})" for (d, s), part in splits.items() if part.empty]
    if empty:
        raise ConfigError(f"the blind baseline needs members and non-members of every domain; none in {empty}")
    rows = pd.concat(splits.values(), ignore_index=True)
    is_member = (rows["split"] == "member").to_numpy()
    for name, count in (("members", is_member.sum()), ("non-members", (~is_member).sum())):
        if count < folds:
            raise ConfigError(f"the blind baseline needs at least folds={folds} {name} in {domains}, got {count}")
    features = image_features(data.load_images(rows, min(image_size, FEATURE_SIZE)))
    strata = rows["domain"] + "|" + rows["split"]
    score = np.mean([out_of_fold_scores(features, is_member, cross_fit_folds(strata, is_member, folds, state))
                     for state in repeat_seeds(seed, repeats)], axis=0)
    return pd.DataFrame({"attack": ATTACK, "domain": rows["domain"], "file_name": rows["file_name"],
                         "is_member": is_member, "score": score})

