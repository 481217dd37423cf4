"""The hourglass picture of one architecture: parameters and FLOPs per block, vital blocks marked.

The numbers are exactly :func:`src.resource.profile`'s rows (stem, every layer, head,
classifier), so the picture and the counter cannot disagree.
"""
from __future__ import annotations

from src.analysis.plotting import (NONVITAL_COLOR, VITAL_COLOR, pyplot, save_png, scale_unit,
                                   vital_handles)
from src.config import format_size
from src.resource import profile
from src.space.space import Arch


def hourglass_data(arch: Arch) -> dict[str, list]:
    """The data behind the bars: one entry per profile row, in network order."""
    rows = profile(arch)
    return {"name": [r.name for r in rows], "op": [r.op for r in rows],
            "params": [int(r.params) for r in rows], "flops": [int(r.flops) for r in rows],
            "vital": [bool(r.vital) for r in rows], "c_out": [int(r.c_out) for r in rows],
            "stride": [int(r.stride) for r in rows]}


def hourglass_figure(arch: Arch, data: dict | None = None):
    """A two-panel figure (params on top, FLOPs below) with one bar per block."""
    plt = pyplot()
    data = data or hourglass_data(arch)
    n = len(data["name"])
    colors = [VITAL_COLOR if v else NONVITAL_COLOR for v in data["vital"]]
    width = max(8.0, 0.42 * n + 2.5)
    fig, axes = plt.subplots(2, 1, figsize=(width, 7.6), sharex=True)
    xs = list(range(n))
    for ax, key, what in ((axes[0], "params", "parameters"), (axes[1], "flops", "FLOPs (multiply-adds)")):
        div, unit = scale_unit(data[key])
        values = [v / div for v in data[key]]
        ax.bar(xs, values, color=colors, edgecolor="black", linewidth=0.4)
        ax.set_ylim(0, max(values + [1e-9]) * 1.3)  # headroom for the legend and the note
        ax.set_ylabel(f"{what} per block ({unit or 'count'})" if unit else f"{what} per block")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        share = 100.0 * sum(v for v, f in zip(data[key], data["vital"]) if f) / max(1, sum(data[key]))
        ax.text(0.995, 0.96, f"vital blocks: {share:.0f}% of the {what.split()[0]}",
                transform=ax.transAxes, ha="right", va="top", fontsize=9,
                bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    labels = [f"{name}  {op}  s{s}" if s > 1 else f"{name}  {op}"
              for name, op, s in zip(data["name"], data["op"], data["stride"])]
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels(labels, rotation=90, fontsize=8)
    axes[1].set_xlabel("block (name, chosen op, stride when > 1), input → output")
    for tick, vital in zip(axes[1].get_xticklabels(), data["vital"]):
        tick.set_color(VITAL_COLOR if vital else "black")
    axes[0].legend(handles=vital_handles(), loc="upper left", fontsize=9)
    total_p, total_f = sum(data["params"]), sum(data["flops"])
    fig.suptitle(f"Hourglass of {arch.name}: {format_size(total_p)} params, "
                 f"{format_size(total_f)} FLOPs at {arch.input_size}×{arch.input_size}, "
                 f"{len(arch.layers)} layers", fontsize=12)
    fig.tight_layout()
    return fig


def plot_hourglass(arch: Arch, path: str) -> dict[str, list]:
    """Write the hourglass PNG to ``path``; returns the data behind the bars."""
    data = hourglass_data(arch)
    save_png(hourglass_figure(arch, data), path)
    return data
