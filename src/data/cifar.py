"""CIFAR-10, binary version, read by MindSpore's Cifar10Dataset; its files checked first."""
from __future__ import annotations

import os

import numpy as np

from src.errors import DataError

CIFAR_RECORD = 1 + 32 * 32 * 3           # label byte + 3072 pixel bytes
CIFAR_RECORDS_PER_FILE = 10000           # Cifar10Dataset reads exactly this many per file
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch.bin",)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def cifar_dir(path: str) -> str:
    """The folder that holds the .bin files (``path`` or its cifar-10-batches-bin/)."""
    if not os.path.isdir(path):
        raise DataError(f"CIFAR-10 folder '{path}' does not exist; expected a folder with "
                        f"{', '.join(CIFAR_TRAIN_FILES + CIFAR_TEST_FILES)}")
    inner = os.path.join(path, "cifar-10-batches-bin")
    if not os.path.isfile(os.path.join(path, CIFAR_TEST_FILES[0])) and os.path.isdir(inner):
        return inner
    return path


def check_cifar(path: str) -> str:
    """The folder of the .bin files; every file present, of the right size, labels 0..9."""
    folder = cifar_dir(path)
    expected = CIFAR_RECORD * CIFAR_RECORDS_PER_FILE
    names = CIFAR_TRAIN_FILES + CIFAR_TEST_FILES
    missing = [f for f in names if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"CIFAR-10 folder '{folder}' lacks {', '.join(missing)}; expected the "
                        f"binary version (data_batch_1..5.bin, test_batch.bin)")
    for f in names:
        size = os.path.getsize(os.path.join(folder, f))
        if size != expected:
            raise DataError(f"CIFAR-10 file '{os.path.join(folder, f)}' has {size} bytes; expected "
                            f"{expected} ({CIFAR_RECORDS_PER_FILE} records of {CIFAR_RECORD} bytes): "
                            f"truncated or not the binary CIFAR-10 format")
    for f in names:
        labels = np.fromfile(os.path.join(folder, f), dtype=np.uint8)[::CIFAR_RECORD]
        if labels.max() > 9:
            record = int(np.argmax(labels > 9))
            raise DataError(f"CIFAR-10 file '{os.path.join(folder, f)}' has label "
                            f"{int(labels[record])} (record {record}); CIFAR-10 labels are 0..9 "
                            f"(is this CIFAR-100?)")
    return folder


def cifar_reader(path: str, split: str, size: int, sampler, aug: bool, workers: int):
    """(Cifar10Dataset over ``sampler``, its image transforms up to the normalisation)."""
    import mindspore.dataset as ds
    import mindspore.dataset.vision as V

    data = ds.Cifar10Dataset(cifar_dir(path), usage="train" if split == "train" else "test",
                             sampler=sampler, num_parallel_workers=workers)
    ops = []
    if size != 32:
        ops.append(V.Resize((size, size)))
    if aug:
        ops += [V.RandomCrop(size, padding=size // 8), V.RandomHorizontalFlip()]
    return data, ops + [V.Rescale(1.0 / 255.0, 0.0), V.Normalize(CIFAR_MEAN, CIFAR_STD)]
