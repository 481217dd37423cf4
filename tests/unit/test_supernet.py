"""Supernet and search-step executors on a tiny space (real MindSpore, CPU)."""
import numpy as np
import pytest
import mindspore as ms

from src.context import setup_context
from src.search.step import (AllPathExecutor, ArchParams, EagerExecutor, GraphExecutor, PathSample,
                             SparseSGD)
from src.space.space import space_from_dict
from src.supernet import Supernet

TINY = {"name": "tiny", "input_size": 16, "num_classes": 4, "stem": {"c": 8, "s": 1},
        "ops": ["k3_e1", "k3_e3", "skip"],
        "stages": [{"c": 8, "n": 2, "s": 1}, {"c": 16, "n": 1, "s": 2}], "head": 32}


@pytest.fixture(scope="module", autouse=True)
def pynative():
    setup_context("CPU", mode="pynative")


def _setup(executor_cls, sampler="gumbel_max"):
    ms.set_seed(0)
    space = space_from_dict(TINY)
    net = Supernet(space, searched=list(space.searchable))
    net.set_train(True)
    arch = ArchParams(len(space.searchable), 3, sampler=sampler)
    sgd = SparseSGD(list(net.trainable_params()), momentum=0.9, weight_decay=1e-4)
    return space, net, arch, sgd, executor_cls(net, arch, sgd)


def _path(indices, g_theta=None, tau=1.0):
    """A PathSample for a given path (the executors' one argument for what to run)."""
    return PathSample(g_theta, None, tau, None, list(indices))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    x = ms.Tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    y = ms.Tensor(rng.integers(0, 4, size=4).astype(np.int32))
    return x, y


def _snapshot(net):
    return {p.name: p.asnumpy().copy() for p in net.trainable_params()}


def _moved(before, net):
    return {p.name for p in net.trainable_params() if not np.array_equal(before[p.name], p.asnumpy())}


@pytest.mark.parametrize("executor_cls", [EagerExecutor, GraphExecutor])
def test_only_sampled_ops_move(executor_cls):
    space, net, arch, sgd, ex = _setup(executor_cls)
    x, y = _batch()
    ex.weight_step(x, y, _path([0, 1, 0]), lr=0.1)   # momentum now non-zero for these candidates
    before = _snapshot(net)
    res = ex.weight_step(x, y, _path([1, 0, 1]), lr=0.1)
    assert np.isfinite(res.loss) and 0.0 <= res.acc <= 1.0
    moved = _moved(before, net)
    sampled = [f"layers.0.candidates.1.", "layers.1.candidates.0.", "layers.2.candidates.1."]
    unsampled = ["layers.0.candidates.0.", "layers.1.candidates.1.", "layers.2.candidates.0."]
    assert any(m.startswith("stem.") for m in moved)
    for prefix in sampled:
        assert any(m.startswith(prefix) for m in moved), prefix
    for prefix in unsampled:  # used in the previous step: momentum would move them; it must not
        assert not any(m.startswith(prefix) for m in moved), prefix


@pytest.mark.parametrize("executor_cls", [EagerExecutor, GraphExecutor])
def test_arch_gradient_reaches_theta(executor_cls):
    space, net, arch, sgd, ex = _setup(executor_cls)
    x, y = _batch(1)
    g = np.random.default_rng(0).gumbel(size=(3, 3)).astype(np.float32)
    _, idx = arch.host_path(g, None, 1.0)
    res = ex.arch_step(x, y, _path(idx, g, 1.0))
    grad = res.grads["theta"]
    assert grad.shape == (3, 3) and np.abs(grad).sum() > 0
    assert np.isfinite(res.loss)


def _state(net, sgd):
    out = {p.name: p.asnumpy().copy() for p in net.get_parameters()}  # BN statistics included
    out.update({m.name: m.asnumpy().copy() for m in sgd.moments.values()})
    return out


def test_graph_and_eager_are_bit_identical():
    """The compiled candidates run the same kernels on the same path: same losses, same
    θ gradients, same weights, momenta and BN statistics after several steps, to the bit."""
    paths = [[2, 1, 0], [0, 1, 2], [1, 0, 1], [2, 1, 0]]
    runs = []
    for cls in (EagerExecutor, GraphExecutor):
        _, net, arch, sgd, ex = _setup(cls)
        losses, grads = [], []
        for k, path in enumerate(paths):
            x, y = _batch(10 + k)
            losses.append(ex.weight_step(x, y, _path(path), lr=0.05).loss)
            g = np.random.default_rng(k).gumbel(size=(3, 3)).astype(np.float32)
            res = ex.arch_step(x, y, _path(path, g, 2.0))
            grads.append(res.grads["theta"])
            losses.append(res.loss)
        runs.append((losses, grads, _state(net, sgd)))
    (l0, g0, s0), (l1, g1, s1) = runs
    assert l0 == l1
    for a, b in zip(g0, g1):
        np.testing.assert_array_equal(a, b)
    assert s0.keys() == s1.keys()
    for name in s0:
        np.testing.assert_array_equal(s0[name], s1[name], err_msg=name)


def test_graph_compiles_every_block_but_identities():
    space, net, arch, sgd, ex = _setup(GraphExecutor)
    compiled = [c for c in net.cells_and_names() if getattr(c[1], "_compiled", False)]
    blocks = sum(len(cell.candidates) for cell in net.layers) + 3  # + stem, head, classifier
    identities = sum(1 for cell in net.layers for c in cell.candidates if c.identity)
    assert identities > 0 and len(compiled) == blocks - identities
    _, eager_net, _, _, _ = _setup(EagerExecutor)
    assert not any(getattr(c, "_compiled", False) for _, c in eager_net.cells_and_names())


