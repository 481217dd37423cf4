"""src/data/fashion_mnist.py: the idx reader (gzipped and raw), its errors, and the pipeline:
values, one channel, host-side augmentation (shift, flip, CutOut), resume, header counts."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from src.data import DataConfig, dataset_info, make_dataset, read_idx, search_split
from src.data.fashion_mnist import FASHION_BACKGROUND, FASHION_MEAN, FASHION_STD, fashion_pad
from src.errors import DataError
from tests.fashion_fixtures import fashion_arrays, idx_bytes, write_fashion_mnist

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def batches(data):
    return [(x.copy(), y.copy()) for x, y in data.create_tuple_iterator(output_numpy=True)]


def normalised(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / np.float32(255.0)
    return ((x - np.float32(FASHION_MEAN)) / np.float32(FASHION_STD))[:, None]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A gzipped folder of 300 train / 100 test images (read-only for the tests)."""
    folder = tmp_path_factory.mktemp("fashion")
    return str(folder), write_fashion_mnist(folder)


# ----------------------------------------------------------------------------- reading

@pytest.mark.parametrize("gz", [True, False, {TRAIN_IMAGES: False, TEST_LABELS: False}],
                         ids=["gz", "raw", "mixed"])
def test_values_and_labels_round_trip(tmp_path, gz):
    written = write_fashion_mnist(tmp_path, n_train=120, n_test=30, gz=gz)
    cfg = DataConfig(name="fashion_mnist", path=str(tmp_path))
    info = dataset_info(cfg)
    assert info == type(info)("fashion_mnist", 10, 28, 120, 30, channels=1)
    for split, bs in (("train", 50), ("eval", 16)):
        got = batches(make_dataset(cfg, split, bs))
        x = np.concatenate([b[0] for b in got])
        y = np.concatenate([b[1] for b in got])
        images, labels = written[split]
        assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape[1:] == (1, 28, 28)
        assert np.array_equal(x, normalised(images)) and np.array_equal(y, labels)
    assert np.array_equal(read_idx(written[TEST_LABELS], "labels"), written["eval"][1])


def test_counts_come_from_the_headers_and_the_search_splits_the_train_images(tmp_path):
    write_fashion_mnist(tmp_path, n_train=250, n_test=40)
    cfg = DataConfig(name="fashion_mnist", path=str(tmp_path))
    info = dataset_info(cfg)
    assert (info.train_size, info.eval_size, info.channels, info.image_size) == (250, 40, 1, 28)
    weights, arch = search_split(cfg, 0.2, seed=0)
    assert (len(weights), len(arch)) == (200, 50)


def test_another_image_size_resizes_bilinearly(tmp_path):
    import cv2
    written = write_fashion_mnist(tmp_path, n_train=20, n_test=10)
    cfg = DataConfig(name="fashion_mnist", path=str(tmp_path), image_size=32)
    assert dataset_info(cfg).image_size == 32
    x, _ = batches(make_dataset(cfg, "eval", 10))[0]
    assert x.shape == (10, 1, 32, 32)
    img = written["eval"][0][3].astype(np.float32) / np.float32(255.0)
    want = (cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR) - FASHION_MEAN) / FASHION_STD
    np.testing.assert_allclose(x[3, 0], want, atol=1e-6)


# ----------------------------------------------------------------------------- errors

def _replace(folder, name, data: bytes, gz: bool = True) -> str:
    path = os.path.join(folder, name + (".gz" if gz else ""))
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    return path


