"""Data extraction, Carlini-style: generate many images for a domain prompt, match each against every
pre-training image by tiled L2 (``nearest_neighbours``), and count the generations that are near-copies.

The threshold (``calibrate_threshold``) comes from a Weibull fit to the lower tail of held-out images' nearest
distances, so that novel images essentially never count. Each match records its nearest image's duplication
class and the distance to the prompted identity's nearest image, for ``counts_by_duplication`` and ``drift_table``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .metrics import POOLED

ATTACK = "extraction"  # the attack name of the extraction counts in tidy tables


def _tiles(images: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, C, H, W) -> (grid², N, C·H/grid·W/grid): the images cut into a grid x grid of tiles."""
    n, c, h, w = images.shape
    if grid < 1 or h % grid or w % grid:
        raise ValueError(f"a {grid}x{grid} tile grid does not divide {h}x{w} images")
    tiles = images.reshape(n, c, grid, h // grid, grid, w // grid).permute(2, 4, 0, 1, 3, 5)
    return tiles.reshape(grid * grid, n, -1)


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, tiles: int = 1, batch_size: int = 1024):
    """For each query image, the distance to its nearest reference and that reference's index.

    The distance is the largest per-tile RMS difference over a ``tiles`` x ``tiles`` grid (``tiles=1``: the
    RMS over the whole image). The search runs in float32 blocks with the ||a||² + ||b||² − 2ab expansion per
    tile, so 10k x 10k comparisons take seconds; the winner's distance is then recomputed exactly.
    """
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"queries {tuple(queries.shape[1:])} and references {tuple(references.shape[1:])} "
                         "differ in shape")
    if len(references) == 0:
        raise ValueError("no reference images to match against")
    refs = _tiles(references.float(), tiles)
    ref_norms = refs.pow(2).sum(2)
    best_d, best_i = [], []
    for start in range(0, len(queries), batch_size):
        block = queries[start:start + batch_size]
        q = _tiles(block.float(), tiles)
        q_norms = q.pow(2).sum(2)
        worst = None
        for tile in range(len(refs)):
            d2 = torch.addmm(q_norms[tile][:, None] + ref_norms[tile][None], q[tile], refs[tile].T, alpha=-2)
            worst = d2 if worst is None else torch.maximum(worst, d2)
        index = worst.argmin(1)
        exact = _tiles((block.double() - references[index].double()), tiles).pow(2).mean(2).amax(0).sqrt()
        best_d.append(exact.float())
        best_i.append(index)
    return torch.cat(best_d), torch.cat(best_i)


# the threshold is at most this fraction of the smallest held-out distance: no flagged copy is nearer a novel image
CAP_FRACTION = 0.5


@dataclass(frozen=True)
class NoveltyTail:
    """A Weibull law fitted to the lower tail of novel images' nearest distances to the training set:
    P(distance <= x) = 1 - exp(-(x / scale) ** shape)."""

    scale: float
    shape: float
    smallest: float  # the smallest held-out distance observed
    count: int  # held-out images the fit saw

    def rate(self, distance: float) -> float:
        """The probability that a novel image lies within ``distance`` of some training image."""
        return float(-np.expm1(-(distance / self.scale) ** self.shape))

    def quantile(self, rate: float) -> float:
        return float(self.scale * (-np.log1p(-rate)) ** (1 / self.shape))


