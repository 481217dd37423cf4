"""One self-contained HTML page for a search run folder (every picture embedded as a data URI).

Reads what ``search.py`` writes (any of it may be missing; the page says what is):

* ``config.yaml``       the resolved search config (space, targets)
* ``search_log.jsonl``  one JSON object per step: stage, global_step, tau, losses, ``path``
                        (op index per searched layer), ``proposal``, path_params/path_flops
* ``arch_params.npz``   final ``theta`` (L, O) or (m, L, O) with ``pi`` (m,)
* ``arch.yaml``         the derived architecture
* ``summary.json``      targets, achieved, stage_seconds, vital (stage-1 probabilities), ...

θ over time is not stored, but every step logs the path sampled from softmax(θ) (Gumbel-Max
draws an op with exactly that probability), so the frequency of each op in a window of steps
estimates softmax(θ) at that time; the same holds for the sampled proposal and softmax(Π).
"""
from __future__ import annotations

import html
import math
import os

import numpy as np

from src.analysis.plotting import VITAL_COLOR, png_data_uri, pyplot, save_png
from src.config import format_size
from src.search.folder import FILES, SearchFolder, read_search_folder

STAGE_TITLES = {"vital": "stage 1: vital layers", "nonvital": "stage 2: non-vital layers",
                "single": "single stage: all layers (no vital priori)"}
MAX_BINS = 40      # at most this many windows over a stage ...
MIN_WINDOW = 5     # ... of at least this many steps each (fewer when the stage is shorter)


# ----------------------------------------------------------------------------- layer naming

def searched_layers(run: SearchFolder, stage: str, width: int) -> tuple[list[str], list[list[str]], list]:
    """(labels, op names per layer, chosen op name or None per layer) of the ``width`` layers
    a stage searched; falls back to positions when the space is unknown."""
    space = run.space
    idx = None
    if space is not None:
        idx = {"vital": space.vital_layers(), "nonvital": space.nonvital_layers(),
               "single": list(space.searchable)}.get(stage)
        if idx is not None and len(idx) != width:
            idx = None
    if idx is None:
        n_ops = _num_ops(run)
        return ([f"layer {k + 1}" for k in range(width)],
                [[f"op {o}" for o in range(n_ops)]] * width, [None] * width)
    labels = [space.layers[i].label + (" (vital)" if space.vital[i] else "") for i in idx]
    ops = [[o.name for o in space.layers[i].ops] for i in idx]
    chosen = [None] * width
    if run.arch is not None and len(run.arch.layers) == len(space.layers):
        chosen = [run.arch.layers[i].ops[0].name for i in idx]
    return labels, ops, chosen


def _num_ops(run: SearchFolder) -> int:
    if run.params is not None and "theta" in run.params:
        return int(run.params["theta"].shape[-1])
    top = max((max(r["path"]) for r in run.steps if r.get("path")), default=0)
    return int(top) + 1


