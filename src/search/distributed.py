"""Data-parallel search: average gradients across ranks (msrun / mpirun workers).

Every rank draws the same Gumbel noise (same host seed), so all ranks sample the same path;
only the data differs (sharded, see ``src.data.sample_order``). Averaging the path's weight
gradients and the architecture gradients each step keeps weights, θ, Π and Θ identical on
every rank, so every rank ends with the same architecture.

``search.batch_size`` is the global batch: each rank takes ``batch_size / group_size`` samples
of every global batch, and the mean of the ranks' mean gradients is the full-batch mean
gradient (the ranks' shards of a global batch are equal in size).

Each rank also keeps a small per-rank log (``RankLog``: ``search_paths_rank{r}.jsonl`` in the
output folder) of the paths it sampled and digests of its weights and architecture
parameters, so a run shows that the ranks agreed.
"""
from __future__ import annotations

import os

import numpy as np

from src.runlog import JsonLog, digest, params_digest

RANK_LOG = "search_paths_rank{rank}.jsonl"


class GradMean:
    """Mean of gradients over all ranks (AllReduce sum / group size).

    The gradients of one step travel as one flat float32 buffer (one AllReduce instead of
    one per tensor: the PyNative search step calls it every step, and per-tensor calls made
    a 2-rank CPU step about 3x slower than a single-process one). With two ranks the result
    is the same on both to the last bit: (a + b) / 2 does not depend on the order.
    """

    def __init__(self, group_size: int):
        import mindspore.ops as ops
        self.group_size = group_size
        self._allreduce = ops.AllReduce()

    def _flat_mean(self, flat):
        return self._allreduce(flat) * (1.0 / self.group_size)

    def tensors(self, grads):
        """Weight gradients (MindSpore Tensors), in order; returned with the same shapes."""
        import mindspore.ops as ops
        grads = tuple(grads)
        if not grads:
            return grads
        shapes = [g.shape for g in grads]
        sizes = [int(np.prod(s)) if len(s) else 1 for s in shapes]
        flat = ops.cat([g.reshape(-1) for g in grads]) if len(grads) > 1 else grads[0].reshape(-1)
        mean = self._flat_mean(flat)
        parts = ops.split(mean, sizes) if len(grads) > 1 else (mean,)
        return tuple(p.reshape(s) for p, s in zip(parts, shapes))

    def arrays(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Architecture gradients (host arrays), as float64 like the host optimizer's state."""
        import mindspore as ms
        keys = list(grads)
        if not keys:
            return {}
        arrs = [np.asarray(grads[k], dtype=np.float32) for k in keys]
        flat = np.concatenate([a.reshape(-1) for a in arrs])
        # the sum, then the division on the host in float64, as before fusing
        total = self._allreduce(ms.Tensor(flat)).asnumpy().astype(np.float64) / self.group_size
        out, pos = {}, 0
        for k, a in zip(keys, arrs):
            out[k] = total[pos:pos + a.size].reshape(a.shape)
            pos += a.size
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here (a one-number AllReduce)."""
        import mindspore as ms
        self._allreduce(ms.Tensor(np.zeros((1,), np.float32))).asnumpy()


def weights_digest(net) -> str:
    """Digest of the trained weights (what the gradient mean keeps equal on every rank).
    BatchNorm's running statistics are left out: each rank keeps its own (see
    docs/distributed.md)."""
    return params_digest(net.trainable_params())


def arch_digest(values: dict[str, np.ndarray]) -> str:
    return digest(values.items())


class RankLog:
    """``search_paths_rank{r}.jsonl``: what one rank sampled, written by that rank.

    One line per step (stage, global step, weight-step path and proposal, architecture-step
    path and proposal) and one per stage end and run end (digests of the weights and the
    architecture parameters, the derived ops). Small: a few hundred bytes per step.
    """

    def __init__(self, output_dir: str, rank: int):
        self.path = os.path.join(output_dir, RANK_LOG.format(rank=rank))
        self.rank = rank
        # a plain rewrite, not an atomic one: rank 0 clears stale temp files in this folder
        self._log = JsonLog(self.path, stamp={"rank": rank}, atomic=False)

    def start(self, resume_step: int | None) -> None:
        """A new run empties the log; a resumed one drops the steps after the checkpoint."""
        if resume_step is None:
            self._log.reset()
        else:
            self._log.reset(keep=lambda rec: rec.get("global_step", -1) <= resume_step
                            and rec.get("event") != "done")

    def write(self, **rec) -> None:
        self._log.write(**rec)
