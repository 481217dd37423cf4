"""The one dispatcher: what a dataset is (:func:`dataset_info`, which also checks its files)
and its batched pipeline (:func:`make_dataset`), for every dataset of ``DATASETS``."""
from __future__ import annotations

import os

import numpy as np

from src.data.cifar import CIFAR_RECORDS_PER_FILE, check_cifar, cifar_reader
from src.data.config import SPLITS, DataConfig, DatasetInfo
from src.data.digits import augment_digits, digits_arrays, load_digits
from src.data.fashion_mnist import (FASHION_CLASSES, augment_fashion, fashion_arrays,
                                    load_fashion)
from src.data.imagenet import check_imagenet, image_paths, imagenet_reader
from src.data.images import Progress, verify_images
from src.data.order import num_batches, sample_order, seed_words, split_indices
from src.errors import DataError, HourNASError

# what data.path holds, for the error when it is missing
_PATH_NEEDED = {"cifar10": "the folder with data_batch_1..5.bin and test_batch.bin",
                "imagenet": "the folder with train/ and val/ class folders",
                "fashion_mnist": "the folder with the four idx files train-images-idx3-ubyte, "
                                 "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                                 "t10k-labels-idx1-ubyte, .gz or raw; apt-get install "
                                 "dataset-fashion-mnist puts them in "
                                 "/usr/share/datasets/fashion-mnist"}

_INFO_CACHE: dict[tuple, DatasetInfo] = {}


# ----------------------------------------------------------------------------- info

def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Classes, image size and split sizes; checks that the data is where it should be."""
    cfg.validate()
    if cfg.name != "digits" and not cfg.path:  # checked here: a recipe may leave the path out
        raise DataError(f"dataset '{cfg.name}' needs data.path ({_PATH_NEEDED[cfg.name]}); give "
                        f"--data_path DIR or --set data.path=DIR")
    key = (cfg.name, os.path.abspath(cfg.path) if cfg.path else None, cfg.size)
    if key in _INFO_CACHE:
        return _INFO_CACHE[key]
    if cfg.name == "digits":
        tx, _, ex, _ = load_digits(cfg.size)
        info = DatasetInfo("digits", 10, cfg.size, len(tx), len(ex))
    elif cfg.name == "cifar10":
        check_cifar(cfg.path)
        info = DatasetInfo("cifar10", 10, cfg.size, 5 * CIFAR_RECORDS_PER_FILE,
                           CIFAR_RECORDS_PER_FILE)
    elif cfg.name == "fashion_mnist":
        tx, _, ex, _ = load_fashion(cfg.path, cfg.size)
        info = DatasetInfo("fashion_mnist", FASHION_CLASSES, cfg.size, len(tx), len(ex),
                           channels=1)
    else:
        classes, n_train, n_val = check_imagenet(cfg.path)
        if classes < 2:
            raise DataError(f"ImageNet folder '{cfg.path}' has {classes} class folder in train/; "
                            f"a classifier needs at least two (train/<class>/<image>)")
        info = DatasetInfo("imagenet", classes, cfg.size, n_train, n_val)
    _INFO_CACHE[key] = info
    return info


def search_split(cfg: DataConfig, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of the train split's indices into (weights, architecture) parts,
    e.g. 80% / 20% for ``val_fraction=0.2``. Both are sorted; they are disjoint and cover."""
    if not 0.0 < val_fraction < 1.0:
        raise HourNASError(f"val_fraction must be in (0, 1), got {val_fraction}")
    return split_indices(dataset_info(cfg).train_size, val_fraction, seed)


def verify_dataset(cfg: DataConfig, log=print) -> dict:
    """--verify-data: decode every image of the dataset (in parallel, with a progress bar on
    stderr) and raise one DataError naming the broken files; returns counts."""
    paths = image_paths(cfg.path) if cfg.name == "imagenet" else []
    if not paths:
        dataset_info(cfg)
        log(f"--verify-data: nothing to decode for {cfg.name} (its files were checked)")
        return {"images": 0, "broken": 0}
    bad = verify_images(paths, progress=Progress("verifying images"))
    for path, problem in bad:
        log(f"broken image: {path}: {problem}")
    if bad:
        more = f" (and {len(bad) - 1} more, listed above)" if len(bad) > 1 else ""
        raise DataError(f"{len(bad)} of {len(paths)} images cannot be decoded: '{bad[0][0]}' "
                        f"{bad[0][1]}{more}; remove or replace {'them' if len(bad) > 1 else 'it'}")
    log(f"--verify-data: all {len(paths)} images of '{cfg.path}' decode")
    return {"images": len(paths), "broken": 0}


# ----------------------------------------------------------------------------- pipelines

