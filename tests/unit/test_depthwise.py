"""DepthwiseConv2d (src/ops.py): the depthwise convolution with gradients of its own (the
compiled kernel, src/kernels/depthwise.cc, or the banded weight gradient) is the native one in
everything but speed: same outputs, the same gradients to float rounding, the same parameter,
so checkpoints and exports do not change."""
import contextlib
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

import src.ops as ops_module
from src.errors import HourNASError
import src.kernels as kernels
from src.ops import DEPTHWISE_ENV, ConvBNAct, DepthwiseConv2d, banded_depthwise, depthwise_grad
from src.space.plan import ConvSpec


class _Loss(nn.Cell):
    def __init__(self, net, r):
        super().__init__()
        self.net, self.r = net, r

    def construct(self, x):
        return (self.net(x) * self.r).sum()


def _grads(net, x, r, jit: bool):
    fn = ms.value_and_grad(_Loss(net, r), grad_position=0, weights=net.trainable_params())
    loss, (dx, (dw,)) = (ms.jit(fn) if jit else fn)(x)
    return loss.asnumpy(), dx.asnumpy(), dw.asnumpy()


def _pair(c: int, k: int, stride: int, grad: str = "banded"):
    native = nn.Conv2d(c, c, k, stride=stride, pad_mode="pad", padding=k // 2, group=c,
                       has_bias=False)
    banded = DepthwiseConv2d(c, k, stride, grad)
    banded.weight.set_data(native.weight.data.copy())
    return native, banded


# (batch, channels, size, kernel, stride): odd and even sizes, where the last window of a
# stride-2 convolution ends inside the padding and where it does not
SHAPES = [(2, 3, 7, 3, 1), (2, 3, 7, 3, 2), (3, 4, 8, 5, 2), (2, 5, 6, 7, 1), (1, 2, 5, 5, 2),
          (2, 3, 9, 7, 2), (4, 6, 4, 5, 1)]
# planes smaller than the kernel: every tap of some outputs reads padding
TINY = [(2, 3, 1, 3, 2), (2, 3, 2, 5, 2), (2, 3, 1, 3, 1), (2, 3, 2, 7, 1), (1, 2, 3, 7, 1)]


@pytest.mark.parametrize("grad", ["banded", "kernel"])
@pytest.mark.parametrize("shape", SHAPES + TINY,
                         ids=lambda s: "n{}c{}h{}k{}s{}".format(*s))
def test_matches_native_convolution(shape, grad):
    n, c, h, k, s = shape
    rng = np.random.default_rng(sum(shape))
    x = Tensor(rng.standard_normal((n, c, h, h)).astype(np.float32))
    native, banded = _pair(c, k, s, grad)
    y = native(x)
    np.testing.assert_array_equal(banded(x).asnumpy(), y.asnumpy())
    r = Tensor(rng.standard_normal(y.shape).astype(np.float32))
    loss_n, dx_n, dw_n = _grads(native, x, r, jit=False)
    loss_b, dx_b, dw_b = _grads(banded, x, r, jit=False)
    assert loss_b == loss_n
    if grad == "banded":
        np.testing.assert_array_equal(dx_b, dx_n)        # the native input gradient
    assert np.abs(dx_b - dx_n).max() <= 1e-5 * np.abs(dx_n).max()
    assert np.abs(dw_b - dw_n).max() <= 1e-5 * np.abs(dw_n).max()
    # a wrong tap order or a band off by one is far beyond rounding
    assert np.abs(dw_n).max() > 1e-3


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
@pytest.mark.parametrize("shape", SHAPES + TINY,
                         ids=lambda s: "n{}c{}h{}k{}s{}".format(*s))
def test_kernel_training_forward_matches_native(shape, jit):
    """In training the kernel computes the forward too: MindSpore's outputs and gradients to
    float rounding (another summation order); evaluation keeps MindSpore's forward. ``pynative``
    runs in PyNative mode (the search's), ``jit`` under ms.jit in graph mode (retraining's)."""
    if jit:
        _forward_and_grads_match(shape, jit)
        return
    with _pynative():
        _forward_and_grads_match(shape, jit)


