"""Does the number of sampling steps decide what a target copies? An exploratory diagnostic (not a test).

The S2L cells draw SP sets with ``sp_steps`` DDIM steps (50 on ``mini``) and extraction generations with
``extraction_steps`` (10). Part 1 draws 64 generations of one domain's prompt from a target at each step count
and counts near-copies of the domain's most duplicated member (extraction's calibrated threshold, from the
target's cached results). Part 2 (``--cells``) runs S2L cells of that domain with SP sets drawn at
``--sp-steps`` and prints copies of that member per condition, beside the same cells at the profile's SP steps
when they are cached. Needs the target's cells (a regime shard run in the same ``runs/``). Usage:

    python benchmarks/sampler_steps.py --widths 32,64 --domain "Kais Isbel" [--cells --sp-steps 10]
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd

from s2l_utils import config, experiment, pretrain, sampling, store, world
from s2l_utils.attacks.extraction import nearest_neighbours


def heaviest_member(data: world.ImageFolderData, domain: str) -> pd.Series:
    """The domain's most duplicated pre-training image."""
    rows = data.pretraining_set()
    return rows[rows["domain"] == domain].sort_values("duplicates", ascending=False).iloc[0]


def copies_by_steps(params, data, target, member: pd.Series, threshold: float, steps=(10, 50), samples: int = 64):
    """Per step count: generations of ``member``'s domain prompt that copy it, and their median distance to the
    nearest training image (extraction's noise stream and guidance)."""
    domain = member["domain"]
    training_rows = data.pretraining_set()
    training = data.load_images(training_rows, params.image_size)
    index = training_rows.index[training_rows["file_name"] == member["file_name"]][0]
    out = []
    for n in steps:
        images = sampling.generate(target, [world.domain_prompt(domain)] * samples, "extraction", params.seed, n,
                                   params.guidance_scale, batch_size=params.attack_batch_size, progress=False)
        distance, nearest = nearest_neighbours(images, training, params.extraction_tiles)
        out.append({"steps": n, "samples": samples,
                    "copies": int(((distance <= threshold) & (nearest == index)).sum()),
                    "median_nearest": float(distance.median())})
    return pd.DataFrame(out)


def cell_copies(params, data, target, member_file: str) -> pd.DataFrame:
    """Run (or read back) one cell and count, per condition, its generations that copy ``member_file``."""
    _, matches = experiment.run_cell(params, data, target, experiment.cell_dir(params, target),
                                     ("s2l", "cross_domain", "real_nonmember"), progress=False)
    copies = matches["extracted"] & (matches["nearest_file"] == member_file)
    return (matches.assign(copies=copies).groupby("condition", sort=False)
            .agg(generations=("copies", "size"), copies=("copies", "sum"),
                 median_nearest=("distance", "median")).reset_index())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--widths", default="32,64", help="the target's UNet widths")
    parser.add_argument("--domain", default="Kais Isbel")
    parser.add_argument("--cells", action="store_true", help="also run S2L cells with SP sets at --sp-steps")
    parser.add_argument("--sp-steps", type=int, default=10)
    parser.add_argument("--methods", default="lora,dreambooth")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    params = config.load_profile(args.profile, unet_channels=[int(w) for w in args.widths.split(",")],
                                 target_domain=args.domain)
    data = world.load_data(params)
    if args.domain not in data.private_domains:
        raise SystemExit(f"unknown domain {args.domain!r}; use one of {data.private_domains}")
    target = pretrain.load_target(params, "cpu")
    cached = experiment.target_results_dir(params, target) / store.CELL_EXTRACTION
    if not cached.is_file():
        raise SystemExit(f"no cached target results at {cached}: run a regime shard on this target first")
    threshold = float(pd.read_parquet(cached)["threshold"].iloc[0])
    member = heaviest_member(data, args.domain)
    print(f"{args.domain}: heaviest member {member['file_name']} ({member['duplicates']}x), threshold "
          f"{threshold:.4f}, guidance {params.guidance_scale:g}")
    print(copies_by_steps(params, data, target, member, threshold).to_string(index=False), flush=True)
    if not args.cells:
        return
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for steps in (params.sp_steps, args.sp_steps):
                cell = dataclasses.replace(params, method=method, seed=seed, sp_steps=steps)
                if steps == params.sp_steps and not experiment.cell_dir(cell, target).joinpath("s2l").is_dir():
                    continue  # the profile's SP steps only where a shard already ran them
                table = cell_copies(cell, data, target, member["file_name"])
                print(f"\n{method} seed {seed}, SP set at {steps} steps:\n{table.to_string(index=False)}", flush=True)


if __name__ == "__main__":
    main()
