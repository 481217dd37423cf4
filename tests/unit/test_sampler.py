"""G(θ): Gumbel-Max / Gumbel-softmax / softmax in MindSpore and numpy, noise, τ schedule."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from src.errors import HourNASError
from src.sampler import (GumbelNoise, TauSchedule, get_sampler, get_sampler_np, gumbel_max,
                         gumbel_max_np, gumbel_softmax, gumbel_softmax_np, sample_index_np,
                         softmax_np, softmax_sample, softmax_sample_np)

RNG = np.random.default_rng(0)
THETA = RNG.normal(size=(6, 5)).astype(np.float32)
WEIGHTS = RNG.normal(size=(6, 5)).astype(np.float32)


def _noise(shape, seed=1):
    return GumbelNoise(seed).sample(shape)


def test_gumbel_max_forward_is_one_hot_at_the_perturbed_argmax():
    g = _noise(THETA.shape)
    for tau in (5.0, 1.0, 0.1):
        a = gumbel_max(Tensor(THETA), Tensor(g), tau).asnumpy()
        assert set(np.unique(a)) <= {0.0, 1.0}
        np.testing.assert_array_equal(a.sum(axis=-1), np.ones(THETA.shape[0]))
        np.testing.assert_array_equal(a.argmax(-1), (THETA / tau + g).argmax(-1))
        np.testing.assert_array_equal(a, gumbel_max_np(THETA, g, tau))


def test_samplers_agree_with_numpy_and_rows_sum_to_one():
    g = _noise(THETA.shape)
    np.testing.assert_allclose(gumbel_softmax(Tensor(THETA), Tensor(g), 0.5).asnumpy(),
                               gumbel_softmax_np(THETA, g, 0.5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax_sample(Tensor(THETA), 2.0).asnumpy(),
                               softmax_sample_np(THETA, 2.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax_sample_np(THETA, 2.0).sum(-1), 1.0, rtol=1e-6)
    for name in ("gumbel_max", "gumbel_softmax", "softmax"):
        np.testing.assert_allclose(get_sampler(name)(Tensor(THETA), Tensor(g), 0.7).asnumpy(),
                                   get_sampler_np(name)(THETA, g, 0.7), rtol=1e-5, atol=1e-6)


def test_gradient_reaches_theta_through_gumbel_max_straight_through():
    g = Tensor(_noise(THETA.shape))
    w = Tensor(WEIGHTS)

    def hard_loss(theta):
        return (gumbel_max(theta, g, 0.5) * w).sum()

    def soft_loss(theta):
        return (gumbel_softmax(theta, g, 0.5) * w).sum()

    grad_hard = ms.grad(hard_loss)(Tensor(THETA)).asnumpy()
    grad_soft = ms.grad(soft_loss)(Tensor(THETA)).asnumpy()
    assert np.abs(grad_hard).sum() > 1e-3
    # the ST gradient of a linear loss is exactly the relaxed sample's gradient
    np.testing.assert_allclose(grad_hard, grad_soft, rtol=1e-5, atol=1e-7)


def _jit_sample(theta, noise, tau):
    return gumbel_max(theta, noise, tau), gumbel_softmax(theta, noise, tau), \
        softmax_sample(theta, tau)


def test_samplers_run_in_graph_mode_with_a_tensor_tau():
    g = _noise(THETA.shape)
    tau = Tensor(0.5, ms.float32)
    jitted = ms.jit(_jit_sample)(Tensor(THETA), Tensor(g), tau)
    eager = _jit_sample(Tensor(THETA), Tensor(g), 0.5)
    for a, b in zip(jitted, eager):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_gumbel_max_frequencies_follow_softmax_theta_over_tau(tau):
    theta = np.array([1.0, 0.2, -0.5, 0.0, 0.7])
    n = 40000
    idx = sample_index_np(np.broadcast_to(theta, (n, 5)), GumbelNoise(7).sample((n, 5)), tau)
    counts = np.bincount(idx, minlength=5).astype(float)
    # chi-square, 4 degrees of freedom: 18.47 is the 0.1% critical value
    assert _chi_square(counts, softmax_np(theta / tau)) < 18.47
    wrong = softmax_np(theta / (2.0 * tau))  # the test can tell a different temperature
    assert _chi_square(counts, wrong) > 100


def test_mindspore_gumbel_max_frequencies_follow_softmax():
    theta = np.array([0.5, -0.3, 0.0, 1.1], np.float32)
    n = 20000
    a = gumbel_max(Tensor(np.broadcast_to(theta, (n, 4)).copy()),
                   Tensor(GumbelNoise(11).sample((n, 4))), 1.0).asnumpy()
    assert _chi_square(a.sum(0), softmax_np(theta.astype(float))) < 16.27  # 3 dof, 0.1%


def test_noise_state_restores_bit_exactly_through_json():
    noise = GumbelNoise(3)
    noise.sample((17,))
    state = json.loads(json.dumps(noise.state()))
    expected = noise.sample((4, 7))
    other = GumbelNoise(99)
    assert other.sample((4, 7)).tobytes() != expected.tobytes()
    other.set_state(state)
    got = other.sample((4, 7))
    assert got.dtype == np.float32 and got.tobytes() == expected.tobytes()
    assert other.seed == 3


def test_noise_is_finite_even_at_the_ends_of_the_uniform():
    noise = GumbelNoise(0)
    noise._rng = type("Extremes", (), {"random": staticmethod(
        lambda shape: np.array([0.0, 1.0, 0.5]))})()
    g = noise.sample((3,))
    assert np.isfinite(g).all()
    assert g[0] == pytest.approx(-np.log(-np.log(1e-10)), rel=1e-6)
    assert g[1] == pytest.approx(-np.log(1e-10), rel=1e-3)
    assert np.isfinite(GumbelNoise(1).sample((200, 300))).all()


def test_malformed_noise_state_is_a_clear_error():
    with pytest.raises(HourNASError, match="malformed Gumbel noise state"):
        GumbelNoise(0).set_state({"bit_generator": "PCG64"})
    with pytest.raises(HourNASError, match="MT19937"):
        GumbelNoise(0).set_state({"bit_generator": "MT19937"})


def test_tau_schedule():
    s = TauSchedule()
    assert s.value(0) == 5.0
    assert s.value(10000) == pytest.approx(5.0 * 0.9999 ** 10000)
    assert TauSchedule(5.0, 0.5, tau_min=1.0).value(10) == 1.0
    with pytest.raises(HourNASError, match="tau0 > 0"):
        TauSchedule(0.0)


def test_unknown_sampler_lists_the_valid_ones():
    with pytest.raises(HourNASError, match="unknown sampler 'gumbel'; valid: gumbel_max, "
                                           "gumbel_softmax, softmax"):
        get_sampler("gumbel")
