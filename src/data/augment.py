"""Host-side augmentation of in-memory image arrays (digits, Fashion-MNIST), vectorised over
the whole split (float32 NCHW; no loop over the samples): :func:`shift` makes a new array,
:func:`flip` and :func:`cut_out` change the one they are given.

The per-sample random numbers are drawn by the caller for every sample of the split at once,
so sample i's augmentation depends only on (seed, epoch, i): batches are bit-identical across
runs, resumes and shard layouts.
"""
from __future__ import annotations

import numpy as np


def shift(x: np.ndarray, dy: np.ndarray, dx: np.ndarray, pad: int, fill: float) -> np.ndarray:
    """Random translation (a new array): image i is the (h, w) window at offset
    (dy[i], dx[i]) of itself padded by ``pad`` pixels of value ``fill`` on every side
    (0 <= dy, dx <= 2 * pad)."""
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
    return np.ascontiguousarray(windows[np.arange(n), :, dy, dx])  # (n, c, h, w)


def flip(x: np.ndarray, which: np.ndarray) -> None:
    """In place: image i mirrored left-right where ``which[i]``."""
    x[which] = x[which][..., ::-1]


def cut_out(x: np.ndarray, cy: np.ndarray, cx: np.ndarray, length: int) -> None:
    """CutOut, in place: in image i, rows cy[i] - length // 2 <= y < cy[i] + length // 2 and
    the same columns around cx[i] (clipped to the image) set to 0.0 in every channel."""
    _, _, h, w = x.shape
    half = length // 2
    ys, xs = np.arange(h)[None, :], np.arange(w)[None, :]
    rows = (ys >= cy[:, None] - half) & (ys < cy[:, None] + half)     # (n, h)
    cols = (xs >= cx[:, None] - half) & (xs < cx[:, None] + half)     # (n, w)
    np.copyto(x, np.float32(0.0), where=(rows[:, :, None] & cols[:, None, :])[:, None])
