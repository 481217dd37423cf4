"""The built-in digits set: scikit-learn's 1,797 8x8 digits resized, served from memory with
a fixed stratified 80/20 train/eval split and host-side augmentation."""
from __future__ import annotations

import os

import numpy as np

from src.data import augment
from src.data.order import seed_words
from src.errors import DataError

DIGITS_SPLIT_SEED = 0                    # the fixed train/eval split of the digits set
DIGITS_EVAL_FRACTION = 0.2
DIGITS_MEAN = 0.305                      # of the 0..1-scaled, resized training images
DIGITS_STD = 0.32
DIGITS_SPLIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_eval_split.txt")

_DIGITS_CACHE: dict[int, tuple] = {}


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (1797 8x8 images, values 0..16; labels) read from the file it
    ships, as ``load_digits`` reads it, without importing scikit-learn (1-2 s of imports)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in digits set needs scikit-learn (pip install -r requirements.txt)")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def digits_split(n: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) indices of the digits set, sorted: the fixed stratified 80/20 split
    (``DIGITS_SPLIT_FILE``: scikit-learn's ``train_test_split`` with ``DIGITS_EVAL_FRACTION``,
    ``random_state=DIGITS_SPLIT_SEED``, written out)."""
    eval_idx = np.loadtxt(DIGITS_SPLIT_FILE, dtype=np.int64, comments="#").reshape(-1)
    train_idx = np.setdiff1d(np.arange(n), eval_idx)
    return train_idx, np.sort(eval_idx)


def load_digits(image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, eval_x, eval_y): 3-channel float32 NCHW in [0, 1], int32 labels;
    made once per process and size."""
    if image_size in _DIGITS_CACHE:
        return _DIGITS_CACHE[image_size]
    import cv2

    images, target = _digits_raw()
    imgs = (images / 16.0).astype(np.float32)
    big = np.stack([cv2.resize(im, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
                    for im in imgs])
    big = np.clip(big, 0.0, 1.0)
    x = np.repeat(big[:, None], 3, axis=1)
    y = target.astype(np.int32)
    idx_train, idx_eval = digits_split(len(y))
    out = (x[idx_train], y[idx_train], x[idx_eval], y[idx_eval])
    _DIGITS_CACHE[image_size] = out
    return out


def digits_arrays(image_size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of ``split``, images normalised (float32 NCHW)."""
    tx, ty, ex, ey = load_digits(image_size)
    x, y = (tx, ty) if split == "train" else (ex, ey)
    return ((x - DIGITS_MEAN) / DIGITS_STD).astype(np.float32), y


def augment_digits(x: np.ndarray, cutout: int, crop: bool, seed: int, epoch: int) -> np.ndarray:
    """Random translation by up to size/8 pixels (padded with the normalised 0, the
    background) and CutOut, per sample; ``x`` normalised, left as it was.

    The random numbers are drawn for every sample of the split at once, so sample i's
    augmentation depends only on (seed, epoch, i). No flip: a mirrored digit is another glyph.
    """
    n, _, h, w = x.shape
    rng = np.random.default_rng(seed_words(seed, epoch, 0xA06))
    pad = max(1, h // 8)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    cy = rng.integers(0, h, size=n)
    cx = rng.integers(0, w, size=n)
    out = x
    if crop:
        out = augment.shift(x, dy, dx, pad, (0.0 - DIGITS_MEAN) / DIGITS_STD)
    if cutout > 0:
        out = out.copy() if out is x else out
        augment.cut_out(out, cy, cx, cutout)
    return out
