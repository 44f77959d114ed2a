"""Throughput of the miniature target on this machine (a benchmark, not a test).

Prints training images/s and sampling images/s (one DDIM step = one image-step through the UNet, with
classifier-free guidance doubling the batch), the FLOPs each takes (counted by torch's FlopCounterMode), and
the fraction of this machine's measured fp32 matmul FLOP/s they reach. With ``--methods`` it also times the
fine-tuning steps/s of every method on the profile's SP set (needs the profile's target, i.e. notebook 01
run once): each method runs twice, with few and more steps, and the difference removes the fixed cost of
loading and saving. With ``--attacks`` it times every membership-inference attack (images/s and UNet calls
per image) and extraction matching. Usage:

    python benchmarks/bench_target.py [--profile mini] [--repeats 5] [--attacks] [--methods]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from s2l_utils import models, world
from s2l_utils.config import load_profile
from s2l_utils.training import denoising_loss


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_flops_per_second(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", action="store_true", help="also time fine-tuning steps/s per method")
    parser.add_argument("--attacks", action="store_true", help="also time every attack and extraction matching")
    args = parser.parse_args()
    params = load_profile(args.profile)
    data = world.load_data(params)
    pipe = models.build_miniature(params, data.meta["text"])
    model = models.DiffusionModel(pipe)
    rows = data.pretraining_set().head(params.pretrain_batch_size)
    images, captions = data.load_images(rows, params.image_size), list(rows["text"])
    params_to_train = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    optimizer = torch.optim.AdamW(params_to_train, lr=1e-4)

    def train_step():
        loss = denoising_loss(model, model.encode(images), model.encode_text(captions),
                              torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    prompts = [world.domain_prompt(d) for d in data.private_domains]
    prompts = (prompts * params.pretrain_batch_size)[:params.pretrain_batch_size]
    steps = 10

    def sample():
        with torch.no_grad():
            pipe(prompts, num_inference_steps=steps, guidance_scale=params.guidance_scale, output_type="pt")

    peak = matmul_flops_per_second(repeats=args.repeats)
    train_s, train_flops = best_seconds(train_step, args.repeats), count_flops(train_step)
    print(f"training: {len(images) / train_s:.1f} images/s (batch {len(images)}), "
          f"{train_flops / train_s / 1e9:.1f} GFLOP/s = {train_flops / train_s / peak:.1%} of matmul peak")
    sample_s, sample_flops = best_seconds(sample, args.repeats), count_flops(sample)
    print(f"sampling: {len(prompts) / sample_s:.1f} images/s at {steps} DDIM steps with guidance "
          f"({len(prompts) * steps / sample_s:.0f} image-steps/s), "
          f"{sample_flops / sample_s / 1e9:.1f} GFLOP/s = {sample_flops / sample_s / peak:.1%} of matmul peak")
    print(f"machine: {torch.get_num_threads()} threads, fp32 matmul peak measured at {peak / 1e9:.1f} GFLOP/s; "
          f"UNet {sum(p.numel() for p in pipe.unet.parameters()):,} parameters ({args.profile} profile)")
    if args.attacks:
        bench_attacks(params, data, pipe, args.repeats)
    if args.methods:
        bench_methods(params)


def bench_attacks(params, data, pipe, repeats: int) -> None:
    """Images/s of each membership-inference attack (and its UNet calls per image), and the speed of
    extraction matching: 10k generations against 10k training images with the tiled L2."""
    from s2l_utils.attacks import extraction, suite

    rows = data.pretraining_set().head(params.attack_batch_size)
    images, captions = data.load_images(rows, params.image_size), list(rows["text"])
    model = models.DiffusionModel(pipe)
    print(f"attacks, batch {len(images)}:")
    for attack, score in suite.SCORERS.items():
        seconds = best_seconds(functools.partial(score, model, images, captions, params), repeats)
        calls = suite.UNET_CALLS[attack](params)
        print(f"  {attack:12s} {len(images) / seconds:7.1f} images/s, {calls:3d} UNet calls per image")
    queries = torch.rand(10_000, 3, params.image_size, params.image_size) * 2 - 1
    references = torch.rand(10_000, 3, params.image_size, params.image_size) * 2 - 1
    seconds = best_seconds(lambda: extraction.nearest_neighbours(queries, references, params.extraction_tiles), 1)
    print(f"extraction matching: 10k x 10k tiled L2 ({params.extraction_tiles}x{params.extraction_tiles} tiles, "
          f"{params.image_size} px) in {seconds:.1f} s = {1e8 / seconds / 1e6:.0f} M pairs/s")


def bench_methods(params, short: int = 10, long: int = 40) -> None:
    import dataclasses
    import tempfile
    from pathlib import Path

    from s2l_utils import finetune, s2l

    setting = s2l.prepare(params, "cpu", progress=False)
    print(f"fine-tuning, batch {params.ft_batch_size}, {len(setting.sp_set)} SP images:")
    for method in finetune.METHODS:
        if not any(part.trains for part in finetune.get_method(method).build(params)):
            continue
        seconds = []
        for steps in (short, long):
            with tempfile.TemporaryDirectory() as out:
                tuned = dataclasses.replace(params, method=method, ft_steps=steps)
                seconds.append(finetune.finetune(method, tuned, setting.sp_set, Path(out), setting.domain,
                                                 setting.prior_set, "cpu", progress=False).seconds)
        rate = (long - short) / (seconds[1] - seconds[0])
        print(f"  {method:18s} {rate:5.1f} steps/s = {rate * params.ft_batch_size:6.1f} images/s")


if __name__ == "__main__":
    main()
