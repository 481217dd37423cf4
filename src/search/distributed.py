"""Data-parallel search: average gradients across ranks (msrun / mpirun workers).

Every rank draws the same Gumbel noise (same host seed), so all ranks sample the same path;
only the data differs (sharded). Averaging the path's weight gradients and the architecture
gradients each step keeps weights, θ, Π and Θ identical on every rank, so every rank ends
with the same architecture.
"""
from __future__ import annotations

import numpy as np


class GradMean:
    """Mean of gradients over all ranks (AllReduce sum / group size)."""

    def __init__(self, group_size: int):
        import mindspore.ops as ops
        self.group_size = group_size
        self._allreduce = ops.AllReduce()

    def tensors(self, grads):
        """Weight gradients (MindSpore Tensors), in order."""
        scale = 1.0 / self.group_size
        return tuple(self._allreduce(g) * scale for g in grads)

    def arrays(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Architecture gradients (host arrays)."""
        import mindspore as ms
        out = {}
        for k, g in grads.items():
            t = self._allreduce(ms.Tensor(np.ascontiguousarray(g, dtype=np.float32)))
            out[k] = t.asnumpy().astype(np.float64) / self.group_size
        return out
