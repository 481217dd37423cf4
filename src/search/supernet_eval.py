"""The supernet's ranking: how well a finished search's shared weights score given architectures.

Weight-sharing NAS is diagnosed by comparing the accuracy an architecture reaches on the
supernet's shared weights with the accuracy it reaches when trained alone (Yu et al. 2020,
"Evaluating the search phase of neural architecture search"): if the two rankings disagree,
the search optimises the wrong thing. ``supernet_accuracy`` gives the first of the two for
any architecture the final supernet can run.

What the supernet can run: a finished HourNAS search keeps the supernet of its last stage
(``search_state.ckpt``): the non-vital layers with every candidate, the vital layers fixed to
the ops stage 1 chose. An architecture whose vital ops differ from those has no weights in it
(stage 1's other vital candidates were dropped), so it gets ``None``; the comparison says
over which architectures its Kendall τ was computed.

How it scores: every image of the search's architecture split (the 20% the architecture
steps used; never the test set), in fixed batches, through the architecture's single path
(``Supernet.forward_path``) with BatchNorm in training mode, i.e. normalised by each batch's
own statistics, as in the search's architecture steps (the running statistics of a supernet
mix all paths and fit none).
"""
from __future__ import annotations

import os

import numpy as np

from src.errors import HourNASError
from src.rundir import CONFIG_FILE, SEARCH_KIND, SEARCH_STATE_FILE

EVAL_BATCH = 250


def load_finished(run_dir: str, data_path: str | None = None):
    """(space, config, final weights, checkpoint extra, fixed vital ops) of a finished search
    folder; a clear error for a folder that is not one or has not finished."""
    from src.checkpoint import load_checkpoint
    from src.config import load_config
    from src.search.config import SearchConfig
    from src.search.engine import prepare_space

    cfg_path, state_path = (os.path.join(run_dir, n) for n in (CONFIG_FILE, SEARCH_STATE_FILE))
    for path in (cfg_path, state_path):
        if not os.path.isfile(path):
            raise HourNASError(f"'{run_dir}' is not a search folder: '{path}' is missing")
    overrides = [f"data.path={data_path}"] if data_path else []
    cfg = load_config(SearchConfig, cfg_path, overrides)
    space, cfg = prepare_space(cfg)
    params, extra = load_checkpoint(state_path)
    state = extra.get("state") or {}
    if extra.get("kind") != SEARCH_KIND or state.get("stage") != "done":
        raise HourNASError(f"the search in '{run_dir}' has not finished (stage "
                           f"'{state.get('stage')}'); finish it first (search.py --resume)")
    fixed = {int(k): int(v) for k, v in (state.get("vital_choices") or {}).items()}
    return space, cfg, params, extra, fixed


def load_final_supernet(run_dir: str, data_path: str | None = None):
    """(supernet with the run's final weights, space, config, fixed vital ops) of a finished
    search folder."""
    import mindspore as ms

    from src.supernet import Supernet

    space, cfg, params, extra, fixed = load_finished(run_dir, data_path)
    net = Supernet(space, list(extra["searched"]), fixed, list(extra["keep"]))
    for p in net.get_parameters():
        p.set_data(ms.Tensor(params[p.name].asnumpy()))
    return net, space, cfg, fixed


