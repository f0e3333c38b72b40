"""WebDataset shard sets: exact round trip, disjoint reading across ranks and workers, equal
epochs when resampled, corrupt and truncated shards named, interrupted writes invisible."""
import json
import re
import tarfile
import warnings
from collections import Counter

import numpy as np
import pytest
import torch

from treediff.data.arrays import ImageArrays
from treediff.data.cache import SplitCache
from treediff.data.augment import contrastive_augment
from treediff.data.shards import MANIFEST, ShardError, ShardSet, write_shard_set
from treediff.data.split import ArraySplit, Split
from treediff.data.stream import StreamConfig, make_loader


def toy(n: int, shape=(6, 5, 3), name="toy/train", seed=0, labelled=True) -> ArraySplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 4, n) if labelled else None
    return ArraySplit(ImageArrays(images, labels, ["a", "b", "c", "d"] if labelled else [], name),
                      keys=[f"{name.split('/')[1]}{i:04d}" for i in range(n)])


@pytest.fixture
def shard_set(tmp_path):
    """37 train images in 5 shards of 8 (the last one short), 10 test images in 2."""
    write_shard_set({"train": toy(37), "test": toy(10, name="toy/test", seed=1)}, tmp_path / "set",
                    samples_per_shard=8, progress=False)
    return ShardSet.open(tmp_path / "set")


def read_all(shards, split, **kw):
    out = []
    for x, labels, keys in make_loader(shards, split, StreamConfig(**kw)):
        out += [(k, xi, int(l)) for k, xi, l in zip(keys, x, labels)]
    return out


def test_manifest_describes_the_set(shard_set):
    m = json.loads((shard_set.root / MANIFEST).read_text())
    assert m["splits"]["train"]["count"] == 37 and m["splits"]["test"]["count"] == 10
    assert [s["count"] for s in m["splits"]["train"]["shards"]] == [8, 8, 8, 8, 5]
    assert m["image_shape"] == [6, 5, 3] and m["classes"] == ["a", "b", "c", "d"] and m["labelled"]
    assert all(len(s["sha256"]) == 64 for s in m["splits"]["train"]["shards"])
    assert len(shard_set.digest()) == 64


def test_round_trip_is_exact_and_shuffled_before_writing(shard_set):
    source = toy(37)
    got = read_all(shard_set, "train", batch_size=4, shuffle_buffer=0)
    assert sorted(k for k, _, _ in got) == sorted(source.keys)
    for key, x, label in got:
        i = source.keys.index(key)
        expected = torch.from_numpy(source.arrays.images[i]).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.equal(x, expected) and label == source.arrays.labels[i]
    # the writer shuffled before writing: the first shard file does not hold the first 8 source images,
    # and the order is the seed's (the same seed writes the same shards)
    assert shard_keys(shard_set, 0) != source.keys[:8] and len(shard_keys(shard_set, 0)) == 8


def shard_keys(shards, i, split="train"):
    with tarfile.open(shards.root / shards.shards(split)[i]["name"]) as tar:
        return [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".png")]


