"""The blocks as ``nn.Cell``: the single block builder of the project.

Every Cell is built from a plan (``src/space/plan.py``), the same plan the resource counter
counts, so structure is decided in one place. Nothing here has Python side effects inside
``construct``; all Cells run in graph and PyNative mode.
"""
from __future__ import annotations

import os

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter
from mindspore.common.initializer import HeNormal, Normal, initializer

from src.context import context_facts
from src.errors import HourNASError
from src.space.plan import ConvSpec, LayerPlan, SESpec


def activation(name: str) -> nn.Cell:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "swish": nn.SiLU}[name]()


def conv_init():
    return HeNormal(mode="fan_out", nonlinearity="relu")


DEPTHWISE_ENV = "HOURNAS_DEPTHWISE"
DEPTHWISE_CHOICES = ("auto", "native", "banded", "kernel")
BANDED_MIN_SIZE = 16   # stride-1 depthwise convolutions at >= 16x16: where the native one stalled


def banded_depthwise(spec: ConvSpec) -> bool:
    """Whether the convolution of ``spec``, built now, takes ``DepthwiseConv2d``'s weight
    gradient instead of MindSpore's native one. Only a stride-1 depthwise convolution at 16x16
    or more can (smaller ones, and stride 2, did not stall and keep the native one, faster
    there).

    This is ``depthwise_grad``'s fallback, where the compiled kernel does not build.
    ``auto`` (the default): on CPU, in graph mode, with one op thread (the per-core steps of
    ``analyze.py compare --jobs 2``, msrun's workers on this machine). There the native
    gradient kernel stalls for seconds a call whenever another process shares the cores:
    the default's derived net trained 10x faster with the banded one beside a busy process on
    its core, 1.06x with the other core idle. Two threads keep the native one: the banded one
    measured 1.18-1.27x there on one net but 0.82x on another (docs/search_engine.md); in
    PyNative the native one is faster
    (``benchmarks/train_step.py --depthwise both``, ``benchmarks/depthwise.py``).
    ``HOURNAS_DEPTHWISE=native|banded`` forces either."""
    choice = _depthwise_choice()
    eligible = (spec.groups > 1 and spec.groups == spec.cin == spec.cout and not spec.bias
                and spec.stride == 1 and spec.h_out >= BANDED_MIN_SIZE)
    if not eligible or choice != "auto":
        return eligible and choice == "banded"
    return (ms.get_context("device_target") == "CPU"
            and ms.get_context("mode") == ms.GRAPH_MODE
            and context_facts().get("threads") == 1)


def _depthwise_choice() -> str:
    choice = os.environ.get(DEPTHWISE_ENV, "auto").strip().lower() or "auto"
    if choice not in DEPTHWISE_CHOICES:
        raise HourNASError(f"{DEPTHWISE_ENV}={os.environ[DEPTHWISE_ENV]!r} is not one of "
                           f"{', '.join(DEPTHWISE_CHOICES)}")
    return choice


