"""The search step behind one interface, with three executors.

* ``eager``: PyNative; the path is sampled on the host (Gumbel-Max from a seeded numpy
  generator), only the sampled candidates run, gradients are taken only for the weights on
  the path, and only those move (SGD momentum and weight decay included).
* ``graph`` (compiled candidates): the same path, with every candidate Block compiled once on
  its first call and the path's update compiled; bit-identical to ``eager``, fewer host
  dispatches, but each compiled candidate keeps its memory. ``default_executor`` says which
  one a device uses by default, and why.
* ``allpath``: FBNet-style; every candidate runs, weighted by Gumbel-softmax (Table 5 ablation).

Every executor has the same two steps, ``weight_step(x, y, sample, lr)`` and
``arch_step(x, y, sample)``, where ``sample`` is a ``PathSample`` (``sample_path``: host
Gumbel noise, τ and the path it picks); the loop (``src.search.loop.bilevel_loop``) does not
know which executor runs.

Architecture parameters (θ in stage 1; Π and Θ in stage 2) live apart from the weights
(``arch_*``) and are updated with Adam on the host: they are a few hundred numbers, and a host
update resumes bit-exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
import numpy as np

from src.proposal import ensemble_sample
from src.sampler import GumbelNoise, get_sampler
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
        g = get_sampler(self.sampler)
        if not self.use_proposals:
            return g(self.theta, g_theta, tau)
        return ensemble_sample(g, self.pi, self.theta, g_pi, g_theta, tau)  # Eqs. 8-9


class SparseSGD:
    """SGD with momentum and weight decay that moves only the parameters it is given.

    Unsampled candidates are not passed, so neither momentum nor weight decay moves them in
    a step where they were not used. Weight decay applies to conv/FC weights (ndim > 1).

    ``step`` takes the path's parameters in groups (the shared ones, then one group per
    sampled candidate). ``compiled=False`` updates them one PyNative op at a time;
    ``compiled=True`` updates each group with one compiled call (``_momentum_update``: the
    same ``ApplyMomentum`` kernel, the same products, so the same bits). A group's compiled
    graph depends only on its tensors' shapes, so candidates of equal shape share one.
    """

    def __init__(self, params: list, momentum: float, weight_decay: float,
                 compiled: bool = False):
        self.moments = {p.name: ms.Parameter(ms.Tensor(np.zeros(p.shape, np.float32)),
                                             name=f"moment.{p.name}", requires_grad=False)
                        for p in params}
        self.momentum = ms.Tensor(momentum, ms.float32)
        self.weight_decay = weight_decay
        self.compiled = compiled
        self._apply = ops.ApplyMomentum()

    def step(self, groups: list[list], grads, lr: float) -> None:
        lr_t = ms.Tensor(lr, ms.float32)
        grads = list(grads)
        i = 0
        for group in groups:
            n = len(group)
            if n == 0:
                continue
            g = grads[i:i + n]
            i += n
            if self.compiled:
                _momentum_update(ms.mutable(tuple(group)),
                                 ms.mutable(tuple(self.moments[p.name] for p in group)),
                                 ms.mutable(tuple(g)), lr_t, self.momentum, self.weight_decay)
                continue
            for p, gp in zip(group, g):
                if self.weight_decay and p.ndim > 1:
                    gp = gp + self.weight_decay * p
                self._apply(p, self.moments[p.name], lr_t, gp, self.momentum)


_APPLY_MOMENTUM = ops.ApplyMomentum()


@ms.jit
def _momentum_update(params, moments, grads, lr, momentum, weight_decay):
    """One compiled momentum-SGD update of a group of parameters (tuples via ``ms.mutable``:
    as constants they would recompile every call)."""
    for i in range(len(params)):
        g = grads[i]
        if weight_decay and params[i].ndim > 1:
            g = g + weight_decay * params[i]
        _APPLY_MOMENTUM(params[i], moments[i], lr, g, momentum)
    return lr


def _accuracy(logits, y) -> float:
    return float((logits.argmax(axis=1) == y).astype(ms.float32).mean().asnumpy())


@dataclass
class PathSample:
    """One draw of an architecture A = G(θ) (Eq. 4; in stage 2 from Π and Θ, Eqs. 8-9): the
    Gumbel noise, τ, and the path it picks on the host, argmax(θ/τ + g) per layer (the
    proposal j first in stage 2). Both steps of an iteration take one, each its own draw."""

    g_theta: np.ndarray
    g_pi: np.ndarray | None
    tau: float
    proposal: int | None
    indices: list[int]


def sample_path(arch: ArchParams, noise: GumbelNoise, tau: float) -> PathSample:
    """Draw fresh noise from the host generator (θ's, then Π's) and the path it picks."""
    th_shape, pi_shape = arch.noise_shapes
    g_theta = noise.sample(th_shape)
    g_pi = noise.sample(pi_shape) if pi_shape else None
    proposal, indices = arch.host_path(g_theta, g_pi, tau)
    return PathSample(g_theta, g_pi, tau, proposal, indices)


@dataclass
class StepResult:
    """What a step reports: its loss and accuracy; an architecture step also its CE, the
    resource term T and the gradients of θ (and Π) as host arrays, averaged over ranks."""

    loss: float
    acc: float
    ce: float | None = None
    reg: float | None = None
    grads: dict | None = None


class Executor:
    """One signature for both steps of an iteration, whatever runs the supernet:

    * ``weight_step(x, y, sample, lr)``: SGD on the weights of the path ``sample`` picks
      (all-path: of every candidate, weighted by the soft sample), on a batch of the 80% split;
    * ``arch_step(x, y, sample)``: the gradient of CE + α·T for θ (Π, Θ), on a batch of the
      20% split; the host optimizer applies it.
    """

    name = "base"

    def __init__(self, net: Supernet, arch: ArchParams, sgd: SparseSGD, reg=None,
                 alpha: float = 0.0, grad_mean=None):
        self.net, self.arch, self.sgd, self.reg, self.alpha = net, arch, sgd, reg, alpha
        self.grad_mean = grad_mean  # data-parallel: src.search.distributed.GradMean
        self.loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        self.candidates = net.candidate_params()
        self.shared = net.shared_params()

    def path_groups(self, indices: list[int]) -> list[list]:
        """The path's parameters: the shared ones, then the sampled candidate's per layer."""
        return [list(self.shared)] + [self.candidates[k][o] for k, o in enumerate(indices)]

    def _reg(self, a):
        if self.reg is None:
            return ms.Tensor(0.0, ms.float32)
        return self.reg(a)


class _HostPathExecutor(Executor):
    """Shared PyNative steps; subclasses say how the supernet runs for weights ``a``."""

    def run_net(self, x, a, indices):
        raise NotImplementedError

    def _weight_update(self, x, y, params: list, a, indices):
        net_fn, loss_fn = self.run_net, self.loss_fn

        def forward(xb, yb):
            logits = net_fn(xb, a, indices)
            return loss_fn(logits, yb), logits

        (loss, logits), grads = ms.value_and_grad(forward, None, params, has_aux=True)(x, y)
        if self.grad_mean is not None:
            grads = self.grad_mean.tensors(grads)
        return loss, logits, grads

    def arch_step(self, x, y, sample: PathSample) -> StepResult:
        arch, loss_fn, alpha, net_fn = self.arch, self.loss_fn, self.alpha, self.run_net
        gt = ms.Tensor(sample.g_theta)
        gp = ms.Tensor(sample.g_pi) if sample.g_pi is not None else None
        tau_t = ms.Tensor(sample.tau, ms.float32)
        indices = sample.indices

        def forward(xb, yb):
            a = arch(gt, gp, tau_t)
            logits = net_fn(xb, a, indices)
            ce = loss_fn(logits, yb)
            r = self._reg(a)
            return ce + alpha * r, (ce, r, logits)

        (loss, (ce, r, logits)), grads = ms.value_and_grad(
            forward, None, arch.params(), has_aux=True)(x, y)
        names = ["theta"] + (["pi"] if arch.use_proposals else [])
        host_grads = {n: g.asnumpy() for n, g in zip(names, grads)}
        if self.grad_mean is not None:
            host_grads = self.grad_mean.arrays(host_grads)
        return StepResult(float(loss.asnumpy()), _accuracy(logits, y), float(ce.asnumpy()),
                          float(r.asnumpy()), host_grads)


class EagerExecutor(_HostPathExecutor):
    """Single path in PyNative: only the sampled ops run and only their weights move."""

    name = "eager"
    compiled = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.compiled:
            self.net.compile_blocks()
        self.sgd.compiled = self.compiled

    def run_net(self, x, a, indices):
        return self.net.forward_path(x, a, indices)

    def weight_step(self, x, y, sample: PathSample, lr: float) -> StepResult:
        groups = self.path_groups(sample.indices)
        params = [p for group in groups for p in group]
        # a = None: the sampled ops' outputs are not scaled (the one-hot's 1 would not change
        # a bit); the weights' gradients are those of the path alone.
        loss, logits, grads = self._weight_update(x, y, params, None, sample.indices)
        self.sgd.step(groups, grads, lr)
        return StepResult(float(loss.asnumpy()), _accuracy(logits, y))


class GraphExecutor(EagerExecutor):
    """Compiled candidates: every Block of the supernet is compiled once (lazily, at its
    first call: ``Supernet.compile_blocks``), the host picks the path and calls the sampled
    candidates' compiled graphs in turn; the path's update is one compiled call per group
    (``SparseSGD(compiled=True)``). Same path, same bits as ``eager``: only the dispatch of
    the ops moves from the host to the compiled graphs."""

    name = "graph"
    compiled = True


class AllPathExecutor(_HostPathExecutor):
    """FBNet-style: all candidates run, weighted by the soft sample (Gumbel-softmax)."""

    name = "allpath"

    def run_net(self, x, a, indices=None):
        return self.net.forward_all(x, a)

    def weight_step(self, x, y, sample: PathSample, lr: float) -> StepResult:
        params = list(self.net.trainable_params())
        gp = ms.Tensor(sample.g_pi) if sample.g_pi is not None else None
        a_weights = self.arch(ms.Tensor(sample.g_theta), gp,
                              ms.Tensor(sample.tau, ms.float32)).asnumpy()
        a = ms.Tensor(a_weights.astype(np.float32))
        loss, logits, grads = self._weight_update(x, y, params, a, None)
        self.sgd.step([params], grads, lr)
        return StepResult(float(loss.asnumpy()), _accuracy(logits, y))


EXECUTORS = {"eager": EagerExecutor, "graph": GraphExecutor, "allpath": AllPathExecutor}


def default_executor(device_target: str) -> str:
    """``eager`` on every device, from measurements (docs/search_engine.md):

    * CPU: ``benchmarks/search_step.py`` measured it faster than the compiled candidates at
      the built-in default's size (a CPU step there is bound by the kernels, the same in both);
    * the compiled candidates keep each compiled candidate's memory: 198 of them at width 0.5,
      CIFAR size, batch 64 held 21.8 GB, so at full width (and at ImageNet size on a device)
      they outgrow the memory. ``search.executor: graph`` selects them where they fit;
      ``benchmarks/device_check.sh`` measures both on a GPU.
    """
    return "eager"
