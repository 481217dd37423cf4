"""src/data/: host-decided order, splits, shards, digits, CIFAR-10 and ImageNet checks
(Fashion-MNIST: tests/unit/test_fashion_mnist.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from src.data import (CIFAR_RECORD, CIFAR_TEST_FILES, CIFAR_TRAIN_FILES, DataConfig, dataset_info,
                      make_dataset, sample_order, search_split)
from src.errors import DataError, HourNASError
from tests.conftest import cifar_label


def batches(data):
    return [(x.copy(), y.copy()) for x, y in data.create_tuple_iterator(output_numpy=True)]


# ----------------------------------------------------------------------------- config

def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(HourNASError, match="unknown dataset 'mnist'; valid: digits, cifar10, "
                                           "imagenet, fashion_mnist"):
        DataConfig(name="mnist").validate()


def test_cifar_without_path_is_an_error():
    with pytest.raises(HourNASError, match="needs data.path"):
        dataset_info(DataConfig(name="cifar10"))


# ----------------------------------------------------------------------------- order

def test_sample_order_shuffle_is_seeded_per_epoch():
    idx = np.arange(100)
    a = sample_order(idx, shuffle=True, seed=1, epoch=0)
    assert np.array_equal(a, sample_order(idx, shuffle=True, seed=1, epoch=0))
    assert not np.array_equal(a, sample_order(idx, shuffle=True, seed=1, epoch=1))
    assert not np.array_equal(a, sample_order(idx, shuffle=True, seed=2, epoch=0))
    assert sorted(a.tolist()) == list(range(100))
    assert np.array_equal(sample_order(idx), idx)


@pytest.mark.parametrize("n,size", [(100, 4), (103, 4), (7, 7)])
def test_shards_are_disjoint_equal_and_cover(n, size):
    idx = np.arange(n) * 3
    order = sample_order(idx, shuffle=True, seed=5, epoch=2)
    parts = [sample_order(idx, shuffle=True, seed=5, epoch=2, shard=(r, size)) for r in range(size)]
    assert len({len(p) for p in parts}) == 1
    joined = np.concatenate(parts)
    assert len(set(joined.tolist())) == len(joined)            # disjoint
    interleaved = np.stack(parts, axis=1).reshape(-1)       # strided: rank r has r, r+size, ...
    assert np.array_equal(interleaved, order[:len(joined)])   # cover all but n % size
    assert len(joined) == n - n % size


def test_bad_shard_is_an_error():
    with pytest.raises(HourNASError, match="rank < size"):
        sample_order(np.arange(10), shard=(2, 2))


def test_search_split_is_deterministic_disjoint_and_covering():
    cfg = DataConfig(image_size=16)
    w, a = search_split(cfg, 0.2, seed=0)
    w2, a2 = search_split(cfg, 0.2, seed=0)
    assert np.array_equal(w, w2) and np.array_equal(a, a2)
    n = dataset_info(cfg).train_size
    assert len(a) == round(n * 0.2) and len(w) + len(a) == n
    assert not set(w.tolist()) & set(a.tolist())
    w3, _ = search_split(cfg, 0.2, seed=1)
    assert not np.array_equal(w, w3)


# ----------------------------------------------------------------------------- digits

def test_digits_columns_and_every_eval_image():
    cfg = DataConfig(image_size=16)
    info = dataset_info(cfg)
    assert (info.num_classes, info.train_size, info.eval_size) == (10, 1437, 360)
    got = batches(make_dataset(cfg, "eval", 64))
    assert got[0][0].shape == (64, 3, 16, 16) and got[0][0].dtype == np.float32
    assert got[0][1].dtype == np.int32
    assert sum(len(y) for _, y in got) == 360 and len(got[-1][1]) == 360 - 5 * 64
    with pytest.raises(HourNASError, match="never drops"):
        make_dataset(cfg, "eval", 64, drop_remainder=True)


def test_digits_are_scikit_learns_set_and_split_without_importing_it():
    """The digits file is read as load_digits reads it, and the shipped eval split is
    train_test_split's stratified 80/20 split (the one an earlier version computed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from src.data import DIGITS_EVAL_FRACTION, DIGITS_SPLIT_SEED, _digits_raw, digits_split

    images, target = _digits_raw()
    d = load_digits()
    assert np.array_equal(images, d.images) and np.array_equal(target, d.target)
    train, held = train_test_split(np.arange(len(d.target)), test_size=DIGITS_EVAL_FRACTION,
                                   random_state=DIGITS_SPLIT_SEED, stratify=d.target)
    got_train, got_eval = digits_split(len(d.target))
    assert np.array_equal(got_train, np.sort(train)) and np.array_equal(got_eval, np.sort(held))


