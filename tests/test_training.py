import numpy as np
import pandas as pd
import pytest
import torch

from s2l_utils import config, models, pretrain, training
from s2l_utils.config import ConfigError
from s2l_utils.training import TrainSpec


def test_batches_cover_each_item_once_per_epoch():
    seen = torch.cat([training.batch_indices(10, 4, step, seed=1) for step in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:]), "each epoch has its own order"
    assert torch.equal(training.batch_indices(10, 4, 3, seed=1), training.batch_indices(10, 4, 3, seed=1))


def test_resumed_pretraining_equals_an_uninterrupted_run(smoke_params, smoke_data, tmp_path, monkeypatch):
    params = smoke_params  # 12 steps, checkpoint every 6, captions dropped at 10%
    assert params.caption_dropout > 0, "resume must stay bit-identical with caption dropout on"
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "straight"))
    straight, history = pretrain.pretrain_target(params, smoke_data, progress=False)
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "resumed"))
    _, partial = pretrain.pretrain_target(params, smoke_data, progress=False, stop_after=6)
    assert len(partial) == 6
    assert not (pretrain.target_dir(params) / pretrain.PIPELINE).exists(), "an interrupted run saves no pipeline"
    resumed, resumed_history = pretrain.pretrain_target(params, smoke_data, progress=False)
    pd.testing.assert_frame_equal(history, resumed_history)
    for module in ("unet", "text_encoder"):
        a, b = getattr(straight, module).state_dict(), getattr(resumed, module).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{module} weights differ after resume"
    untrained = models.build_miniature(params, smoke_data.meta["text"])
    assert not all(torch.equal(a, b) for a, b in zip(untrained.unet.state_dict().values(),
                                                     straight.unet.state_dict().values(), strict=True)), \
        "training moved weights"


