import pytest
import torch

from s2l_utils import models, sampling
from s2l_utils.models import DiffusionModel


@pytest.fixture(scope="module")
def tokenizer():
    return models.build_tokenizer(models.caption_words(["photo of Velora Quint, smiling, blue background"]))


def test_tokenizer_round_trip_spells_world_words_as_single_tokens(tokenizer):
    text = "photo of velora quint, smiling, blue background"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 2 + 7 + 2  # BOS/EOS, 7 words of one token each, 2 commas
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ,", ",") == text
    unseen = tokenizer("zyx").input_ids
    assert len(unseen) > 3, "unknown words fall back to byte pieces"


def test_added_token_is_one_id_and_survives_save_and_load(tokenizer, tmp_path):
    before = len(tokenizer)
    assert tokenizer.add_tokens(["<s2l-token>"]) == 1
    new_id = tokenizer.convert_tokens_to_ids("<s2l-token>")
    assert new_id == before
    ids = tokenizer("photo of <s2l-token>").input_ids
    assert ids[1:-1] == [tokenizer.convert_tokens_to_ids("photo</w>"), tokenizer.convert_tokens_to_ids("of</w>"),
                         new_id]
    tokenizer.save_pretrained(tmp_path)
    reloaded = type(tokenizer).from_pretrained(tmp_path)
    assert reloaded("photo of <s2l-token>").input_ids == ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "photo of <s2l-token>"


def _generate(pipe):
    return sampling.generate(pipe, ["photo of Velora Quint", "photo of a person"], "preview", seed=5, steps=3,
                             guidance_scale=2.0, progress=False)


def test_pixel_pipeline_save_load_gives_identical_outputs(smoke_params, smoke_data, tmp_path):
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    before = _generate(pipe)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = models.load_pipeline(tmp_path / "pipe", device="cpu")
    assert type(loaded).__name__ == "PixelDiffusionPipeline"
    after = _generate(loaded)
    assert before.shape == (2, 3, smoke_params.image_size, smoke_params.image_size)
    assert torch.equal(before, after)
    for a, b in zip(pipe.unet.state_dict().values(), loaded.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_generation_is_seeded_and_independent_of_batch_size(smoke_params, smoke_data):
    # float64, so that batched and single matmuls round apart by ~1e-16 at most; generate returns float32, so
    # one float32 step (~1e-7) at most: more is a real batch dependence
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"]).to(dtype=torch.float64)
    prompts = ["photo of a person"] * 3
    one = sampling.generate(pipe, prompts, "preview", seed=1, steps=2, batch_size=1, progress=False)
    three = sampling.generate(pipe, prompts, "preview", seed=1, steps=2, batch_size=3, progress=False)
    other = sampling.generate(pipe, prompts, "preview", seed=2, steps=2, batch_size=3, progress=False)
    assert torch.allclose(one, three, atol=1e-6)
    assert not torch.allclose(one, other)
    assert not torch.allclose(one[0], one[1]), "each image has its own noise"


def test_latent_sd_pipeline_goes_through_the_same_interface(tokenizer, tmp_path):
    pipe = models.tiny_random_sd_pipeline(tokenizer, image_size=32)
    pipe.save_pretrained(tmp_path / "sd")
    loaded = models.load_pipeline(tmp_path / "sd", device="cpu")
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    model = DiffusionModel(loaded)
    assert model.is_latent and model.image_size == 32
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    x0 = model.encode(images)
    assert x0.shape == (2, 4, 16, 16)
    assert torch.equal(x0, model.encode(images)), "encoding uses the latent mean: repeatable"
    t = torch.tensor([10, 500])
    noise = torch.randn_like(x0)
    xt = model.add_noise(x0, noise, t)
    a = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(xt, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-5)
    eps = model.predict_noise(xt, t, model.encode_text(["photo of velora quint"] * 2))
    assert eps.shape == x0.shape
    assert model.decode(x0).shape == images.shape
    out = _generate(loaded)
    assert out.shape == (2, 3, 32, 32) and torch.equal(out, _generate(loaded))


def test_pixel_model_interface_is_identity_encoding(smoke_params, smoke_data):
    model = DiffusionModel(models.build_miniature(smoke_params, smoke_data.meta["text"]))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert not model.is_latent and torch.equal(model.encode(images), images)
    with pytest.raises(ValueError, match="model works at 16 px"):
        model.encode(torch.zeros(1, 3, 32, 32))


def test_missing_model_path_and_unreachable_hub_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model path not found"):
        models.load_pipeline(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline folder"):
        models.load_pipeline(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor loadable"):
        models.load_pipeline("no-such-org/no-such-model")  # conftest sets HF_HUB_OFFLINE=1
