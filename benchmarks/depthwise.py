"""Forward + backward of one depthwise convolution: MindSpore's native gradients against
``src.ops.DepthwiseConv2d``'s (the banded weight gradient, and the compiled kernel of
``src/kernels/depthwise.cc`` where it builds), per shape, in one process.

    python benchmarks/depthwise.py [--mode graph|pynative] [--threads N] [--batch_size 64]
                                   [--sizes 4,8,14,16,28,32] [--channels 96] [--kernels 3,5]
                                   [--strides 1,2] [--repeats 5] [--json]

Each shape builds the Cells with the same weight, checks that their gradients agree, then
times ``value_and_grad`` (input and weight gradients; compiled with ``ms.jit`` in graph mode)
alternately, ``--repeats`` times each after one untimed call, and prints the medians, their
ratio and the 1-minute load average. This is what ``src.ops.banded_depthwise``'s rule rests on:
docs/search_engine.md has the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from src.cli import emit_json, log, run_main  # noqa: E402
from src.errors import HourNASError  # noqa: E402


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="MindSpore's CPU threads (default: this machine's CPU count)")
    p.add_argument("--batch_size", type=int, default=64, metavar="N")
    p.add_argument("--sizes", type=_ints, default=[4, 8, 14, 16, 28, 32], metavar="LIST",
                   help="input height = width (default 4,8,14,16,28,32)")
    p.add_argument("--channels", type=_ints, default=[96], metavar="LIST")
    p.add_argument("--kernels", type=_ints, default=[3, 5], metavar="LIST")
    p.add_argument("--strides", type=_ints, default=[1, 2], metavar="LIST")
    p.add_argument("--repeats", type=int, default=5, metavar="N")
    p.add_argument("--device_target", default="CPU")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--debug", action="store_true")
    return p


def _timer(net, x, r, jit: bool):
    import mindspore as ms
    from mindspore import nn

    class Loss(nn.Cell):
        def __init__(self):
            super().__init__()
            self.net = net

        def construct(self, inp):
            return (self.net(inp) * r).sum()

    fn = ms.value_and_grad(Loss(), grad_position=0, weights=net.trainable_params())
    fn = ms.jit(fn) if jit else fn

    def call():
        loss, (dx, (dw,)) = fn(x)
        return dx.asnumpy(), dw.asnumpy()

    return call


def measure(n: int, c: int, h: int, k: int, s: int, repeats: int, jit: bool) -> dict:
    from mindspore import Tensor, nn

    from src.ops import DepthwiseConv2d

    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((n, c, h, h)).astype(np.float32))
    native = nn.Conv2d(c, c, k, stride=s, pad_mode="pad", padding=k // 2, group=c,
                       has_bias=False)
    from src.kernels import depthwise_library

    cells = {"banded": DepthwiseConv2d(c, k, s, "banded")}
    if depthwise_library() is not None:
        cells["kernel"] = DepthwiseConv2d(c, k, s, "kernel")
    r = Tensor(rng.standard_normal(native(x).shape).astype(np.float32))
    calls = {"native": _timer(native, x, r, jit)}
    for name, cell in cells.items():
        cell.weight.set_data(native.weight.data.copy())
        cell.set_train(True)  # as in training: the kernel's cell runs its forward too
        calls[name] = _timer(cell, x, r, jit)
    first = {name: call() for name, call in calls.items()}  # compile, and the check
    err = 0.0
    for name in cells:
        for i, what in enumerate(("input", "weight")):
            e = float(np.abs(first[name][i] - first["native"][i]).max()
                      / max(np.abs(first["native"][i]).max(), 1e-12))
            if e > 1e-4:  # (the kernel's forward differs from oneDNN's in rounding only)
                raise HourNASError(f"the {name} gradient disagrees with the native one at "
                                   f"{(n, c, h, k, s)} ({what} gradient off by {e:.1e})")
            err = max(err, e)
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(t)) for name, t in times.items()}
    row = {"batch": n, "channels": c, "size": h, "k": k, "stride": s,
           "native_ms": 1e3 * med["native"], "banded_ms": 1e3 * med["banded"],
           "speedup": med["native"] / med["banded"], "grad_rel_err": err,
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    if "kernel" in med:
        row.update(kernel_ms=1e3 * med["kernel"], kernel_speedup=med["native"] / med["kernel"])
    return row


def main(args) -> int:
    if args.batch_size < 1 or args.repeats < 1:
        raise HourNASError("--batch_size and --repeats must be >= 1")
    from src.context import setup_context
    facts = setup_context(args.device_target, args.mode, threads=args.threads)
    log(f"depthwise convolution, forward + backward ({args.mode} mode, "
        f"{facts['threads']} threads, batch {args.batch_size}): MindSpore's native gradients "
        f"against the banded one and the kernel (each speed-up over native), median of {args.repeats} alternating calls")
    rows = []
    for c in args.channels:
        for h in args.sizes:
            for k in args.kernels:
                for s in args.strides:
                    row = measure(args.batch_size, c, h, k, s, args.repeats,
                                  args.mode == "graph")
                    rows.append(row)
                    kernel = (f"  kernel {row['kernel_ms']:8.1f} ms  "
                              f"{row['kernel_speedup']:6.2f}x" if "kernel_ms" in row else "")
                    log(f"  {c:4d} ch {h:3d}x{h:<3d} k{k} s{s}: native {row['native_ms']:8.1f} ms "
                        f" banded {row['banded_ms']:8.1f} ms  {row['speedup']:6.2f}x{kernel}  "
                        f"(load {row['load_avg_1min']:.2f})")
    if args.json:
        emit_json({"mode": args.mode, "threads": facts["threads"], "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