def test_subset_sampler_keeps_the_host_order():
    cfg = DataConfig(image_size=16)
    full = np.concatenate([y for _, y in batches(make_dataset(cfg, "train", 1000))])
    idx = np.array([17, 3, 900, 3, 41])
    got = np.concatenate([y for _, y in batches(make_dataset(cfg, "train", 2, indices=idx))])
    assert np.array_equal(got, full[idx])


def test_digits_augmentation_reproducible_and_resumable():
    cfg = DataConfig(image_size=16, cutout=4)
    kw = dict(augment=True, shuffle=True, seed=7, epoch=3, drop_remainder=True)
    a = batches(make_dataset(cfg, "train", 32, **kw))
    b = batches(make_dataset(cfg, "train", 32, **kw))
    assert len(a) == 1437 // 32
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    plain = batches(make_dataset(cfg, "train", 32, **{**kw, "augment": False}))
    assert not np.array_equal(a[0][0], plain[0][0])              # augmentation does something
    assert np.array_equal(a[0][1], plain[0][1])                   # and keeps the order
    other = batches(make_dataset(cfg, "train", 32, **{**kw, "epoch": 4}))
    assert not np.array_equal(a[0][1], other[0][1])
    resumed = batches(make_dataset(cfg, "train", 32, start_batch=5, **kw))
    assert len(resumed) == len(a) - 5
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a[5:], resumed))


def _augment_digits_loop(x, cutout, crop, seed, epoch):
    """The per-sample loop the vectorised digits augmentation replaced (the reference)."""
    from src.data.digits import DIGITS_MEAN, DIGITS_STD
    n, _, h, w = x.shape
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, 0xA06])
    pad = max(1, h // 8)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    cy = rng.integers(0, h, size=n)
    cx = rng.integers(0, w, size=n)
    out = x
    if crop:
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
                        constant_values=(0.0 - DIGITS_MEAN) / DIGITS_STD)
        out = np.empty_like(x)
        for i in range(n):
            out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    if cutout > 0:
        out = out.copy() if out is x else out
        half = cutout // 2
        for i in range(n):
            y0, y1 = max(0, cy[i] - half), min(h, cy[i] + half)
            x0, x1 = max(0, cx[i] - half), min(w, cx[i] + half)
            out[i, :, y0:y1, x0:x1] = 0.0
    return out


@pytest.mark.parametrize("size,cutout,crop,seed,epoch", [
    (16, 4, True, 7, 3), (32, 0, True, 0, 0), (32, 9, False, 123, 1), (24, 6, True, 2**40, 5)])
def test_vectorised_digits_augmentation_is_the_loop_bit_for_bit(size, cutout, crop, seed, epoch):
    from src.data.digits import augment_digits, digits_arrays
    x, _ = digits_arrays(size, "train")
    before = x.copy()
    got = augment_digits(x, cutout, crop, seed, epoch)
    want = _augment_digits_loop(x, cutout, crop, seed, epoch)
    assert got.dtype == want.dtype == np.float32
    assert got.tobytes() == want.tobytes()
    assert np.array_equal(x, before)  # the input is left as it was


def test_start_batch_past_the_end_is_an_error():
    with pytest.raises(HourNASError, match="past the end"):
        make_dataset(DataConfig(image_size=16), "eval", 100, start_batch=4)


# ----------------------------------------------------------------------------- CIFAR-10

# cifar_dir (tests/conftest.py): one folder of random records per session, label of record r
# of file f: cifar_label(f, r)