def _damage(case: str, folder: str, written: dict) -> tuple[str, list[str]]:
    """Break the folder as ``case`` says; (the file the error must name, texts it must hold)."""
    images, labels = written["train"]
    if case == "missing_file":
        os.remove(written[TEST_LABELS])
        return folder, [f"lacks {TEST_LABELS} (neither raw nor .gz)", TRAIN_IMAGES,
                        "apt-get install dataset-fashion-mnist",
                        "/usr/share/datasets/fashion-mnist"]
    if case == "swapped":
        return _replace(folder, TRAIN_IMAGES, idx_bytes(labels)), [
            "magic number 0x00000801 (that of idx labels: are the files swapped?)", "0x00000803"]
    if case == "bad_magic":
        return _replace(folder, TEST_LABELS, b"\x12\x34\x56\x78" + b"\0" * 200), [
            "magic number 0x12345678", "expected 0x00000801"]
    if case == "short_header":
        path = _replace(folder, TEST_LABELS, b"\0\0\x08", gz=False)
        return path, ["fewer than the 8-byte header"]
    if case == "truncated_raw":
        os.remove(written[TRAIN_IMAGES])
        path = _replace(folder, TRAIN_IMAGES, idx_bytes(images)[:-100], gz=False)
        return path, ["holds 235100 bytes of data", "300 x 28 x 28 images, 235200 bytes: truncated"]
    if case == "truncated_gz":
        with open(written[TRAIN_IMAGES], "rb") as f:
            data = f.read()
        with open(written[TRAIN_IMAGES], "wb") as f:
            f.write(data[:len(data) // 2])
        return written[TRAIN_IMAGES], ["truncated or corrupt gzip file", "ended before"]
    if case == "not_gzip":
        with open(written[TEST_IMAGES], "wb") as f:
            f.write(idx_bytes(written["eval"][0]))  # raw bytes under a .gz name
        return written[TEST_IMAGES], ["truncated or corrupt gzip file", "Not a gzipped file"]
    if case == "corrupt_deflate":
        data = bytearray(gzip.compress(idx_bytes(images), mtime=0))
        data[10:40] = b"\xff" * 30  # the start of the deflate stream
        with open(written[TRAIN_IMAGES], "wb") as f:
            f.write(bytes(data))
        return written[TRAIN_IMAGES], ["truncated or corrupt gzip file"]
    if case == "counts_differ":
        path = _replace(folder, TRAIN_LABELS, idx_bytes(labels[:-1]))
        return path, ["holds 300 images but", "299 labels"]
    if case == "sizes_differ":
        test_images, _ = fashion_arrays(100, size=32)
        path = _replace(folder, TEST_IMAGES, idx_bytes(test_images))
        return path, ["are 28x28 but in", "32x32"]
    if case == "label_out_of_range":
        bad = written["eval"][1].copy()
        bad[7] = 10
        return _replace(folder, TEST_LABELS, idx_bytes(bad)), ["has label 10 (item 7)", "0..9"]
    if case == "one_class":
        path = _replace(folder, TRAIN_LABELS, idx_bytes(np.full(300, 3, np.uint8)))
        return path, ["holds only class 3", "at least two classes"]
    raise AssertionError(case)


CASES = ["missing_file", "swapped", "bad_magic", "short_header", "truncated_raw",
         "truncated_gz", "not_gzip", "corrupt_deflate", "counts_differ", "sizes_differ",
         "label_out_of_range", "one_class"]


@pytest.mark.parametrize("case", CASES)
def test_each_bad_file_is_one_data_error_naming_it(tmp_path, case):
    folder = str(tmp_path / "fm")
    written = write_fashion_mnist(folder)
    named, texts = _damage(case, folder, written)
    before = sorted(os.listdir(folder))
    with pytest.raises(DataError) as e:
        dataset_info(DataConfig(name="fashion_mnist", path=folder))
    message = str(e.value)
    assert "\n" not in message and f"'{named}'" in message, message
    for text in texts:
        assert text in message, f"{text!r} not in: {message}"
    assert sorted(os.listdir(folder)) == before  # nothing written


def test_missing_folder_or_path_says_how_to_get_the_data(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError, match=rf"Fashion-MNIST folder '{missing}' does not exist; "
                                        rf"expected a folder with {TRAIN_IMAGES}, .*\(each "
                                        rf"gzipped .gz or raw\); apt-get install "
                                        rf"dataset-fashion-mnist"):
        dataset_info(DataConfig(name="fashion_mnist", path=missing))
    with pytest.raises(DataError, match=r"dataset 'fashion_mnist' needs data.path \(the folder "
                                        r"with the four idx files .*apt-get install"):
        dataset_info(DataConfig(name="fashion_mnist"))


# ----------------------------------------------------------------------------- augmentation

def _shift_and_flip_of(aug: np.ndarray, plain: np.ndarray, pad: int) -> tuple[int, int, bool]:
    """The (dy, dx, flipped) that turn ``plain`` (1, h, w) into ``aug``; fails if none does."""
    _, h, w = plain.shape
    padded = np.pad(plain, ((0, 0), (pad, pad), (pad, pad)), constant_values=FASHION_BACKGROUND)
    found = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
             for f in (False, True)
             if np.array_equal(aug, (lambda v: v[..., ::-1] if f else v)(
                 padded[:, dy:dy + h, dx:dx + w]))]
    assert len(found) == 1, found
    return found[0]


def test_augmentation_shifts_and_flips_each_image_and_is_seeded(fashion):
    folder, _ = fashion
    cfg = DataConfig(name="fashion_mnist", path=folder)
    plain = batches(make_dataset(cfg, "train", 300))[0][0]
    aug = batches(make_dataset(cfg, "train", 300, augment=True, seed=3, epoch=1))[0][0]
    again = batches(make_dataset(cfg, "train", 300, augment=True, seed=3, epoch=1))[0][0]
    other = batches(make_dataset(cfg, "train", 300, augment=True, seed=3, epoch=2))[0][0]
    assert np.array_equal(aug, again) and not np.array_equal(aug, other)
    pad = fashion_pad(28)
    assert pad == 2
    moves = [_shift_and_flip_of(aug[i], plain[i], pad) for i in range(0, 300, 5)]
    flipped = sum(f for _, _, f in moves)
    shifted = sum((dy, dx) != (pad, pad) for dy, dx, _ in moves)
    assert 15 <= flipped <= 45 and shifted >= 45  # of 60: about half flipped, most shifted
    assert {dy for dy, _, _ in moves} == set(range(2 * pad + 1))
    off = DataConfig(name="fashion_mnist", path=folder, augment=False)
    assert np.array_equal(batches(make_dataset(off, "train", 300, augment=True))[0][0], plain)


def test_augmentation_of_sample_i_depends_only_on_seed_epoch_and_i(fashion):
    folder, _ = fashion
    cfg = DataConfig(name="fashion_mnist", path=folder, cutout=6)
    full = batches(make_dataset(cfg, "train", 300, augment=True, seed=5, epoch=2))[0][0]
    idx = np.array([250, 3, 77, 3, 199])
    got = batches(make_dataset(cfg, "train", 5, indices=idx, augment=True, seed=5, epoch=2))
    assert np.array_equal(got[0][0], full[idx])
    parts = [batches(make_dataset(cfg, "train", 10, augment=True, shuffle=True, seed=5, epoch=2,
                                  shard=(r, 2), drop_remainder=True)) for r in range(2)]
    order = np.random.default_rng([5, 2]).permutation(300)  # src.data.sample_order's shuffle
    for r, part in enumerate(parts):
        x = np.concatenate([b[0] for b in part])
        assert np.array_equal(x, full[order[r::2]])


def test_cutout_zeroes_one_square_per_image(fashion):
    folder, _ = fashion
    cfg = DataConfig(name="fashion_mnist", path=folder, augment=False, cutout=8)
    plain = batches(make_dataset(cfg, "train", 300))[0][0]
    cut = batches(make_dataset(cfg, "train", 300, augment=True, seed=1))[0][0]
    changed = cut != plain
    assert np.all(cut[changed] == 0.0)                       # only zeroed, nothing moved
    rows, cols = changed.any(axis=(1, 3)), changed.any(axis=(1, 2))
    assert rows.sum(axis=1).max() <= 8 and cols.sum(axis=1).max() <= 8
    assert changed.any(axis=(1, 2, 3)).mean() > 0.9          # (a square may sit in a corner)


def test_resume_gives_the_remaining_batches(fashion):
    folder, _ = fashion
    cfg = DataConfig(name="fashion_mnist", path=folder, cutout=4)
    kw = dict(augment=True, shuffle=True, seed=7, epoch=3, drop_remainder=True)
    whole = batches(make_dataset(cfg, "train", 32, **kw))
    assert len(whole) == 300 // 32
    assert all(x.shape == (32, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int32
               for x, y in whole)
    resumed = batches(make_dataset(cfg, "train", 32, start_batch=4, **kw))
    assert len(resumed) == len(whole) - 4
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(whole[4:], resumed))


def test_eval_split_is_every_test_image_in_order_never_augmented(fashion):
    folder, written = fashion
    cfg = DataConfig(name="fashion_mnist", path=folder, cutout=8)
    got = batches(make_dataset(cfg, "eval", 64))
    assert [len(y) for _, y in got] == [64, 36]
    x = np.concatenate([b[0] for b in got])
    assert np.array_equal(x, normalised(written["eval"][0]))
    assert np.array_equal(np.concatenate([b[1] for b in got]), written["eval"][1])
    assert abs(float(normalised(np.zeros((1, 2, 2), np.uint8)).max()) - FASHION_BACKGROUND) < 1e-6


# ----------------------------------------------------------------------------- one channel

def test_a_search_space_on_fashion_mnist_has_a_one_channel_stem(fashion):
    from src.config import load_config
    from src.search.config import SearchConfig
    from src.search.engine import prepare_space
    from tests.conftest import TINY_SEARCH

    folder, _ = fashion
    cfg = load_config(SearchConfig, TINY_SEARCH,
                      ["data.name=fashion_mnist", f"data.path={folder}"])
    space, cfg = prepare_space(cfg)
    assert space.in_channels == 1 and space.net_plan().stem.cin == 1
    arch = space.arch([0] * len(space.searchable))
    assert arch.in_channels == 1 and arch.to_dict()["in_channels"] == 1
