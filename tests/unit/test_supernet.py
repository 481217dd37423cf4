"""Supernet and search-step executors on a tiny space (real MindSpore, CPU)."""
import numpy as np
import pytest
import mindspore as ms

from src.context import setup_context
from src.search.step import ArchParams, EagerExecutor, GraphExecutor, AllPathExecutor, SparseSGD
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
    ex.weight_step(x, y, [0, 1, 0], lr=0.1)   # momentum now non-zero for these candidates
    before = _snapshot(net)
    loss, acc = ex.weight_step(x, y, [1, 0, 1], lr=0.1)
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0
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
    res = ex.arch_step(x, y, g, None, 1.0, idx)
    grad = res["grads"]["theta"]
    assert grad.shape == (3, 3) and np.abs(grad).sum() > 0
    assert np.isfinite(res["loss"])


def test_graph_and_eager_agree():
    x, y = _batch(2)
    losses = []
    for cls in (EagerExecutor, GraphExecutor):
        _, net, _, _, ex = _setup(cls)
        losses.append([ex.weight_step(x, y, [2, 1, 0], lr=0.05)[0] for _ in range(2)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)


def test_all_path_moves_every_candidate():
    space, net, arch, sgd, ex = _setup(AllPathExecutor, sampler="gumbel_softmax")
    x, y = _batch(3)
    before = _snapshot(net)
    a = np.full((3, 3), 1 / 3, np.float32)
    ex.weight_step(x, y, a, lr=0.1)
    moved = _moved(before, net)
    for k in range(3):
        for o in range(2):  # op 2 is skip (no weights in layers 0, 1; a projection in layer 2)
            assert any(m.startswith(f"layers.{k}.candidates.{o}.") for m in moved)
