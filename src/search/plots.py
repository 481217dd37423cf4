"""Pictures of a search run: θ per layer as a heat map, sampled cost over time, losses."""
from __future__ import annotations

import os

import numpy as np

from src.jsonlog import read_jsonl
from src.rundir import SEARCH_LOG_FILE
from src.sampler import stable_softmax
from src.space.space import Space


def plot_search(folder: str, space: Space, targets: dict[str, float]) -> list[str]:
    """Writes search_theta.png and search_progress.png into ``folder``; returns the paths."""
    from src.context import pyplot
    plt = pyplot()

    written = []
    params_path = os.path.join(folder, "arch_params.npz")
    if os.path.exists(params_path):
        with np.load(params_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        written.append(plot_theta(plt, arrays, space, os.path.join(folder, "search_theta.png")))
    log = read_jsonl(os.path.join(folder, SEARCH_LOG_FILE))
    steps = [r for r in log if "global_step" in r and "w_loss" in r]
    if steps:
        written.append(plot_progress(plt, steps, targets,
                                     os.path.join(folder, "search_progress.png")))
    return written


def plot_theta(plt, arrays: dict[str, np.ndarray], space: Space, out: str) -> str:
    """The final op probabilities per searched layer (stage 2: of the most probable proposal)."""
    theta = arrays["theta"]
    if theta.ndim == 3:  # proposals: show the most probable one
        pi = stable_softmax(arrays["pi"])
        j = int(np.argmax(pi))
        theta = theta[j]
        title = f"θ of proposal {j} (π = {pi[j]:.2f})"
    else:
        title = "θ (single stage)"
    probs = stable_softmax(theta, axis=1)
    searched = [i for i in space.searchable][:probs.shape[0]]
    nonvital = space.nonvital_layers()
    if probs.shape[0] == len(nonvital):
        searched = nonvital
    fig, ax = plt.subplots(figsize=(max(6, probs.shape[1] * 0.8), 0.35 * len(searched) + 2))
    im = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(searched)))
    ax.set_yticklabels([space.layers[i].label + (" (vital)" if space.vital[i] else "")
                        for i in searched])
    ops = [o.name for o in space.layers[searched[0]].ops]
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(ops, rotation=45, ha="right")
    ax.set_xlabel("candidate op")
    ax.set_ylabel("layer")
    ax.set_title(f"Final op probabilities: {title}")
    fig.colorbar(im, ax=ax, label="probability")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_progress(plt, steps: list[dict], targets: dict[str, float], out: str) -> str:
    """Losses, τ and the entropy of θ, and (stage 2) the sampled FLOPs over the iterations."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    gs = np.array([r["global_step"] for r in steps])
    for key, label in (("w_loss", "weight loss (80% split)"), ("a_ce", "arch CE (20% split)")):
        axes[0].plot(gs, [r[key] for r in steps], label=label, lw=1)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("cross-entropy")
    axes[0].set_title("Losses")
    axes[0].legend()
    axes[1].plot(gs, [r["tau"] for r in steps], label="τ", color="tab:red")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("τ")
    ax2 = axes[1].twinx()
    ax2.plot(gs, [r["entropy"] for r in steps], label="mean entropy of θ", color="tab:blue")
    ax2.set_ylabel("entropy (nats)")
    axes[1].set_title("Temperature and entropy")
    stage2 = [r for r in steps if "path_flops" in r]
    if stage2:
        g2 = np.array([r["global_step"] for r in stage2])
        fl = np.array([r["path_flops"] for r in stage2]) / 1e6
        axes[2].scatter(g2, fl, s=6, alpha=0.5, label="sampled path")
        if "flops" in targets:
            axes[2].axhline(targets["flops"] / 1e6, color="k", ls="--", label="target")
        axes[2].set_xlabel("iteration")
        axes[2].set_ylabel("FLOPs of the sampled architecture (M)")
        axes[2].set_title("Sampled FLOPs (stage 2)")
        axes[2].legend()
    else:
        axes[2].axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
