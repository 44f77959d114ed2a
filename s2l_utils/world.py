"""The miniature world, and the imagefolder layout every data set (miniature or real) is read from.

The world (``generate_world``) is a deterministic, seeded set of captioned portraits in *domains* (identities):
private domains have *member* (pre-training) and *non-member* (held-out) images, public domains are pre-training
filler. The knobs ``member_duplicates`` and ``nonmember_shift`` make it leak as SD's data does, and reproduce the
plain world bit for bit at their neutral values.

On disk a data set is a Hugging Face imagefolder: image files plus ``metadata.jsonl`` with one JSON object per
image: ``file_name``, ``text`` (caption), ``domain``, ``split`` (member | nonmember), ``private`` and, optionally,
``duplicates`` (how many times a member appears in the pre-training set; 1 when absent).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from . import paths
from .config import ConfigError, Params

METADATA = "metadata.jsonl"
REQUIRED_COLUMNS = ("file_name", "text", "domain", "split")
SPLITS = ("member", "nonmember")

_SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sa", "bel", "quin", "dor", "el", "fi", "no", "ru",
              "zan", "the", "ol", "mar", "is", "ga", "pe", "lun", "cor", "vi", "ash", "len", "tam", "bro"]
_EXPRESSIONS = {"smiling": 1.0, "neutral": 0.0, "frowning": -1.0}
_BACKGROUNDS = {"blue": (0.25, 0.4, 0.8), "green": (0.3, 0.65, 0.35), "grey": (0.55, 0.55, 0.55),
                "orange": (0.9, 0.55, 0.2), "purple": (0.55, 0.35, 0.7)}


def domain_prompt(domain: str) -> str:
    """The prompt an attacker would use for a domain (the paper's "photo of <Name>")."""
    return f"photo of {domain}"


# bump when generate_world's output changes for an unchanged spec, so that no stale cached world is reused
WORLD_VERSION = 2
# Detail forms of the captions that are not name-only, drawn uniformly when captions vary.
CAPTION_FORMS = ("full", "expression", "background")


@dataclass(frozen=True)
class WorldSpec:
    """Scale, seed and caption style of the miniature world; a larger world is one setting away.

    ``name_only_captions`` is the share of images captioned only "photo of <Name>"; with ``varied_captions``
    every other caption takes one of ``CAPTION_FORMS`` uniformly, else all carry the expression and the
    background. The key names the leak knobs ``member_duplicates`` and ``nonmember_shift`` only when they are set.
    """

    seed: int = 0
    image_size: int = 16
    private_domains: int = 8
    members_per_domain: int = 32
    nonmembers_per_domain: int = 32
    public_domains: int = 8
    images_per_public_domain: int = 8
    name_only_captions: float = 0.25
    varied_captions: bool = True
    member_duplicates: tuple[int, ...] = ()
    nonmember_shift: float = 0.0

    @classmethod
    def from_params(cls, p: Params) -> WorldSpec:
        return cls(seed=p.world_seed, image_size=p.image_size, private_domains=p.private_domains,
                   members_per_domain=p.members_per_domain, nonmembers_per_domain=p.nonmembers_per_domain,
                   public_domains=p.public_domains, images_per_public_domain=p.images_per_public_domain,
                   name_only_captions=p.name_only_captions, varied_captions=p.varied_captions,
                   member_duplicates=tuple(p.member_duplicates), nonmember_shift=p.nonmember_shift)

    def key(self) -> str:
        knobs = ([f"dup{'.'.join(map(str, self.member_duplicates))}"] if self.member_duplicates else []) + \
                ([f"shift{self.nonmember_shift}"] if self.nonmember_shift else [])
        return "-".join(str(v) for v in (f"v{WORLD_VERSION}", self.seed, self.image_size, self.private_domains,
                                         self.members_per_domain, self.nonmembers_per_domain, self.public_domains,
                                         self.images_per_public_domain, self.name_only_captions,
                                         int(self.varied_captions), *knobs))


# ----------------------------------------------------------------------------------------------- generation


def _names(rng: np.random.Generator, count: int) -> list[str]:
    def word(parts: int) -> str:
        return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()

    names: list[str] = []
    while len(names) < count:
        name = f"{word(int(rng.integers(2, 4)))} {word(int(rng.integers(1, 3)))}"
        if name not in names:
            names.append(name)
    return names


def _identity_traits(rng: np.random.Generator) -> dict:
    return {
        "skin": rng.uniform([0.45, 0.3, 0.2], [1.0, 0.85, 0.7]),
        "hair": rng.uniform(0.0, 1.0, 3) * rng.uniform(0.2, 1.0),
        "eyes": rng.uniform(0.0, 0.8, 3),
        "shirt": rng.uniform(0.0, 1.0, 3),
        "aspect": rng.uniform(0.75, 1.05),
        "hair_style": int(rng.integers(0, 4)),
        "glasses": bool(rng.random() < 0.35),
        "beard": bool(rng.random() < 0.3),
    }


def _photo_variation(rng: np.random.Generator) -> dict:
    return {
        "dx": rng.uniform(-0.08, 0.08), "dy": rng.uniform(-0.06, 0.06), "scale": rng.uniform(0.88, 1.1),
        "expression": str(rng.choice(list(_EXPRESSIONS))), "background": str(rng.choice(list(_BACKGROUNDS))),
        "angle": rng.uniform(0, 2 * np.pi), "light": rng.uniform(0.8, 1.15),
        "blobs": [(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.16), rng.uniform(0, 1, 3))
                  for _ in range(int(rng.integers(2, 5)))],
        "noise_seed": int(rng.integers(2**31)),
    }


