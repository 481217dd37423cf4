"""G(θ) of Eq. 4: softmax, Gumbel-softmax and Gumbel-Max (straight-through), with temperature τ.

The temperature divides the logits, as in the paper ("the temperature τ ... sharpening the
distribution progressively", Fig. 3: the lower τ, the closer the sampled architectures sit to
the target). With z = θ/τ + g, g ~ Gumbel(0, 1) i.i.d.:

- ``softmax_sample(θ, τ)``    = softmax(θ/τ)                      deterministic, no noise
- ``gumbel_softmax(θ, g, τ)`` = softmax(θ/τ + g)                   a relaxed sample
- ``gumbel_max(θ, g, τ)``     = one_hot(argmax z) forward,         a hard sample whose gradient
                                softmax(z) backward (straight-through: hard - stop_grad(soft) + soft)

so all three agree in distribution: argmax(θ/τ + g) ~ Categorical(softmax(θ/τ)) and
E[gumbel_max] = softmax_sample. At τ = 1 this is Jang et al.'s Gumbel-softmax at temperature 1.
(Jang's form softmax((θ + g)/τ) would leave the hard sample's distribution, softmax(θ), the
same at every τ, and Fig. 3 could not show any effect of τ on sampled architectures.)

Each sampler exists twice: MindSpore ops for the search (pure ops, PyNative and graph mode;
inside jitted code pass τ as a 0-d Tensor so a changing τ does not recompile) and numpy for
the proposal solver and reports. The last axis is the op axis; any leading shape works.

Noise is drawn on the host from a seeded ``numpy.random.Generator`` (:class:`GumbelNoise`)
whose state goes into checkpoints: MindSpore's own RNG state does not restore ``ops.rand``
and a resumed run would drift (see docs: "Random numbers and resume").
"""
from __future__ import annotations

import mindspore as ms
import mindspore.ops as ops
import numpy as np

from src.errors import HourNASError
from src.search.config import SAMPLERS  # the one list: the search schema's

U_MIN, U_MAX = 1e-10, 1.0 - 1e-10  # u clamp: Gumbel noise stays within [-3.14, 23.03]


def check_sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise HourNASError(f"unknown sampler '{name}'; valid: {', '.join(SAMPLERS)}")
    return name


# ----------------------------------------------------------------------------- noise and τ


class GumbelNoise:
    """Gumbel(0, 1) noise from a seeded PCG64 generator whose state can be saved and restored.

    ``sample(shape)`` returns float32 ``-log(-log(u))`` with u clamped to [1e-10, 1 - 1e-10]
    (finite everywhere). ``state()`` is a JSON-serialisable dict; ``set_state(state())``
    makes the following samples repeat bit for bit.
    """

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self.seed))

    def uniform(self, shape) -> np.ndarray:
        """Clamped U(0, 1) draws, float64."""
        return np.clip(self._rng.random(shape), U_MIN, U_MAX)

    def sample(self, shape) -> np.ndarray:
        return gumbel_from_uniform(self.uniform(shape)).astype(np.float32)

    def integers(self, high: int, size) -> np.ndarray:
        """Uniform integers in [0, high) from the same stream (e.g. which proposal)."""
        return self._rng.integers(0, high, size)

    def state(self) -> dict:
        st = self._rng.bit_generator.state
        return {"bit_generator": st["bit_generator"], "state": str(st["state"]["state"]),
                "inc": str(st["state"]["inc"]), "has_uint32": int(st["has_uint32"]),
                "uinteger": int(st["uinteger"]), "seed": self.seed}

    def set_state(self, state: dict) -> None:
        try:
            if state["bit_generator"] != "PCG64":
                raise HourNASError(f"noise state is for a {state['bit_generator']} generator; "
                                   f"expected PCG64")
            self._rng.bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": int(state["state"]), "inc": int(state["inc"])},
                "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise HourNASError(f"malformed Gumbel noise state ({type(exc).__name__}: {exc}); "
                               f"expected the dict GumbelNoise.state() returns") from None
        self.seed = int(state.get("seed", self.seed))


def gumbel_from_uniform(u: np.ndarray) -> np.ndarray:
    return -np.log(-np.log(u))


