import hashlib
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from s2l_utils import config, world
from s2l_utils.config import ConfigError

SPEC = world.WorldSpec(seed=3, image_size=16, private_domains=3, members_per_domain=5, nonmembers_per_domain=4,
                       public_domains=2, images_per_public_domain=3)


def _bytes(images):
    return [np.asarray(im).tobytes() for im in images]


def test_world_is_deterministic_for_a_seed_and_changes_with_it():
    images_a, meta_a = world.generate_world(SPEC)
    images_b, meta_b = world.generate_world(SPEC)
    assert _bytes(images_a) == _bytes(images_b)
    pd.testing.assert_frame_equal(meta_a, meta_b)
    images_c, _ = world.generate_world(world.WorldSpec(**{**SPEC.__dict__, "seed": 4}))
    assert _bytes(images_a) != _bytes(images_c)


def test_world_sizes_splits_and_captions():
    images, meta = world.generate_world(SPEC)
    assert len(images) == 3 * (5 + 4) + 2 * 3
    assert all(im.size == (16, 16) and im.mode == "RGB" for im in images)
    private = meta[meta["private"]]
    assert private["domain"].nunique() == 3 and meta.loc[~meta["private"], "domain"].nunique() == 2
    counts = private.groupby(["domain", "split"]).size()
    assert set(counts.xs("member", level="split")) == {5} and set(counts.xs("nonmember", level="split")) == {4}
    assert (meta.loc[~meta["private"], "split"] == "member").all()
    assert all(text == f"photo of {domain}" or text.startswith(f"photo of {domain}, ")
               for text, domain in zip(meta["text"], meta["domain"], strict=True))
    assert meta["file_name"].is_unique


def _with(spec, **changes):
    return world.WorldSpec(**{**spec.__dict__, **changes})


def test_caption_settings_leave_images_unchanged_and_off_gives_the_v1_captions():
    """Caption forms come from their own random stream: only the text column moves with the caption knobs."""
    images, meta = world.generate_world(SPEC)
    plain_images, plain = world.generate_world(_with(SPEC, name_only_captions=0.0, varied_captions=False))
    assert _bytes(images) == _bytes(plain_images)
    pd.testing.assert_frame_equal(meta.drop(columns="text"), plain.drop(columns="text"))
    # the captions of the world before caption variety (WORLD_VERSION 1), pinned
    assert plain["text"].iloc[[0, 1, 20, 32]].tolist() == [
        "photo of Mitorsa Cor, frowning, orange background", "photo of Mitorsa Cor, neutral, orange background",
        "photo of Rubelven Peka, neutral, green background", "photo of Isol Pe, smiling, orange background"]
    assert (plain["text"] != meta["text"]).any()


def test_captions_vary_in_detail_at_the_stated_rates():
    spec = world.WorldSpec(seed=0, private_domains=8, members_per_domain=16, nonmembers_per_domain=16,
                           public_domains=8, images_per_public_domain=4, name_only_captions=0.25)
    _, meta = world.generate_world(spec)  # 288 captions
    name_only = meta["text"] == meta["domain"].map(world.domain_prompt)
    assert abs(name_only.mean() - 0.25) < 0.08  # 3 binomial standard deviations
    details = meta.loc[~name_only, "text"].str.count(",")  # 1 = expression or background only, 2 = both
    backgrounds = meta.loc[~name_only, "text"].str.endswith("background")
    shares = [(details == 2).mean(), ((details == 1) & ~backgrounds).mean(), ((details == 1) & backgrounds).mean()]
    assert all(abs(share - 1 / 3) < 0.1 for share in shares), shares
    _, more = world.generate_world(_with(spec, name_only_captions=0.6))
    more_name_only = more["text"] == more["domain"].map(world.domain_prompt)
    assert (more_name_only | ~name_only).all(), "a higher rate only turns more captions to name-only"
    assert abs(more_name_only.mean() - 0.6) < 0.1
    _, full = world.generate_world(_with(spec, name_only_captions=0.0, varied_captions=False))
    assert (full["text"].str.count(",") == 2).all()
    _, bare = world.generate_world(_with(spec, name_only_captions=1.0))
    assert (bare["text"] == bare["domain"].map(world.domain_prompt)).all()