@pytest.mark.parametrize("compiled", [False, True])
def test_sparse_sgd_is_momentum_sgd_with_decay_on_weights(compiled):
    """p <- p - lr * m, m <- momentum * m + g + wd * p (wd on ndim > 1 only), per group."""
    w = ms.Parameter(ms.Tensor(np.full((2, 3), 2.0, np.float32)), name="w")
    b = ms.Parameter(ms.Tensor(np.full((3,), 2.0, np.float32)), name="b")
    sgd = SparseSGD([w, b], momentum=0.5, weight_decay=0.1, compiled=compiled)
    g = [ms.Tensor(np.ones((2, 3), np.float32)), ms.Tensor(np.ones((3,), np.float32))]
    for _ in range(2):
        sgd.step([[w], [b]], g, lr=0.1)
    # w: m1 = 1 + 0.2 = 1.2, w1 = 1.88; m2 = 0.6 + 1 + 0.188 = 1.788, w2 = 1.88 - 0.1788
    np.testing.assert_allclose(w.asnumpy(), np.full((2, 3), 1.7012), rtol=1e-6)
    # b (no decay): m1 = 1, b1 = 1.9; m2 = 1.5, b2 = 1.75
    np.testing.assert_allclose(b.asnumpy(), np.full((3,), 1.75), rtol=1e-6)


def test_residual_candidates_start_as_identity():
    space, net, arch, sgd, ex = _setup(EagerExecutor)
    x, _ = _batch(4)
    h = net.stem(x)
    residual = [c for c in net.layers[0].candidates if c.residual]
    assert residual
    for cand in residual:
        np.testing.assert_array_equal(cand(h).asnumpy(), h.asnumpy())
    others = [c for layer in net.layers for c in layer.candidates
              if not c.residual and c.project is not None]
    assert others and all(np.all(c.project.bn.gamma.asnumpy() == 1) for c in others)


def test_all_path_moves_every_candidate():
    space, net, arch, sgd, ex = _setup(AllPathExecutor, sampler="gumbel_softmax")
    x, y = _batch(3)
    before = _snapshot(net)
    # θ = 0 and no noise: the soft sample weights every candidate 1/3
    ex.weight_step(x, y, _path([0, 0, 0], np.zeros((3, 3), np.float32)), lr=0.1)
    moved = _moved(before, net)
    for k in range(3):
        for o in range(2):  # op 2 is skip (no weights in layers 0, 1; a projection in layer 2)
            assert any(m.startswith(f"layers.{k}.candidates.{o}.") for m in moved)


def test_cpu_pynative_launches_blocking():
    """CPU: ops run synchronously (the asynchronous launch thread spins on a core and has a
    slow depthwise-gradient path; docs/search_engine.md)."""
    from src import context
    assert context._blocking_set == [True]


def test_stage2_arch_params_follow_eqs_8_9():
    """Stage 2's ArchParams (m proposals): the host path is the forward one-hot's arg-max, the
    forward is the chosen proposal's sample, and Π and only the chosen θ_j get gradients."""
    rng = np.random.default_rng(5)
    m, L, O = 4, 3, 3
    arch = ArchParams(L, O, proposals=rng.standard_normal((m, L, O)).astype(np.float32))
    arch.pi.set_data(ms.Tensor(rng.standard_normal(m).astype(np.float32)))
    gt = rng.gumbel(size=(m, L, O)).astype(np.float32)
    gp = rng.gumbel(size=(m,)).astype(np.float32)
    tau = 0.7
    j, idx = arch.host_path(gt, gp, tau)
    tau_t = ms.Tensor(tau, ms.float32)
    a = arch(ms.Tensor(gt), ms.Tensor(gp), tau_t).asnumpy()
    np.testing.assert_allclose(a, np.eye(O)[idx], atol=1e-6)
    w = ms.Tensor(rng.standard_normal((L, O)).astype(np.float32))
    _, (g_theta, g_pi) = ms.value_and_grad(
        lambda: (arch(ms.Tensor(gt), ms.Tensor(gp), tau_t) * w).sum(), None, arch.params())()
    g_theta, g_pi = g_theta.asnumpy(), g_pi.asnumpy()
    assert np.abs(g_pi).sum() > 0
    assert np.abs(g_theta[j]).sum() > 0
    assert all(np.abs(g_theta[i]).sum() == 0 for i in range(m) if i != j)


def test_sample_path_draws_theta_then_pi_noise_and_picks_the_host_path():
    """Both steps of an iteration draw through ``sample_path``: θ's noise, then Π's, from the
    one host generator (the order a resumed run replays), and the path ``host_path`` picks."""
    from src.sampler import GumbelNoise
    from src.search.step import sample_path

    rng = np.random.default_rng(2)
    arch = ArchParams(3, 3, proposals=rng.standard_normal((4, 3, 3)).astype(np.float32))
    sample = sample_path(arch, GumbelNoise(7), 0.5)
    ref = GumbelNoise(7)
    np.testing.assert_array_equal(sample.g_theta, ref.sample((4, 3, 3)))
    np.testing.assert_array_equal(sample.g_pi, ref.sample((4,)))
    assert (sample.proposal, sample.indices) == arch.host_path(sample.g_theta, sample.g_pi, 0.5)
    assert sample.tau == 0.5
