"""The search step behind one interface, with three executors.

* ``eager`` (default on CPU): PyNative; the path is sampled on the host (Gumbel-Max from a
  seeded numpy generator), only the sampled candidates run, gradients are taken only for the
  weights on the path, and only those move (SGD momentum and weight decay included).
* ``graph``: one jitted step; the branch of each layer is chosen by a Tensor index (MindSpore's
  switch_layer). Unchosen candidates get zero gradients there, so the update is masked: their
  weights and momentum stay as they were.
* ``allpath``: FBNet-style; every candidate runs, weighted by Gumbel-softmax (Table 5 ablation).

Architecture parameters (θ in stage 1; Π and Θ in stage 2) live apart from the weights
(``arch_*``) and are updated with Adam on the host: they are a few hundred numbers, and a host
update resumes bit-exactly.
"""
from __future__ import annotations

import time

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
import numpy as np

from src.sampler import gumbel_max, gumbel_softmax
from src.supernet import Supernet

EPS = 1e-8


class HostAdam:
    """Adam on host arrays (architecture parameters): exact to save and restore."""

    def __init__(self, shapes: dict[str, tuple], lr: float, betas=(0.5, 0.999),
                 weight_decay: float = 0.0):
        self.lr, self.betas, self.weight_decay = lr, betas, weight_decay
        self.m = {k: np.zeros(s, np.float64) for k, s in shapes.items()}
        self.v = {k: np.zeros(s, np.float64) for k, s in shapes.items()}
        self.t = 0

    def step(self, values: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> dict:
        self.t += 1
        b1, b2 = self.betas
        out = {}
        for k, g in grads.items():
            g = np.asarray(g, np.float64) + self.weight_decay * values[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            mhat = self.m[k] / (1 - b1 ** self.t)
            vhat = self.v[k] / (1 - b2 ** self.t)
            out[k] = values[k] - self.lr * mhat / (np.sqrt(vhat) + EPS)
        return out

    def state(self) -> dict:
        return {"t": self.t, "m": {k: v.copy() for k, v in self.m.items()},
                "v": {k: v.copy() for k, v in self.v.items()}}

    def set_state(self, state: dict) -> None:
        self.t = int(state["t"])
        self.m = {k: np.asarray(v, np.float64) for k, v in state["m"].items()}
        self.v = {k: np.asarray(v, np.float64) for k, v in state["v"].items()}


class ArchParams(nn.Cell):
    """θ (stage 1: one distribution per searched layer) or Π and Θ (stage 2: m proposals).

    ``construct(g_theta, g_pi, tau)`` returns the (L, O) architecture weights A: with
    Gumbel-Max a one-hot whose gradient is the soft sample's (straight-through); with
    Gumbel-softmax the soft sample; Eq. 9 (A = Σ π_i G(θ_i)) when proposals are used.
    """

    def __init__(self, num_layers: int, num_ops: int, proposals: np.ndarray | None = None,
                 sampler: str = "gumbel_max"):
        super().__init__()
        self.sampler = sampler
        self.use_proposals = proposals is not None
        if self.use_proposals:
            m = proposals.shape[0]
            self.theta = ms.Parameter(ms.Tensor(proposals.astype(np.float32)), name="arch_Theta")
            self.pi = ms.Parameter(ms.Tensor(np.zeros((m,), np.float32)), name="arch_Pi")
        else:
            self.theta = ms.Parameter(ms.Tensor(np.zeros((num_layers, num_ops), np.float32)),
                                      name="arch_theta")
            self.pi = None

    @property
    def noise_shapes(self) -> tuple[tuple, tuple | None]:
        th = tuple(self.theta.shape)
        return th, ((th[0],) if self.use_proposals else None)

    def values(self) -> dict[str, np.ndarray]:
        out = {"theta": self.theta.asnumpy().astype(np.float64)}
        if self.use_proposals:
            out["pi"] = self.pi.asnumpy().astype(np.float64)
        return out

    def assign(self, values: dict[str, np.ndarray]) -> None:
        self.theta.set_data(ms.Tensor(values["theta"].astype(np.float32)))
        if self.use_proposals:
            self.pi.set_data(ms.Tensor(values["pi"].astype(np.float32)))

    def params(self) -> list:
        return [self.theta] + ([self.pi] if self.use_proposals else [])

    def host_path(self, g_theta: np.ndarray, g_pi: np.ndarray | None,
                  tau: float) -> tuple[int | None, list[int]]:
        """The Gumbel-Max path for given noise, argmax(θ/τ + g) as in ``src.sampler``:
        (proposal, op index per layer). The same indices the Tensor sampler's one-hot picks."""
        theta = self.theta.asnumpy()
        if self.use_proposals:
            j = int(np.argmax(self.pi.asnumpy() / np.float32(tau) + g_pi))
            return j, [int(i) for i in np.argmax(theta[j] / np.float32(tau) + g_theta[j], axis=-1)]
        return None, [int(i) for i in np.argmax(theta / np.float32(tau) + g_theta, axis=-1)]

    def probabilities(self) -> tuple[np.ndarray | None, np.ndarray]:
        """softmax(Π) and softmax(θ) per layer (per proposal in stage 2)."""
        theta = self.theta.asnumpy().astype(np.float64)
        p = np.exp(theta - theta.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        if not self.use_proposals:
            return None, p
        pi = self.pi.asnumpy().astype(np.float64)
        q = np.exp(pi - pi.max())
        return q / q.sum(), p

    def construct(self, g_theta, g_pi, tau):
        if self.sampler == "gumbel_max":
            a = gumbel_max(self.theta, g_theta, tau)
        elif self.sampler == "gumbel_softmax":
            a = gumbel_softmax(self.theta, g_theta, tau)
        else:
            a = ops.softmax(self.theta / tau, axis=-1)
        if not self.use_proposals:
            return a
        if self.sampler == "gumbel_max":
            pi = gumbel_max(self.pi, g_pi, tau)
        elif self.sampler == "gumbel_softmax":
            pi = gumbel_softmax(self.pi, g_pi, tau)
        else:
            pi = ops.softmax(self.pi / tau, axis=-1)
        return (pi.reshape(-1, 1, 1) * a).sum(axis=0)


class SparseSGD:
    """SGD with momentum and weight decay that moves only the parameters it is given.

    Unsampled candidates are not passed, so neither momentum nor weight decay moves them in
    a step where they were not used. Weight decay applies to conv/FC weights (ndim > 1).
    """

    def __init__(self, params: list, momentum: float, weight_decay: float):
        self.moments = {p.name: ms.Parameter(ms.Tensor(np.zeros(p.shape, np.float32)),
                                             name=f"moment.{p.name}", requires_grad=False)
                        for p in params}
        self.momentum = ms.Tensor(momentum, ms.float32)
        self.weight_decay = weight_decay
        self._apply = ops.ApplyMomentum()

    def step(self, params: list, grads, lr: float) -> None:
        lr_t = ms.Tensor(lr, ms.float32)
        for p, g in zip(params, grads):
            if self.weight_decay and p.ndim > 1:
                g = g + self.weight_decay * p
            self._apply(p, self.moments[p.name], lr_t, g, self.momentum)


def _accuracy(logits, y) -> float:
    return float((logits.argmax(axis=1) == y).astype(ms.float32).mean().asnumpy())


class Executor:
    """One interface: ``weight_step`` (SGD on the path's weights, train split) and
    ``arch_step`` (gradient of CE + α·T for the architecture parameters, val split)."""

    name = "base"

    def __init__(self, net: Supernet, arch: ArchParams, sgd: SparseSGD, reg=None,
                 alpha: float = 0.0, grad_mean=None):
        self.net, self.arch, self.sgd, self.reg, self.alpha = net, arch, sgd, reg, alpha
        self.grad_mean = grad_mean  # data-parallel: src.search.distributed.GradMean
        self.loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        self.candidates = net.candidate_params()
        self.shared = net.shared_params()

    def path_params(self, indices: list[int]) -> list:
        out = list(self.shared)
        for k, o in enumerate(indices):
            out.extend(self.candidates[k][o])
        return out

    def _reg(self, a):
        if self.reg is None:
            return ms.Tensor(0.0, ms.float32)
        return self.reg(a)


class _HostPathExecutor(Executor):
    """Shared PyNative steps; subclasses say how the supernet runs for weights ``a``."""

    def run_net(self, x, a, indices):
        raise NotImplementedError

    def _weight_update(self, x, y, params: list, a, indices) -> tuple[float, float]:
        net_fn, loss_fn = self.run_net, self.loss_fn

        def forward(xb, yb):
            logits = net_fn(xb, a, indices)
            return loss_fn(logits, yb), logits

        (loss, logits), grads = ms.value_and_grad(forward, None, params, has_aux=True)(x, y)
        if self.grad_mean is not None:
            grads = self.grad_mean.tensors(grads)
        return loss, logits, grads

    def arch_step(self, x, y, g_theta, g_pi, tau: float, indices=None):
        arch, loss_fn, alpha, net_fn = self.arch, self.loss_fn, self.alpha, self.run_net
        gt = ms.Tensor(g_theta)
        gp = ms.Tensor(g_pi) if g_pi is not None else None
        tau_t = ms.Tensor(tau, ms.float32)

        def forward(xb, yb):
            a = arch(gt, gp, tau_t)
            logits = net_fn(xb, a, indices)
            ce = loss_fn(logits, yb)
            r = self._reg(a)
            return ce + alpha * r, (ce, r, logits)

        (loss, (ce, r, logits)), grads = ms.value_and_grad(
            forward, None, arch.params(), has_aux=True)(x, y)
        return _arch_result(arch, loss, ce, r, logits, y, grads)


class EagerExecutor(_HostPathExecutor):
    """Single path in PyNative: only the sampled ops run and only their weights move."""

    name = "eager"

    def run_net(self, x, a, indices):
        return self.net.forward_path(x, a, indices)

    def weight_step(self, x, y, indices: list[int], lr: float) -> tuple[float, float]:
        params = self.path_params(indices)
        ones = ms.Tensor(np.ones((len(indices), max(len(c) for c in self.candidates) or 1),
                                 np.float32))
        loss, logits, grads = self._weight_update(x, y, params, ones, indices)
        self.sgd.step(params, grads, lr)
        return float(loss.asnumpy()), _accuracy(logits, y)


class AllPathExecutor(_HostPathExecutor):
    """FBNet-style: all candidates run, weighted by Gumbel-softmax samples."""

    name = "allpath"

    def run_net(self, x, a, indices=None):
        return self.net.forward_all(x, a)

    def weight_step(self, x, y, a_weights: np.ndarray, lr: float) -> tuple[float, float]:
        params = list(self.net.trainable_params())
        a = ms.Tensor(a_weights.astype(np.float32))
        loss, logits, grads = self._weight_update(x, y, params, a, None)
        self.sgd.step(params, grads, lr)
        return float(loss.asnumpy()), _accuracy(logits, y)


class _GraphWeightStep(nn.Cell):
    """Jitted weight step: switch_layer forward, masked momentum-SGD update."""

    def __init__(self, net: Supernet, params: list, moments: list, tags: list, momentum: float,
                 weight_decay: float):
        super().__init__(auto_prefix=False)  # keep the supernet's parameter names
        self.net = net
        self.params = ms.ParameterTuple(params)
        self.moments = ms.ParameterTuple(moments)
        self.tags = tags  # per param: (layer k, op o) or (-1, -1) for shared
        self.momentum = momentum
        self.wd = [weight_decay if p.ndim > 1 else 0.0 for p in params]
        self.loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

    def forward(self, x, y, a, idx):
        logits = self.net(x, a, idx)
        return self.loss_fn(logits, y), logits

    def construct(self, x, y, a, idx, lr):
        (loss, logits), grads = ms.value_and_grad(self.forward, None, self.params,
                                                  has_aux=True)(x, y, a, idx)
        for i in range(len(self.tags)):
            k, o = self.tags[i]
            p, m, g = self.params[i], self.moments[i], grads[i]
            g = g + self.wd[i] * p
            m_new = self.momentum * m + g
            if k >= 0:  # a candidate's weights move only when it was on the path
                used = ops.cast(idx[k] == o, ms.float32)
                m_new = used * m_new + (1.0 - used) * m
                ops.assign(m, m_new)
                ops.assign(p, p - used * lr * m_new)
            else:
                ops.assign(m, m_new)
                ops.assign(p, p - lr * m_new)
        return loss, logits


class GraphExecutor(Executor):
    """Whole weight step jitted, branch by Tensor index (switch_layer)."""

    name = "graph"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Each switched layer nests a subgraph per candidate: 22 layers x 9 ops pass MindSpore's
        # default call-depth limit of 1000 (measured: "Exceed function call depth limit").
        ms.set_recursion_limit(max(1000, 60 * sum(len(c) for c in self.candidates)))
        params, tags = [], []
        cand_ids = {}
        for k, layer in enumerate(self.candidates):
            for o, cand in enumerate(layer):
                for p in cand:
                    cand_ids[id(p)] = (k, o)
        for p in self.net.trainable_params():
            params.append(p)
            tags.append(cand_ids.get(id(p), (-1, -1)))
        moments = [self.sgd.moments[p.name] for p in params]
        self.w_step = _GraphWeightStep(self.net, params, moments, tags,
                                       float(self.sgd.momentum.asnumpy()), self.sgd.weight_decay)
        self._jit_w = ms.jit(self.w_step.construct)
        self.compile_seconds = None

    def weight_step(self, x, y, indices: list[int], lr: float) -> tuple[float, float]:
        num_ops = max(len(c) for c in self.candidates)
        a = ms.Tensor(np.ones((len(indices), num_ops), np.float32))
        idx = ms.Tensor(np.asarray(indices, np.int32))
        t0 = time.perf_counter()
        loss, logits = self._jit_w(x, y, a, idx, ms.Tensor(lr, ms.float32))
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - t0
        return float(loss.asnumpy()), _accuracy(logits, y)

    def arch_step(self, x, y, g_theta, g_pi, tau: float, indices: list[int]):
        net, arch, loss_fn, alpha = self.net, self.arch, self.loss_fn, self.alpha
        idx = ms.Tensor(np.asarray(indices, np.int32))

        def forward(xb, yb, gt, gp, tau_t, idx_t):
            a = arch(gt, gp, tau_t)
            logits = net(xb, a, idx_t)
            ce = loss_fn(logits, yb)
            r = self._reg(a)
            return ce + alpha * r, (ce, r, logits)

        if not hasattr(self, "_jit_a"):
            self._jit_a = ms.jit(ms.value_and_grad(forward, None, arch.params(), has_aux=True))
        gp = ms.Tensor(g_pi) if g_pi is not None else ms.Tensor(np.zeros((1,), np.float32))
        (loss, (ce, r, logits)), grads = self._jit_a(
            x, y, ms.Tensor(g_theta), gp, ms.Tensor(tau, ms.float32), idx)
        return _arch_result(arch, loss, ce, r, logits, y, grads)


def _arch_result(arch: ArchParams, loss, ce, r, logits, y, grads) -> dict:
    names = ["theta"] + (["pi"] if arch.use_proposals else [])
    return {"loss": float(loss.asnumpy()), "ce": float(ce.asnumpy()),
            "reg": float(r.asnumpy()), "acc": _accuracy(logits, y),
            "grads": {n: g.asnumpy() for n, g in zip(names, grads)}}


EXECUTORS = {"eager": EagerExecutor, "graph": GraphExecutor, "allpath": AllPathExecutor}


def default_executor(device_target: str) -> str:
    """Measured (docs/search_engine.md): PyNative with a host index is ~9x faster than the
    jitted switch_layer step on CPU; GPU and Ascend have no measurement yet, so eager too."""
    return "eager"
