"""Block importance (the paper's Sec. 3.1, Fig. 2): how much accuracy a trained network loses
when one block's output is damaged.

For each block b (stem, every layer, head) and each probability p, a random channel mask
M(y, p) zeroes every output channel of b independently with probability p (one fixed mask per
seed, applied to every image); all other blocks are left alone. Where b has a shortcut
(y = F(x) + x) the mask hits F(x), b's own contribution, and the shortcut still passes (see
:func:`MaskedNet`). The accuracy drop on the
evaluation split, averaged over seeds, is the block's importance at p. The paper's claim: vital
blocks (on every input->output path) hurt a lot even at p = 0.3, non-vital ones little even at
p = 1.0.

:class:`MaskedNet` runs ChildNet's parts in order and multiplies each block's output by its
slice of one concatenated mask vector (a Tensor input): the all-ones vector is the intact
network, and damaging block b only changes b's slice. The graph is therefore compiled once,
for every block and every p.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from src.analysis.plotting import (NONVITAL_COLOR, VITAL_COLOR, pyplot, save_png,
                                   vital_handles)
from src.checkpoint import atomic_write_text
from src.errors import HourNASError
from src.resource import profile
from src.space.space import Arch

DEFAULT_P = (0.3, 0.6, 1.0)
CACHE_LIMIT_BYTES = 1 << 30   # eval images kept in memory up to this size, else re-read


@dataclass(frozen=True)
class BlockInfo:
    """A maskable block: its position in the network and what the profile says about it."""

    index: int      # 0 = stem, 1..L = layers, L+1 = head
    name: str
    op: str
    channels: int   # output channels: the width of its mask
    vital: bool


def maskable_blocks(arch: Arch) -> list[BlockInfo]:
    """Stem, every layer and the head (the classifier's logits are not a feature map)."""
    rows = [r for r in profile(arch) if r.name != "classifier"]
    return [BlockInfo(i, r.name, r.op, r.c_out, r.vital) for i, r in enumerate(rows)]


def channel_mask(channels: int, p: float, seed: int, block: int) -> np.ndarray:
    """1 = keep, 0 = zeroed; each channel zeroed with probability ``p`` (all at p = 1)."""
    rng = np.random.default_rng([int(seed), int(block), int(round(p * 1e6))])
    return (rng.random(channels) >= p).astype(np.float32)


def MaskedNet(net, widths: list[int]):
    """A Cell that runs ``net``'s stem, layers and head in order, damaging each block by its
    slice of ``mask`` (shape (sum(widths),)), then the classifier; ``net`` is not modified.

    A block without a shortcut (stem, head, downsampling / widening layers) has y = F(x): its
    output is multiplied by the mask. A block with a shortcut has y = F(x) + x: the mask hits
    its own contribution F(x) = y - x and the shortcut passes, y' = x + m * (y - x), as in the
    lesion experiments the paper follows (Veit et al. 2016); an identity layer (skip op) has
    no F(x) and is left as it is. ``widths`` are the output channels of stem, layers and head
    (:func:`maskable_blocks`).
    """
    import mindspore.nn as nn

    expected = 1 + len(net.layers) + (net.head is not None)
    if len(widths) != expected:
        raise HourNASError(f"{len(widths)} block widths for a network of {expected} maskable "
                           f"blocks (stem, {len(net.layers)} layers"
                           f"{', head' if net.head is not None else ''})")

    class _MaskedNet(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.net = net
            offsets = [0]
            for w in widths:
                offsets.append(offsets[-1] + int(w))
            self.offsets = tuple(offsets)
            self.shortcut = tuple(bool(layer.residual or layer.identity) for layer in net.layers)
            self.has_head = net.head is not None

        def _m(self, mask, k):
            return mask[self.offsets[k]:self.offsets[k + 1]].reshape((1, -1, 1, 1))

        def construct(self, x, mask):
            y = self.net.stem(x) * self._m(mask, 0)
            k = 1
            for layer in self.net.layers:
                out = layer(y)
                if self.shortcut[k - 1]:
                    y = y + self._m(mask, k) * (out - y)
                else:
                    y = out * self._m(mask, k)
                k += 1
            if self.has_head:
                y = self.net.head(y) * self._m(mask, k)
            return self.net.classifier(y)

    return _MaskedNet()


class EvalSet:
    """The evaluation images as fixed-size batches (the last one padded), read once and kept
    in memory when small enough (else re-read for every evaluation)."""

    def __init__(self, data_cfg, batch_size: int, max_images: int | None = None):
        from src.data import dataset_info, make_dataset
        info = dataset_info(data_cfg)
        n = info.eval_size if max_images is None else min(max_images, info.eval_size)
        if n < 1:
            raise HourNASError(f"--max_images must be >= 1, got {max_images}")
        self.info, self.images, self.batch_size = info, n, batch_size
        self._make = lambda: make_dataset(data_cfg, "eval", batch_size, indices=np.arange(n))
        size = n * info.channels * info.image_size ** 2 * 4
        self._cache = list(self._read()) if size <= CACHE_LIMIT_BYTES else None

    def _read(self):
        for x, y in self._make().create_tuple_iterator(output_numpy=True, num_epochs=1):
            b = len(y)
            if b < self.batch_size:
                x = np.concatenate([x, np.zeros((self.batch_size - b,) + x.shape[1:], x.dtype)])
            yield x, y

    def __iter__(self):
        return iter(self._cache) if self._cache is not None else self._read()


def top1(masked, eval_set: EvalSet, mask: np.ndarray) -> float:
    """Top-1 accuracy (%) of ``masked`` under ``mask`` over every image of ``eval_set``."""
    import mindspore as ms
    m = ms.Tensor(mask)
    correct = 0
    for x, y in eval_set:
        logits = masked(ms.Tensor(x), m).asnumpy()[:len(y)]
        correct += int((logits.argmax(axis=1) == y).sum())
    return 100.0 * correct / eval_set.images


@dataclass
class ImportanceRow:
    block: str
    position: int
    vital: bool
    op: str
    channels: int
    p: float
    seeds: int
    masked_fraction: float      # mean over seeds of the share of channels actually zeroed
    top1_mean: float
    top1_std: float
    drop_mean: float            # baseline top-1 minus masked top-1, percentage points
    drop_std: float
    top1_per_seed: list[float] = field(default_factory=list)


@dataclass
class ImportanceResult:
    arch: str
    dataset: str
    images: int
    baseline_top1: float
    ps: list[float]
    seeds: int
    rows: list[ImportanceRow]
    timing: dict
    checkpoint: str | None = None

    def summary(self) -> dict:
        """Per p: mean drop over vital and over non-vital blocks, and which is larger."""
        out = {}
        for p in self.ps:
            rows = [r for r in self.rows if r.p == p]
            vital = [r.drop_mean for r in rows if r.vital]
            other = [r.drop_mean for r in rows if not r.vital]
            v = float(np.mean(vital)) if vital else None
            o = float(np.mean(other)) if other else None
            out[f"{p:g}"] = {"vital_mean_drop": v, "nonvital_mean_drop": o,
                             "vital_blocks": len(vital), "nonvital_blocks": len(other),
                             "vital_hurt_more": None if v is None or o is None else v > o}
        verdicts = [s["vital_hurt_more"] for s in out.values() if s["vital_hurt_more"] is not None]
        out["all_p"] = {"vital_hurt_more": all(verdicts) if verdicts else None}
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = self.summary()
        return d


def block_importance(net, arch: Arch, eval_set: EvalSet, ps=DEFAULT_P, seeds: int = 3,
                     log: Callable[[str], None] | None = None) -> ImportanceResult:
    """Mask one block at a time (stem, layers, head) for every p and seed; ``net`` is a
    ChildNet of ``arch`` with its trained weights, in eval mode."""
    ps = [float(p) for p in ps]
    for p in ps:
        if not 0.0 < p <= 1.0:
            raise HourNASError(f"mask probability p must be in (0, 1], got {p:g}")
    if seeds < 1:
        raise HourNASError(f"--seeds must be >= 1, got {seeds}")
    blocks = maskable_blocks(arch)
    masked = MaskedNet(net, [b.channels for b in blocks])
    masked.set_train(False)
    offsets = masked.offsets
    ones = np.ones(offsets[-1], np.float32)

    times = []

    def evaluate(mask):
        t = time.perf_counter()
        acc = top1(masked, eval_set, mask)
        times.append(time.perf_counter() - t)
        return acc

    baseline = evaluate(ones)
    if log:
        log(f"intact network: top-1 {baseline:.2f}% on {eval_set.images} images "
            f"({times[0]:.1f} s including the one graph compilation)")
    done: dict[tuple[int, bytes], float] = {}   # equal masks are evaluated once (e.g. p = 1)
    rows = []
    for b in blocks:
        for p in ps:
            accs, fracs = [], []
            for s in range(seeds):
                m = channel_mask(b.channels, p, s, b.index)
                key = (b.index, m.tobytes())
                if key not in done:
                    full = ones.copy()
                    full[offsets[b.index]:offsets[b.index + 1]] = m
                    done[key] = evaluate(full)
                accs.append(done[key])
                fracs.append(1.0 - float(m.mean()))
            drops = [baseline - a for a in accs]
            rows.append(ImportanceRow(
                block=b.name, position=b.index, vital=b.vital, op=b.op, channels=b.channels,
                p=p, seeds=seeds, masked_fraction=float(np.mean(fracs)),
                top1_mean=float(np.mean(accs)), top1_std=float(np.std(accs)),
                drop_mean=float(np.mean(drops)), drop_std=float(np.std(drops)),
                top1_per_seed=[float(a) for a in accs]))
        if log:
            drops = ", ".join(f"p={r.p:g}: {r.drop_mean:+.2f}" for r in rows[-len(ps):])
            log(f"{b.name:>6} {'vital' if b.vital else '     '} {b.op:<14} drop (pp) {drops}")
    later = times[1:]
    timing = {"evaluations": len(times), "first_eval_s": times[0],
              "eval_s_median": float(np.median(later)) if later else None,
              "eval_s_max": float(np.max(later)) if later else None,
              "total_s": float(np.sum(times))}
    return ImportanceResult(arch=arch.name, dataset=eval_set.info.name, images=eval_set.images,
                            baseline_top1=baseline, ps=ps, seeds=seeds, rows=rows,
                            timing=timing)


# ----------------------------------------------------------------------------- outputs

CSV_COLUMNS = ("block", "position", "vital", "op", "channels", "p", "seeds", "masked_fraction",
               "top1_mean", "top1_std", "drop_mean", "drop_std", "top1_per_seed")


def to_csv(result: ImportanceResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in result.rows:
        d = asdict(r)
        d["top1_per_seed"] = ";".join(f"{a:.4f}" for a in r.top1_per_seed)
        w.writerow([f"{d[c]:.4f}" if isinstance(d[c], float) else d[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def importance_figure(result: ImportanceResult, p: float):
    """Bars of the mean accuracy drop per block at ``p`` (std over seeds as error bars)."""
    plt = pyplot()
    rows = [r for r in result.rows if r.p == p]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * n + 3), 5.2))
    xs = np.arange(n)
    colors = [VITAL_COLOR if r.vital else NONVITAL_COLOR for r in rows]
    ax.bar(xs, [r.drop_mean for r in rows], yerr=[r.drop_std for r in rows], color=colors,
           edgecolor="black", linewidth=0.4, capsize=2)
    ax.axhline(0, color="black", lw=0.8)
    summ = result.summary()[f"{p:g}"]
    handles = vital_handles()
    for key, color, label in (("vital_mean_drop", VITAL_COLOR, "mean over vital blocks"),
                              ("nonvital_mean_drop", NONVITAL_COLOR, "mean over non-vital blocks")):
        if summ[key] is not None:
            handles.append(ax.axhline(summ[key], color=color, ls="--", lw=1,
                                      label=f"{label}: {summ[key]:.1f} pp"))
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{r.block} {r.op}" for r in rows], rotation=90, fontsize=8)
    for tick, r in zip(ax.get_xticklabels(), rows):
        tick.set_color(VITAL_COLOR if r.vital else "black")
    ax.set_xlabel("masked block (name, op), input → output")
    ax.set_ylabel("top-1 accuracy drop (percentage points)")
    top = max([r.drop_mean + r.drop_std for r in rows] + [1.0])
    ax.set_ylim(min(0.0, min(r.drop_mean - r.drop_std for r in rows)) - 0.5, top * 1.35)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    ax.set_title(f"Block importance of {result.arch} on {result.dataset}: each block's output "
                 f"channels zeroed with p = {p:g}\nintact top-1 {result.baseline_top1:.1f}% on "
                 f"{result.images} images; mean ± std over {result.seeds} mask seed(s)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def importance_overview(result: ImportanceResult):
    """All p side by side per block (the layout of the paper's Fig. 2)."""
    plt = pyplot()
    blocks = [r for r in result.rows if r.p == result.ps[0]]
    n, k = len(blocks), len(result.ps)
    fig, ax = plt.subplots(figsize=(max(7.0, 0.6 * n + 3), 5.2))
    width = 0.8 / k
    alphas = np.linspace(0.35, 1.0, k)
    for j, p in enumerate(result.ps):
        rows = [r for r in result.rows if r.p == p]
        xs = np.arange(n) + (j - (k - 1) / 2) * width
        ax.bar(xs, [r.drop_mean for r in rows], width,
               color=[VITAL_COLOR if r.vital else NONVITAL_COLOR for r in rows],
               alpha=float(alphas[j]), edgecolor="black", linewidth=0.3)
    from matplotlib.patches import Patch
    handles = vital_handles() + [Patch(facecolor="grey", alpha=float(a), label=f"p = {p:g}")
                                 for p, a in zip(result.ps, alphas)]
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([f"{r.block} {r.op}" for r in blocks], rotation=90, fontsize=8)
    for tick, r in zip(ax.get_xticklabels(), blocks):
        tick.set_color(VITAL_COLOR if r.vital else "black")
    ax.set_xlabel("masked block (name, op), input → output; bars left to right: increasing p")
    ax.set_ylabel("top-1 accuracy drop (percentage points)")
    top = max([r.drop_mean for r in result.rows] + [1.0])
    ax.set_ylim(min(0.0, min(r.drop_mean for r in result.rows)) - 0.5, top * 1.3)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=2)
    ax.set_title(f"Block importance of {result.arch} on {result.dataset} (intact top-1 "
                 f"{result.baseline_top1:.1f}%, {result.images} images)", fontsize=10)
    fig.tight_layout()
    return fig


def write_importance(result: ImportanceResult, out_dir: str) -> dict[str, str]:
    """importance.json, importance.csv, importance_p{p}.png per p and importance_all.png."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "importance.json"),
             "csv": os.path.join(out_dir, "importance.csv")}
    atomic_write_text(paths["json"], json.dumps(_finite(result.to_dict()), indent=2) + "\n")
    atomic_write_text(paths["csv"], to_csv(result))
    for p in result.ps:
        paths[f"png_p{p:g}"] = save_png(importance_figure(result, p),
                                        os.path.join(out_dir, f"importance_p{p:g}.png"))
    paths["png_all"] = save_png(importance_overview(result),
                                os.path.join(out_dir, "importance_all.png"))
    return paths


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def verdict_lines(result: ImportanceResult) -> list[str]:
    """Human lines: per p the two means and whether vital blocks hurt more."""
    lines = []
    for p, s in result.summary().items():
        if p == "all_p":
            continue
        if s["vital_hurt_more"] is None:
            lines.append(f"p={p}: cannot compare (the network has no "
                         f"{'non-' if s['nonvital_blocks'] == 0 else ''}vital blocks)")
            continue
        lines.append(f"p={p}: mean drop {s['vital_mean_drop']:.2f} pp over {s['vital_blocks']} "
                     f"vital blocks vs {s['nonvital_mean_drop']:.2f} pp over "
                     f"{s['nonvital_blocks']} non-vital blocks -> vital blocks hurt "
                     f"{'more' if s['vital_hurt_more'] else 'NOT more'}")
    return lines


# ----------------------------------------------------------------------------- inputs

def eval_data_config(arch: Arch, extra: dict, dataset: str | None = None,
                     data_path: str | None = None):
    """The evaluation data: the dataset the checkpoint was trained on (its stored config),
    unless ``dataset`` / ``data_path`` say otherwise; always at the network's input size."""
    from src.data import DATASETS, DataConfig
    stored = ((extra or {}).get("config") or {}).get("data") or {}
    name = dataset or stored.get("name") or "digits"
    if name not in DATASETS:
        raise HourNASError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    path = data_path or (stored.get("path") if name == stored.get("name") else None)
    cfg = DataConfig(name=name, path=path, image_size=arch.input_size,
                     num_workers=int(stored.get("num_workers", 2)))
    cfg.validate()
    return cfg


def load_trained(ckpt: str, arch_path: str | None = None):
    """(net in eval mode, arch, extra) of a training checkpoint (see src.evaluate)."""
    from src.evaluate import load_network
    return load_network(ckpt, arch_path)
