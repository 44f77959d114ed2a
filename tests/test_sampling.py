"""Generation streams: SP synthesis and extraction (and every other purpose) never share initial noise."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler

from s2l_utils import models, sampling, synthesis
from s2l_utils.attacks import suite
from s2l_utils.config import MAX_SEED, ConfigError, load_profile


class RecordingPipe:
    """Stands in for a pipeline: records the seed of each image's generator and returns blank images."""

    def __init__(self):
        self.unet = SimpleNamespace(device=torch.device("cpu"), config=SimpleNamespace(sample_size=4))
        self.scheduler = DDIMScheduler()
        self.seeds = []

    def __call__(self, prompts, generator, **_):
        self.seeds += [g.initial_seed() for g in generator]
        return SimpleNamespace(images=torch.zeros(len(prompts), 3, 4, 4))


def test_sp_synthesis_and_extraction_draw_disjoint_noise_for_any_seeds(smoke_params, smoke_data):
    domain = smoke_data.private_domains[0]
    sp, extraction = RecordingPipe(), RecordingPipe()
    for seed in (0, 1, 2, 7):
        params = dataclasses.replace(smoke_params, seed=seed, sp_level="name", sp_size=300, extraction_samples=300)
        synthesis.synthesize(sp, smoke_data, domain, params, progress=False)
        suite.generate_for_domains(extraction, [domain], params, progress=False)
    assert len(sp.seeds) == len(set(sp.seeds)) == 4 * 300, "every (seed, index) has its own noise"
    assert len(extraction.seeds) == len(set(extraction.seeds)) == 4 * 300
    assert not set(sp.seeds) & set(extraction.seeds), "no extraction generation reuses an SP image's noise"
    assert max(sp.seeds + extraction.seeds) < 2 ** 32, "torch's CPU generator would ignore higher bits"


def test_noise_seeds_are_bit_fields_and_out_of_range_values_are_refused():
    assert sampling.noise_seed("preview", 0, 0) == 0
    assert sampling.noise_seed("sp", 3, 5) == (1 << 29) | (3 << 19) | 5
    # torch's CPU generator keeps only a seed's low 32 bits: every seed must fit in them
    assert sampling.noise_seed(sampling.PURPOSES[-1], MAX_SEED - 1, 2 ** 19 - 1) < 2 ** 32
    assert len(sampling.PURPOSES) <= 8, "the purpose field has 3 bits"
    for purpose, seed, index, message in (("sp", -1, 0, "seed"), ("sp", MAX_SEED, 0, "seed"),
                                          ("sp", 0, 2 ** 19, "index"), ("training", 0, 0, "purpose")):
        with pytest.raises(ValueError, match=message):
            sampling.noise_seed(purpose, seed, index)
    pipe = RecordingPipe()
    with pytest.raises(ValueError, match="seed"):
        sampling.generate(pipe, ["photo of a person"], "extraction", seed=MAX_SEED, progress=False)
    assert pipe.seeds == [], "refused before any generation"
    with pytest.raises(ConfigError, match="seeds"):
        load_profile("smoke", seeds=[0, MAX_SEED])


def test_an_extraction_generation_differs_from_the_sp_image_of_the_same_index_and_prompt(smoke_params, smoke_data):
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    with torch.no_grad():  # an untrained UNet's output drowns the initial noise; a silent one leaves only the noise
        pipe.unet.conv_out.weight.zero_()
        pipe.unet.conv_out.bias.zero_()
    domain = smoke_data.private_domains[0]
    params = dataclasses.replace(smoke_params, sp_level="name", sp_size=2, extraction_samples=2, sp_steps=2,
                                 extraction_steps=2, sp_guidance=smoke_params.guidance_scale, sp_sampler="ddim")
    sp_images, meta = synthesis.synthesize(pipe, smoke_data, domain, params, progress=False)
    generations, _ = suite.generate_for_domains(pipe, [domain], params, progress=False)
    assert list(meta["text"]) == ["photo of " + domain] * 2  # same prompt, steps, guidance and sampler
    for i in range(2):
        assert (generations[i] - sp_images[i]).abs().mean() > 0.05, f"image {i} repeats the SP image's noise"


def test_noise_level_sp_images_and_the_loss_attack_never_share_noise(monkeypatch, smoke_params, smoke_data):
    """At sp_level=noise the SP images are Gaussian noise: the loss attack must not score with those same noises."""
    from s2l_utils.attacks import mia
    from s2l_utils.models import DiffusionModel

    model = DiffusionModel(models.build_miniature(smoke_params, smoke_data.meta["text"]))
    recorded, real_generator = [], torch.Generator

    def recording_generator(*args, **kwargs):
        generator = real_generator(*args, **kwargs)
        return SimpleNamespace(manual_seed=lambda seed: (recorded.append(seed), generator.manual_seed(seed))[1])

    monkeypatch.setattr(torch, "Generator", recording_generator)
    synthesis.noise_images(8, 8, seed=0)
    sp_seeds, recorded[:] = set(recorded), []
    mia.loss_scores(model, torch.zeros(8, 3, 16, 16), ["photo of a person"] * 8, timesteps=2, noise_draws=1, seed=0)
    assert len(sp_seeds) == 8 and len(set(recorded)) >= 8
    assert not sp_seeds & set(recorded)