def depthwise_grad(spec: ConvSpec) -> str:
    """Which gradient the convolution of ``spec``, built now, takes: ``native`` (MindSpore's
    own, and every non-depthwise convolution), ``kernel`` (``src/kernels/depthwise.cc``: both
    gradients of every depthwise convolution, any size or stride) or ``banded``
    (``banded_depthwise``: the weight gradient as batched products).

    ``auto`` (the default): on CPU the kernel wherever it builds (g++ with OpenMP), in graph
    mode (training) and in PyNative (the search). Training: 1.1-1.8x MindSpore's forward +
    backward per convolution, no stall under contention (docs/search_engine.md). The search,
    with the kernel at one OpenMP thread in PyNative (``_DepthwiseFn``): a 105-step search
    1.12-1.24x faster than with MindSpore's on two cores and 1.6x on one, and under load
    3.4-5.9x, where MindSpore's weight gradient stalls; the full default search: see
    docs/search_engine.md. Where the kernel does not build, the banded rule below.
    ``HOURNAS_DEPTHWISE=native|banded|kernel`` forces one."""
    choice = _depthwise_choice()
    depthwise = (spec.groups > 1 and spec.groups == spec.cin == spec.cout and not spec.bias
                 and spec.k % 2 == 1 and spec.padding == spec.k // 2 and spec.stride in (1, 2))
    if not depthwise or choice == "native":
        return "native"
    if choice == "kernel" or (choice == "auto" and ms.get_context("device_target") == "CPU"):
        from src.kernels import depthwise_library
        if depthwise_library() is not None:
            return "kernel"
    return "banded" if banded_depthwise(spec) else "native"


def banded_weight_grad(x, dout, k: int, stride: int, pad: int):
    """d loss / d w of a depthwise convolution (w: C x 1 x k x k) from its input ``x`` and
    output gradient ``dout``, as k batched matrix products instead of oneDNN's kernel:

        dw[c, i, j] = Σ_{n,h,v} dout[n, c, h, v] · xp[n, c, h·s + i, v·s + j]

    For kernel row i, M_c = dout_c (Wo x N·Ho) @ rows_i(xp_c) (N·Ho x Wp) holds every
    dout-column x padded-column product; the taps j are its bands v·s + j, read as a strided
    slice of the flattened M (step Wp + s)."""
    n, c, _, _ = x.shape
    ho, wo = dout.shape[2], dout.shape[3]
    xp = ops.pad(x, (pad, pad, pad, pad)).transpose(1, 0, 2, 3)        # C N Hp Wp
    wp = xp.shape[3]
    d = dout.transpose(1, 3, 0, 2).reshape(c, wo, n * ho)              # C Wo (N Ho)
    step, span = wp + stride, (wo - 1) * (wp + stride) + 1
    taps = []
    for i in range(k):
        rows = xp[:, :, i:i + stride * (ho - 1) + 1:stride, :].reshape(c, n * ho, wp)
        m = ops.bmm(d, rows).reshape(c, wo * wp)                       # C (Wo Wp)
        for j in range(k):
            taps.append(m[:, j:j + span:step].sum(1))
    return ops.stack(taps, 1).reshape(c, 1, k, k)


class _DepthwiseFn(nn.Cell):
    """y = depthwise conv(x, w); ``grad="kernel"``: forward in training and both gradients
    from ``src/kernels/depthwise.cc`` (evaluation and exports run MindSpore's forward, so
    their outputs and files are unchanged); ``grad="banded"``: MindSpore's forward and input
    gradient, the banded weight gradient."""

    def __init__(self, channels: int, k: int, stride: int, grad: str = "banded"):
        super().__init__()
        self.k, self.stride, self.pad = k, stride, k // 2
        self.kernel = grad == "kernel"
        if self.kernel:
            from src.kernels import depthwise_library, set_threads
            lib = depthwise_library()
            if lib is None:
                raise HourNASError("the depthwise kernel is not built (no g++ with OpenMP?); "
                                   f"set {DEPTHWISE_ENV}=native")
            # PyNative (the search): one OpenMP thread. There each
            # call is a parallel region of its own beside MindSpore's op threads and the data
            # pipeline's, and a short search on both cores ran 2x slower with two threads than
            # with one (docs/search_engine.md). Graph mode (retraining): the op threads.
            pynative = ms.get_context("mode") == ms.PYNATIVE_MODE
            set_threads(1 if pynative else (context_facts().get("threads") or 0))
            out = lambda n: (n + 2 * (k // 2) - k) // stride + 1  # noqa: E731
            # one function name per stride: PyNative caches the inferred output shape by name
            # and input shapes (depthwise.cc, DwForwardS2)
            self.kernel_y = ops.Custom(f"{lib}:DwForward" + ("S2" if stride == 2 else ""),
                                       out_shape=lambda x, w: [x[0], x[1], out(x[2]), out(x[3])],
                                       out_dtype=lambda x, w: x, func_type="aot")
            self.kernel_dx = ops.Custom(f"{lib}:DwInputGrad", out_shape=lambda dy, w, x: x,
                                        out_dtype=lambda dy, w, x: x, func_type="aot")
            self.kernel_dw = ops.Custom(f"{lib}:DwWeightGrad", out_shape=lambda dy, x, w: w,
                                        out_dtype=lambda dy, x, w: w, func_type="aot")
        # kernel and pad as tuples, as nn.Conv2d passes them: MindSpore's ONNX exporter fails
        # on int attributes ("Cast value from type Int64Imm to ValueTuple failed")
        kernel, pad = (k, k), (k // 2,) * 4
        self.conv = ops.Conv2D(channels, kernel, pad_mode="pad", pad=pad, stride=stride,
                               group=channels)
        self.input_grad = ops.Conv2DBackpropInput(channels, kernel, pad_mode="pad", pad=pad,
                                                  stride=stride, group=channels)

    def construct(self, x, w):
        if self.kernel and self.training:
            return self.kernel_y(x, w)
        return self.conv(x, w)

    def bprop(self, x, w, out, dout):
        if self.kernel:
            return self.kernel_dx(dout, w, x), self.kernel_dw(dout, x, w)
        dx = self.input_grad(dout, w, x.shape)
        return dx, banded_weight_grad(x, dout, self.k, self.stride, self.pad)


class DepthwiseConv2d(nn.Cell):
    """A depthwise ``nn.Conv2d`` (groups = channels, no bias, 'pad' k // 2) with kernels of
    its own (``grad``: ``kernel``, the training forward and both gradients from
    ``src/kernels/depthwise.cc``; ``banded``, the weight gradient as batched products): the
    same parameter (``weight``, C x 1 x k x k, same init), so checkpoints and exports are
    those of ``nn.Conv2d``; evaluation outputs identical, training outputs and gradients
    equal to ~1e-7 relative."""

    def __init__(self, channels: int, k: int, stride: int, grad: str = "banded"):
        super().__init__()
        self.weight = Parameter(initializer(conv_init(), (channels, 1, k, k)), name="weight")
        self.fn = _DepthwiseFn(channels, k, stride, grad)

    def construct(self, x):
        return self.fn(x, self.weight)


class ConvBNAct(nn.Cell):
    """Conv (+ BN) (+ activation) from a :class:`ConvSpec`."""

    def __init__(self, spec: ConvSpec):
        super().__init__()
        grad = depthwise_grad(spec)
        if grad != "native":
            self.conv = DepthwiseConv2d(spec.cin, spec.k, spec.stride, grad)
        else:
            self.conv = nn.Conv2d(spec.cin, spec.cout, spec.k, stride=spec.stride,
                                  pad_mode="pad", padding=spec.padding, group=spec.groups,
                                  has_bias=spec.bias, weight_init=conv_init())
        self.bn = nn.BatchNorm2d(spec.cout, momentum=0.9) if spec.bn else None
        self.act = activation(spec.act) if spec.act else None

    def construct(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ChannelShuffle(nn.Cell):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def construct(self, x):
        b, c, h, w = x.shape
        x = ops.reshape(x, (b, self.groups, c // self.groups, h, w))
        x = ops.transpose(x, (0, 2, 1, 3, 4))
        return ops.reshape(x, (b, c, h, w))


class SqueezeExcite(nn.Cell):
    """x * sigmoid(W2 act(W1 mean(x))), the SE of MnasNet/EfficientNet."""

    def __init__(self, spec: SESpec):
        super().__init__()
        self.reduce = nn.Conv2d(spec.channels, spec.reduced, 1, has_bias=spec.bias,
                                weight_init=conv_init())
        self.expand = nn.Conv2d(spec.reduced, spec.channels, 1, has_bias=spec.bias,
                                weight_init=conv_init())
        self.act = activation(spec.act)
        self.gate = nn.Sigmoid()

    def construct(self, x):
        s = x.mean(axis=(2, 3), keep_dims=True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s


class Block(nn.Cell):
    """One layer: IRF/MBConv (expand, shuffle, depthwise, SE, project, residual), the
    depthwise-separable block, FBNet's projecting skip, or the identity."""

    def __init__(self, plan: LayerPlan):
        super().__init__()
        self.plan_name = plan.op.name
        self.identity = plan.identity
        self.residual = plan.residual
        self.expand = ConvBNAct(plan.expand) if plan.expand else None
        self.shuffle = ChannelShuffle(plan.shuffle) if plan.shuffle > 1 else None
        self.dw = ConvBNAct(plan.dw) if plan.dw else None
        self.se = SqueezeExcite(plan.se) if plan.se else None
        self.project = ConvBNAct(plan.project) if plan.project else None

    def construct(self, x):
        if self.identity:
            return x
        y = x
        if self.expand is not None:
            y = self.expand(y)
        if self.shuffle is not None:
            y = self.shuffle(y)
        if self.dw is not None:
            y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        if self.residual:
            y = y + x
        return y


class Classifier(nn.Cell):
    """Global average pool, dropout, FC with bias."""

    def __init__(self, c_in: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.fc = nn.Dense(c_in, num_classes, weight_init=Normal(0.01), bias_init="zeros")

    def construct(self, x):
        x = x.mean(axis=(2, 3))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)
