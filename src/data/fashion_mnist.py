"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 70,000 28x28 grayscale images of clothing in 10
classes, 60,000 train and 10,000 test, in four idx files: gzipped (``.gz``, as Debian's package
dataset-fashion-mnist ships them) or raw (as MindSpore's FashionMnistDataset reads them).

Read here with numpy, checked, and served from memory like the digits: one channel, the host
decides the order and the augmentation (random shift, left-right flip, CutOut), so batches
are bit-identical across runs, resumes and shard layouts. The train split is the 60,000
training images (a search splits them 80/20); the eval split is the 10,000 test images.
"""
from __future__ import annotations

import os

import numpy as np

from src.data import augment
from src.data.order import seed_words
from src.errors import DataError

FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "eval": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_CLASSES = 10
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # idx: ubyte data, 3 or 1 dimensions
# of the 0..1-scaled 60,000 training images at 28x28 (measured: 0.28604, 0.35302)
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
FASHION_BACKGROUND = (0.0 - FASHION_MEAN) / FASHION_STD  # a black pixel, normalised
_GET_IT = ("apt-get install dataset-fashion-mnist puts them, gzipped, in "
           "/usr/share/datasets/fashion-mnist")

_FASHION_CACHE: dict[tuple[str, int], tuple] = {}


def _expected() -> str:
    names = [n for pair in FASHION_FILES.values() for n in pair]
    return f"{', '.join(names)} (each gzipped .gz or raw)"


def fashion_files(path: str) -> dict[str, tuple[str, str]]:
    """{split: (images file, labels file)} in the folder ``path``; a raw file is taken before
    its .gz when both are there."""
    if not os.path.isdir(path):
        raise DataError(f"Fashion-MNIST folder '{path}' does not exist; expected a folder with "
                        f"{_expected()}; {_GET_IT}")
    found, missing = {}, []
    for split, names in FASHION_FILES.items():
        pair = []
        for name in names:
            hits = [p for p in (os.path.join(path, name), os.path.join(path, name + ".gz"))
                    if os.path.isfile(p)]
            pair.append(hits[0] if hits else None)
            if not hits:
                missing.append(name)
        found[split] = tuple(pair)
    if missing:
        raise DataError(f"Fashion-MNIST folder '{path}' lacks {', '.join(missing)} (neither raw "
                        f"nor .gz); expected {_expected()}; {_GET_IT}")
    return found


def _file_bytes(path: str) -> bytes:
    """The (uncompressed) contents of ``path``."""
    if not path.endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    import gzip
    import zlib
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"Fashion-MNIST file '{path}' is a truncated or corrupt gzip file "
                        f"({str(e) or type(e).__name__}); replace it with a good copy (.gz or "
                        f"raw; {_GET_IT})") from None


def read_idx(path: str, kind: str) -> np.ndarray:
    """The uint8 array of an idx file: ``kind`` "images" (count, rows, cols) or "labels"
    (count,). Its magic number and the sizes in its header are checked against the data."""
    magic, ndim = IDX_MAGIC[kind], 3 if kind == "images" else 1
    data = _file_bytes(path)
    header = 4 + 4 * ndim
    where = f"Fashion-MNIST file '{path}'"
    if len(data) < header:
        raise DataError(f"{where} has {len(data)} bytes, fewer than the {header}-byte header of "
                        f"idx {kind}: truncated or not an idx file; replace it with a good copy")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        other = [k for k, m in IDX_MAGIC.items() if m == found]
        swapped = f" (that of idx {other[0]}: are the files swapped?)" if other else ""
        raise DataError(f"{where} has magic number 0x{found:08x}{swapped}; expected "
                        f"0x{magic:08x} (idx {kind}: a big-endian header, then uint8 data)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    need = int(np.prod(dims))
    if len(data) - header != need:
        raise DataError(f"{where} holds {len(data) - header} bytes of data"
                        f"{' (uncompressed)' if path.endswith('.gz') else ''}; its header says "
                        f"{' x '.join(map(str, dims))} {kind}, {need} bytes: "
                        f"{'truncated' if len(data) - header < need else 'extra bytes at the end'}"
                        f"; replace it with a good copy")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _read_split(files: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, rows, cols), labels uint8 (n,)) of one split, counts and labels
    checked."""
    image_file, label_file = files[split]
    images, labels = read_idx(image_file, "images"), read_idx(label_file, "labels")
    if len(images) != len(labels):
        raise DataError(f"Fashion-MNIST file '{image_file}' holds {len(images)} images but "
                        f"'{label_file}' {len(labels)} labels; they must match one to one")
    if len(images) == 0 or 0 in images.shape[1:]:
        raise DataError(f"Fashion-MNIST file '{image_file}' holds no images "
                        f"({' x '.join(map(str, images.shape))}); replace it with a good copy")
    if labels.max() >= FASHION_CLASSES:
        i = int(np.argmax(labels >= FASHION_CLASSES))
        raise DataError(f"Fashion-MNIST file '{label_file}' has label {int(labels[i])} (item {i}); "
                        f"Fashion-MNIST labels are 0..{FASHION_CLASSES - 1}")
    return images, labels


def _scaled(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, rows, cols) -> float32 (n, 1, size, size), normalised; resized (bilinear,
    as the digits) when ``size`` is not the files' size."""
    x = images.astype(np.float32) / np.float32(255.0)
    if x.shape[1:] != (size, size):
        import cv2
        x = np.clip(np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_LINEAR)
                              for im in x]), 0.0, 1.0)
    x -= np.float32(FASHION_MEAN)
    x /= np.float32(FASHION_STD)
    return x[:, None]


