"""Every fine-tuning method: what it must not touch stays bit-identical, what it trains moves, its artefact
loads back through the standard loaders with identical outputs, and an interrupted run resumes exactly."""

import json

import pytest
import torch

from s2l_utils import finetune, pretrain, sampling, synthesis, world
from s2l_utils.config import ConfigError, load_profile
from s2l_utils.finetune import hypernetwork as hn
from s2l_utils.finetune.weight_noise import perturb

FT = dict(ft_steps=3, ft_batch_size=4, sp_size=6, sp_steps=2, ft_checkpoint_every=2)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    params = load_profile("smoke", **FT)
    data = world.load_data(params)
    target, _ = pretrain.pretrain_target(params, data, progress=False)
    domain = synthesis.resolve_domain(params, data)
    sp = synthesis.ensure_sp_set(params, data, target, domain, progress=False)
    return params, data, target, domain, sp, tmp_path_factory.mktemp("ft")


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def _run(setting, method, **overrides):
    params, data, target, domain, sp, root = setting
    params = load_profile("smoke", **{**FT, **overrides})
    out = root / f"{method}-{abs(hash(tuple(sorted(overrides.items()))))}"
    return finetune.finetune(method, params, sp, out, domain, device="cpu", progress=False), params


def _samples(pipe, prompts):
    return sampling.generate(pipe, prompts, seed=3, steps=2, progress=False)


@pytest.mark.parametrize("method", list(finetune.METHODS))
def test_artefact_loads_back_with_identical_outputs(setting, method):
    result, _ = _run(setting, method, lora_rank=4, lora_alpha=8.0)  # alpha != rank must survive the round trip
    domain = setting[3]
    loaded = finetune.load_finetuned(result.folder, device="cpu")
    assert loaded.method == method
    prompts = loaded.rewrite([world.domain_prompt(domain), "photo of a person"])
    assert torch.allclose(_samples(result.pipe, prompts), _samples(loaded.pipe, prompts), atol=1e-5)
    info = json.loads((result.folder / finetune.ARTEFACT_INFO).read_text())
    assert info["domain"] == domain and info["base"].endswith("pipeline")
    if method != "weight_noise":
        assert len(result.history) == 3 and result.trainable_parameters > 0


def test_dreambooth_trains_the_unet_only(setting):
    target = setting[2]
    result, _ = _run(setting, "dreambooth")
    assert not _same(_state(target.unet), _state(result.pipe.unet))
    assert _same(_state(target.text_encoder), _state(result.pipe.text_encoder))
    with_text, _ = _run(setting, "dreambooth", train_text_encoder=True)
    assert not _same(_state(target.text_encoder), _state(with_text.pipe.text_encoder))


def test_end2end_trains_unet_and_text_encoder(setting):
    target = setting[2]
    result, _ = _run(setting, "end2end")
    assert not _same(_state(target.unet), _state(result.pipe.unet))
    assert not _same(_state(target.text_encoder), _state(result.pipe.text_encoder))


def test_textual_inversion_changes_only_the_placeholder_rows(setting):
    target, domain = setting[2], setting[3]
    result, _ = _run(setting, "textual_inversion", ti_num_vectors=2)
    loaded = finetune.load_finetuned(result.folder, device="cpu").pipe
    base_rows = target.text_encoder.get_input_embeddings().weight
    for pipe in (result.pipe, loaded):
        rows = pipe.text_encoder.get_input_embeddings().weight
        assert rows.shape[0] == base_rows.shape[0] + 2
        assert torch.equal(rows[:base_rows.shape[0]], base_rows), "every existing row is bit-identical"
        init = base_rows[pipe.tokenizer.encode("person", add_special_tokens=False)[0]]
        assert not torch.allclose(rows[-1], init) and not torch.allclose(rows[-2], init), "the new rows trained"
    assert _same(_state(target.unet), _state(loaded.unet))
    token = finetune.textual_inversion.placeholder_for(domain)
    assert loaded.tokenizer.convert_tokens_to_ids([token, f"{token}_1"]) == [base_rows.shape[0],
                                                                             base_rows.shape[0] + 1]


def test_lora_keeps_base_weights_and_moves_adapters(setting):
    target = setting[2]
    result, _ = _run(setting, "lora")
    pipe = finetune.load_finetuned(result.folder, device="cpu").pipe
    base = _state(target.unet)
    state = _state(pipe.unet)
    for key, value in base.items():
        wrapped = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state.get(key, state.get(wrapped)), value), key
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have trained"
    prompts = ["photo of a person"]
    pipe.disable_lora()
    assert torch.allclose(_samples(pipe, prompts), _samples(target, prompts), atol=1e-6)


def test_hypernetwork_stays_out_of_the_unet_state_dict(setting):
    target = setting[2]
    result, _ = _run(setting, "hypernetwork")
    pipe = finetune.load_finetuned(result.folder, device="cpu").pipe
    assert _state(pipe.unet).keys() == _state(target.unet).keys() and _same(_state(target.unet), _state(pipe.unet))
    net = hn.load_hypernetwork(result.folder / hn.WEIGHTS)
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if n.endswith("net.2.weight")), "trained"
    prompts = ["photo of a person"]
    assert not torch.allclose(_samples(pipe, prompts), _samples(target, prompts), atol=1e-6)
    hn.attach(pipe, net, strength=0.0)
    assert torch.equal(_samples(pipe, prompts), _samples(target, prompts)), "strength 0 is exactly the base"


def test_fresh_hypernetwork_is_exactly_the_identity(setting):
    target = setting[2]
    prompts = ["photo of a person"]
    before = _samples(target, prompts)
    hn.attach(target, hn.Hypernetwork(hn.attention_widths(target.unet), [1, 2, 1]))
    try:
        assert torch.equal(_samples(target, prompts), before)
    finally:
        hn.detach(target)


