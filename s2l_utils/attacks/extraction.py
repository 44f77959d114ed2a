"""Data extraction, Carlini-style: generate many images for a domain prompt, match each against every
pre-training image, and count the generations that are near-copies of a training image.

The distance is Carlini et al.'s *tiled* L2: the images are cut into a grid of tiles and the distance is the
largest per-tile RMS difference, so a generation counts as a copy only if it matches *everywhere*, not just
on average. The threshold that separates "copy" from "same identity" is calibrated on held-out data: real
non-member images of the private domains are never trained on, so their nearest distances to the training
set show how close a genuinely new image of a known identity can get. A low percentile of those distances is
the threshold; generations closer than that are called extracted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


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


def calibrate_threshold(heldout: torch.Tensor, training: torch.Tensor, percentile: float, tiles: int = 1) -> float:
    """The ``percentile``-th percentile of held-out images' nearest distances to the training images."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    if len(heldout) == 0:
        raise ValueError("no held-out images to calibrate the extraction threshold on")
    distances, _ = nearest_neighbours(heldout, training, tiles)
    return float(np.percentile(distances.numpy(), percentile))


def match_generations(generations: torch.Tensor, prompted_domains: list[str], training: torch.Tensor,
                      training_rows: pd.DataFrame, threshold: float, tiles: int = 1,
                      candidates: list[torch.Tensor] | None = None) -> pd.DataFrame:
    """One row per generation: its nearest training image, the distance, and whether it is extracted.

    ``candidates`` (from ``embedding_prefilter``) restricts each generation's search to those training images.
    """
    if len(generations) != len(prompted_domains):
        raise ValueError(f"{len(generations)} generations but {len(prompted_domains)} prompted domains")
    if len(training) != len(training_rows):
        raise ValueError(f"{len(training)} training images but {len(training_rows)} rows describing them")
    if candidates is None:
        distances, nearest = nearest_neighbours(generations, training, tiles)
    else:
        found = [nearest_neighbours(g[None], training[c], tiles) for g, c in zip(generations, candidates)]
        distances = torch.cat([d for d, _ in found])
        nearest = torch.stack([c[i[0]] for (_, i), c in zip(found, candidates)])
    rows = training_rows.iloc[nearest.numpy()]
    return pd.DataFrame({
        "domain": prompted_domains, "generation": np.arange(len(generations)),
        "nearest_file": rows["file_name"].to_numpy(), "nearest_domain": rows["domain"].to_numpy(),
        "nearest_index": nearest.numpy(), "distance": distances.numpy(),
        "extracted": distances.numpy() <= threshold})


def extraction_counts(matches: pd.DataFrame) -> pd.DataFrame:
    """Per prompted domain: generations, extracted generations, and *distinct* training images copied
    (plus how many of those belong to the prompted domain itself)."""
    def count(group: pd.DataFrame) -> pd.Series:
        hits = group[group["extracted"]]
        own = hits[hits["nearest_domain"] == group.name]
        return pd.Series({"generations": len(group), "extracted": len(hits),
                          "distinct_images": hits["nearest_file"].nunique(),
                          "distinct_own_domain": own["nearest_file"].nunique(),
                          "median_distance": float(group["distance"].median())})

    table = matches.groupby("domain", sort=False).apply(count, include_groups=False).reset_index()
    return table.astype({c: int for c in ("generations", "extracted", "distinct_images", "distinct_own_domain")})


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
