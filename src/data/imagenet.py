"""ImageNet (or any ImageFolder-style set): DIR/train/<class>/<image> and DIR/val/<class>/<image>,
read by MindSpore's ImageFolderDataset; its layout and (a sample of) its images checked first."""
from __future__ import annotations

import os

import numpy as np

from src.data.images import verify_images
from src.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_IMAGE_CHECK_ALL = 5000                  # decode every image of an ImageFolder this small
_IMAGE_SAMPLE = 1000                     # else: this many at random (seeded) + the first per class
_IMAGE_SAMPLE_SEED = 0


def _list_images(folder: str) -> list[tuple[str, list[str]]]:
    """[(class name, sorted image file names)] of an ImageFolder-style directory."""
    classes = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        files = sorted(f.name for f in os.scandir(entry.path)
                       if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
        classes.append((entry.name, files))
    return classes


def _image_folder(root: str, sub: str) -> list[tuple[str, list[str]]]:
    """The classes and image files of ``root/sub``; raises DataError on a wrong layout."""
    if not root or not os.path.isdir(root):
        raise DataError(f"ImageNet folder '{root}' does not exist; expected a folder "
                        f"with train/ and val/ class folders")
    folder = os.path.join(root, sub)
    if not os.path.isdir(folder):
        raise DataError(f"ImageNet folder '{root}' has no '{sub}/' subfolder; expected "
                        f"{root}/train/<class>/<image> and {root}/val/<class>/<image>")
    classes = _list_images(folder)
    if not classes:
        raise DataError(f"ImageNet folder '{folder}' holds no class folders; expected "
                        f"{folder}/<class>/<image>.JPEG")
    empty = [c for c, files in classes if not files]
    if empty:
        raise DataError(f"ImageNet folder '{folder}': class folder '{empty[0]}' holds no images "
                        f"({', '.join(IMAGE_EXTENSIONS)})" +
                        (f" ({len(empty) - 1} more empty)" if len(empty) > 1 else ""))
    return classes


def _check_image_folder(root: str, sub: str) -> list[tuple[str, list[str]]]:
    """:func:`_image_folder`, and its images decode (all of a small folder, else a sample)."""
    classes = _image_folder(root, sub)
    folder = os.path.join(root, sub)
    paths = [os.path.join(folder, c, f) for c, files in classes for f in files]
    if len(paths) <= _IMAGE_CHECK_ALL:  # every image of a small folder
        chosen, note = paths, ""
    else:  # a seeded random sample and the first image of each class of a large one
        rng = np.random.default_rng(_IMAGE_SAMPLE_SEED)
        pick = set(rng.choice(len(paths), size=_IMAGE_SAMPLE, replace=False).tolist())
        first, k = set(), 0
        for _, files in classes:
            first.add(k)
            k += len(files)
        chosen = [paths[i] for i in sorted(pick | first)]
        note = (f" (found in a sample of {len(chosen)} of the {len(paths)} images in "
                f"'{folder}'; --verify-data checks every image)")
    bad = verify_images(chosen)
    if bad:
        path, problem = bad[0]
        more = f"; {len(bad) - 1} more broken in the sample" if len(bad) > 1 else ""
        raise DataError(f"image '{path}' cannot be decoded: it {problem}; remove or replace "
                        f"it{more}{note}")
    return classes


def check_imagenet(root: str) -> tuple[int, int, int]:
    """(classes, train images, val images) of an ImageNet folder, its layout and images
    checked (:func:`_check_image_folder`); train/ and val/ must have the same classes."""
    if not os.path.isdir(root):
        raise DataError(f"ImageNet folder '{root}' does not exist; expected a folder "
                        f"with train/ and val/ class folders")
    train = _check_image_folder(root, "train")
    val = _check_image_folder(root, "val")
    names_t, names_v = [c for c, _ in train], [c for c, _ in val]
    if names_t != names_v:
        only = sorted(set(names_t) ^ set(names_v))
        raise DataError(f"ImageNet folder '{root}': train/ and val/ have different class "
                        f"folders ({len(names_t)} vs {len(names_v)}; e.g. '{only[0]}' is in "
                        f"one only)" if only else
                        f"ImageNet folder '{root}': train/ and val/ class folders differ")
    return len(train), sum(len(f) for _, f in train), sum(len(f) for _, f in val)


def image_paths(root: str) -> list[str]:
    """Every image file of an ImageFolder dataset (train/ then val/), as the pipelines read
    them."""
    out = []
    for sub in ("train", "val"):
        folder = os.path.join(root, sub)
        out += [os.path.join(folder, c, f) for c, files in _image_folder(root, sub)
                for f in files]
    return out


def imagenet_reader(root: str, split: str, size: int, sampler, aug: bool, workers: int):
    """(ImageFolderDataset over ``sampler``, its image transforms up to the normalisation)."""
    import mindspore.dataset as ds
    import mindspore.dataset.vision as V

    folder = os.path.join(root, "train" if split == "train" else "val")
    exts = sorted({e for x in IMAGE_EXTENSIONS for e in (x, x.upper())})
    data = ds.ImageFolderDataset(folder, sampler=sampler, num_parallel_workers=workers,
                                 extensions=exts)
    ops = [V.Decode()]
    if aug:
        ops += [V.RandomResizedCrop(size), V.RandomHorizontalFlip()]
    else:
        resize = int(round(size * 256 / 224))
        ops += [V.Resize(resize), V.CenterCrop(size)]
    return data, ops + [V.Rescale(1.0 / 255.0, 0.0), V.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