def test_world_key_changes_with_the_caption_settings_and_the_version():
    keys = {_with(SPEC, **change).key() for change in
            ({}, {"name_only_captions": 0.0}, {"name_only_captions": 0.5}, {"varied_captions": False})}
    assert len(keys) == 4
    assert SPEC.key().startswith(f"v{world.WORLD_VERSION}-")
    params = config.load_profile("mini", name_only_captions=0.5, varied_captions=False)
    assert world.WorldSpec.from_params(params) == world.WorldSpec(
        seed=0, image_size=16, private_domains=8, members_per_domain=16, nonmembers_per_domain=16,
        public_domains=8, images_per_public_domain=4, name_only_captions=0.5, varied_captions=False,
        member_duplicates=(32, 16, 8, 4))
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="name_only_captions"):
            config.load_profile("mini", name_only_captions=bad)


def test_every_image_is_unique_and_members_are_disjoint_from_nonmembers():
    images, meta = world.generate_world(SPEC)
    raw = _bytes(images)
    assert len(set(raw)) == len(raw)
    members = set(meta.loc[meta["split"] == "member", "file_name"])
    nonmembers = set(meta.loc[meta["split"] == "nonmember", "file_name"])
    assert members.isdisjoint(nonmembers)


def test_identity_is_recognisable_across_photos():
    """Leave-one-out nearest neighbour on the face region finds the right identity (chance: 1 in 6)."""
    images, meta = world.generate_world(world.WorldSpec(seed=0, private_domains=6, members_per_domain=12,
                                                        nonmembers_per_domain=0, public_domains=0))
    faces = np.stack([np.asarray(im, float)[3:13, 4:12].ravel() for im in images])
    d = ((faces[:, None] - faces[None]) ** 2).mean(-1)
    np.fill_diagonal(d, np.inf)
    domains = meta["domain"].to_numpy()
    assert (domains[d.argmin(1)] == domains).mean() >= 0.85