def _bins(n: int) -> list[np.ndarray]:
    """Consecutive windows of steps: at most MAX_BINS, each at least MIN_WINDOW long."""
    count = max(1, min(MAX_BINS, n // MIN_WINDOW))
    return [b for b in np.array_split(np.arange(n), count) if len(b)]


def _window_edges(steps: np.ndarray, bins: list[np.ndarray]) -> np.ndarray:
    """x of a piecewise-constant plot: each window drawn from its first to its last step."""
    return np.array([v for b in bins for v in (steps[b[0]], steps[b[-1]] + 0.999)], float)


def _op_colors(n: int):
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


# ----------------------------------------------------------------------------- figures

def stage_order(run: SearchFolder) -> list[str]:
    seen = []
    for r in run.steps:
        s = r.get("stage")
        if s is not None and s not in seen:
            seen.append(s)
    return seen


def theta_over_time_figure(run: SearchFolder, stage: str):
    """Per searched layer, the frequency of each sampled op over windows of steps."""
    plt = pyplot()
    recs = [r for r in run.steps if r.get("stage") == stage and r.get("path") is not None]
    if not recs:
        return None
    width = len(recs[0]["path"])
    recs = [r for r in recs if len(r["path"]) == width]
    paths = np.array([r["path"] for r in recs], dtype=np.int64)
    steps = np.array([r["global_step"] for r in recs])
    labels, ops, chosen = searched_layers(run, stage, width)
    n_ops = max(len(ops[0]), int(paths.max()) + 1)
    bins = _bins(len(recs))
    x = _window_edges(steps, bins)
    freq = np.zeros((width, 2 * len(bins), n_ops))
    for j, b in enumerate(bins):
        for layer in range(width):
            freq[layer, 2 * j:2 * j + 2] = np.bincount(paths[b, layer],
                                                        minlength=n_ops)[:n_ops] / len(b)
    ncols = min(4, width)
    nrows = math.ceil(width / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 1.75 * nrows + 1.6),
                             sharex=True, sharey=True, squeeze=False)
    colors = _op_colors(n_ops)
    for layer in range(nrows * ncols):
        ax = axes[layer // ncols][layer % ncols]
        if layer >= width:
            ax.axis("off")
            continue
        ax.stackplot(x, freq[layer].T, colors=colors, linewidth=0)
        ax.set_xlim(x[0], x[-1])
        title = labels[layer] + (f" → {chosen[layer]}" if chosen[layer] else "")
        ax.set_title(title, fontsize=8.5, color=VITAL_COLOR if "(vital)" in labels[layer]
                     else "black")
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    for col in range(ncols):  # the lowest panel of each column carries the x axis
        ax = axes[max(r for r in range(nrows) if r * ncols + col < width)][col]
        ax.set_xlabel("iteration", fontsize=8)
        ax.xaxis.set_tick_params(labelbottom=True)
    for row in axes:
        row[0].set_ylabel("op share", fontsize=8)
    from matplotlib.patches import Patch
    names = ops[0] if len(ops[0]) == n_ops else [f"op {o}" for o in range(n_ops)]
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colors, names)],
               loc="lower center", ncol=min(n_ops, 9), fontsize=8, frameon=False)
    window = int(np.mean([len(b) for b in bins]))
    fig.suptitle(f"{STAGE_TITLES.get(stage, stage).capitalize()}: share of each op among the "
                 f"sampled paths per window of ~{window} steps (≈ softmax(θ) over time)\n"
                 f"panel title: layer → derived op", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if nrows > 1 else 0.12, 1, 1))
    return fig


def _softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    from src.sampler import stable_softmax
    return stable_softmax(a, axis=axis)


