"""Data extraction: match generations against training images."""

from __future__ import annotations

import torch


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor, batch_size: int = 1024):
    """For each query image, the L2 distance (per-pixel RMS) to its nearest reference and that reference's index.

    Computed in blocks with the ||a||² + ||b||² - 2ab expansion, so 10k x 10k comparisons take seconds.
    """
    if queries.shape[1:] != references.shape[1:]:
        raise ValueError(f"queries {tuple(queries.shape[1:])} and references {tuple(references.shape[1:])} "
                         "differ in shape")
    refs = references.flatten(1).double()
    ref_norms = refs.pow(2).sum(1)
    dims = refs.shape[1]
    best_d, best_i = [], []
    for start in range(0, len(queries), batch_size):
        q = queries[start:start + batch_size].flatten(1).double()
        d2 = (q.pow(2).sum(1, keepdim=True) + ref_norms[None] - 2 * q @ refs.T).clamp_min(0)
        d, i = d2.min(1)
        best_d.append((d / dims).sqrt().float())
        best_i.append(i)
    return torch.cat(best_d), torch.cat(best_i)