# Most extra clutter objects a fully shifted background gains; always drawn, so draws do not depend on the shift.
_SHIFT_CLUTTER = 3
# White-balance direction of the shifted camera: a warm (tungsten-like) cast, red up and blue down.
_SHIFT_CAST = np.array([0.18, 0.03, -0.2])


def _shifted_photo(var: dict, shift: float, rng: np.random.Generator) -> dict:
    """A photo variation as another camera or another year would take it, scaled by ``shift`` in (0, 1].

    Tighter framing (the face up to 25% larger), backgrounds up to 40% darker with up to ``_SHIFT_CLUTTER``
    more dark objects, a warm white-balance cast and up to 30% more contrast; ``rng`` (a stream of its own)
    jitters each by a factor in [0.6, 1] per photo, so the shift is a distribution, not a fixed pattern. The
    expression and background colour stay (the caption describes them).
    """
    jitter = rng.uniform(0.6, 1.0, 4)
    clutter = [(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.16), rng.uniform(0, 0.5, 3))
               for _ in range(_SHIFT_CLUTTER)]
    camera = {"background": 1 - 0.4 * shift * jitter[1], "white_balance": 1 + shift * jitter[2] * _SHIFT_CAST,
              "contrast": 1 + 0.3 * shift * jitter[3]}
    return {**var, "scale": var["scale"] * (1 + 0.25 * shift * jitter[0]),
            "blobs": var["blobs"] + clutter[:round(_SHIFT_CLUTTER * shift)], "camera": camera}