def test_the_writer_shuffle_follows_its_seed(tmp_path):
    def first_shard(seed, name):
        write_shard_set({"train": toy(37)}, tmp_path / name, samples_per_shard=8, seed=seed, progress=False)
        return shard_keys(ShardSet.open(tmp_path / name), 0)
    assert first_shard(0, "a") == first_shard(0, "b") != first_shard(1, "c")


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_read_disjoint_shards_each_sample_once(shard_set, workers):
    per_rank = [[k for k, _, _ in read_all(shard_set, "train", batch_size=3, rank=r, world_size=2,
                                           num_workers=workers, seed=5, epoch=1)] for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    counts = Counter(per_rank[0] + per_rank[1])
    assert len(counts) == 37 and set(counts.values()) == {1}


def test_epochs_permute_the_shard_assignment_on_every_rank_alike(shard_set):
    def rank_keys(epoch):
        return [frozenset(k for k, _, _ in read_all(shard_set, "train", batch_size=50, rank=r, world_size=2,
                                                    epoch=epoch)) for r in range(2)]
    epochs = [rank_keys(e) for e in range(4)]
    assert len({tuple(e) for e in epochs}) > 1  # the assignment changes with the epoch
    assert all(len(e[0] | e[1]) == 37 and not e[0] & e[1] for e in epochs)


def test_resampled_ranks_yield_equal_batch_counts(shard_set):
    counts = []
    for r in range(2):
        batches = list(make_loader(shard_set, "train", StreamConfig(batch_size=4, rank=r, world_size=2,
                                                                     num_workers=2, mode="resampled",
                                                                     batches_per_epoch=6)))
        counts.append(len(batches))
        assert all(b[0].shape == (4, 3, 6, 5) for b in batches)
    assert counts == [6, 6]
    # default epoch length: the split's size / (batch x world)
    n = sum(1 for _ in make_loader(shard_set, "train", StreamConfig(batch_size=4, world_size=2, mode="resampled")))
    assert n == 37 // 8


@pytest.mark.parametrize("source", ["stream", "stream-2-workers", "memory"])
def test_resampled_epochs_draw_every_sample_equally_often_whatever_the_shard_sizes(tmp_path, source):
    # shards of 500 and 140 (digits has 1000 + 437): reading shards[rank::world] drew the small
    # shard's samples 3.6x as often as the large one's. The split decoded into memory
    # (treediff.data.cache) follows the same rule.
    write_shard_set({"train": toy(640, shape=(2, 2, 1))}, tmp_path / "uneq", samples_per_shard=500, progress=False)
    shards = ShardSet.open(tmp_path / "uneq")
    assert [r["count"] for r in shards.shards("train")] == [500, 140]
    cache = SplitCache.read(shards, "train") if source == "memory" else None

    def drawn(epoch, batch=32, keys=None):
        per_rank = []
        for rank in range(2):
            got = Counter()
            cfg = StreamConfig(batch_size=batch, rank=rank, world_size=2, num_workers=2 if "2" in source else 0,
                               mode="resampled", seed=4, epoch=epoch, keys=keys)
            for x, _, k in (cache.batches(cfg) if cache else make_loader(shards, "train", cfg)):
                assert x.shape == (batch, 1, 2, 2)
                got.update(k)
            per_rank.append(got)
        return per_rank

    one, two = drawn(0)
    assert sum(one.values()) == sum(two.values()) == 320  # 10 full batches each
    counts = one + two
    mean = sum(counts.values()) / 640
    assert len(counts) == 640 and all(0.85 * mean <= c <= 1.15 * mean for c in counts.values())
    assert not set(one) & set(two)  # the ranks draw disjoint samples
    assert drawn(1)[0] != one  # and other ones the next epoch
    # an epoch that draws fewer than there are (640 // 96 x 48 = 576): each sample at most once
    one, two = drawn(0, batch=48)
    assert sum(one.values()) == sum(two.values()) == 288 and max((one + two).values()) == 1
    # a key subset (a subtree phase's leaf): the same, over its keys only
    subset = frozenset(f"train{i:04d}" for i in range(0, 640, 5))  # 128 keys, in both shards
    one, two = drawn(0, batch=16, keys=subset)
    assert set(one + two) == subset and max((one + two).values()) == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_two_views_for_the_contrastive_term(shard_set, workers):
    plain = {k: x for k, x, _ in read_all(shard_set, "train", batch_size=37, shuffle_buffer=0)}
    loader = make_loader(shard_set, "train", StreamConfig(batch_size=37, views=2, shuffle_buffer=0,
                                                          num_workers=workers),
                         augment=contrastive_augment("flip", 6, 3))
    batches = list(loader)  # one batch per loader worker
    x, keys = torch.cat([b[0] for b in batches]), [k for b in batches for k in b[2]]
    assert x.shape == (37, 2, 3, 6, 5) and sorted(keys) == sorted(plain)
    for k, views in zip(keys, x):  # each view is the image or its mirror image, drawn on its own
        assert all(torch.equal(v, plain[k]) or torch.equal(v, plain[k].flip(-1)) for v in views)
    assert not torch.equal(x[:, 0], x[:, 1])
    with pytest.raises(ValueError, match="augment"):
        make_loader(shard_set, "train", StreamConfig(batch_size=5, views=2))


def test_the_split_in_memory_holds_the_streamed_pixels_labels_and_keys(shard_set):
    streamed = {k: (x, l) for k, x, l in read_all(shard_set, "train", batch_size=8, shuffle_buffer=0)}
    cache = SplitCache.read(shard_set, "train")
    assert cache.keys == sorted(streamed) and cache.images.dtype == torch.uint8
    for k, img, label in zip(cache.keys, cache.images, cache.labels):
        assert torch.equal(img.float().div(127.5).sub(1.0), streamed[k][0]) and int(label) == streamed[k][1]
    x, labels, keys = next(cache.batches(StreamConfig(batch_size=5, mode="resampled", seed=1), augment=None))
    assert [int(labels[i]) for i in range(5)] == [streamed[k][1] for k in keys]
    assert all(torch.equal(x[i], streamed[k][0]) for i, k in enumerate(keys))
    views, _, keys = next(cache.batches(StreamConfig(batch_size=5, views=2, mode="resampled"),
                                        augment=contrastive_augment("flip", 6, 3)))
    assert views.shape == (5, 2, 3, 6, 5)
    assert all(torch.equal(v, streamed[k][0]) or torch.equal(v, streamed[k][0].flip(-1))
               for k, pair in zip(keys, views) for v in pair)


def test_corrupt_byte_is_named_by_the_checksum(shard_set):
    victim = shard_set.root / shard_set.shards("train")[2]["name"]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=re.escape(str(victim)) + ".*corrupt"):
        read_all(shard_set, "train", batch_size=4)
    with pytest.raises(ShardError, match=re.escape(victim.name)):
        shard_set.verify("train")
    shard_set.verify("test")  # the other split is fine