def load_fashion(path: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, eval_x, eval_y) of the Fashion-MNIST folder ``path``: float32
    (n, 1, size, size) normalised, int32 labels; read and checked once per process, folder
    and size. The arrays are shared: callers must not change them."""
    key = (os.path.abspath(path), size)
    if key in _FASHION_CACHE:
        return _FASHION_CACHE[key]
    files = fashion_files(path)
    tx, ty = _read_split(files, "train")
    ex, ey = _read_split(files, "eval")
    if tx.shape[1:] != ex.shape[1:]:
        raise DataError(f"Fashion-MNIST images in '{files['train'][0]}' are "
                        f"{tx.shape[1]}x{tx.shape[2]} but in '{files['eval'][0]}' "
                        f"{ex.shape[1]}x{ex.shape[2]}; both splits must have one size")
    classes = np.unique(ty)
    if len(classes) < 2:
        raise DataError(f"Fashion-MNIST file '{files['train'][1]}' holds only class "
                        f"{int(classes[0])}; training needs at least two classes")
    out = (_scaled(tx, size), ty.astype(np.int32), _scaled(ex, size), ey.astype(np.int32))
    _FASHION_CACHE[key] = out
    return out


def fashion_arrays(path: str, size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of ``split``: train = the training files, eval = the t10k files."""
    tx, ty, ex, ey = load_fashion(path, size)
    return (tx, ty) if split == "train" else (ex, ey)


def fashion_pad(size: int) -> int:
    """The largest random shift, in pixels: size // 14 (at least 1), i.e. 2 at 28x28, as the
    clothes are centred and fill most of the frame (a larger shift cuts them off)."""
    return max(1, size // 14)


def augment_fashion(x: np.ndarray, cutout: int, crop: bool, seed: int, epoch: int) -> np.ndarray:
    """Random translation by up to :func:`fashion_pad` pixels (padded with the normalised
    background) and a left-right flip with probability 1/2 (clothes are left-right symmetric)
    when ``crop``, and CutOut when ``cutout`` > 0; ``x`` normalised, left as it was.

    The random numbers are drawn for every sample of the split at once, so sample i's
    augmentation depends only on (seed, epoch, i), as for the digits.
    """
    n, _, h, w = x.shape
    rng = np.random.default_rng(seed_words(seed, epoch, 0xFA5))
    pad = fashion_pad(h)
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    mirror = rng.integers(0, 2, size=n).astype(bool)
    cy = rng.integers(0, h, size=n)
    cx = rng.integers(0, w, size=n)
    out = x
    if crop:
        out = augment.shift(x, dy, dx, pad, FASHION_BACKGROUND)
        augment.flip(out, mirror)
    if cutout > 0:
        out = out.copy() if out is x else out
        augment.cut_out(out, cy, cx, cutout)
    return out