def _render(traits: dict, var: dict, size: int, supersample: int = 4) -> np.ndarray:
    """Draw one portrait at ``size`` px (anti-aliased by supersampling); returns uint8 HxWx3.

    A ``camera`` entry in ``var`` (see ``_shifted_photo``) darkens the background and develops the photo with
    its contrast and white balance; without it the portrait is drawn exactly as in the plain world."""
    n = size * supersample
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    s = var["scale"]
    cx, cy = 0.5 + var["dx"], 0.47 + var["dy"]
    bg0 = np.array(_BACKGROUNDS[var["background"]])
    ramp = np.clip(0.5 + (x - 0.5) * np.cos(var["angle"]) + (y - 0.5) * np.sin(var["angle"]), 0, 1)
    img = bg0 * (0.75 + 0.45 * ramp)[..., None]
    camera = var.get("camera")
    if camera:
        img = img * camera["background"]
    for bx, by, br, color in var["blobs"]:
        img[(x - bx) ** 2 + (y - by) ** 2 < br ** 2] = color

    def paint(mask, color):
        img[mask] = color

    rx, ry = 0.22 * s * traits["aspect"], 0.26 * s
    face = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1
    paint(((x - cx) / (0.4 * s)) ** 2 + ((y - (cy + 0.5 * s)) / (0.24 * s)) ** 2 < 1, traits["shirt"])
    style = traits["hair_style"]
    if style == 1:  # long hair behind the face
        paint((((x - cx) / (rx * 1.35)) ** 2 + ((y - cy - 0.06 * s) / (ry * 1.2)) ** 2 < 1) & (y < cy + 0.3 * s),
              traits["hair"])
    paint(face, traits["skin"])
    crown = ((x - cx) / (rx * 1.12)) ** 2 + ((y - cy) / (ry * 1.12)) ** 2 < 1
    if style == 0:
        paint(crown & (y < cy - 0.55 * ry), traits["hair"])
    elif style in (1, 3):
        paint(crown & (y < cy - (0.25 if style == 3 else 0.45) * ry), traits["hair"])
    else:  # a tall tuft
        paint(((x - cx) / (rx * 0.8)) ** 2 + ((y - (cy - ry)) / (0.14 * s)) ** 2 < 1, traits["hair"])
    if traits["beard"]:
        paint(face & (y > cy + 0.35 * ry), traits["hair"])
    eye_y = cy - 0.08 * s
    for ex in (cx - 0.09 * s, cx + 0.09 * s):
        d2 = (x - ex) ** 2 + (y - eye_y) ** 2
        if traits["glasses"]:
            paint((d2 < (0.075 * s) ** 2) & (d2 > (0.05 * s) ** 2), (0.05, 0.05, 0.05))
        paint(d2 < (0.04 * s) ** 2, traits["eyes"])
    curve = _EXPRESSIONS[var["expression"]]
    mouth_y = cy + 0.13 * s - curve * 0.9 * ((x - cx) / s) ** 2 * 4 + curve * 0.02 * s
    paint((np.abs(y - mouth_y) < 0.025 * s) & (np.abs(x - cx) < 0.08 * s), (0.55, 0.1, 0.12))

    img = img * var["light"]
    if camera:
        img = (0.5 + (img - 0.5) * camera["contrast"]) * camera["white_balance"]
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    img = img + np.random.default_rng(var["noise_seed"]).normal(0, 0.015, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _caption(name: str, var: dict, form: str) -> str:
    """The caption of one photo in a detail form: name only, or with its expression and / or background."""
    details = {"name": [], "expression": [var["expression"]], "background": [f"{var['background']} background"]}
    details["full"] = details["expression"] + details["background"]
    return ", ".join([domain_prompt(name), *details[form]])


def _caption_form(rng: np.random.Generator, spec: WorldSpec) -> str:
    """Draw one caption's detail form: "name" or one of ``CAPTION_FORMS``.

    Both numbers are always drawn, so the draws do not depend on the settings, and a higher
    ``name_only_captions`` only turns more captions to name-only.
    """
    name_only = rng.random() < spec.name_only_captions
    form = CAPTION_FORMS[int(rng.integers(len(CAPTION_FORMS)))]
    if name_only:
        return "name"
    return form if spec.varied_captions else "full"


def generate_world(spec: WorldSpec) -> tuple[list[Image.Image], pd.DataFrame]:
    """All images and their metadata rows, a pure function of ``spec`` (same spec, same bytes).

    Caption forms and the non-members' shift come from random streams of their own, so the images do not
    depend on the caption settings, and the members, identities and captions not on the knobs. Rows carry
    ``duplicates`` only when ``member_duplicates`` is set, so the plain world's metadata stays as it was.
    """
    rng = np.random.default_rng(spec.seed)
    caption_rng = np.random.default_rng([spec.seed, 1])
    shift_rng = np.random.default_rng([spec.seed, 2])
    names = _names(rng, spec.private_domains + spec.public_domains)
    images, rows = [], []
    for index, name in enumerate(names):
        private = index < spec.private_domains
        traits = _identity_traits(rng)
        splits = (["member"] * spec.members_per_domain + ["nonmember"] * spec.nonmembers_per_domain
                  if private else ["member"] * spec.images_per_public_domain)
        slug = name.lower().replace(" ", "_")
        for k, split in enumerate(splits):
            var = _photo_variation(rng)
            caption = _caption(name, var, _caption_form(caption_rng, spec))
            if split == "nonmember" and spec.nonmember_shift:
                var = _shifted_photo(var, spec.nonmember_shift, shift_rng)
            images.append(Image.fromarray(_render(traits, var, spec.image_size)))
            row = {"file_name": f"{slug}/{split}_{k:04d}.png", "text": caption,
                   "domain": name, "split": split, "private": private}
            if spec.member_duplicates:
                copies = spec.member_duplicates[k] if private and k < len(spec.member_duplicates) else 1
                row["duplicates"] = copies
            rows.append(row)
    return images, pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- imagefolder I/O


def write_imagefolder(folder: Path, images: list[Image.Image], meta: pd.DataFrame) -> Path:
    """Write images + ``metadata.jsonl`` atomically: a half-written folder never appears at ``folder``."""
    folder = Path(folder)
    if len(images) != len(meta):
        raise ValueError(f"{len(images)} images but {len(meta)} metadata rows")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for image, name in zip(images, meta["file_name"], strict=True):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            image.save(tmp / name)
        meta.to_json(tmp / METADATA, orient="records", lines=True, force_ascii=False)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


class ImageFolderData:
    """A captioned data set in the imagefolder layout, with member / non-member splits per domain."""

    def __init__(self, folder: str | Path, domains: list[str] | None = None):
        self.folder = Path(folder)
        meta_path = self.folder / METADATA
        if not self.folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {self.folder}")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing: an imagefolder needs {METADATA} with "
                                    f"columns {', '.join(REQUIRED_COLUMNS)}")
        try:
            meta = pd.read_json(meta_path, lines=True)
        except ValueError as exc:
            raise ValueError(f"{meta_path} is not valid JSON lines: {exc}") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
        if missing:
            raise ValueError(f"{meta_path} lacks columns {missing}; required: {list(REQUIRED_COLUMNS)}")
        bad = sorted(set(meta["split"]) - set(SPLITS))
        if bad:
            raise ValueError(f"{meta_path}: unknown split values {bad}; use {list(SPLITS)}")
        if "private" not in meta.columns:  # real data: a domain with held-out images is a private domain
            held_out = set(meta.loc[meta["split"] == "nonmember", "domain"])
            meta["private"] = meta["domain"].isin(held_out)
        meta["duplicates"] = _duplicates(meta, meta_path)
        if domains is not None:
            unknown = sorted(set(domains) - set(meta["domain"]))
            if unknown:
                raise ConfigError(f"domains not in {self.folder}: {unknown}")
            meta = meta[meta["domain"].isin(domains) | ~meta["private"]]
        self.meta = meta.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def private_domains(self) -> list[str]:
        return list(dict.fromkeys(self.meta.loc[self.meta["private"], "domain"]))

    @property
    def public_domains(self) -> list[str]:
        return list(dict.fromkeys(self.meta.loc[~self.meta["private"], "domain"]))

    def pretraining_set(self) -> pd.DataFrame:
        """The images the target model is pretrained on, once each: every member image, private and public,
        with its ``duplicates`` count (what extraction matches generations against)."""
        return self.meta[self.meta["split"] == "member"].reset_index(drop=True)

    def pretraining_samples(self) -> pd.DataFrame:
        """What the target trains on: each row of ``pretraining_set`` repeated ``duplicates`` times."""
        rows = self.pretraining_set()
        return rows.loc[rows.index.repeat(rows["duplicates"])].reset_index(drop=True)

    def split(self, domain: str, split: str) -> pd.DataFrame:
        if domain not in set(self.meta["domain"]):
            raise ConfigError(f"unknown domain {domain!r}. Domains: {', '.join(self.private_domains)}")
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use {list(SPLITS)}")
        rows = self.meta[(self.meta["domain"] == domain) & (self.meta["split"] == split)]
        return rows.reset_index(drop=True)

    def load_images(self, rows: pd.DataFrame, size: int) -> torch.Tensor:
        """Images of ``rows`` as a float tensor (N, 3, size, size) in [-1, 1] (resize + centre crop)."""
        return torch.stack([load_image(self.folder / name, size) for name in rows["file_name"]])


