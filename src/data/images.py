"""Image files: whether MindSpore's Decode can read one (:func:`image_problem`), checking many
in parallel with a progress line, and naming the file when a running pipeline fails on one."""
from __future__ import annotations

import os

import numpy as np

from src.errors import DataError

# What MindSpore's Decode writes into the current folder when an image fails (MindSpore 2.10):
# ./abnormal_image.<ext> and ./unsupported_image.<ext>. src.cli removes the ones a run made.
DECODER_DUMPS = ("abnormal_image.", "unsupported_image.")
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


class Progress:
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
