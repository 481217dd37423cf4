"""Datasets: the built-in digits set, CIFAR-10 and ImageNet; splits, sharding, augmentation.

Every pipeline is ordered on the host: :func:`sample_order` decides which samples a run sees
and in which order (indices -> seeded permutation per epoch -> this rank's shard -> skip the
batches already done), and a ``ds.SubsetSampler`` replays that order exactly. A resumed run
therefore sees the same batches as an uninterrupted one, and shards are disjoint.

Augmentation reproducibility:

* digits (built in, served from memory): augmentation is done on the host with numpy; the crop
  offsets and CutOut centres of sample ``i`` in epoch ``e`` depend only on ``(seed, e, i)``, so
  batches are bit-identical across runs, resumes and shard layouts.
* CIFAR-10 / ImageNet (MindSpore's C++ readers and ops): the pipeline seed is set from
  ``(seed, epoch, start_batch)`` (``src.context.seed_data_pipeline``); two runs with the same
  arguments give the same batches. A resumed epoch sees the same images in the same order, but its random
  crops after the resume point are drawn afresh.

Columns of every dataset: ``image`` float32 (N, C, H, W), normalised; ``label`` int32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from src.errors import ConfigError, DataError, HourNASError

DATASETS = ("digits", "cifar10", "imagenet")
SPLITS = ("train", "eval")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp")

CIFAR_RECORD = 1 + 32 * 32 * 3           # label byte + 3072 pixel bytes
CIFAR_RECORDS_PER_FILE = 10000           # Cifar10Dataset reads exactly this many per file
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch.bin",)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_SPLIT_SEED = 0                    # the fixed train/eval split of the digits set
DIGITS_EVAL_FRACTION = 0.2
DIGITS_MEAN = 0.305                      # of the 0..1-scaled, resized training images
DIGITS_STD = 0.32
_IMAGE_CHECK_ALL = 5000                  # decode every image of an ImageFolder this small
_IMAGE_SAMPLE = 1000                     # else: this many at random (seeded) + the first per class
_IMAGE_SAMPLE_SEED = 0
# What MindSpore's Decode writes into the current folder when an image fails (MindSpore 2.10):
# ./abnormal_image.<ext> and ./unsupported_image.<ext>. src.cli removes the ones a run made.
DECODER_DUMPS = ("abnormal_image.", "unsupported_image.")


@dataclass
class DataConfig:
    """Which dataset and how to read it (the ``data:`` section of train and search configs)."""

    name: str = "digits"          # digits (built in, no download) | cifar10 | imagenet
    path: str | None = None       # cifar10: folder of the binary .bin files; imagenet: train/ val/
    image_size: int | None = None  # default 32 for digits/cifar10, 224 for imagenet
    num_workers: int = 2
    cutout: int = 0               # CutOut length for training splits, 0 = off
    augment: bool = True          # random crop+flip / RandomResizedCrop+flip for training splits

    def validate(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(f"unknown dataset '{self.name}'; valid: {', '.join(DATASETS)}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"data.image_size must be >= 8, got {self.image_size}")
        if self.num_workers < 1:
            raise ConfigError(f"data.num_workers must be >= 1, got {self.num_workers}")
        if self.cutout < 0:
            raise ConfigError(f"data.cutout must be >= 0 (0 = off), got {self.cutout}")

    @property
    def size(self) -> int:
        """The image side length actually used."""
        if self.image_size is not None:
            return self.image_size
        return 224 if self.name == "imagenet" else 32


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    train_size: int
    eval_size: int
    channels: int = 3


# ----------------------------------------------------------------------------- ordering

def _seed_words(*parts: int) -> list[int]:
    return [int(p) & 0xFFFFFFFF for p in parts]


def sample_order(indices: np.ndarray, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                 shard: tuple[int, int] | None = None) -> np.ndarray:
    """The order a run visits ``indices`` in one epoch, before resuming skips any batches.

    Shuffling permutes with ``np.random.default_rng([seed, epoch])``. A shard ``(rank, size)``
    takes every ``size``-th item from position ``rank`` (``len // size`` items), so all ranks run
    the same number of steps; the ``len % size`` items at the end of the (shuffled) order sit
    out this epoch. Strided, not contiguous: with a per-rank batch of ``B / size``, the k-th
    batches of the ranks together are exactly the k-th batch of ``B`` a single process takes
    from the same order, so a data-parallel step (mean of the ranks' gradients) computes the
    single-process full-batch step.
    """
    order = np.asarray(indices, dtype=np.int64).reshape(-1)
    if shuffle:
        order = order[np.random.default_rng(_seed_words(seed, epoch)).permutation(len(order))]
    if shard is not None:
        rank, size = shard
        if size < 1 or not 0 <= rank < size:
            raise HourNASError(f"shard must be (rank, size) with 0 <= rank < size, got {shard}")
        per = len(order) // size
        if per == 0:
            raise DataError(f"{len(order)} samples cannot be split over {size} shards")
        order = order[:per * size][rank::size]
    return order


def num_batches(num_samples: int, batch_size: int, drop_remainder: bool) -> int:
    return num_samples // batch_size if drop_remainder else -(-num_samples // batch_size)


def search_split(cfg: DataConfig, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of the train split's indices into (weights, architecture) parts,
    e.g. 80% / 20% for ``val_fraction=0.2``. Both are sorted; they are disjoint and cover."""
    if not 0.0 < val_fraction < 1.0:
        raise HourNASError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = dataset_info(cfg).train_size
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"cannot split {n} training samples with val_fraction {val_fraction}")
    perm = np.random.default_rng(_seed_words(seed, 0x5EA12C4)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------- digits

_DIGITS_CACHE: dict[int, tuple] = {}


DIGITS_SPLIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_eval_split.txt")


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


def _digits(image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, eval_x, eval_y): 3-channel float32 NCHW in [0, 1], int32 labels."""
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


def _augment_digits(x: np.ndarray, cutout: int, crop: bool, seed: int, epoch: int) -> np.ndarray:
    """Random translation by up to size/8 pixels (zero padding) and CutOut, per sample.

    The random numbers are drawn for every sample of the split at once, so sample i's
    augmentation depends only on (seed, epoch, i). No flip: a mirrored digit is another glyph.
    """
    n, _, h, w = x.shape
    rng = np.random.default_rng(_seed_words(seed, epoch, 0xA06))
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


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar_dir(path: str) -> str:
    """The folder that holds the .bin files (``path`` or its cifar-10-batches-bin/)."""
    if not os.path.isdir(path):
        raise DataError(f"CIFAR-10 folder '{path}' does not exist; expected a folder with "
                        f"{', '.join(CIFAR_TRAIN_FILES + CIFAR_TEST_FILES)}")
    inner = os.path.join(path, "cifar-10-batches-bin")
    if not os.path.isfile(os.path.join(path, CIFAR_TEST_FILES[0])) and os.path.isdir(inner):
        return inner
    return path


def _check_cifar(path: str) -> str:
    folder = _cifar_dir(path)
    expected = CIFAR_RECORD * CIFAR_RECORDS_PER_FILE
    missing = [f for f in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES
               if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(f"CIFAR-10 folder '{folder}' lacks {', '.join(missing)}; expected the "
                        f"binary version (data_batch_1..5.bin, test_batch.bin)")
    for f in CIFAR_TRAIN_FILES + CIFAR_TEST_FILES:
        size = os.path.getsize(os.path.join(folder, f))
        if size != expected:
            raise DataError(f"CIFAR-10 file '{os.path.join(folder, f)}' has {size} bytes; expected "
                            f"{expected} ({CIFAR_RECORDS_PER_FILE} records of {CIFAR_RECORD} bytes): "
                            f"truncated or not the binary CIFAR-10 format")
    with open(os.path.join(folder, CIFAR_TEST_FILES[0]), "rb") as fh:
        labels = np.frombuffer(fh.read(), dtype=np.uint8)[::CIFAR_RECORD]
    if labels.max() > 9:
        raise DataError(f"CIFAR-10 file '{os.path.join(folder, CIFAR_TEST_FILES[0])}' has label "
                        f"{int(labels.max())}; CIFAR-10 labels are 0..9 (is this CIFAR-100?)")
    return folder


# ----------------------------------------------------------------------------- ImageNet

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


_FORMATS = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"))
_OTHER_FORMATS = ((b"GIF8", "a GIF"), (b"RIFF", "a RIFF (WebP?) file"), (b"II*\x00", "a TIFF"),
                  (b"MM\x00*", "a TIFF"), (b"%PDF", "a PDF"), (b"<", "a text/HTML file"))


def image_problem(path: str) -> str | None:
    """Why MindSpore's Decode would fail on (or silently half-decode) the image file ``path``,
    or None when it is a complete JPEG, PNG or BMP. A truncated file counts as broken although
    decoders fill the missing part with grey: the whole file is decoded (PIL, which MindSpore
    installs, stops at a truncated stream; without it OpenCV plus a check of the end marker)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if not data:
        return "is empty (0 bytes)"
    fmt = next((name for magic, name in _FORMATS if data.startswith(magic)), None)
    if fmt is None:
        other = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
        return (f"is {other or 'not an image'} (starts with {data[:4]!r}); MindSpore decodes "
                f"JPEG, PNG and BMP")
    if fmt == "PNG" and b"IEND" not in data[-64:]:
        return "is truncated (the PNG end chunk is missing)"
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        import io
        try:
            with Image.open(io.BytesIO(data)) as im:
                if fmt == "JPEG":  # decode at 1/8 scale: every byte is still read, 3x faster
                    im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                im.load()
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ...
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            what = "is truncated" if "truncated" in text else "is corrupt"
            return f"{what} ({fmt}: {text})"
        return None
    import cv2
    if fmt == "JPEG" and b"\xff\xd9" not in data[-64:]:
        return "is truncated (the JPEG end marker is missing)"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        return f"is corrupt ({fmt} that OpenCV cannot decode)"
    return None


def _check_image(path: str) -> None:
    problem = image_problem(path)
    if problem:
        raise DataError(f"image '{path}' cannot be decoded: it {problem}; remove or replace it")


def verify_images(paths: list[str], workers: int | None = None, progress=None) -> list[tuple[str, str]]:
    """[(path, problem)] of the images in ``paths`` that are broken (:func:`image_problem`),
    in the order of ``paths``. Decoded by a thread pool (the decoders release the GIL);
    ``progress(done, total, bad)`` is called from this thread as results arrive."""
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or min(32, (os.cpu_count() or 1) + 2)
    bad: dict[int, str] = {}
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, problem in enumerate(pool.map(image_problem, paths, chunksize=1)):
            done += 1
            if problem:
                bad[i] = problem
            if progress is not None:
                progress(done, len(paths), len(bad))
    return [(paths[i], bad[i]) for i in sorted(bad)]


def image_paths(cfg: DataConfig) -> list[str]:
    """Every image file of an ImageFolder dataset (train/ then val/), as the pipelines read
    them; empty for the other datasets (digits is built in, CIFAR-10 is checked by size)."""
    if cfg.name != "imagenet":
        return []
    out = []
    for sub in ("train", "val"):
        folder = os.path.join(cfg.path, sub)
        out += [os.path.join(folder, c, f) for c, files in _image_folder(cfg.path, sub)
                for f in files]
    return out


class _Progress:
    """'verifying images: 1200/50000 (2.4%), 0 broken, 850 images/s, ETA 57 s' on stderr:
    redrawn in place on a terminal, a line every 10% otherwise."""

    def __init__(self, what: str, stream=None):
        import sys
        import time
        self.what, self.stream, self.time = what, stream or sys.stderr, time.monotonic
        self.t0 = self.last = self.time()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.step = -1

    def __call__(self, done: int, total: int, bad: int) -> None:
        now = self.time()
        step = int(10 * done / max(1, total))
        if self.tty and now - self.last < 0.2 and done < total:
            return
        if not self.tty and step == self.step and done < total:
            return
        self.last, self.step = now, step
        rate = done / max(1e-9, now - self.t0)
        eta = (total - done) / rate if rate > 0 else 0.0
        line = (f"{self.what}: {done}/{total} ({100.0 * done / max(1, total):.1f}%), {bad} broken, "
                f"{rate:.0f} images/s, ETA {eta:.0f} s")
        end = "\n" if (not self.tty or done == total) else ""
        print(("\r" if self.tty else "") + line, end=end, file=self.stream, flush=True)


def verify_dataset(cfg: DataConfig, log=print) -> dict:
    """--verify-data: decode every image of the dataset (in parallel, with a progress bar on
    stderr) and raise one DataError naming the broken files; returns counts."""
    paths = image_paths(cfg)
    if not paths:
        dataset_info(cfg)
        log(f"--verify-data: nothing to decode for {cfg.name} (its files were checked)")
        return {"images": 0, "broken": 0}
    bad = verify_images(paths, progress=_Progress("verifying images"))
    for path, problem in bad:
        log(f"broken image: {path}: {problem}")
    if bad:
        more = f" (and {len(bad) - 1} more, listed above)" if len(bad) > 1 else ""
        raise DataError(f"{len(bad)} of {len(paths)} images cannot be decoded: '{bad[0][0]}' "
                        f"{bad[0][1]}{more}; remove or replace {'them' if len(bad) > 1 else 'it'}")
    log(f"--verify-data: all {len(paths)} images of '{cfg.path}' decode")
    return {"images": len(paths), "broken": 0}


def pipeline_error(exc: BaseException) -> DataError | None:
    """A DataError naming the file when ``exc`` is MindSpore's dataset pipeline failing on a
    file (a corrupt image met during a run), else None."""
    import re

    text = str(exc)
    if "dataset pipeline" not in text.lower() and "data file is" not in text:
        return None
    m = re.search(r"The corresponding data file is: (.+?)\. (?:Error|Dump|Unsupported|Unknown)",
                  text) or re.search(r"The corresponding data file is: (\S+?)\.?(?:\s|$)", text)
    if not m:
        return None
    path = m.group(1)
    op = re.search(r"map operation: \[(\w+)\] failed", text)
    why = re.search(r"Error raised by (\w+): (.+?)(?: Dump the abnormal| and dump|\n|$)", text)
    detail = f"{why.group(1)}: {why.group(2).strip()}" if why else \
        (f"{op.group(1)} failed" if op else "the dataset pipeline failed")
    return DataError(f"image '{path}' cannot be decoded ({detail}); the run stopped there; "
                     f"remove or replace it, and check every image first with --verify-data")


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


# ----------------------------------------------------------------------------- info

_INFO_CACHE: dict[tuple, DatasetInfo] = {}


def dataset_info(cfg: DataConfig) -> DatasetInfo:
    """Classes, image size and split sizes; checks that the data is where it should be."""
    cfg.validate()
    if cfg.name != "digits" and not cfg.path:  # checked here: a recipe may leave the path out
        what = ("the folder with data_batch_1..5.bin and test_batch.bin" if cfg.name == "cifar10"
                else "the folder with train/ and val/ class folders")
        raise DataError(f"dataset '{cfg.name}' needs data.path ({what}); give --data_path DIR "
                        f"or --set data.path=DIR")
    key = (cfg.name, os.path.abspath(cfg.path) if cfg.path else None, cfg.size)
    if key in _INFO_CACHE:
        return _INFO_CACHE[key]
    if cfg.name == "digits":
        tx, _, ex, _ = _digits(cfg.size)
        info = DatasetInfo("digits", 10, cfg.size, len(tx), len(ex))
    elif cfg.name == "cifar10":
        _check_cifar(cfg.path)
        info = DatasetInfo("cifar10", 10, cfg.size, 5 * CIFAR_RECORDS_PER_FILE,
                           CIFAR_RECORDS_PER_FILE)
    else:
        if not os.path.isdir(cfg.path):
            raise DataError(f"ImageNet folder '{cfg.path}' does not exist; expected a folder "
                            f"with train/ and val/ class folders")
        train = _check_image_folder(cfg.path, "train")
        val = _check_image_folder(cfg.path, "val")
        names_t, names_v = [c for c, _ in train], [c for c, _ in val]
        if names_t != names_v:
            only = sorted(set(names_t) ^ set(names_v))
            raise DataError(f"ImageNet folder '{cfg.path}': train/ and val/ have different class "
                            f"folders ({len(names_t)} vs {len(names_v)}; e.g. '{only[0]}' is in "
                            f"one only)" if only else
                            f"ImageNet folder '{cfg.path}': train/ and val/ class folders differ")
        info = DatasetInfo("imagenet", len(train), cfg.size,
                           sum(len(f) for _, f in train), sum(len(f) for _, f in val))
    _INFO_CACHE[key] = info
    return info


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


def _reader_transforms(cfg: DataConfig, split: str, sampler, aug: bool, workers: int):
    """CIFAR-10 / ImageNet: MindSpore's reader over ``sampler`` and its image transforms."""
    import mindspore.dataset as ds
    import mindspore.dataset.vision as V

    size = cfg.size
    if cfg.name == "cifar10":
        folder = _cifar_dir(cfg.path)
        data = ds.Cifar10Dataset(folder, usage="train" if split == "train" else "test",
                                 sampler=sampler, num_parallel_workers=workers)
        ops = []
        if size != 32:
            ops.append(V.Resize((size, size)))
        if aug:
            ops += [V.RandomCrop(size, padding=size // 8), V.RandomHorizontalFlip()]
        return data, ops + [V.Rescale(1.0 / 255.0, 0.0), V.Normalize(CIFAR_MEAN, CIFAR_STD)]
    root = os.path.join(cfg.path, "train" if split == "train" else "val")
    exts = sorted({e for x in IMAGE_EXTENSIONS for e in (x, x.upper())})
    data = ds.ImageFolderDataset(root, sampler=sampler, num_parallel_workers=workers,
                                 extensions=exts)
    ops = [V.Decode()]
    if aug:
        ops += [V.RandomResizedCrop(size), V.RandomHorizontalFlip()]
    else:
        resize = int(round(size * 256 / 224))
        ops += [V.Resize(resize), V.CenterCrop(size)]
    return data, ops + [V.Rescale(1.0 / 255.0, 0.0), V.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


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

    if cfg.name == "digits":
        tx, ty, ex, ey = _digits(cfg.size)
        x, y = (tx, ty) if split == "train" else (ex, ey)
        x = (x - DIGITS_MEAN) / DIGITS_STD
        if aug or cutout:
            x = _augment_digits(x, cutout, aug, seed, epoch)
        data = ds.NumpySlicesDataset((x.astype(np.float32), y), column_names=["image", "label"],
                                     sampler=sampler)
        return data.batch(batch_size, drop_remainder=drop_remainder)

    import mindspore.dataset.transforms as T
    import mindspore.dataset.vision as V
    from mindspore import dtype as mstype

    from src.context import seed_data_pipeline

    workers = max(1, min(cfg.num_workers, os.cpu_count() or 1))  # MindSpore's upper bound
    if aug or cutout:
        # the dataset seed is process-wide in MindSpore but read when a pipeline is built, so
        # it is set here, per pipeline (context.py holds the setter and says why)
        seed_data_pipeline(int(np.random.default_rng(
            _seed_words(seed, epoch, start_batch)).integers(1, 2**31 - 1)))
    data, ops = _reader_transforms(cfg, split, sampler, aug, workers)
    if cutout:
        ops.append(V.CutOut(cutout, num_patches=1, is_hwc=True))
    ops.append(V.HWC2CHW())
    data = data.map(operations=ops, input_columns="image", num_parallel_workers=workers)
    data = data.map(operations=T.TypeCast(mstype.int32), input_columns="label",
                    num_parallel_workers=workers)
    return data.batch(batch_size, drop_remainder=drop_remainder)