def _heatmap(ax, probs: np.ndarray, labels: list[str], ops: list[str], chosen: list):
    im = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    for tick, label in zip(ax.get_yticklabels(), labels):
        tick.set_color(VITAL_COLOR if "(vital)" in label else "black")
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels(ops, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("candidate op")
    for r, c in enumerate(chosen):
        if c in ops:
            ax.add_patch(_box(ops.index(c), r))
    if probs.size <= 400:
        for r in range(probs.shape[0]):
            for c in range(probs.shape[1]):
                ax.text(c, r, f"{probs[r, c]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if probs[r, c] < 0.6 else "black")
    return im


def _box(x, y):
    from matplotlib.patches import Rectangle
    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, ec="red", lw=1.8)


def final_theta_figure(run: SearchFolder):
    """softmax(θ) at the end of the search (the most probable proposal when there are
    several), with Π's proposal weights beside it."""
    plt = pyplot()
    theta = np.asarray(run.params["theta"], dtype=np.float64)
    pi = run.params.get("pi")
    stages = stage_order(run)
    stage = stages[-1] if stages else ("nonvital" if theta.ndim == 3 else "single")
    if theta.ndim == 3:
        q = _softmax(np.asarray(pi, dtype=np.float64)) if pi is not None else \
            np.full(theta.shape[0], 1.0 / theta.shape[0])
        j = int(np.argmax(q))
        probs, what = _softmax(theta[j]), f"proposal {j} (softmax(Π) = {q[j]:.2f})"
    else:
        q, probs, what = None, _softmax(theta), "θ"
    labels, ops, chosen = searched_layers(run, stage, probs.shape[0])
    names = ops[0] if len(ops[0]) == probs.shape[1] else [f"op {o}" for o in range(probs.shape[1])]
    h = 0.32 * probs.shape[0] + 2.2
    if q is not None:
        fig, (ax, axp) = plt.subplots(1, 2, figsize=(13, h),
                                      gridspec_kw={"width_ratios": [3, 1.2]})
    else:
        fig, ax = plt.subplots(figsize=(9, h))
    im = _heatmap(ax, probs, labels, names, chosen)
    fig.colorbar(im, ax=ax, label="probability", fraction=0.04)
    ax.set_title(f"Final op probabilities of {what}; red box = derived op", fontsize=10)
    if q is not None:
        axp.barh(range(len(q)), q, color="tab:gray")
        axp.barh(j, q[j], color="tab:orange")
        axp.set_yticks(range(len(q)))
        axp.set_yticklabels([f"proposal {k}" for k in range(len(q))], fontsize=8)
        axp.invert_yaxis()
        axp.set_xlabel("softmax(Π)")
        axp.set_title("Final proposal weights π", fontsize=10)
    fig.tight_layout()
    return fig


def vital_probs_figure(run: SearchFolder):
    """Stage 1's final op probabilities of the vital layers (from summary.json)."""
    plt = pyplot()
    v = (run.summary or {}).get("vital") or {}
    probs = v.get("probabilities")
    if not probs:
        return None
    probs = np.asarray(probs, dtype=np.float64)
    labels = [f"{lab} (vital)" for lab in v.get("layers", [f"layer {k + 1}"
                                                            for k in range(probs.shape[0])])]
    ops = None
    if run.space is not None and run.space.vital_layers():
        ops = [o.name for o in run.space.layers[run.space.vital_layers()[0]].ops]
    if not ops or len(ops) != probs.shape[1]:
        ops = [f"op {o}" for o in range(probs.shape[1])]
    fig, ax = plt.subplots(figsize=(9, 0.32 * probs.shape[0] + 2.2))
    im = _heatmap(ax, probs, labels, ops, list(v.get("ops", [None] * probs.shape[0])))
    fig.colorbar(im, ax=ax, label="probability", fraction=0.04)
    ax.set_title(f"Stage 1: final op probabilities of the vital layers; red box = fixed op "
                 f"({v.get('method', 'argmax')})", fontsize=10)
    fig.tight_layout()
    return fig


def proposals_figure(run: SearchFolder):
    """π over time: logged softmax(Π) if the log has it, else the sampled-proposal shares."""
    plt = pyplot()
    recs = [r for r in run.steps if r.get("proposal") is not None or r.get("pi") is not None]
    if not recs:
        return None, None
    steps = np.array([r["global_step"] for r in recs])
    fig, ax = plt.subplots(figsize=(10, 3.8))
    if all(r.get("pi") is not None for r in recs):
        pis = _softmax(np.array([r["pi"] for r in recs], dtype=np.float64))
        m = pis.shape[1]
        for j in range(m):
            ax.plot(steps, pis[:, j], lw=1, label=f"proposal {j}")
        how = "softmax(Π) as logged"
    else:
        props = np.array([r["proposal"] for r in recs], dtype=np.int64)
        m = int(props.max()) + 1
        if run.params is not None and run.params.get("pi") is not None:
            m = max(m, int(np.asarray(run.params["pi"]).shape[0]))
        bins = _bins(len(recs))
        x = _window_edges(steps, bins)
        freq = np.repeat([np.bincount(props[b], minlength=m)[:m] / len(b) for b in bins], 2,
                         axis=0)
        ax.stackplot(x, freq.T, colors=_op_colors(m), labels=[f"proposal {j}" for j in range(m)],
                     linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_xlim(x[0], x[-1])
        how = "share of each proposal among the sampled ones (estimates softmax(Π))"
    ax.set_xlabel("iteration")
    ax.set_ylabel("proposal weight")
    ax.set_title(f"Proposal weights π over time: {how}", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return fig, how


def cloud_figure(run: SearchFolder):
    """Params and FLOPs of every sampled architecture (the paper's Fig. 3), targets dashed."""
    plt = pyplot()
    recs = [r for r in run.steps if "path_params" in r or "path_flops" in r]
    if not recs:
        return None
    targets = run.targets()
    achieved = (run.summary or {}).get("achieved") or {}
    steps = np.array([r["global_step"] for r in recs])
    fig, ax = plt.subplots(figsize=(7.5, 5.6))
    if all("path_params" in r and "path_flops" in r for r in recs):
        xs = np.array([r["path_params"] for r in recs]) / 1e6
        ys = np.array([r["path_flops"] for r in recs]) / 1e6
        sc = ax.scatter(xs, ys, c=steps, cmap="viridis", s=10, alpha=0.7)
        fig.colorbar(sc, ax=ax, label="iteration (later = yellow)")
        if "params" in targets:
            ax.axvline(targets["params"] / 1e6, color="k", ls="--", lw=1,
                       label=f"target params {format_size(targets['params'])}")
        if "flops" in targets:
            ax.axhline(targets["flops"] / 1e6, color="k", ls=":", lw=1.2,
                       label=f"target FLOPs {format_size(targets['flops'])}")
        if "params" in achieved and "flops" in achieved:
            ax.scatter([achieved["params"] / 1e6], [achieved["flops"] / 1e6], marker="*", s=260,
                       color="red", edgecolor="black", zorder=5,
                       label=f"derived: {format_size(achieved['params'])} params, "
                             f"{format_size(achieved['flops'])} FLOPs")
        ax.set_xlabel("parameters of the sampled architecture (M)")
        ax.set_ylabel("FLOPs of the sampled architecture (M)")
    else:
        key = "path_params" if "path_params" in recs[0] else "path_flops"
        obj = key[5:]
        ax.scatter(steps, [r.get(key, np.nan) / 1e6 for r in recs], s=8, alpha=0.6)
        if obj in targets:
            ax.axhline(targets[obj] / 1e6, color="k", ls="--", label=f"target {obj}")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"{obj} of the sampled architecture (M)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Sampled architectures of stage 2 ({len(recs)} steps) against the targets",
                 fontsize=10)
    fig.tight_layout()
    return fig


def losses_figure(run: SearchFolder):
    """Losses, regulariser, accuracies, τ and entropy against the iteration."""
    plt = pyplot()
    recs = run.steps
    if not recs:
        return None
    gs = np.array([r["global_step"] for r in recs])

    def series(key):
        return np.array([r.get(key, np.nan) if r.get(key) is not None else np.nan
                         for r in recs], dtype=np.float64)

    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5), sharex=True)
    panels = [
        (axes[0][0], [("w_loss", "weight loss (weight split)"), ("a_ce", "arch CE (arch split)"),
                      ("a_loss", "arch loss = CE + α·reg")], "loss", "Losses"),
        (axes[0][1], [("a_reg", "resource regulariser")], "regulariser", "Resource term"),
        (axes[1][0], [("w_acc", "weight-step accuracy"), ("a_acc", "arch-step accuracy")],
         "accuracy", "Accuracies of the sampled paths"),
        (axes[1][1], [("tau", "τ")], "τ", "Temperature and entropy"),
    ]
    for ax, keys, ylabel, title in panels:
        shown = False
        for key, label in keys:
            y = series(key)
            if np.isfinite(y).any():
                ax.plot(gs, y, lw=0.9, label=label)
                shown = True
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=8, loc="upper right")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    ent = series("entropy")
    if np.isfinite(ent).any():
        ax2 = axes[1][1].twinx()
        ax2.plot(gs, ent, color="tab:green", lw=0.9, label="mean entropy of softmax(θ)")
        ax2.set_ylabel("entropy (nats)")
        ax2.legend(fontsize=8, loc="center right")
    # stage boundaries
    stages = [r.get("stage") for r in recs]
    for k in range(len(recs)):
        if k == 0 or stages[k] != stages[k - 1]:
            for row in axes:
                for ax in row:
                    if k:
                        ax.axvline(gs[k], color="grey", ls="--", lw=0.8)
            axes[0][0].text(gs[k], axes[0][0].get_ylim()[0], f" {stages[k]}", va="bottom",
                            fontsize=8, color="grey")
    for ax in axes[1]:
        ax.set_xlabel("iteration (global step)")
    fig.suptitle("Search progress", fontsize=11)
    fig.tight_layout()
    return fig