def proposal_archs(run_dir: str) -> list[dict]:
    """The network of each of stage 2's m proposals in a finished search folder: its own
    most probable ops (``derive_each_proposal``: within the targets' tolerance where it can),
    the vital ops stage 1 fixed, and Π's probability of it. One dict per proposal: proposal,
    pi, arch (an Arch), method, within, derived (its ops are those of the folder's arch.yaml:
    the network the search derived)."""
    import json

    from src.rundir import ARCH_PARAMS_FILE, SUMMARY_FILE
    from src.sampler import stable_softmax
    from src.search.derive import derive_each_proposal
    from src.search.engine import objective_tables, search_targets
    from src.resource import resource_table

    space, cfg, _, _, fixed = load_finished(run_dir)
    with np.load(os.path.join(run_dir, ARCH_PARAMS_FILE), allow_pickle=False) as data:
        theta = np.asarray(data["theta"], np.float64)
        pi = np.asarray(data["pi"], np.float64) if "pi" in data.files else None
    if pi is None or theta.ndim != 3:
        raise HourNASError(f"the search in '{run_dir}' has no proposals (m = 1, or stage 2 did "
                           f"not run): there is no choice among proposals to compare")
    with open(os.path.join(run_dir, SUMMARY_FILE), encoding="utf-8") as f:
        derived_ops = json.load(f)["ops"]
    targets = search_targets(cfg)
    layers = space.nonvital_layers() if cfg.search.vital_priori else list(space.searchable)
    table = resource_table(space, layers=layers, fixed=fixed, objectives=tuple(targets),
                           extra_tables=objective_tables(cfg, space))
    pis = stable_softmax(pi)
    out = []
    for j, d in enumerate(derive_each_proposal(stable_softmax(theta), table, targets,
                                               cfg.search.tolerance, cfg.search.beam)):
        choices = dict(fixed)
        choices.update({i: d.choices[k] for k, i in enumerate(table.layers)})
        arch = space.arch([choices[i] for i in space.searchable], name=f"proposal_{j}",
                          meta={"proposal": j, "pi": round(float(pis[j]), 6),
                                "derivation": d.method, "search": os.path.abspath(run_dir)})
        out.append({"proposal": j, "pi": float(pis[j]), "arch": arch, "method": d.method,
                    "within": bool(d.within),
                    "derived": [op.name for op in arch.ops] == derived_ops})
    return out


def path_of(net, space, fixed: dict[int, int], arch) -> list[int] | None:
    """The candidate index of every searched layer of ``net`` for ``arch``; None when ``arch``
    takes an op the supernet does not hold (another vital op than the one stage 1 fixed)."""
    choices = space.choices_of(arch)
    if any(choices[i] != o for i, o in fixed.items()):
        return None
    return [choices[i] for i in net.searched]


def split_batches(data_cfg, indices, batch_size: int = EVAL_BATCH) -> list:
    """The images of ``indices`` of the train split, in order, as (Tensor, labels) batches."""
    import mindspore as ms

    from src.data import make_dataset

    data = make_dataset(data_cfg, "train", batch_size, indices=indices)
    return [(ms.Tensor(x), y) for x, y in data.create_tuple_iterator(output_numpy=True,
                                                                      num_epochs=1)]


def path_accuracy(net, batches: list, indices: list[int]) -> float:
    """Top-1 (0..1) of one single path of ``net`` over ``batches``, BatchNorm on each batch's
    statistics (``net`` in training mode)."""
    correct = total = 0
    for x, y in batches:
        correct += int((net.forward_path(x, None, indices).asnumpy().argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def supernet_accuracy(run_dir: str, archs: list, data_path: str | None = None,
                      batch_size: int = EVAL_BATCH, log=None) -> list[float | None]:
    """Top-1 (0..1) of each architecture on the final supernet of the search in ``run_dir``,
    over its whole architecture split; None for an architecture it cannot run. The caller
    has set up the context in PyNative mode (the path is chosen on the host)."""
    from src.data import search_split

    net, space, cfg, fixed = load_final_supernet(run_dir, data_path)
    net.set_train(True)
    _, a_idx = search_split(cfg.data, cfg.search.val_fraction, cfg.search.seed)
    batches = split_batches(cfg.data, a_idx, batch_size)
    out: list[float | None] = []
    for k, arch in enumerate(archs):
        indices = path_of(net, space, fixed, arch)
        if indices is None:
            out.append(None)
            continue
        out.append(path_accuracy(net, batches, indices))
        if log:
            log(f"supernet of {run_dir}: {arch.name} {100 * out[-1]:.2f}% on the architecture "
                f"split ({len(a_idx)} images) [{k + 1}/{len(archs)}]")
    return out


def kendall_tau(a: list[float], b: list[float]) -> tuple[float, float]:
    """Kendall's τ-b between two rankings and its two-sided p-value (scipy)."""
    from scipy.stats import kendalltau

    if len(a) < 2:
        return float("nan"), float("nan")
    res = kendalltau(np.asarray(a, float), np.asarray(b, float))
    return float(res.statistic), float(res.pvalue)