@contextlib.contextmanager
def _pynative():
    """PyNative mode for the block (the suite's default is graph mode: tests/conftest.py)."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=mode)


def _forward_and_grads_match(shape, jit):
    n, c, h, k, s = shape
    rng = np.random.default_rng(sum(shape) + 7)
    x = Tensor(rng.standard_normal((n, c, h, h)).astype(np.float32))
    native, cell = _pair(c, k, s, "kernel")
    cell.set_train(True)
    y_n, y_k = native(x).asnumpy(), cell(x).asnumpy()
    assert y_k.shape == y_n.shape
    assert np.abs(y_k - y_n).max() <= 1e-5 * np.abs(y_n).max()
    r = Tensor(rng.standard_normal(y_n.shape).astype(np.float32))
    loss_n, dx_n, dw_n = _grads(native, x, r, jit=jit)
    loss_k, dx_k, dw_k = _grads(cell, x, r, jit=jit)
    assert abs(loss_k - loss_n) <= 1e-5 * np.abs(y_n * r.asnumpy()).sum()
    assert np.abs(dx_k - dx_n).max() <= 1e-5 * np.abs(dx_n).max()
    assert np.abs(dw_k - dw_n).max() <= 1e-5 * np.abs(dw_n).max()
    cell.set_train(False)
    np.testing.assert_array_equal(cell(x).asnumpy(), y_n)


@pytest.mark.parametrize("grad", ["banded", "kernel"])
def test_matches_native_convolution_compiled(grad):
    """Under ms.jit (the trainer's graph mode) the custom backward is the one compiled."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 4, 9, 9)).astype(np.float32))
    for s in (1, 2):
        native, banded = _pair(4, 5, s, grad)
        r = Tensor(rng.standard_normal(native(x).shape).astype(np.float32))
        _, dx_n, dw_n = _grads(native, x, r, jit=True)
        _, dx_b, dw_b = _grads(banded, x, r, jit=True)
        assert np.abs(dx_b - dx_n).max() <= 1e-5 * np.abs(dx_n).max()
        assert np.abs(dw_b - dw_n).max() <= 1e-5 * np.abs(dw_n).max()


def test_kernel_results_do_not_depend_on_threads():
    """Each output and gradient element is summed in a fixed order: one thread or two, the
    same bits."""
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((4, 6, 10, 10)).astype(np.float32))
    _, cell = _pair(6, 3, 1, "kernel")
    cell.set_train(True)  # the kernel's forward
    r = Tensor(rng.standard_normal(cell(x).shape).astype(np.float32))
    try:
        out = []
        for n in (1, 2):
            kernels.set_threads(n)
            out.append(_grads(cell, x, r, jit=False))
    finally:
        kernels.set_threads(0)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_kernel_choice_and_fallback(monkeypatch, tmp_path, capsys):
    """auto on CPU takes the kernel where it builds (g++ is part of this project's set-up),
    in PyNative (the search) and in graph mode (training); where the kernel cannot be built
    the choice falls back to the banded rule, with one note."""
    spec = ConvSpec(cin=6, cout=6, k=3, stride=2, h_out=7, groups=6)
    monkeypatch.delenv(DEPTHWISE_ENV, raising=False)
    assert kernels.depthwise_library() is not None
    mode = ms.get_context("mode")
    try:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        assert depthwise_grad(spec) == "kernel"
        ms.set_context(mode=ms.GRAPH_MODE)
        assert depthwise_grad(spec) == "kernel"
        assert isinstance(ConvBNAct(spec).conv, DepthwiseConv2d)
    finally:
        ms.set_context(mode=mode)
    assert depthwise_grad(ConvSpec(cin=4, cout=8, k=3, stride=2, h_out=4)) == "native"
    monkeypatch.setenv(DEPTHWISE_ENV, "native")
    assert depthwise_grad(spec) == "native"
    monkeypatch.setattr(kernels, "_built", {})
    monkeypatch.setattr(kernels, "_said", set())
    monkeypatch.setenv(kernels.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(kernels.CXX_ENV, str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv(DEPTHWISE_ENV, "kernel")
    assert kernels.depthwise_library() is None
    assert depthwise_grad(spec) == "native"  # stride 2: not banded either
    assert "could not be built" in capsys.readouterr().err
    with pytest.raises(HourNASError, match="not built"):
        DepthwiseConv2d(6, 3, 1, "kernel")


def test_kernel_threads_follow_the_mode():
    """The kernel runs one OpenMP thread when built in PyNative (the search: two threads there
    made a search slower than one) and the op threads in graph mode (retraining)."""
    from src.context import context_facts
    assert kernels.depthwise_library() is not None
    mode = ms.get_context("mode")
    try:
        with _pynative():
            DepthwiseConv2d(6, 3, 1, "kernel")
        assert kernels.threads() == 1
        kernels.set_threads(context_facts().get("threads") or 0)
        want = kernels.threads()  # the op threads, or OpenMP's default before setup_context
        kernels.set_threads(1)    # as the PyNative build left it
        ms.set_context(mode=ms.GRAPH_MODE)
        DepthwiseConv2d(6, 3, 1, "kernel")
        assert kernels.threads() == want
    finally:
        ms.set_context(mode=mode)
        kernels.set_threads(0)


def test_same_parameter_as_native(monkeypatch):
    """A depthwise ConvBNAct holds the same parameters (names, shapes, initial values for the
    same seed) with either gradient: checkpoints load across the two."""
    spec = ConvSpec(cin=6, cout=6, k=3, stride=1, h_out=16, groups=6, act="relu")
    built = {}
    for kind in ("native", "banded", "kernel"):
        monkeypatch.setenv(DEPTHWISE_ENV, kind)
        ms.set_seed(3)
        cell = ConvBNAct(spec)
        built[kind] = {p.name: p.asnumpy() for p in cell.get_parameters()}
        assert isinstance(cell.conv, DepthwiseConv2d) == (kind != "native")
    for kind in ("banded", "kernel"):
        assert list(built["native"]) == list(built[kind])
        for name, value in built["native"].items():
            np.testing.assert_array_equal(built[kind][name], value)


def test_only_depthwise_convolutions_switch(monkeypatch):
    monkeypatch.setenv(DEPTHWISE_ENV, "banded")
    grouped = ConvBNAct(ConvSpec(cin=8, cout=8, k=1, stride=1, h_out=4, groups=2))
    dense = ConvBNAct(ConvSpec(cin=4, cout=8, k=3, stride=2, h_out=4))
    assert not isinstance(grouped.conv, DepthwiseConv2d)
    assert not isinstance(dense.conv, DepthwiseConv2d)


def test_small_and_strided_stay_native(monkeypatch):
    """The native gradient did not stall at stride 2 or below 16x16, and is faster there
    (benchmarks/depthwise.py)."""
    monkeypatch.setenv(DEPTHWISE_ENV, "banded")
    for stride, h_out, banded in ((2, 16, False), (1, 14, False), (1, 16, True)):
        cell = ConvBNAct(ConvSpec(cin=6, cout=6, k=3, stride=stride, h_out=h_out, groups=6))
        assert isinstance(cell.conv, DepthwiseConv2d) is banded


def test_choice(monkeypatch):
    spec = ConvSpec(cin=6, cout=6, k=3, stride=1, h_out=16, groups=6)
    monkeypatch.setenv(DEPTHWISE_ENV, "native")
    assert banded_depthwise(spec) is False
    monkeypatch.setenv(DEPTHWISE_ENV, "banded")
    assert banded_depthwise(spec) is True
    monkeypatch.delenv(DEPTHWISE_ENV)
    mode = ms.get_context("mode")
    try:
        for threads, graph, pynative in ((1, True, False), (2, False, False)):
            monkeypatch.setattr(ops_module, "context_facts", lambda: {"threads": threads})
            ms.set_context(mode=ms.GRAPH_MODE)
            assert banded_depthwise(spec) is graph     # CPU graph mode at one thread: banded
            ms.set_context(mode=ms.PYNATIVE_MODE)
            assert banded_depthwise(spec) is pynative  # PyNative: the native one is faster
    finally:
        ms.set_context(mode=mode)
    monkeypatch.setenv(DEPTHWISE_ENV, "fast")
    with pytest.raises(HourNASError, match="HOURNAS_DEPTHWISE='fast' is not one of auto"):
        banded_depthwise(spec)


@pytest.mark.parametrize("grad", ["banded", "kernel"])
def test_exports_like_native(tmp_path, grad):
    """MINDIR export and load of the Cell give the native convolution's outputs exactly, after
    the Cell ran in training mode (the kernel's forward, for ``kernel``)."""
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 4, 16, 16)).astype(np.float32))
    native, banded = _pair(4, 3, 1, grad)
    want = native(x).asnumpy()
    banded.set_train(True)   # trained, then exported in evaluation mode (as export.py does)
    np.testing.assert_allclose(banded(x).asnumpy(), want, rtol=1e-5, atol=1e-5)
    banded.set_train(False)
    path = str(tmp_path / "dw")
    ms.export(banded, x, file_name=path, file_format="MINDIR")
    loaded = nn.GraphCell(ms.load(path + ".mindir"))
    np.testing.assert_array_equal(loaded(x).asnumpy(), want)
    np.testing.assert_array_equal(banded(x).asnumpy(), want)


