"""A trained network, evaluated and loaded: what eval.py, export.py, the analysis and the
training loop's validation share (no training code is imported here).

- ``evaluate``: top-1/top-5 and cross-entropy over every image of the eval split;
- ``load_network``: the network of a training checkpoint (its EMA copy when it kept one), from
  the checkpoint's own architecture record or a given architecture file;
- ``network_params``, ``arch_of_checkpoint``, ``by_name``, ``copy_weights``: the pieces.
"""
from __future__ import annotations

import time

import numpy as np

from src.checkpoint import load_checkpoint
from src.data import DataConfig, dataset_info, make_dataset
from src.errors import CheckpointError
from src.space.space import Arch, arch_from_dict, load_arch

def evaluate(net, data_cfg: DataConfig, batch_size: int,
             shard: tuple[int, int] | None = None) -> dict[str, float]:
    """Top-1/top-5 (%) and cross-entropy over every image of the eval split.

    The last partial batch is padded to ``batch_size`` (so the compiled graph is reused) and
    only its real images are counted. images_per_s excludes the first call (graph compile).
    ``shard=(rank, size)`` (data parallel): each rank evaluates every size-th image and the
    counts are summed over the ranks, so every rank returns the whole split's figures.
    """
    import mindspore as ms

    net.set_train(False)
    indices = None
    if shard is not None:
        indices = np.arange(dataset_info(data_cfg).eval_size)[shard[0]::shard[1]]
    data = make_dataset(data_cfg, "eval", batch_size, indices=indices)
    n = c1 = c5 = 0
    loss_sum = 0.0
    t0 = time.perf_counter()
    compiled = False
    for x, y in data.create_tuple_iterator(output_numpy=True, num_epochs=1):
        b = len(y)
        if b < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - b,) + x.shape[1:], x.dtype)])
        if not compiled:  # compile outside the timing
            net(ms.Tensor(x)).asnumpy()
            compiled, t0 = True, time.perf_counter()
        logits = net(ms.Tensor(x)).asnumpy()[:b].astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        loss_sum += float((lse - logits[np.arange(b), y]).sum())
        top = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        c1 += int((top[:, 0] == y).sum())
        c5 += int((top == y[:, None]).any(axis=1).sum())
        n += b
    seconds = time.perf_counter() - t0
    if shard is not None:
        import mindspore.ops as ops
        # float32 (AllReduce takes no float64): counts stay exact below 2**24 images
        total = ops.AllReduce()(ms.Tensor(np.array([n, c1, c5, loss_sum], np.float32))).asnumpy()
        n, c1, c5 = (int(round(float(v))) for v in total[:3])
        loss_sum = float(total[3])  # seconds stay this rank's (CPU AllReduce only sums)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss_sum / n, "images": n,
            "seconds": seconds, "images_per_s": n / seconds if seconds > 0 else float("nan")}


def network_params(params: dict, extra: dict) -> dict:
    """The weights to evaluate/export from a training checkpoint: the EMA copy when the run
    kept one, else the trained weights; keyed by the network's own parameter names."""
    names = extra.get("network")
    if not isinstance(names, list):  # not a training checkpoint: plain network weights
        return params
    src = "ema." if extra.get("ema") else ""
    missing = [n for n in names if src + n not in params]
    if missing:
        raise CheckpointError(f"training checkpoint lacks {len(missing)} network weights "
                              f"({', '.join(missing[:3])}); it is damaged")
    return {n: params[src + n] for n in names}


def by_name(cell) -> dict:
    """Parameters of a Cell keyed by their own names (what checkpoints store)."""
    return {q.name: q for _, q in cell.parameters_and_names()}


def copy_weights(dst, src: dict) -> None:
    import mindspore as ms

    for name, p in dst.parameters_dict().items():
        p.set_data(ms.Tensor(src[name].asnumpy()))


def arch_of_checkpoint(extra: dict, path: str) -> Arch:
    record = extra.get("arch")
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint '{path}' holds no architecture record; give --arch FILE")
    return arch_from_dict(record, where=f"architecture record of '{path}'")


def load_network(ckpt: str, arch_path: str | None = None):
    """(net in eval mode, arch, extra) from a training checkpoint; the architecture is the
    checkpoint's own record unless ``arch_path`` is given. Mismatches raise CheckpointError."""
    from src.checkpoint import load_into
    from src.childnet import ChildNet

    params, extra = load_checkpoint(ckpt)
    stored = extra.get("arch")
    trained = f" (trained as '{stored['name']}')" if isinstance(stored, dict) and \
        isinstance(stored.get("name"), str) else ""
    if arch_path:
        arch = load_arch(arch_path)
        if isinstance(stored, dict):  # keep the trained head size and input size
            arch = _like(arch, stored)
        network = f"the network of --arch '{arch_path}' ('{arch.name}')"
    else:
        arch = arch_of_checkpoint(extra, ckpt)
        network = f"its own architecture record ('{arch.name}')"
    net = ChildNet(arch)
    load_into(net, network_params(params, extra), strict=True,
              where=f"checkpoint '{ckpt}'{trained}", network=network)
    net.set_train(False)
    return net, arch, extra


def _like(arch: Arch, stored: dict) -> Arch:
    """``arch`` with the stored record's classes/input size/input channels/activation, as
    training sized it."""
    data = arch.to_dict()
    data["in_channels"] = stored.get("in_channels", 3)  # a record stores it when it is not 3
    for key in ("num_classes", "input_size"):
        if key in stored:
            data[key] = stored[key]
    if isinstance(stored.get("conventions"), dict) and "activation" in stored["conventions"]:
        data["conventions"] = {**data["conventions"],
                               "activation": stored["conventions"]["activation"]}
    return arch_from_dict(data, where=f"architecture '{arch.name}'")