def fit_novelty_tail(distances: np.ndarray) -> NoveltyTail:
    """Least-squares Weibull plot of the lower half of ``distances`` (at least 3 of them), the part that
    decides how close a new image can come; the upper half does not bear on the threshold."""
    x = np.sort(np.asarray(distances, dtype=float))
    if len(x) < 3:
        raise ValueError(f"at least 3 held-out images are needed to calibrate the extraction threshold, got {len(x)}")
    if x[0] <= 0:
        raise ValueError("a held-out image is identical to a training image: the held-out set overlaps the "
                         "pre-training set, so it cannot show how close a new image gets")
    lower = max(3, -(-len(x) // 2))
    ranks = (np.arange(1, len(x) + 1) - 0.3) / (len(x) + 0.4)  # Benard's median ranks
    slope, intercept = np.polyfit(np.log(-np.log1p(-ranks[:lower])), np.log(x[:lower]), 1)
    if slope <= 0:
        raise ValueError("the held-out distances' lower tail is constant; there is no tail to fit")
    return NoveltyTail(scale=float(np.exp(intercept)), shape=float(1 / slope), smallest=float(x[0]), count=len(x))


@dataclass(frozen=True)
class Calibration:
    """The extraction threshold, the novel-image tail it comes from, and the budget it was chosen for."""

    threshold: float
    tail: NoveltyTail
    budget: int  # generations the false-positive target covers

    @property
    def false_positive_rate(self) -> float:
        """The fitted probability that one novel (non-copied) generation counts as extracted."""
        return self.tail.rate(self.threshold)

    def expected_false_positives(self, generations: int | None = None) -> float:
        """Novel images expected to count as extracted among ``generations`` (default: the budget)."""
        return (self.budget if generations is None else generations) * self.false_positive_rate


def calibrate_threshold(heldout: torch.Tensor, training: torch.Tensor, budget: int, false_positives: float,
                        tiles: int = 1) -> Calibration:
    """The threshold at which ``budget`` novel generations are expected to give ``false_positives`` copies, by the
    Weibull tail of the held-out images' nearest distances, capped at ``CAP_FRACTION`` x the smallest of them."""
    if budget < 1:
        raise ValueError(f"the generation budget must be >= 1, got {budget}")
    if not 0 < false_positives < 1:
        raise ValueError(f"false_positives must be in (0, 1): the expected novel images counted as copies over the "
                         f"whole budget, got {false_positives}")
    if len(heldout) == 0:
        raise ValueError("no held-out images to calibrate the extraction threshold on")
    distances, _ = nearest_neighbours(heldout, training, tiles)
    tail = fit_novelty_tail(distances.numpy())
    threshold = min(tail.quantile(false_positives / budget), CAP_FRACTION * tail.smallest)
    return Calibration(threshold=threshold, tail=tail, budget=budget)


def _own_nearest(generations: torch.Tensor, prompted_domains: list[str], training: torch.Tensor,
                 training_rows: pd.DataFrame, tiles: int) -> np.ndarray:
    """Per generation, the distance to the nearest training image of its *prompted* domain (NaN where the
    domain has no training images): one exhaustive search per domain."""
    prompted, domain_of = np.asarray(prompted_domains, dtype=object), training_rows["domain"].to_numpy()
    distance = np.full(len(prompted), np.nan)
    for domain in pd.unique(prompted):
        asked, own = np.flatnonzero(prompted == domain), np.flatnonzero(domain_of == domain)
        if len(own):
            distance[asked] = nearest_neighbours(generations[asked], training[own], tiles)[0].numpy()
    return distance


def _classes_by_domain(training_rows: pd.DataFrame) -> dict[str, str]:
    """Per domain, the duplication counts its training images come in, ascending and comma-separated ("1,4,32"):
    the classes its copies are counted in, carried in every match row so that each cell and condition of a
    domain reports the same classes, those with no copy included."""
    counts = _duplicates(training_rows)
    return {domain: ",".join(map(str, sorted(set(counts[training_rows["domain"].to_numpy() == domain]))))
            for domain in pd.unique(training_rows["domain"])}


def _duplicates(training_rows: pd.DataFrame) -> np.ndarray:
    """How often each training image appears in pre-training (1 each when the rows do not say)."""
    if "duplicates" not in training_rows:
        return np.ones(len(training_rows), dtype=int)
    return training_rows["duplicates"].to_numpy(int)


def match_generations(generations: torch.Tensor, prompted_domains: list[str], training: torch.Tensor,
                      training_rows: pd.DataFrame, threshold: float, tiles: int = 1,
                      candidates: list[torch.Tensor] | None = None) -> pd.DataFrame:
    """One row per generation: its nearest training image (file, domain, index, ``nearest_duplicates``: how
    often that image appears in pre-training), the distance, whether it is extracted, ``own_distance`` (to the
    nearest training image of the prompted domain, NaN when it has none) and ``own_classes`` (the prompted
    domain's duplication classes, ``_classes_by_domain``).

    ``candidates`` (from ``embedding_prefilter``) restricts each generation's search for its nearest training
    image to those candidates, every domain alike, so the nearest (and with it ``extracted`` and the identity
    accuracy) is approximate; ``own_distance`` still searches the prompted domain's own images exhaustively and
    may then lie below ``distance``.
    """
    if len(generations) != len(prompted_domains):
        raise ValueError(f"{len(generations)} generations but {len(prompted_domains)} prompted domains")
    if len(training) != len(training_rows):
        raise ValueError(f"{len(training)} training images but {len(training_rows)} rows describing them")
    own_distance = _own_nearest(generations, prompted_domains, training, training_rows, tiles)
    if candidates is None:
        distances, nearest = nearest_neighbours(generations, training, tiles)
        distances, nearest = distances.numpy(), nearest.numpy()
    else:
        found = [nearest_neighbours(g[None], training[c], tiles) for g, c in zip(generations, candidates, strict=True)]
        distances = torch.cat([d for d, _ in found]).numpy()
        nearest = torch.stack([c[i[0]] for (_, i), c in zip(found, candidates, strict=True)]).numpy()
    rows = training_rows.iloc[nearest]
    classes = _classes_by_domain(training_rows)
    return pd.DataFrame({
        "domain": prompted_domains, "generation": np.arange(len(generations)),
        "nearest_file": rows["file_name"].to_numpy(), "nearest_domain": rows["domain"].to_numpy(),
        "nearest_index": nearest, "nearest_duplicates": _duplicates(training_rows)[nearest],
        "distance": distances.astype(np.float32), "extracted": distances <= threshold,
        "own_distance": own_distance.astype(np.float32),
        "own_classes": [classes.get(d, "") for d in prompted_domains]})


COUNTS = ("generations", "extracted_own", "extracted_other", "distinct_own", "distinct_other")


def extraction_counts(matches: pd.DataFrame, false_positive_rate: float) -> pd.DataFrame:
    """Per prompted domain: generations; extracted generations that copy the prompted domain's *own* training
    images and those that copy *other* domains' images; the *distinct* training images copied of each kind
    (``distinct_own`` is the number comparable with the paper's 16.3); and the novel generations expected to
    count as extracted, ``generations x false_positive_rate``."""
    def count(group: pd.DataFrame) -> pd.Series:
        hits = group[group["extracted"]]
        own = hits["nearest_domain"] == group.name
        return pd.Series({"generations": len(group), "extracted_own": int(own.sum()),
                          "extracted_other": int((~own).sum()),
                          "distinct_own": hits.loc[own, "nearest_file"].nunique(),
                          "distinct_other": hits.loc[~own, "nearest_file"].nunique(),
                          "expected_false_positives": len(group) * false_positive_rate})

    table = matches.groupby("domain", sort=False).apply(count, include_groups=False).reset_index()
    return table.astype({c: int for c in COUNTS})


# what every match row holds beyond its domain and generation
MATCH_COLUMNS = ("nearest_file", "nearest_domain", "distance", "extracted", "nearest_duplicates", "own_distance",
                 "own_classes")
# the quantiles of the drift statistics, by the suffix of their names (linear interpolation, as np.quantile)
DRIFT_QUANTILES = {"q10": 0.10, "q25": 0.25, "median": 0.50, "q75": 0.75, "q90": 0.90}


def check_matches(matches: pd.DataFrame, columns=MATCH_COLUMNS) -> None:
    """Refuse matches that lack a column of ``columns`` instead of counting them wrong."""
    missing = [c for c in columns if c not in matches]
    if missing:
        raise ValueError(f"the extraction matches lack column(s) {', '.join(missing)}: they come from an older "
                         "match_generations (e.g. a cached cell or table); match the generations again")


def listed_classes(matches: pd.DataFrame) -> list[int]:
    """The duplication classes the rows' ``own_classes`` list (their union), largest first."""
    listed = {int(k) for text in pd.unique(matches["own_classes"]) for k in str(text).split(",") if k}
    return sorted(listed, reverse=True)


def counts_by_duplication(matches: pd.DataFrame, training_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per prompted domain and duplication class k of its training images (largest first), then ``pooled``
    over domains: ``generations`` of the domain's prompt, ``extracted_own`` (those copying an own member
    of class k), ``distinct_own`` (own members of class k copied), and with ``training_rows``, ``members``
    (the domain's training images of class k)."""
    check_matches(matches)
    rows = []
    for domain, group in matches.groupby("domain", sort=False):
        own = group[group["extracted"] & (group["nearest_domain"] == domain)]
        for k in listed_classes(group):
            hits = own[own["nearest_duplicates"] == k]
            rows.append({"domain": domain, "duplicates": k, "generations": len(group), "extracted_own": len(hits),
                         "distinct_own": hits["nearest_file"].nunique()})
    table = pd.DataFrame(rows, columns=["domain", "duplicates", "generations", "extracted_own", "distinct_own"])
    if training_rows is not None:
        members = training_rows.assign(duplicates=_duplicates(training_rows)).groupby(["domain", "duplicates"]).size()
        table["members"] = [int(members.get((d, k), 0))
                            for d, k in zip(table["domain"], table["duplicates"], strict=True)]
    pooled = table.drop(columns="domain").groupby("duplicates").sum().sort_index(ascending=False).reset_index()
    return pd.concat([table, pooled.assign(domain=POOLED)], ignore_index=True)


def drift_table(matches: pd.DataFrame, by: list[str] = ("domain",)) -> pd.DataFrame:
    """Where the generations of each group of ``by`` lie relative to the training data: the quantiles
    (``DRIFT_QUANTILES``) of their distance to the nearest training image (``nearest_median``, ...) and to the
    nearest training image of the prompted identity (``own_nearest_median``, ...), and ``identity_accuracy``,
    the share whose nearest training image is of the prompted domain. Fine-tuning that raises the distances
    moved the generations away from the training data."""
    check_matches(matches)
    grouped = matches.assign(identity=matches["nearest_domain"] == matches["domain"]).groupby(list(by), sort=False)
    table = grouped.size().rename("generations").to_frame()
    for prefix, column in (("nearest", "distance"), ("own_nearest", "own_distance")):
        for name, q in DRIFT_QUANTILES.items():
            table[f"{prefix}_{name}"] = grouped[column].quantile(q)
    table["identity_accuracy"] = grouped["identity"].mean()
    return table.reset_index()


@torch.no_grad()
def embedding_prefilter(generations: torch.Tensor, training: torch.Tensor, model_path: str, keep: int,
                        batch_size: int = 64) -> list[torch.Tensor]:
    """Optional CLIP pre-filter: for each generation, the indices of its ``keep`` most similar training images
    by cosine similarity of a local CLIP vision model's image embeddings (``model_path``: a folder with a
    ``CLIPVisionModelWithProjection`` and its image processor). Tiled L2 then only compares those candidates.
    """
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    processor = CLIPImageProcessor.from_pretrained(model_path, local_files_only=True)
    model = CLIPVisionModelWithProjection.from_pretrained(model_path, local_files_only=True).eval()

    def embed(images: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(images), batch_size):
            chunk = ((images[start:start + batch_size].clamp(-1, 1) + 1) / 2).float()
            pixels = processor(images=list(chunk), return_tensors="pt", do_rescale=False)["pixel_values"]
            out.append(torch.nn.functional.normalize(model(pixel_values=pixels).image_embeds, dim=-1))
        return torch.cat(out)

    similarity = embed(generations) @ embed(training).T
    return list(similarity.topk(min(keep, len(training)), dim=1).indices)
