"""Tiny Fashion-MNIST folders for the tests: the four idx files written from seeded random
images (no test needs Debian's dataset-fashion-mnist)."""
from __future__ import annotations

import gzip
import os

import numpy as np

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "eval": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray) -> bytes:
    """An idx file of uint8 ``array`` (3 dimensions: images, 1: labels)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + array.tobytes()


def write_idx(path: str, array: np.ndarray, gz: bool) -> str:
    """``path`` (+ ".gz" when ``gz``) holding ``array`` as idx; returns the file's path."""
    data = idx_bytes(array)
    if gz:
        path += ".gz"
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def fashion_arrays(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size), labels uint8 (n,)): every class present when n >= 10."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_fashion_mnist(folder, n_train: int = 300, n_test: int = 100, size: int = 28,
                        gz: bool | dict = True) -> dict:
    """A Fashion-MNIST folder of ``n_train`` / ``n_test`` random images; ``gz`` True, False, or
    {file name: bool}. Returns {"train": (images, labels), "eval": (...), name: path}."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for split, n, seed in (("train", n_train, 1), ("eval", n_test, 2)):
        arrays = fashion_arrays(n, size, seed)
        out[split] = arrays
        for name, array in zip(NAMES[split], arrays):
            zipped = gz.get(name, True) if isinstance(gz, dict) else gz
            out[name] = write_idx(os.path.join(folder, name), array, zipped)
    return out