def test_truncated_shard_is_named_while_streaming(shard_set):
    victim = shard_set.root / shard_set.shards("train")[1]["name"]
    victim.write_bytes(victim.read_bytes()[:1500])
    with pytest.raises(ShardError, match=re.escape(str(victim))):
        read_all(shard_set, "train", batch_size=4, verify=False, num_workers=2)


def test_skip_mode_counts_and_continues(shard_set):
    victim = shard_set.root / shard_set.shards("train")[0]["name"]
    victim.write_bytes(victim.read_bytes()[:1500])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_all(shard_set, "train", batch_size=4, on_error="skip")
    assert len(got) == 37 - 8
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert messages and victim.name in messages[0] and "1 skipped" in messages[0]


def test_skip_mode_while_streaming_keeps_what_the_shard_held_before_the_damage(shard_set):
    victim = shard_set.root / shard_set.shards("train")[3]["name"]
    victim.write_bytes(victim.read_bytes()[:1500])  # not caught by a checksum pass (verify=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_all(shard_set, "train", batch_size=4, on_error="skip", verify=False)
    assert 37 - 8 <= len(got) < 37 and len({k for k, _, _ in got}) == len(got)
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert messages and str(victim) in messages[0]


def test_missing_manifest_names_the_prepare_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="treediff prepare"):
        ShardSet.open(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete shard set"):
        ShardSet.open(tmp_path / "half")


class Exploding(Split):
    """A split whose 20th image cannot be read (a stand-in for Ctrl-C or a bad file)."""

    def __init__(self, inner: ArraySplit, exc: BaseException):
        self.inner, self.exc = inner, exc
        self.name, self.classes = inner.name, inner.classes

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i == 19:
            raise self.exc
        return self.inner[i]

    @property
    def labelled(self):
        return True


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk on fire")])
def test_interrupted_write_leaves_nothing_complete_looking(tmp_path, exc):
    with pytest.raises(type(exc)):
        write_shard_set({"train": Exploding(toy(37), exc)}, tmp_path / "set", samples_per_shard=8, progress=False)
    assert list(tmp_path.iterdir()) == []  # no set, no temporary directory


def test_existing_set_is_kept_unless_overwrite(tmp_path, shard_set):
    before = (shard_set.root / MANIFEST).read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shard_set({"train": toy(5)}, shard_set.root, progress=False)
    # a failed overwrite keeps the old set whole
    with pytest.raises(OSError):
        write_shard_set({"train": Exploding(toy(37), OSError("x"))}, shard_set.root, samples_per_shard=8,
                        overwrite=True, progress=False)
    assert (shard_set.root / MANIFEST).read_text() == before
    shard_set.verify()
    write_shard_set({"train": toy(5), "test": toy(3, name="toy/test")}, shard_set.root, overwrite=True,
                    progress=False)
    assert ShardSet.open(shard_set.root).count("train") == 5
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_unlabelled_data_streams_label_minus_one(tmp_path):
    write_shard_set({"train": toy(6, labelled=False)}, tmp_path / "u", progress=False)
    got = read_all(ShardSet.open(tmp_path / "u"), "train", batch_size=6)
    assert [l for _, _, l in got] == [-1] * 6


def test_mixed_shapes_and_dotted_keys_are_refused(tmp_path):
    bad = ArraySplit(ImageArrays(np.zeros((2, 4, 4, 1), np.uint8), None, [], "k/train"), keys=["a.b", "c"])
    with pytest.raises(ValueError, match="a.b"):
        write_shard_set({"train": bad}, tmp_path / "k", progress=False)
    with pytest.raises(ValueError, match="image shapes"):
        write_shard_set({"train": toy(3), "test": toy(3, shape=(4, 4, 3), name="toy/test")}, tmp_path / "m",
                        progress=False)
    assert not (tmp_path / "k").exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize("preset,channels", [("cifar", 3), ("celeba", 3), ("flip", 1), ("flip", 3)])
def test_contrastive_presets_keep_shape_and_dtype_and_draw_new_views(preset, channels):
    torch.manual_seed(0)
    image = torch.randint(0, 256, (channels, 32, 32), dtype=torch.uint8)
    augment = contrastive_augment(preset, 32, channels)
    views = [augment(image) for _ in range(8)]
    assert all(v.shape == image.shape and v.dtype == torch.uint8 for v in views)
    assert len({v.numpy().tobytes() for v in views}) > 1


def test_colour_presets_refuse_grey_images():
    with pytest.raises(ValueError, match="colour"):
        contrastive_augment("cifar", 28, 1)
    with pytest.raises(ValueError, match="preset"):
        contrastive_augment("mnist", 28, 1)
