"""Profiles: named YAML parameter sets, validated into one typed ``Params`` object.

A profile (``s2l_utils/profiles/<name>.yaml``) fixes every size of the pipeline: the world, the target model,
pretraining, the attacks. Notebooks declare the parameters they expose with ``None`` defaults ("take the
profile's value"), and the runner and sweeps override them by name. Unknown keys and impossible values are
rejected here, before any heavy work, with the valid choices named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import paths


ATTACKS = ("loss", "secmi_paper", "secmi_ldm", "pia", "pian")


# seeds (seed, seeds, ablation_seeds) lie in [0, MAX_SEED): sampling.noise_seed packs one into a bit field of each
# generated image's torch seed, beside the purpose and the image index
MAX_SEED = 2 ** 10


FT_LR_TABLES = ("mini", "sd")  # the tables of finetune.DEFAULT_LR


EXPERIMENT_METHODS = ("dreambooth", "textual_inversion", "lora", "hypernetwork", "end2end", "dreambooth_lora",
                      "ti_lora", "lora_hypernetwork")


def _p(default, help: str):
    """A parameter: its default and the one-line help that error messages and ``run --list`` show."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Params:
    """Every tunable of the pipeline. Defaults are the ``mini`` profile's values."""

    # -- the world (miniature) or real data
    world_seed: int = _p(0, "seed of the procedural world (identities, images, captions)")
    image_size: int = _p(16, "image side in pixels (miniature world and model resolution)")
    private_domains: int = _p(8, "number of private identities (the attack targets)")
    members_per_domain: int = _p(16, "images of each private identity in the pre-training set")
    nonmembers_per_domain: int = _p(16, "held-out images of each private identity (same distribution)")
    public_domains: int = _p(8, "public filler identities in the pre-training set")
    images_per_public_domain: int = _p(4, "pre-training images of each public identity")
    name_only_captions: float = _p(0.25, "share of world images captioned only 'photo of <Name>' (as the many "
                                   "bare-name LAION alt-texts; 0 = none)")
    varied_captions: bool = _p(True, "world captions other than name-only carry the expression, the background or "
                               "both (uniformly), as web captions vary in detail; false = all carry both")
    member_duplicates: list[int] = _p([32, 16, 8, 4], "copies of the first members of every private domain in the "
                                      "pre-training set, e.g. [32, 16, 8, 4] (exact re-uploads, as LAION duplicates "
                                      "the images SD memorises); the other members once; empty = every member once")
    nonmember_shift: float = _p(0.0, "how far private non-members come from another photo distribution (another "
                                "camera or year: colour cast, contrast, tighter framing, darker cluttered "
                                "backgrounds), in [0, 1]; 0 = the members' distribution")
    data_dir: str = _p("", "imagefolder with real data (metadata.jsonl); empty = the miniature world")
    domains_file: str = _p("", "text file with one private domain name per line, to restrict data_dir")
    # -- the target model
    base_model: str = _p("", "target pipeline: empty = the miniature pretrained by 01, else a folder or hub id")
    unet_channels: list[int] = _p([16, 32], "UNet block widths of the miniature model")
    text_width: int = _p(32, "hidden width of the miniature CLIP text encoder")
    device: str = _p("auto", "auto | cpu | cuda | cuda:N")
    # -- pretraining of the miniature target
    seed: int = _p(0, "training seed (batches, noise, timesteps)")
    pretrain_steps: int = _p(1600, "optimisation steps of the target's pretraining")
    pretrain_batch_size: int = _p(32, "pretraining batch size")
    pretrain_lr: float = _p(2e-3, "peak learning rate (AdamW, cosine decay)")
    checkpoint_every: int = _p(400, "steps between resumable checkpoints")
    caption_dropout: float = _p(0.1, "share of pretraining captions replaced by the empty prompt, per sample "
                                "(SD v1: 10%), so classifier-free guidance has a learned unconditional branch")
    # -- evaluation of the target
    loss_timesteps: int = _p(10, "loss attack: evenly spaced timesteps averaged per image")
    loss_noise_draws: int = _p(2, "loss attack: seeded noise draws per timestep")
    sample_steps: int = _p(50, "DDIM steps when generating")
    guidance_scale: float = _p(3.0, "classifier-free guidance scale when generating")
    preview_samples: int = _p(16, "generations shown beside their nearest training images")
    # -- SP synthesis: the attacker's synthetic private set
    target_domain: str = _p("", "private domain under attack; empty = the first private domain")
    sp_level: str = _p("name", "prior knowledge: noise | class | name | captions")
    sp_size: int = _p(64, "images in the SP set")
    sp_sampler: str = _p("ddim", "sampler for SP synthesis: ddim | ddpm | dpmsolver")
    sp_steps: int = _p(50, "sampling steps for SP synthesis")
    sp_guidance: float = _p(3.0, "classifier-free guidance for SP synthesis")
    class_prompt: str = _p("photo of a person", "generic prompt of the class level and of prior-preservation images")
    # -- fine-tuning on the SP set
    method: str = _p("lora", "fine-tuning method (see s2l_utils.finetune.METHODS)")
    ft_steps: int = _p(100, "fine-tuning optimisation steps")
    ft_batch_size: int = _p(16, "fine-tuning batch size")
    ft_lr: float = _p(0.0, "fine-tuning learning rate; 0 = the method's default from the ft_lr_defaults table")
    ft_lr_defaults: str = _p("mini", "table of per-method default learning rates used when ft_lr is 0: mini (tuned "
                             "on the miniature) | sd (real SD, each from a published recipe; see finetune.DEFAULT_LR)")
    ft_checkpoint_every: int = _p(500, "fine-tuning steps between resumable checkpoints")
    train_text_encoder: bool = _p(False, "DreamBooth / LoRA: also train the text encoder")
    prior_preservation: bool = _p(False, "add DreamBooth's prior-preservation loss on class images")
    prior_images: int = _p(32, "class images generated for prior preservation")
    prior_loss_weight: float = _p(1.0, "weight of the prior-preservation loss")
    lora_rank: int = _p(4, "LoRA rank r")
    lora_alpha: float = _p(4.0, "LoRA alpha (scale = alpha / r)")
    ti_num_vectors: int = _p(1, "textual inversion: embedding vectors of the placeholder token")
    ti_initializer: str = _p("person", "textual inversion: single-token word the new embedding starts from")
    hn_layer_structure: list[int] = _p([1, 2, 1], "hypernetwork MLP widths relative to the attention width")
    weight_noise_scale: float = _p(0.05, "weight_noise: Gaussian noise std relative to each weight tensor's std")
    # -- privacy attacks
    models: list[str] = _p(["target", "runs"], "models to attack: target | runs (every finished fine-tuning run "
                           "of this profile) | a run name such as 05_lora | a run or artefact folder")
    attacks: list[str] = _p(list(ATTACKS), "membership-inference attacks: " + " | ".join(ATTACKS))
    attack_domains: int = _p(0, "private domains attacked by 09 / 10 (the first N); 0 = all")
    attack_batch_size: int = _p(64, "images per batch when scoring")
    secmi_t: int = _p(100, "SecMI: timestep t_sec of the t-error (the LDM code released with S2L uses 140)")
    secmi_k: int = _p(10, "SecMI: DDIM stride k of the inversion and of the t-error")
    pia_t: int = _p(200, "PIA / PIAN: the timestep of the one jump (fixed beforehand)")
    extraction_samples: int = _p(500, "extraction: generations per domain prompt")
    extraction_steps: int = _p(10, "extraction: DDIM steps per generation")
    extraction_tiles: int = _p(4, "extraction: tiled L2 over a grid of N x N tiles (Carlini et al.: 4)")
    extraction_false_positives: float = _p(0.05, "extraction: the threshold lets this many novel images be expected "
                                           "to count as copies over a model's whole generation budget (in (0, 1)), "
                                           "by a Weibull fit of held-out non-members' nearest distances")
    clip_model: str = _p("", "extraction: optional local CLIP vision model folder for an embedding pre-filter")
    clip_candidates: int = _p(50, "extraction: training images the CLIP pre-filter keeps per generation")
    # -- experiments (11-13): cells of method x attacked domain x seed, each with its conditions
    methods: list[str] = _p(["lora", "textual_inversion"], "fine-tuning methods of the main experiment (every "
                            f"method: {', '.join(EXPERIMENT_METHODS)})")
    experiment_domains: int = _p(0, "private domains attacked in the experiments (the first N); 0 = all")
    seeds: list[int] = _p([0], "seeds of the experiments (SP set, fine-tuning, attack noise)")
    conditions: list[str] = _p(["s2l", "control"],
                               "fine-tuning conditions: s2l | cross_domain | real_nonmember | domain_transfer | "
                               "control (the method's own control: real_nonmember for token methods, else "
                               "cross_domain)")
    main_extraction_samples: int = _p(400, "experiments: generations per model for the extraction counts; at 400 "
                                      "a model's expected count at a 1% copy rate (4) is the fewest whose "
                                      "bootstrap 95% CI excludes 0")
    n_bootstrap: int = _p(2000, "bootstrap draws of every confidence interval and p-value; the smallest p is "
                          "2/(draws+1), and Holm over m verdicts needs 0.05/m: 2000 serves up to 50")
    multiplicity: str = _p("holm", "correction for multiple comparisons within each family of verdicts (one "
                           "comparison and metric over every method x attack): holm (family-wise error) | bh "
                           "(Benjamini-Hochberg false discovery rate)")
    transfer_domains: int = _p(2, "domain transfer: public domains (closest to the SP set) whose real images are added")
    ablation_domains: int = _p(1, "12: private domains of the ablations and the map (the first N); 0 = all")
    ablation_seeds: list[int] = _p([0], "12: seeds of the ablations and the map")
    ablation_levels: list[str] = _p(["noise", "class", "name", "captions"], "12: prior-knowledge levels")
    ablation_sp_sizes: list[int] = _p([16, 64, 256], "12: SP-set sizes")
    ablation_steps: list[int] = _p([50, 100, 400], "12: fine-tuning steps")
    ablation_lrs: list[float] = _p([1e-5, 1e-4, 1e-3], "12: fine-tuning learning rates")
    map_lrs: list[float] = _p([1e-6, 1e-4, 1e-2], "12, S2L map: learning rates (down to the paper's gentle 1e-6)")
    map_steps: list[int] = _p([50, 400], "12, S2L map: fine-tuning steps")
    map_pretrain_steps: list[int] = _p([1600], "12, S2L map: pretraining steps of the target (how strongly it "
                                       "memorised)")
    report_results: str = _p("", "14: a sweep's collected results.parquet to report on; empty = this profile's runs")
    publish: bool = _p(False, "14, 15: write the tables, the results page and the figures where the repository "
                              "keeps them (data/results/, docs/results/, figures/); otherwise only runs/ is written")
    regimes_results: str = _p("", "15: folder of the published regime shards; empty = data/results/regimes")
    regimes_bootstrap: int = _p(10000, "15: bootstrap draws of the regime study, whose Holm families span methods x "
                                "regimes: up to 240 verdicts need 2/(draws+1) < 0.05/240")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self, *names: str, **parts) -> str:
        """A short content hash of the named parameters (all if none) and of ``parts``, what else determines the
        entry (a code version, the identity of the target it used): the key of a cache entry."""
        values = self.to_dict()
        chosen = {n: values[n] for n in (names or sorted(values))}
        if set(parts) & set(chosen):
            raise ValueError(f"key parts {sorted(set(parts) & set(chosen))} collide with parameter names")
        return hashlib.sha256(json.dumps({**chosen, **parts}, sort_keys=True).encode()).hexdigest()[:12]