def test_cifar_fixture_reads_in_host_order(cifar_dir):
    cfg = DataConfig(name="cifar10", path=cifar_dir, num_workers=2)
    info = dataset_info(cfg)
    assert (info.num_classes, info.train_size, info.eval_size) == (10, 50000, 10000)
    idx = np.array([10005, 3, 49999, 20001])
    got = batches(make_dataset(cfg, "train", 4, indices=idx))
    assert got[0][0].shape == (4, 3, 32, 32) and got[0][0].dtype == np.float32
    assert got[0][1].dtype == np.int32
    expect = [cifar_label(i // 10000, i % 10000) for i in idx]   # label of file f, record r
    assert got[0][1].tolist() == expect


def test_cifar_augmentation_reproducible(cifar_dir):
    cfg = DataConfig(name="cifar10", path=cifar_dir, cutout=16, num_workers=2)
    kw = dict(indices=np.arange(600), augment=True, shuffle=True, seed=1, epoch=2,
              drop_remainder=True)
    a = batches(make_dataset(cfg, "train", 100, **kw))
    b = batches(make_dataset(cfg, "train", 100, **kw))
    assert len(a) == 6
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    c = batches(make_dataset(cfg, "train", 100, **{**kw, "epoch": 3}))
    assert not np.array_equal(a[0][0], c[0][0])


def test_cifar_truncated_bin_is_a_clear_error(cifar_dir, tmp_path):
    # the shared folder's files, linked, but data_batch_3.bin one record and a byte short
    for name in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES:
        os.symlink(os.path.join(cifar_dir, name), tmp_path / name)
    os.remove(tmp_path / "data_batch_3.bin")
    with open(tmp_path / "data_batch_3.bin", "wb") as fh:
        fh.truncate(CIFAR_RECORD * 9999)
    with pytest.raises(DataError, match=r"data_batch_3.bin' has 30726927 bytes; expected 30730000"):
        dataset_info(DataConfig(name="cifar10", path=str(tmp_path)))


def test_cifar_label_out_of_range_in_any_file_is_named(cifar_dir, tmp_path):
    for name in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES:
        if name != "data_batch_3.bin":
            os.symlink(os.path.join(cifar_dir, name), tmp_path / name)
    records = np.fromfile(os.path.join(cifar_dir, "data_batch_3.bin"), np.uint8)
    records[1234 * CIFAR_RECORD] = 200
    records.tofile(tmp_path / "data_batch_3.bin")
    with pytest.raises(DataError, match=r"data_batch_3.bin' has label 200 \(record 1234\); "
                                        r"CIFAR-10 labels are 0..9"):
        dataset_info(DataConfig(name="cifar10", path=str(tmp_path)))


def test_cifar_missing_files_named(tmp_path):
    (tmp_path / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match="lacks data_batch_1.bin"):
        dataset_info(DataConfig(name="cifar10", path=str(tmp_path)))


# ----------------------------------------------------------------------------- ImageNet

def write_imagenet(root, classes=("a", "b", "c"), per_class=(3, 2)):
    import cv2
    rng = np.random.default_rng(0)
    for sub, n in zip(("train", "val"), per_class):
        for c in classes:
            os.makedirs(os.path.join(root, sub, c), exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 256, size=(40 + 7 * i, 50, 3), dtype=np.uint8)
                cv2.imwrite(os.path.join(root, sub, c, f"{c}_{i}.JPEG"), img)
    return root


def test_imagenet_folder_reads(tmp_path):
    root = write_imagenet(str(tmp_path / "in"))
    cfg = DataConfig(name="imagenet", path=root, image_size=32, num_workers=1)
    info = dataset_info(cfg)
    assert (info.num_classes, info.train_size, info.eval_size) == (3, 9, 6)
    ev = batches(make_dataset(cfg, "eval", 4))
    assert sum(len(y) for _, y in ev) == 6 and ev[0][0].shape == (4, 3, 32, 32)
    assert sorted(np.concatenate([y for _, y in ev]).tolist()) == [0, 0, 1, 1, 2, 2]
    tr = batches(make_dataset(cfg, "train", 3, augment=True, shuffle=True, seed=0))
    assert sum(len(y) for _, y in tr) == 9 and tr[0][0].shape == (3, 3, 32, 32)


def test_imagenet_without_classes_is_a_clear_error(tmp_path):
    os.makedirs(tmp_path / "in" / "train")
    os.makedirs(tmp_path / "in" / "val")
    with pytest.raises(DataError, match=r"in/train' holds no class folders"):
        dataset_info(DataConfig(name="imagenet", path=str(tmp_path / "in")))


def test_imagenet_unreadable_image_is_a_clear_error(tmp_path):
    root = write_imagenet(str(tmp_path / "in"))
    bad = os.path.join(root, "val", "b", "b_1.JPEG")
    with open(bad, "wb") as fh:
        fh.write(b"not a jpeg")
    with pytest.raises(DataError, match=r"b_1.JPEG' cannot be decoded"):
        dataset_info(DataConfig(name="imagenet", path=root))


def test_imagenet_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        dataset_info(DataConfig(name="imagenet", path=str(tmp_path / "nope")))


# ----------------------------------------------------------------------------- broken images

def _jpeg(h: int = 120, w: int = 160) -> bytes:
    import cv2
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    return cv2.imencode(".jpg", img)[1].tobytes()


@pytest.mark.parametrize("cut", [1, 2, 100, 0.5])
def test_truncated_jpeg_is_found_although_cv2_decodes_it(tmp_path, cut):
    import cv2
    data = _jpeg()
    n = int(len(data) * cut) if isinstance(cut, float) else len(data) - cut
    path = tmp_path / "cut.JPEG"
    path.write_bytes(data[:n])
    assert cv2.imread(str(path)) is not None  # what the old check relied on
    from src.data import image_problem
    assert image_problem(str(path)).startswith("is truncated"), image_problem(str(path))


def test_image_problem_names_each_kind_of_damage(tmp_path):
    import cv2

    from src.data import image_problem
    good = tmp_path / "good.JPEG"
    good.write_bytes(_jpeg())
    png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))[1].tobytes()
    cases = {"empty.JPEG": b"", "gif.JPEG": b"GIF89a" + b"\0" * 40,
             "noend.png": png[:-12], "text.JPEG": b"<html>not found</html>",
             "junk.JPEG": b"\xff\xd8\xff" + b"\x13" * 200}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    assert image_problem(str(good)) is None
    assert image_problem(str(tmp_path / "empty.JPEG")) == "is empty (0 bytes)"
    assert image_problem(str(tmp_path / "gif.JPEG")).startswith("is a GIF")
    assert image_problem(str(tmp_path / "noend.png")).startswith("is truncated")
    assert image_problem(str(tmp_path / "text.JPEG")).startswith("is a text/HTML file")
    assert image_problem(str(tmp_path / "junk.JPEG")).startswith("is corrupt")