def _duplicates(meta: pd.DataFrame, meta_path: Path) -> pd.Series:
    """The validated ``duplicates`` column: integers >= 1, 1 for every non-member; all 1 when it is absent."""
    if "duplicates" not in meta.columns:
        return pd.Series(1, index=meta.index)
    counts = pd.to_numeric(meta["duplicates"], errors="coerce")
    bad = meta.loc[~(counts >= 1) | (counts != counts.round()), "file_name"].tolist()
    if bad:
        raise ValueError(f"{meta_path}: 'duplicates' must be an integer >= 1 for every row; not for {bad[:5]}")
    copied = meta.loc[(meta["split"] == "nonmember") & (counts > 1), "file_name"].tolist()
    if copied:
        raise ValueError(f"{meta_path}: non-members are not in the pre-training set, so their 'duplicates' "
                         f"must be 1; not for {copied[:5]}")
    return counts.astype(int)


def load_image(path: Path, size: int) -> torch.Tensor:
    """One RGB image, resized on its short side and centre-cropped to ``size``, in [-1, 1], CHW."""
    try:
        with Image.open(path) as raw:
            image = raw.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image listed in {METADATA} is missing: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"corrupt or unreadable image file {path}: {exc}") from exc
    if image.size != (size, size):
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Inverse of ``load_image`` for a batch in [-1, 1]."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def world_folder(spec: WorldSpec) -> Path:
    return paths.data_dir() / "worlds" / spec.key()