class TauSchedule:
    """τ at search step ``step``: max(tau_min, tau0 * decay**step) (the paper: 5.0, x0.9999)."""

    def __init__(self, tau0: float = 5.0, decay: float = 0.9999, tau_min: float = 0.0):
        if tau0 <= 0 or not 0 < decay <= 1 or tau_min < 0:
            raise HourNASError(f"temperature schedule needs tau0 > 0, decay in (0, 1], tau_min >= 0;"
                               f" got tau0={tau0}, decay={decay}, tau_min={tau_min}")
        self.tau0, self.decay, self.tau_min = float(tau0), float(decay), float(tau_min)

    def value(self, step: int) -> float:
        return max(self.tau_min, self.tau0 * self.decay ** int(step))

    def __repr__(self) -> str:
        return f"TauSchedule(tau0={self.tau0}, decay={self.decay}, tau_min={self.tau_min})"


# ----------------------------------------------------------------------------- MindSpore


def softmax_sample(logits, tau):
    """softmax(θ/τ) over the last axis (MindSpore)."""
    return ops.softmax(logits / tau, axis=-1)


def gumbel_softmax(logits, noise, tau):
    """softmax(θ/τ + g) over the last axis (MindSpore)."""
    return ops.softmax(logits / tau + noise, axis=-1)


def gumbel_max(logits, noise, tau):
    """One-hot argmax(θ/τ + g) forward, gradient of softmax(θ/τ + g) backward (MindSpore)."""
    z = logits / tau + noise
    soft = ops.softmax(z, axis=-1)
    hard = ops.one_hot(ops.argmax(z, dim=-1), z.shape[-1], ms.Tensor(1.0, soft.dtype),
                       ms.Tensor(0.0, soft.dtype))
    return hard - ops.stop_gradient(soft) + soft


def _softmax_with_noise(logits, noise, tau):
    return softmax_sample(logits, tau)


def get_sampler(name: str):
    """G by name as a MindSpore function ``(logits, noise, tau) -> A`` ('softmax' ignores the
    noise). Resolve it on the host and call the result inside jitted code."""
    fns = {"gumbel_max": gumbel_max, "gumbel_softmax": gumbel_softmax,
           "softmax": _softmax_with_noise}
    return fns[check_sampler(name)]


# ----------------------------------------------------------------------------- numpy


def softmax_np(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def stable_softmax(a, axis: int = -1) -> np.ndarray:
    """softmax for pictures and reports: finite and warning-free for any input. Shifted by
    the largest finite entry (so 1e30 or -1e30 logits do not overflow); where a row holds
    +inf entries they share its mass equally; nan and -inf entries get 0; a row with no usable
    entry is uniform."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return np.ones_like(a)
    with np.errstate(all="ignore"):
        pos = np.isposinf(a)
        usable = np.where(np.isfinite(a), a, -np.inf)
        top = usable.max(axis=axis, keepdims=True) if a.shape[axis] else usable
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(usable - top)
        e = np.where(pos.any(axis=axis, keepdims=True), pos.astype(np.float64), e)
        total = e.sum(axis=axis, keepdims=True)
        out = np.where(total > 0, e / np.where(total > 0, total, 1.0), 1.0 / max(1, a.shape[axis]))
    return out


def softmax_sample_np(logits: np.ndarray, tau: float) -> np.ndarray:
    return softmax_np(logits / tau)


def gumbel_softmax_np(logits: np.ndarray, noise: np.ndarray, tau: float) -> np.ndarray:
    return softmax_np(logits / tau + noise)


def one_hot_np(index: np.ndarray, depth: int) -> np.ndarray:
    return (index[..., None] == np.arange(depth)).astype(np.float64)


def sample_index_np(logits: np.ndarray, noise: np.ndarray, tau: float) -> np.ndarray:
    """argmax(θ/τ + g): the chosen op per row, ~ Categorical(softmax(θ/τ))."""
    return np.argmax(logits / tau + noise, axis=-1)


def gumbel_max_np(logits: np.ndarray, noise: np.ndarray, tau: float) -> np.ndarray:
    """The hard one-hot sample (forward value of :func:`gumbel_max`)."""
    return one_hot_np(sample_index_np(logits, noise, tau), logits.shape[-1])


def get_sampler_np(name: str):
    """G by name as a numpy function ``(logits, noise, tau) -> A`` (forward values)."""
    fns = {"gumbel_max": gumbel_max_np, "gumbel_softmax": gumbel_softmax_np,
           "softmax": lambda logits, noise, tau: softmax_sample_np(logits, tau)}
    return fns[check_sampler(name)]