def test_imagefolder_round_trip(tmp_path):
    images, meta = world.generate_world(SPEC)
    folder = world.write_imagefolder(tmp_path / "w", images, meta)
    data = world.ImageFolderData(folder)
    assert len(data) == len(meta)
    assert data.private_domains == list(dict.fromkeys(meta.loc[meta["private"], "domain"]))
    rows = data.split(data.private_domains[0], "member")
    x = data.load_images(rows, 16)
    assert x.shape == (5, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    expected = torch.from_numpy(np.asarray(images[0], np.float32) / 127.5 - 1).permute(2, 0, 1)
    assert torch.equal(x[0], expected)
    assert len(data.pretraining_set()) == 3 * 5 + 2 * 3
    assert not list(tmp_path.glob(".w-*")), "no temporary folder left behind"


def test_real_data_layout_without_private_column_and_with_resizing(tmp_path):
    """A user's imagefolder: larger non-square images, no ``private`` column, a domain restriction."""
    rows = []
    for domain in ("Ada Lovelace", "Alan Turing", "Public Person"):
        for k, split in enumerate(["member", "member", "nonmember"] if domain != "Public Person" else ["member"]):
            name = f"{domain.split()[1].lower()}_{k}.jpg"
            Image.new("RGB", (48, 32), (k * 60, 10, 200)).save(tmp_path / name)
            rows.append({"file_name": name, "text": f"a photo of {domain}", "domain": domain, "split": split})
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    data = world.ImageFolderData(tmp_path, domains=["Alan Turing"])
    assert data.private_domains == ["Alan Turing"]
    assert data.public_domains == ["Public Person"]
    x = data.load_images(data.split("Alan Turing", "nonmember"), 24)
    assert x.shape == (1, 3, 24, 24)
    with pytest.raises(ConfigError, match="Grace Hopper"):
        world.ImageFolderData(tmp_path, domains=["Grace Hopper"])
    with pytest.raises(ConfigError, match="unknown domain"):
        data.split("Nobody", "member")


def test_bad_data_folders_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        world.ImageFolderData(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"metadata\.jsonl"):
        world.ImageFolderData(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x", "domain": "d"}))
    with pytest.raises(ValueError, match="split"):
        world.ImageFolderData(tmp_path)


def test_corrupt_image_file_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    row = {"file_name": "broken.png", "text": "photo of X", "domain": "X", "split": "member"}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(row))
    data = world.ImageFolderData(tmp_path)
    with pytest.raises(ValueError, match=r"corrupt or unreadable image file .*broken\.png"):
        data.load_images(data.meta, 16)
    row["file_name"] = "absent.png"
    (tmp_path / "metadata.jsonl").write_text(json.dumps(row))
    with pytest.raises(FileNotFoundError, match=r"absent\.png"):
        world.ImageFolderData(tmp_path).load_images(pd.DataFrame([row]), 16)


def test_load_data_caches_the_world(smoke_params, smoke_data):
    again = world.load_data(smoke_params)
    assert again.folder == smoke_data.folder
    assert len(smoke_data.private_domains) == smoke_params.private_domains


# ------------------------------------------------------------------- the leak knobs: duplicates and shift

# The plain worlds (no knob set), pinned: sha256 over every image's pixel bytes (in file order) and over the
# metadata.jsonl that write_imagefolder writes, for SPEC and for mini's world.
PLAIN_WORLDS = {
    "small": ("v2-3-16-3-5-4-2-3-0.25-1", "34afb05707fa4211bb1d6ba073b874d93cde48b738596e76e303d4632e45876a",
              "fff0026f41ff0beb5652439e484b395805fdd4d9583457aa5f9b7197b2825c8c"),
    "mini": ("v2-0-16-8-16-16-8-4-0.25-1", "26bc470bf1c5970b5e85cd9e347476f6a4f42dc8585b58c96dfada842021415b",
             "1b15e9acea2ac0a2875a5023dbbba835bddf04d4570737c945cfe325daca5a28"),
}


def _world_hashes(spec, folder):
    images, meta = world.generate_world(spec)
    world.write_imagefolder(folder, images, meta)
    pixels = hashlib.sha256(b"".join(_bytes(images))).hexdigest()
    return spec.key(), pixels, hashlib.sha256((folder / world.METADATA).read_bytes()).hexdigest()


def test_neutral_knobs_reproduce_the_plain_world_bit_for_bit(tmp_path):
    mini = config.load_profile("mini", member_duplicates=[], nonmember_shift=0.0)
    neutral = _with(SPEC, member_duplicates=(), nonmember_shift=0.0)
    assert _world_hashes(neutral, tmp_path / "small") == PLAIN_WORLDS["small"]
    assert _world_hashes(world.WorldSpec.from_params(mini), tmp_path / "mini") == PLAIN_WORLDS["mini"]
    assert world.data_identity(mini) == "v2-0-16-8-16-16-8-4-0.25-1|"
    assert "duplicates" not in (tmp_path / "mini" / world.METADATA).read_text()


def test_member_duplicates_are_exact_per_file_and_in_the_pretraining_samples(tmp_path):
    images, meta = world.generate_world(_with(SPEC, member_duplicates=(3, 2)))
    plain_images, plain = world.generate_world(SPEC)
    assert _bytes(images) == _bytes(plain_images), "duplicates are exact copies of the plain world's images"
    pd.testing.assert_frame_equal(meta.drop(columns="duplicates"), plain)
    data = world.ImageFolderData(world.write_imagefolder(tmp_path / "w", images, meta))
    expected = {name: 1 for name in data.meta["file_name"]}
    for domain in data.private_domains:
        members = data.split(domain, "member")["file_name"]
        expected[members[0]], expected[members[1]] = 3, 2
    assert dict(zip(data.meta["file_name"], data.meta["duplicates"], strict=True)) == expected
    unique = data.pretraining_set()
    assert len(unique) == 3 * 5 + 2 * 3 and unique["file_name"].is_unique
    samples = data.pretraining_samples()
    assert samples["file_name"].value_counts().to_dict() == {n: expected[n] for n in unique["file_name"]}
    assert len(samples) == 3 * (5 + 2 + 1) + 2 * 3
    assert list(samples.columns) == list(unique.columns)
    plain_data = world.ImageFolderData(world.write_imagefolder(tmp_path / "plain", plain_images, plain))
    assert (plain_data.meta["duplicates"] == 1).all(), "a folder without the column: every image once"
    pd.testing.assert_frame_equal(plain_data.pretraining_samples(), plain_data.pretraining_set())


def _mean_red_minus_blue(images):
    return float(np.mean([np.asarray(im, float)[..., 0].mean() - np.asarray(im, float)[..., 2].mean()
                          for im in images]))


def test_nonmember_shift_moves_only_the_nonmember_pixels_monotonically(tmp_path):
    images, meta = world.generate_world(SPEC)
    nonmember = (meta["split"] == "nonmember").to_numpy()
    warmth = [_mean_red_minus_blue([im for im, out in zip(images, nonmember, strict=True) if out])]
    for shift in (0.25, 0.5, 1.0):
        shifted_images, shifted = world.generate_world(_with(SPEC, nonmember_shift=shift))
        pd.testing.assert_frame_equal(shifted, meta)  # identities, splits and captions unchanged
        raw, shifted_raw = np.array(_bytes(images), object), np.array(_bytes(shifted_images), object)
        assert (raw[~nonmember] == shifted_raw[~nonmember]).all(), "members (and public images) unchanged"
        assert (raw[nonmember] != shifted_raw[nonmember]).all(), "every non-member moves"
        warmth.append(_mean_red_minus_blue([im for im, out in zip(shifted_images, nonmember, strict=True) if out]))
    assert all(b > a + 2 for a, b in itertools.pairwise(warmth)), f"the warm cast grows with the shift: {warmth}"
    plain = world.ImageFolderData(world.write_imagefolder(tmp_path / "plain", images, meta))
    shifted_images, shifted = world.generate_world(_with(SPEC, nonmember_shift=0.8))
    moved = world.ImageFolderData(world.write_imagefolder(tmp_path / "shifted", shifted_images, shifted))
    pd.testing.assert_frame_equal(moved.pretraining_samples(), plain.pretraining_samples())
    samples = moved.pretraining_samples()
    assert torch.equal(moved.load_images(samples, 16), plain.load_images(samples, 16)), "same pre-training data"
    assert list(moved.meta["text"]) == list(plain.meta["text"]), "same captions, so the same tokenizer vocabulary"


def test_the_knobs_enter_the_world_key_only_when_set():
    keys = {_with(SPEC, **change).key() for change in
            ({}, {"member_duplicates": (3, 2)}, {"member_duplicates": (3,)}, {"nonmember_shift": 0.5},
             {"nonmember_shift": 0.8}, {"member_duplicates": (3, 2), "nonmember_shift": 0.5})}
    assert len(keys) == 6
    assert _with(SPEC, member_duplicates=(), nonmember_shift=0.0).key() == PLAIN_WORLDS["small"][0]
    params = config.load_profile("mini", member_duplicates=[32, 16, 8, 4], nonmember_shift=0.5)
    spec = world.WorldSpec.from_params(params)
    assert (spec.member_duplicates, spec.nonmember_shift) == ((32, 16, 8, 4), 0.5)
    assert world.data_identity(params) == f"{PLAIN_WORLDS['mini'][0]}-dup32.16.8.4-shift0.5|"


def test_bad_knob_values_raise_clear_errors(tmp_path):
    for bad in ([0], [2, -1], [1] * 17):  # mini has 16 members per domain
        with pytest.raises(ConfigError, match="member_duplicates"):
            config.load_profile("mini", member_duplicates=bad)
    with pytest.raises(ConfigError, match="member_duplicates"):
        config.load_profile("mini", member_duplicates=[2.5])
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="nonmember_shift"):
            config.load_profile("mini", nonmember_shift=bad)
    assert config.load_profile("mini", member_duplicates=[1] * 16).member_duplicates == [1] * 16
    rows = [{"file_name": "a.png", "text": "photo of X", "domain": "X", "split": "member", "duplicates": 2},
            {"file_name": "b.png", "text": "photo of X", "domain": "X", "split": "nonmember", "duplicates": 1}]
    for row, value, message in ((0, 0, "integer >= 1"), (0, 1.5, "integer >= 1"), (1, 3, "non-members")):
        broken = [dict(r) for r in rows]
        broken[row]["duplicates"] = value
        (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in broken))
        with pytest.raises(ValueError, match=f"{message}.*{broken[row]['file_name']}"):
            world.ImageFolderData(tmp_path)
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert world.ImageFolderData(tmp_path).pretraining_samples()["file_name"].tolist() == ["a.png", "a.png"]
    with pytest.raises(ConfigError, match="data_dir"):
        config.load_profile("sd", member_duplicates=[2])
    with pytest.raises(ConfigError, match="data_dir"):
        config.load_profile("sd", nonmember_shift=0.5)