def draw_search_pictures(folder: str) -> list[str]:
    """The pictures a search leaves in its folder (``search_theta.png``: the final op
    probabilities; ``search_progress.png``: losses, accuracies, τ and entropy), drawn by the
    report's own figures from what the folder holds: one reader, one layer-labelling rule.
    Returns the paths written."""
    run, written = read_search_folder(folder), []
    if run.params is not None and "theta" in run.params:
        written.append(save_png(final_theta_figure(run), os.path.join(folder, "search_theta.png")))
    fig = losses_figure(run) if run.log else None
    if fig is not None:
        written.append(save_png(fig, os.path.join(folder, "search_progress.png")))
    return written


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.92em}th{background:#f4f4f4}
img{max-width:100%;border:1px solid #eee}.missing{color:#a33;font-style:italic}
.note{color:#555;font-size:.92em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
"""


def _img(uri: str, alt: str) -> str:
    return f'<p><img src="{uri}" alt="{html.escape(alt)}"></p>'


def _missing(what: str) -> str:
    return f'<p class="missing">Not available: {html.escape(what)}</p>'


def _table(rows: list[tuple], header: tuple | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _num(v) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{format_size(v)} ({v:,.0f})" if abs(v) >= 1000 else f"{v:g}"
    return str(v)


def summary_section(run: SearchFolder) -> str:
    parts = ["<h2>Summary</h2>"]
    s = run.summary
    targets = run.targets()
    if s is None and not targets:
        return parts[0] + _missing("summary.json is missing and config.yaml names no targets")
    achieved = (s or {}).get("achieved") or {}
    rel = (s or {}).get("relative_error") or {}
    rows = []
    for obj in sorted(set(targets) | set(achieved)):
        r = rel.get(obj)
        rows.append((obj, _num(targets[obj]) if obj in targets else "—",
                     _num(achieved[obj]) if obj in achieved else "—",
                     f"{r:+.2%}" if isinstance(r, (int, float)) else "—"))
    parts.append(_table(rows, ("objective", "target", "achieved", "relative error")))
    if s is None:
        parts.append(_missing("summary.json is missing: targets are from config.yaml, "
                              "no achieved values"))
        return "".join(parts)
    facts = [("space", s.get("space")), ("derivation", s.get("derivation")),
             ("within tolerance", f"{s.get('within_tolerance')} (±{s.get('tolerance')})"),
             ("chosen proposal", s.get("proposal")), ("executor", s.get("executor"))]
    for stage, sec in (s.get("stage_seconds") or {}).items():
        facts.append((f"seconds in {STAGE_TITLES.get(stage, stage)}", f"{sec:.1f}"))
    props = s.get("proposals") or {}
    if props:
        facts.append(("space proposals", f"m = {props.get('m')}, solved in "
                                         f"{props.get('solve_seconds', float('nan')):.2f} s"))
    if s.get("blocks"):
        facts.append(("blocks", " ".join(s["blocks"])))
    parts.append(_table([(k, v) for k, v in facts if v is not None]))
    return "".join(parts)


class _Page:
    """The page's body as it is built: HTML parts and the alt text of every image."""

    def __init__(self):
        self.body: list[str] = []
        self.images: list[str] = []

    def add(self, part: str) -> None:
        self.body.append(part)

    def figure(self, fig, alt: str) -> None:
        self.images.append(alt)
        self.body.append(_img(png_data_uri(fig), alt))


def _header(page: _Page, run, folder: str, title: str) -> None:
    page.add(f"<h1>{html.escape(title)}</h1>")
    page.add(f'<p class="note">Run folder: <code>{html.escape(os.path.abspath(folder))}</code></p>')
    if run.missing:
        page.add("<p class='missing'>Missing from this run folder: " + ", ".join(
            f"<code>{n}</code> ({html.escape(FILES[n])})" for n in run.missing) + "</p>")
    for p in run.problems:
        page.add(_missing(p))
    page.add(summary_section(run))


def _theta_section(page: _Page, run) -> None:
    page.add("<h2>θ per layer over time</h2>")
    if run.log is None:
        page.add(_missing("search_log.jsonl is missing, so the sampled paths are unknown"))
    else:
        stages = stage_order(run)
        if not stages:
            page.add(_missing("search_log.jsonl holds no step records"))
        for stage in stages:
            fig = theta_over_time_figure(run, stage)
            if fig:
                page.figure(fig, f"op shares over time, {stage}")
            else:
                page.add(_missing(f"no sampled paths logged in stage {stage}"))
    vfig = vital_probs_figure(run)
    if vfig is not None:
        page.figure(vfig, "stage-1 final probabilities")
    if run.params is None:
        page.add(_missing("arch_params.npz is missing, so the final θ is unknown"))
    elif "theta" not in run.params:
        page.add(_missing("arch_params.npz holds no 'theta'"))
    else:
        page.figure(final_theta_figure(run), "final theta")


def _proposal_section(page: _Page, run) -> None:
    page.add("<h2>Proposal weights π</h2>")
    pfig, _ = proposals_figure(run) if run.log is not None else (None, None)
    if pfig is not None:
        page.figure(pfig, "proposal weights over time")
    elif run.params is not None and run.params.get("pi") is not None:
        page.add(_missing("π over time is not in the log; the final π is shown with the "
                          "final θ above"))
    else:
        page.add(_missing("no proposals: the log has no 'proposal' field and "
                          "arch_params.npz has no 'pi' (m = 1 or stage 2 did not run)"))

    page.add("<h2>Sampled architectures against the targets (Fig. 3 style)</h2>")
    cfig = cloud_figure(run) if run.log is not None else None
    if cfig is not None:
        page.figure(cfig, "sampled cost cloud")
    else:
        page.add(_missing("no path_params / path_flops in the log (stage 2 logs them)"
                          if run.log is not None else "search_log.jsonl is missing"))


def _result_sections(page: _Page, run, folder: str) -> None:
    """Losses, the derived architecture, the search's own plots and the config."""
    from src.analysis.hourglass import hourglass_figure

    page.add("<h2>Losses</h2>")
    lfig = losses_figure(run) if run.log is not None else None
    if lfig is not None:
        page.figure(lfig, "losses")
    else:
        page.add(_missing("search_log.jsonl is missing or empty"))

    page.add("<h2>The derived architecture</h2>")
    if run.arch is not None:
        page.figure(hourglass_figure(run.arch), "hourglass of the derived architecture")
        page.add("<pre>" + html.escape("\n".join(run.arch.block_strings())) + "</pre>")
    else:
        page.add(_missing("arch.yaml is missing or unreadable"))

    if run.config is not None:
        import yaml
        page.add("<h2>Config</h2><pre>" + html.escape(
            yaml.safe_dump(run.config, sort_keys=False)) + "</pre>")


def build_report(folder: str, out_path: str | None = None) -> tuple[str, dict]:
    """Write the page (default ``<folder>/report.html``); returns (path, facts)."""
    from src.checkpoint import atomic_write_text

    run = read_search_folder(folder)
    out_path = out_path or os.path.join(folder, "report.html")
    title = f"HourNAS search report: {os.path.basename(os.path.abspath(folder))}"
    page = _Page()
    _header(page, run, folder, title)
    _theta_section(page, run)
    _proposal_section(page, run)
    _result_sections(page, run, folder)
    text = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(page.body) + "</body></html>\n")
    atomic_write_text(out_path, text)
    return out_path, {"report": out_path, "images": page.images, "missing": run.missing,
                      "problems": run.problems, "targets": run.targets()}