def ensure_world(spec: WorldSpec) -> Path:
    """Generate the world into its cache folder once; later calls reuse it."""
    folder = world_folder(spec)
    with paths.cache_lock(folder):  # parallel sweep jobs may need the same world (e.g. a shifted world's twin)
        if not (folder / METADATA).is_file():
            images, meta = generate_world(spec)
            write_imagefolder(folder, images, meta)
    return folder


def unshifted_twin(data: ImageFolderData, params: Params) -> ImageFolderData:
    """Where the images of ``data``'s rows are read from when they must come from the members' distribution:
    for the miniature world with ``nonmember_shift`` > 0, its twin with no shift (same members byte for byte, the
    same non-member photos before the shift, same file names), else ``data`` itself. The extraction threshold is
    calibrated on it, so that a shift does not move the threshold (real data has no twin)."""
    if params.nonmember_shift > 0 and not params.data_dir:
        return ImageFolderData(ensure_world(replace(WorldSpec.from_params(params), nonmember_shift=0.0)))
    return data


def read_domains_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = paths.repo_root() / path
    if not path.is_file():
        raise FileNotFoundError(f"domains file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def unshifted(params: Params) -> Params:
    """``params`` of the twin world with no non-member shift: its members, public domains and captions are the same
    byte for byte, so whatever never reads a non-member (SP sets, fine-tunes on them, generations) is the same there."""
    return replace(params, nonmember_shift=0.0)


def data_identity(params: Params) -> str:
    """The data in cache keys: the real data folder, or the miniature world's key (its spec and code version),
    with the domain list."""
    return f"{params.data_dir or WorldSpec.from_params(params).key()}|{params.domains_file}"


def load_data(params: Params) -> ImageFolderData:
    """The data set a profile names: real data from ``data_dir`` or the miniature world (generated once)."""
    domains = read_domains_file(params.domains_file) if params.domains_file else None
    if params.data_dir:
        folder = Path(params.data_dir)
        if not folder.is_absolute() and not folder.exists():
            folder = paths.repo_root() / folder
        return ImageFolderData(folder, domains)
    return ImageFolderData(ensure_world(WorldSpec.from_params(params)), domains)
