"""Privacy attacks on diffusion models: membership inference (scores) and data extraction, plus their metrics."""