def _check_request(split: str, batch_size: int, start_batch: int, drop_remainder: bool) -> None:
    if split not in SPLITS:
        raise HourNASError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    if batch_size < 1:
        raise HourNASError(f"batch_size must be >= 1, got {batch_size}")
    if start_batch < 0:
        raise HourNASError(f"start_batch must be >= 0, got {start_batch}")
    if split == "eval" and drop_remainder:
        raise HourNASError("the eval split never drops its last partial batch (every image "
                           "counts); call make_dataset(..., drop_remainder=False)")


def _visit_order(cfg: DataConfig, split: str, batch_size: int, indices, *, shuffle: bool,
                 seed: int, epoch: int, start_batch: int, shard, drop_remainder: bool):
    """The sample indices this pipeline serves, in order, after the resumed batches."""
    info = dataset_info(cfg)
    n = info.train_size if split == "train" else info.eval_size
    if indices is None:
        indices = np.arange(n)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise HourNASError(f"indices out of range for the {split} split of {cfg.name} "
                           f"({n} samples): {int(indices.min())}..{int(indices.max())}")
    order = sample_order(indices, shuffle=shuffle, seed=seed, epoch=epoch, shard=shard)
    total = num_batches(len(order), batch_size, drop_remainder)
    if start_batch >= total:
        raise HourNASError(f"start_batch {start_batch} is past the end of the epoch "
                           f"({total} batches of {batch_size})")
    return order[start_batch * batch_size:]


def _memory_dataset(cfg: DataConfig, split: str, sampler, aug: bool, cutout: int, seed: int,
                    epoch: int):
    """digits / Fashion-MNIST: the split's arrays, augmented on the host, over ``sampler``."""
    import mindspore.dataset as ds

    if cfg.name == "digits":
        x, y = digits_arrays(cfg.size, split)
        augment = augment_digits
    else:
        x, y = fashion_arrays(cfg.path, cfg.size, split)
        augment = augment_fashion
    if aug or cutout:
        x = augment(x, cutout, aug, seed, epoch)
    return ds.NumpySlicesDataset((x, y), column_names=["image", "label"], sampler=sampler)


def _reader_dataset(cfg: DataConfig, split: str, sampler, aug: bool, cutout: int, seed: int,
                    epoch: int, start_batch: int):
    """CIFAR-10 / ImageNet: MindSpore's reader over ``sampler`` and its image transforms."""
    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    from mindspore import dtype as mstype

    from src.context import seed_data_pipeline

    workers = max(1, min(cfg.num_workers, os.cpu_count() or 1))  # MindSpore's upper bound
    if aug or cutout:
        # the dataset seed is process-wide in MindSpore but read when a pipeline is built, so
        # it is set here, per pipeline (context.py holds the setter and says why)
        seed_data_pipeline(int(np.random.default_rng(
            seed_words(seed, epoch, start_batch)).integers(1, 2**31 - 1)))
    reader = cifar_reader if cfg.name == "cifar10" else imagenet_reader
    data, ops = reader(cfg.path, split, cfg.size, sampler, aug, workers)
    if cutout:
        ops.append(V.CutOut(cutout, num_patches=1, is_hwc=True))
    ops.append(V.HWC2CHW())
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    return data.map(operations=T.TypeCast(mstype.int32), input_columns="label",
                    num_parallel_workers=workers)


def make_dataset(cfg: DataConfig, split: str, batch_size: int, *, indices=None,
                 augment: bool = False, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                 start_batch: int = 0, shard: tuple[int, int] | None = None,
                 drop_remainder: bool = False):
    """A batched ``mindspore.dataset.Dataset`` of (image, label) over ``split``.

    ``indices`` (default: all of the split) are visited in :func:`sample_order`; the first
    ``start_batch * batch_size`` of them are skipped (resume). ``augment`` turns on the training
    augmentation when ``cfg.augment`` allows it (CutOut when ``cfg.cutout > 0``). The eval split
    never drops a partial last batch: every image counts.
    """
    import mindspore.dataset as ds

    _check_request(split, batch_size, start_batch, drop_remainder)
    order = _visit_order(cfg, split, batch_size, indices, shuffle=shuffle, seed=seed,
                         epoch=epoch, start_batch=start_batch, shard=shard,
                         drop_remainder=drop_remainder)
    sampler = ds.SubsetSampler(order.tolist())
    aug = bool(augment and cfg.augment)
    cutout = cfg.cutout if augment else 0
    if cfg.name in ("digits", "fashion_mnist"):
        data = _memory_dataset(cfg, split, sampler, aug, cutout, seed, epoch)
    else:
        data = _reader_dataset(cfg, split, sampler, aug, cutout, seed, epoch, start_batch)
    return data.batch(batch_size, drop_remainder=drop_remainder)