def test_a_finished_target_is_loaded_not_retrained(smoke_params, smoke_data, tmp_path, monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    first, _ = pretrain.pretrain_target(smoke_params, smoke_data, progress=False)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained a cached target"))
    monkeypatch.setattr(pretrain, "train", lambda *a, **k: pytest.fail("retrained a cached target"))
    second, _ = pretrain.pretrain_target(smoke_params, smoke_data, progress=False)
    assert all(torch.equal(a, b)
               for a, b in zip(first.unet.state_dict().values(), second.unet.state_dict().values(), strict=True))
    assert pretrain.target_dir(smoke_params.__class__(**{**smoke_params.to_dict(), "seed": 9})) != \
        pretrain.target_dir(smoke_params)


def test_missing_target_and_bad_training_settings_raise_before_training(smoke_params, smoke_data, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run notebook 01_pretrain_target"):
        pretrain.load_target(smoke_params)
    with pytest.raises(ValueError, match="steps > 0"):
        TrainSpec(steps=0, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="learning rate"):
        TrainSpec(steps=3, batch_size=4, lr=0.0)
    sd_like = smoke_params.__class__(**{**smoke_params.to_dict(), "base_model": "some/model"})
    with pytest.raises(ConfigError, match="nothing to pretrain"):
        pretrain.pretrain_target(sd_like, smoke_data)


def test_training_only_moves_trainable_parameters(smoke_params, smoke_data):
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    model = models.DiffusionModel(pipe)
    frozen = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    pipe.text_encoder.requires_grad_(False)
    rows = smoke_data.pretraining_set()
    losses = training.train(model, {"unet": pipe.unet}, smoke_data.load_images(rows, 16), list(rows["text"]),
                            TrainSpec(steps=3, batch_size=4, lr=1e-3), progress=False)
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert all(torch.equal(frozen[k], v) for k, v in pipe.text_encoder.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    with pytest.raises(ValueError, match="captions"):
        training.train(model, {"unet": pipe.unet}, smoke_data.load_images(rows, 16), ["x"],
                       TrainSpec(steps=1, batch_size=4, lr=1e-3), progress=False)


def _recording(model, seen: list):
    """Wrap ``model.encode_text`` so every caption fed to the text encoder is recorded."""
    encode = model.encode_text

    def record(captions):
        seen.extend(captions)
        return encode(captions)
    model.encode_text = record
    return seen


def _train_recording(params, data, dropout, steps=30, **train_kwargs):
    pipe = models.build_miniature(params, data.meta["text"])
    model = models.DiffusionModel(pipe)
    rows = data.pretraining_set()
    seen = _recording(model, [])
    losses = training.train(model, {"unet": pipe.unet}, data.load_images(rows, params.image_size), list(rows["text"]),
                            TrainSpec(steps=steps, batch_size=8, lr=1e-3, caption_dropout=dropout), progress=False,
                            **train_kwargs)
    return seen, losses, list(rows["text"])


def test_caption_dropout_honours_its_rate_and_leaves_batches_and_noise_unchanged(smoke_params, smoke_data):
    dropped, dropped_losses, captions = _train_recording(smoke_params, smoke_data, 0.3)
    again, again_losses, _ = _train_recording(smoke_params, smoke_data, 0.3)
    plain, _, _ = _train_recording(smoke_params, smoke_data, 0.0)
    assert again == dropped and again_losses == dropped_losses, "dropout is deterministic"
    empty = [c == models.UNCONDITIONAL_PROMPT for c in dropped]
    assert len(dropped) == 240 and abs(sum(empty) / len(empty) - 0.3) < 0.09  # 3 binomial standard deviations
    expected = [captions[i] for step in range(30) for i in training.batch_indices(len(captions), 8, step, seed=0)]
    assert plain == expected, "dropout 0 feeds the batches of batch_indices unchanged"
    assert all(d == models.UNCONDITIONAL_PROMPT or d == p for d, p in zip(dropped, plain, strict=True)), \
        "dropout only blanks captions; batch order is its own stream"
    assert models.UNCONDITIONAL_PROMPT not in captions
    with pytest.raises(ValueError, match="caption_dropout"):
        TrainSpec(steps=3, batch_size=4, lr=1e-3, caption_dropout=1.0)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="caption_dropout"):
            config.load_profile("smoke", caption_dropout=bad)


def test_pipelines_guide_away_from_the_prompt_dropout_trains_on(smoke_params, smoke_data, monkeypatch):
    """The unconditional branch of the pixel pipeline and of SD's pipeline is exactly what a dropped caption trains."""
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    trained_on = models.DiffusionModel(pipe).encode_text([models.UNCONDITIONAL_PROMPT])
    encoded = []
    original = models.encode_prompts
    monkeypatch.setattr(models, "encode_prompts", lambda *args: encoded.append(original(*args)) or encoded[-1])
    pipe("photo of x", num_inference_steps=1, guidance_scale=3.0, output_type="pt")
    prompt_embeds, negative_embeds = encoded
    assert torch.equal(negative_embeds, trained_on) and not torch.equal(prompt_embeds, trained_on)
    sd = models.tiny_random_sd_pipeline(pipe.tokenizer)
    sd_negative = sd.encode_prompt("photo of x", "cpu", 1, True)[1]
    assert torch.equal(sd_negative, models.DiffusionModel(sd).encode_text([models.UNCONDITIONAL_PROMPT]))


def test_caption_dropout_teaches_the_unconditional_branch():
    """Trained with dropout, the empty prompt predicts nearly as well as the own caption; without, it does not.

    Four random 8 px images, each captioned by one word repeated 30 times so that every token carries it and
    the text pathway is learned within 300 steps (~10 s each).
    """
    params = config.make_params({"image_size": 8, "unet_channels": [8, 16], "text_width": 16})
    words = ["red", "green", "blue", "white"]
    images = torch.randint(0, 2, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    captions = [" ".join([word] * 30) for word in words]
    excess = {}
    for dropout in (0.0, 0.3):
        pipe = models.build_miniature(params, captions)
        model = models.DiffusionModel(pipe)
        training.train(model, {"unet": pipe.unet, "text_encoder": pipe.text_encoder}, images, captions,
                       TrainSpec(steps=300, batch_size=8, lr=1e-2, caption_dropout=dropout), progress=False)
        errors = pretrain.caption_errors(model, images, captions, words, timesteps=4, noise_draws=4)
        excess[dropout] = errors.set_index("condition")["vs_own"] - 1
        assert excess[dropout]["shuffled"] > excess[dropout]["empty"] > 0, "the model reads its captions"
    assert excess[0.3]["empty"] < excess[0.0]["empty"] / 3, excess


def test_caption_errors_are_repeatable_and_use_the_right_prompts(smoke_params, smoke_data, monkeypatch):
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    model = models.DiffusionModel(pipe)
    rows = smoke_data.pretraining_set()
    images, captions, domains = smoke_data.load_images(rows, 16), list(rows["text"]), list(rows["domain"])
    first = pretrain.caption_errors(model, images, captions, domains, timesteps=2, noise_draws=1)
    pd.testing.assert_frame_equal(first, pretrain.caption_errors(model, images, captions, domains, timesteps=2,
                                                                 noise_draws=1))
    assert first["condition"].tolist() == ["own", "empty", "shuffled", "name"] and first["vs_own"].iloc[0] == 1
    seen = []
    monkeypatch.setattr(pretrain, "loss_scores", lambda m, x, texts, **kw: seen.append(texts) or -np.ones(len(x)))
    pretrain.caption_errors(model, images, captions, domains)
    own, empty, shuffled, name = seen
    assert own == captions and empty == [""] * len(captions)
    assert sorted(shuffled) == sorted(captions)
    assert all(s != c for s, c in zip(shuffled, captions, strict=True) if captions.count(c) == 1), \
        "nobody keeps its own caption"
    assert name == [f"photo of {d}" for d in domains]
    with pytest.raises(ValueError, match="caption"):
        pretrain.caption_errors(model, images[:1], captions[:1], domains[:1])


def test_target_key_changes_with_the_caption_settings_and_the_version(smoke_params):
    variants = [{}, {"caption_dropout": 0.0}, {"name_only_captions": 0.0}, {"varied_captions": False}]
    keys = {pretrain.target_key(smoke_params.__class__(**{**smoke_params.to_dict(), **v})) for v in variants}
    assert len(keys) == len(variants)
    assert pretrain.target_key(smoke_params).startswith(f"v{pretrain.TARGET_VERSION}-")
    assert pretrain.target_dir(smoke_params).name == pretrain.target_key(smoke_params)
    assert pretrain.train_spec(smoke_params).caption_dropout == smoke_params.caption_dropout == 0.1
    unrelated = smoke_params.__class__(**{**smoke_params.to_dict(), "checkpoint_every": 5})
    assert pretrain.target_key(unrelated) == pretrain.target_key(smoke_params)


def test_target_key_takes_member_duplicates_only_when_set_and_never_the_shift(smoke_params):
    mini = config.load_profile("mini", member_duplicates=[])
    assert pretrain.target_key(mini) == "v2-w2-5dd5180c8000", "the key of the target trained before the knobs"
    assert pretrain.target_key(config.load_profile("mini", member_duplicates=[], nonmember_shift=0.0)) == \
        "v2-w2-5dd5180c8000"
    duplicated = config.load_profile("mini", member_duplicates=[32, 16, 8, 4])
    assert pretrain.target_key(duplicated) not in {pretrain.target_key(mini), pretrain.target_key(
        config.load_profile("mini", member_duplicates=[32, 16, 8]))}
    assert pretrain.target_parameters(duplicated)["member_duplicates"] == [32, 16, 8, 4]
    assert "member_duplicates" not in pretrain.target_parameters(mini)
    shifted = config.load_profile("mini", member_duplicates=[], nonmember_shift=0.8)
    assert pretrain.target_key(shifted) == pretrain.target_key(mini), "non-members never train the target"


def test_pretraining_trains_on_every_copy_of_a_duplicated_member(smoke_params, tmp_path, monkeypatch):
    from s2l_utils import world

    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("S2L_DATA_DIR", str(tmp_path / "data"))
    params = config.load_profile("smoke", member_duplicates=[3, 2])
    data = world.load_data(params)
    seen = {}

    def fake_train(model, modules, images, captions, spec, **kwargs):
        seen.update(images=images, captions=captions)
        return [1.0]  # an interrupted run: nothing is saved

    monkeypatch.setattr(pretrain, "train", fake_train)
    pretrain.pretrain_target(params, data, progress=False)
    samples = data.pretraining_samples()
    assert len(seen["images"]) == len(seen["captions"]) == len(samples) == len(data.pretraining_set()) + 3 * (2 + 1)
    first = data.split(data.private_domains[0], "member").iloc[0]
    copies = [i for i, name in enumerate(samples["file_name"]) if name == first["file_name"]]
    assert len(copies) == 3 and all(seen["captions"][i] == first["text"] for i in copies)
    assert all(torch.equal(seen["images"][i], data.load_images(first.to_frame().T, 16)[0]) for i in copies)
    stored = (pretrain.target_dir(params) / "params.json").read_text()
    assert '"member_duplicates": [\n  3,\n  2\n ]' in stored