def test_weight_noise_has_the_requested_relative_scale(setting):
    target = setting[2]
    result, params = _run(setting, "weight_noise", weight_noise_scale=0.1)
    assert result.history.empty and result.trainable_parameters == 0
    base, noisy = _state(target.unet), _state(result.pipe.unet)
    big = [k for k, v in base.items() if v.numel() >= 256]
    ratios = torch.stack([(noisy[k] - base[k]).std() / base[k].std() for k in big])
    assert ratios.mean().item() == pytest.approx(0.1, rel=0.1)
    assert _same(_state(target.text_encoder), _state(result.pipe.text_encoder))
    copy = pretrain.load_target(params, "cpu")
    perturb(copy.unet, 0.1, params.seed)
    assert _same(noisy, _state(copy.unet)), "the recipe reproduces the perturbation"


@pytest.mark.parametrize("method", ["lora", "ti_lora"])
def test_resume_equals_an_uninterrupted_run(setting, method, tmp_path):
    params, sp, domain = load_profile("smoke", **FT), setting[4], setting[3]
    straight = finetune.finetune(method, params, sp, tmp_path / "a", domain, device="cpu", progress=False)
    partial = finetune.finetune(method, params, sp, tmp_path / "b", domain, device="cpu", progress=False,
                                stop_after=2)
    assert len(partial.history) == 2 and not (tmp_path / "b" / "artefact").exists()
    resumed = finetune.finetune(method, params, sp, tmp_path / "b", domain, device="cpu", progress=False)
    assert straight.history["loss"].tolist() == resumed.history["loss"].tolist()
    assert _same(_state(straight.pipe.unet), _state(resumed.pipe.unet))
    assert _same(_state(straight.pipe.text_encoder), _state(resumed.pipe.text_encoder))


def test_prior_preservation_with_zero_weight_equals_plain_training(setting):
    params, data, target, domain, sp, root = setting
    prior_params = load_profile("smoke", **{**FT, "sp_level": "class", "sp_size": 4})
    prior = synthesis.ensure_sp_set(prior_params, data, target, domain, progress=False)
    assert set(prior.meta["text"]) == {params.class_prompt}
    plain, _ = _run(setting, "lora")
    zero = finetune.finetune("lora", load_profile("smoke", **FT, prior_preservation=True, prior_loss_weight=0.0),
                             sp, root / "prior0", domain, prior_set=prior, device="cpu", progress=False)
    full = finetune.finetune("lora", load_profile("smoke", **FT, prior_preservation=True),
                             sp, root / "prior1", domain, prior_set=prior, device="cpu", progress=False)
    assert _same(_state(plain.pipe.unet), _state(zero.pipe.unet))
    assert not _same(_state(plain.pipe.unet), _state(full.pipe.unet))
    assert (full.history["loss"] > plain.history["loss"]).all(), "the prior term adds a positive loss"


def test_sp_synthesis_is_deterministic_and_levels_differ(setting):
    params, data, target, domain, _, _ = setting
    images_a, meta_a = synthesis.synthesize(target, data, domain, params, progress=False)
    images_b, _ = synthesis.synthesize(target, data, domain, params, progress=False)
    assert torch.equal(images_a, images_b) and images_a.shape == (6, 3, 16, 16)
    assert set(meta_a["text"]) == {world.domain_prompt(domain)}
    other_seed = load_profile("smoke", **FT, seed=1)
    assert not torch.equal(images_a, synthesis.synthesize(target, data, domain, other_seed, progress=False)[0])
    captions = synthesis.sp_prompts(data, domain, "captions", 8, "photo of a person")
    assert captions[:6] == list(data.split(domain, "member")["text"]) and captions[6:] == captions[:2]
    noise, noise_meta = synthesis.synthesize(target, data, domain, load_profile("smoke", **FT, sp_level="noise"),
                                             progress=False)
    assert noise.min() >= -1 and noise.max() <= 1 and abs(noise.mean().item()) < 0.1
    assert set(noise_meta["text"]) == {world.domain_prompt(domain)}


def test_bad_input_is_rejected_before_training(setting, tmp_path, monkeypatch):
    params, data, target, domain, sp, _ = setting
    monkeypatch.setattr(pretrain, "load_target", lambda *a, **k: pytest.fail("loaded a model before rejecting"))
    with pytest.raises(ConfigError, match="unknown fine-tuning method 'loral'. Methods: dreambooth"):
        finetune.finetune("loral", params, sp, tmp_path, domain)
    with pytest.raises(ValueError, match="prior_preservation is on"):
        finetune.finetune("lora", load_profile("smoke", prior_preservation=True), sp, tmp_path, domain)
    with pytest.raises(ConfigError, match="ft_steps"):
        load_profile("smoke", ft_steps=0)
    with pytest.raises(ConfigError, match="lora_rank"):
        load_profile("smoke", lora_rank=0)
    with pytest.raises(ConfigError, match="sp_level"):
        load_profile("smoke", sp_level="everything")
    with pytest.raises(ConfigError, match="unknown target_domain 'Nobody'"):
        synthesis.resolve_domain(load_profile("smoke", target_domain="Nobody"), data)
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        world.ImageFolderData(tmp_path / "missing-sp")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError):
        finetune.finetune("lora", params, world.ImageFolderData(tmp_path / "empty"), tmp_path, domain)
    with pytest.raises(FileNotFoundError, match="not a fine-tuning artefact"):
        finetune.load_finetuned(tmp_path)