def test_verify_images_reports_every_broken_file_in_order(tmp_path):
    from src.data import verify_images
    paths = []
    for i in range(12):
        p = tmp_path / f"{i}.JPEG"
        p.write_bytes(_jpeg()[:300] if i in (3, 9) else _jpeg())
        paths.append(str(p))
    seen = []
    bad = verify_images(paths, workers=3, progress=lambda d, t, b: seen.append((d, t, b)))
    assert [p for p, _ in bad] == [paths[3], paths[9]]
    assert seen[-1] == (12, 12, 2) and [d for d, _, _ in seen] == list(range(1, 13))


def test_large_folder_is_checked_on_a_sample_and_verify_data_checks_all(tmp_path, monkeypatch):
    import src.data as data
    from src.data import imagenet, pipeline  # the modules that look the patched names up
    root = write_imagenet(str(tmp_path / "in"), per_class=(4, 4))
    bad = os.path.join(root, "train", "b", "b_2.JPEG")
    with open(bad, "rb") as fh:
        raw = fh.read()
    with open(bad, "wb") as fh:
        fh.write(raw[:len(raw) // 2])
    monkeypatch.setattr(imagenet, "_IMAGE_CHECK_ALL", 5)  # "large": sample 1 + first per class
    monkeypatch.setattr(imagenet, "_IMAGE_SAMPLE", 1)
    monkeypatch.setattr(pipeline, "_INFO_CACHE", {})
    cfg = DataConfig(name="imagenet", path=root, image_size=16, num_workers=1)
    dataset_info(cfg)  # b_2 is neither the sampled image nor a first one
    lines = []
    with pytest.raises(DataError, match=r"1 of 24 images cannot be decoded: '.*b_2.JPEG' is "
                                        r"truncated"):
        data.verify_dataset(cfg, log=lines.append)
    assert lines == [f"broken image: {bad}: " + data.image_problem(bad)]


def test_pipeline_failure_names_the_file_and_leaves_the_cwd_clean(tmp_path, monkeypatch, capsys):
    """The broken image slips past the sample; MindSpore's Decode fails during the run (and
    dumps ./abnormal_image.jpg): one error line naming the file, exit 2, nothing left."""
    from src.data import imagenet, pipeline
    from src.cli import run_main
    root = write_imagenet(str(tmp_path / "in"), per_class=(4, 4))
    bad = os.path.join(root, "train", "b", "b_2.JPEG")
    with open(bad, "rb") as fh:
        raw = fh.read()
    with open(bad, "wb") as fh:
        fh.write(raw[:len(raw) // 2])
    monkeypatch.setattr(imagenet, "_IMAGE_CHECK_ALL", 5)
    monkeypatch.setattr(imagenet, "_IMAGE_SAMPLE", 1)
    monkeypatch.setattr(pipeline, "_INFO_CACHE", {})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "abnormal_image.keep").write_text("the user's own file\n")
    monkeypatch.chdir(cwd)

    def main(args):
        cfg = DataConfig(name="imagenet", path=root, image_size=16, num_workers=1)
        for _ in make_dataset(cfg, "train", 4).create_tuple_iterator(num_epochs=1):
            pass

    with pytest.raises(SystemExit) as e:
        run_main(main, [])
    assert e.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: image '{bad}' cannot be decoded ("), err
    assert "--verify-data" in err[0]
    assert sorted(os.listdir(cwd)) == ["abnormal_image.keep"]