@pytest.mark.parametrize("grad", ["banded", "kernel"])
def test_exports_to_onnx(tmp_path, grad):
    """ONNX export of the Cell goes through (int kernel/pad attributes made MindSpore's
    exporter fail with "Cast value from type Int64Imm to ValueTuple failed", so ``export.py
    --file_format both`` failed at one thread, where the Cell is built)."""
    import mindspore.onnx

    x = Tensor(np.zeros((1, 4, 16, 16), np.float32))
    _, banded = _pair(4, 5, 1, grad)
    path = str(tmp_path / "dw.onnx")
    mindspore.onnx.export(banded, x, file_name=path)
    assert os.path.getsize(path) > 4 * 5 * 5 * 4   # holds at least the 4 x 1 x 5 x 5 weight


def test_kernel_forward_in_pynative_after_the_other_stride():
    """PyNative (the search's mode) caches a Custom op's inferred output shape by function name
    and input shapes: a stride-2 forward after a stride-1 one on the same shapes once got the
    stride-1 output shape (searches failed on it in stage 2). Each gives
    MindSpore's output, in either order."""
    with _pynative():
        x = Tensor(np.random.default_rng(5).standard_normal((2, 4, 16, 16)).astype(np.float32))
        for order in ((1, 2), (2, 1)):
            for s in order:
                native, cell = _pair(4, 3, s, "kernel")
                cell.set_train(True)
                y_n, y_k = native(x).asnumpy(), cell(x).asnumpy()
                assert y_k.shape == y_n.shape == (2, 4, 16 // s, 16 // s)
                assert np.abs(y_k - y_n).max() <= 1e-5 * np.abs(y_n).max()