PARAM_NAMES = tuple(f.name for f in dataclasses.fields(Params))
_TYPES = typing.get_type_hints(Params)


def param_help(name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(Params) if f.name == name)


class ConfigError(ValueError):
    """A profile, parameter or value that cannot be used; the message names it and the valid choices."""


def available_profiles() -> list[str]:
    return sorted(p.stem for p in paths.profiles_dir().glob("*.yaml"))


def _as_float(value):
    """Numbers for float parameters: ints, and strings such as "1e-5" (which YAML 1.1 reads as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _coerce(name: str, value):
    expected = _TYPES[name]
    if typing.get_origin(expected) is list:
        item = typing.get_args(expected)[0]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and item is float:
            value = [_as_float(v) for v in value]
        if isinstance(value, list) and all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            return value
        raise ConfigError(f"parameter {name!r} must be a list of {item.__name__}, got {value!r}")
    if expected is float:
        value = _as_float(value)
    if (expected is int and isinstance(value, bool)) or not isinstance(value, expected):
        raise ConfigError(f"parameter {name!r} must be {expected.__name__}, got {value!r} ({type(value).__name__})")
    return value


def check_names(names, valid=PARAM_NAMES, where: str = "parameters") -> None:
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {where}: {', '.join(unknown)}. Valid names: {', '.join(sorted(valid))}")


POSITIVE = ("image_size", "private_domains", "members_per_domain", "nonmembers_per_domain", "pretrain_batch_size",
            "checkpoint_every", "loss_timesteps", "loss_noise_draws", "sample_steps", "text_width", "pretrain_lr",
            "sp_size", "sp_steps", "ft_steps", "ft_batch_size", "ft_checkpoint_every", "prior_images", "lora_rank",
            "lora_alpha", "ti_num_vectors", "attack_batch_size", "secmi_t", "secmi_k", "pia_t",
            "extraction_samples", "extraction_steps", "extraction_tiles", "clip_candidates",
            "main_extraction_samples", "transfer_domains", "regimes_bootstrap")
NON_NEGATIVE = ("public_domains", "images_per_public_domain", "pretrain_steps", "preview_samples", "ft_lr",
                "prior_loss_weight", "weight_noise_scale", "sp_guidance", "attack_domains",
                "experiment_domains", "n_bootstrap",
                "ablation_domains")


def _validate(p: Params) -> None:
    for names, ok, rule in ((POSITIVE, lambda v: v > 0, "> 0"), (NON_NEGATIVE, lambda v: v >= 0, ">= 0")):
        for name in names:
            if not ok(getattr(p, name)):
                raise ConfigError(f"parameter {name!r} must be {rule}, got {getattr(p, name)}")
    if not p.unet_channels:
        raise ConfigError("parameter 'unet_channels' must name at least one block width")
    downsample = 2 ** (len(p.unet_channels) - 1)
    if p.image_size % downsample:
        raise ConfigError(f"image_size {p.image_size} must be divisible by {downsample} "
                          f"(the UNet halves it {len(p.unet_channels) - 1} times)")
    choices = {"sp_level": ("noise", "class", "name", "captions"), "sp_sampler": ("ddim", "ddpm", "dpmsolver"),
               "ft_lr_defaults": FT_LR_TABLES, "multiplicity": ("holm", "bh")}
    for name, valid in choices.items():
        if getattr(p, name) not in valid:
            raise ConfigError(f"parameter {name!r} must be one of {', '.join(valid)}; got {getattr(p, name)!r}")
    if len(p.hn_layer_structure) < 2 or p.hn_layer_structure[0] != 1 or p.hn_layer_structure[-1] != 1 \
            or min(p.hn_layer_structure) <= 0:
        raise ConfigError("hn_layer_structure must start and end with 1 and be positive, e.g. [1, 2, 1]; "
                          f"got {p.hn_layer_structure}")
    unknown = sorted(set(p.attacks) - set(ATTACKS))
    if unknown or not p.attacks:
        raise ConfigError(f"unknown attacks {unknown or p.attacks}; choose from {', '.join(ATTACKS)}")
    if p.secmi_t % p.secmi_k:
        raise ConfigError(f"secmi_t {p.secmi_t} must be a multiple of secmi_k {p.secmi_k} (the DDIM stride)")
    if not 0 <= p.name_only_captions <= 1:
        raise ConfigError(f"parameter 'name_only_captions' must be in [0, 1], got {p.name_only_captions}")
    if any(count < 1 for count in p.member_duplicates) or len(p.member_duplicates) > p.members_per_domain:
        raise ConfigError(f"parameter 'member_duplicates' must list at most members_per_domain "
                          f"({p.members_per_domain}) counts, each >= 1; got {p.member_duplicates}")
    if not 0 <= p.nonmember_shift <= 1:
        raise ConfigError(f"parameter 'nonmember_shift' must be in [0, 1], got {p.nonmember_shift}")
    if p.data_dir and (p.member_duplicates or p.nonmember_shift):
        raise ConfigError("member_duplicates and nonmember_shift shape the miniature world, but data_dir "
                          f"({p.data_dir!r}) brings real data: set them to [] and 0 (real data states its "
                          "duplicates in a 'duplicates' column of metadata.jsonl)")
    if not 0 <= p.caption_dropout < 1:  # 1 would never show the model a caption
        raise ConfigError(f"parameter 'caption_dropout' must be in [0, 1), got {p.caption_dropout}")
    if not 0 < p.extraction_false_positives < 1:  # 0: nothing could count; >= 1: a false copy is expected
        raise ConfigError("parameter 'extraction_false_positives' must be in (0, 1), got "
                          f"{p.extraction_false_positives}")
    for name in ("methods", "seeds", "ablation_seeds", "conditions", "ablation_levels", "ablation_sp_sizes",
                 "ablation_steps", "ablation_lrs", "map_lrs", "map_steps", "map_pretrain_steps"):
        if not getattr(p, name):
            raise ConfigError(f"parameter {name!r} must not be empty")
    for name in ("ablation_sp_sizes", "ablation_steps", "ablation_lrs", "map_lrs", "map_steps", "map_pretrain_steps"):
        if min(getattr(p, name)) <= 0:
            raise ConfigError(f"every value of {name!r} must be > 0, got {getattr(p, name)}")
    for name, values in (("seed", [p.seed]), ("seeds", p.seeds), ("ablation_seeds", p.ablation_seeds)):
        if not all(0 <= s < MAX_SEED for s in values):
            raise ConfigError(f"every value of {name!r} must be in [0, {MAX_SEED}) (generation seeds pack it into a "
                              f"bit field), got {getattr(p, name)}")
    if not p.models:
        raise ConfigError("parameter 'models' must name at least one model (e.g. target)")
    if p.device != "auto" and not (p.device == "cpu" or p.device.startswith("cuda")):
        raise ConfigError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got {p.device!r}")


def make_params(values: dict) -> Params:
    """Validated ``Params`` from a plain mapping; missing names keep their defaults."""
    check_names(values)
    params = Params(**{k: _coerce(k, v) for k, v in values.items()})
    _validate(params)
    return params


def profile_path(profile: str) -> Path:
    """A profile name (``mini``) or a path to a YAML file."""
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise ConfigError(f"profile file not found: {candidate}")
        return candidate
    path = paths.profiles_dir() / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown profile {profile!r}. Available: {', '.join(available_profiles())}")
    return path


def profile_values(profile: str) -> dict:
    """The raw parameter mapping of a profile, with ``extends`` resolved (base first, then this file)."""
    path = profile_path(profile)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {path} must be a mapping of parameter names to values")
    raw.pop("description", None)
    base = raw.pop("extends", None)
    values = profile_values(base) if base else {}
    check_names(raw, where=f"parameters in profile {path.name}")
    values.update(raw)
    return values


def load_profile(profile: str, **overrides) -> Params:
    """The profile's parameters with ``overrides`` applied; ``None`` overrides mean "keep the profile's value"."""
    values = profile_values(profile)
    check_names(overrides)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_params(values)


def profile_description(profile: str) -> str:
    raw = yaml.safe_load(profile_path(profile).read_text()) or {}
    return raw.get("description", "")
