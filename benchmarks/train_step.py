"""Images/second of the trainer's step (forward, backward, SGD) on this machine: compiled, as
the trainer runs it by default, or op by op (``--mode pynative``).

    python benchmarks/train_step.py [--arch config/arch/fbnet_b.yaml] [--batch_size 64]
                                    [--steps 20] [--round_steps 2] [--amp_level O0]
                                    [--depthwise auto|native|banded|kernel|both|A,B]
                                    [--threads N] [--mode graph|pynative|graph,pynative]
                                    [--device_target CPU] [--json]

The network is the architecture re-sized to CIFAR (input 32x32, 10 classes; the layers as in
the file), trained on a fixed random batch with the trainer's own step (src.train.step.TrainStep:
one graph, compiled once; ``--amp_level`` O1/O2/O3 as ``train.amp_level``, GPU/Ascend only).
When PyTorch is importable, the same network is built from the same layer plans in PyTorch
(eager; benchmarks/torch_twin.torch_net, its parameter count checked against ours) and timed
the same way, and the ratio is printed; otherwise that half is skipped with a message.
``--depthwise`` chooses the depthwise convolutions' gradients (``src.ops.depthwise_grad``:
auto, the project's choice; native, MindSpore's; banded, ``DepthwiseConv2d``'s batched
products; kernel, ``src/kernels/depthwise.cc``); a comma-separated list (``both`` is
``native,banded``) times a MindSpore worker of each, in the same alternating rounds, and
prints each one's throughput over the first one's. ``--mode`` runs the step compiled
(``graph``, the trainer's default) or op by op (``pynative``, ``train.mode: pynative``); a list
times a worker of each too (with several depthwise kinds, one of each pair), labelled by what
differs. ``--threads`` (default: this machine's CPU count) sets both frameworks' threads: 1 is
what each step of ``analyze.py compare --jobs 2`` gets. On GPU
the PyTorch half runs on CUDA (autocast float16 when --amp_level is not O0) when PyTorch has
CUDA, else it is skipped; on Ascend it is skipped.

How it measures (benchmarks/harness.py): MindSpore and PyTorch each run in their own worker
process with the same thread count (this machine's CPU count: MindSpore through
src.context.setup_context(threads=...), PyTorch through torch.set_num_threads; PyTorch with
OMP_WAIT_POLICY=PASSIVE). Each worker first builds its network and runs the first step (for
MindSpore: the graph compile) and two more untimed steps; these are reported apart
(``first_step_s``, ``warmup_s``). Then the parent sends both workers the same requests in turn,
each request ``--round_steps`` timed steps, until ``--steps`` timed steps are done in each
framework, so the two take turns on the cores and other work on the machine hits both alike.
``step_s`` is the median over all timed steps, ``images_per_s`` = batch / step_s, ``ratio`` =
MindSpore images/s / PyTorch images/s. ``peak_rss_gb`` is each worker's peak resident memory
(its process's high-water mark: set-up, compile and the timed steps), ``rss_ratio`` =
MindSpore's / PyTorch's. The 1-minute load average after each round is printed beside the
figures (``load_avg_1min``).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks.harness import Worker, interleave, median, peak_rss_gb, serve  # noqa: E402
from src.cli import emit_json, log, run_main  # noqa: E402
from src.errors import HourNASError  # noqa: E402
from src.ops import DEPTHWISE_CHOICES, DEPTHWISE_ENV  # noqa: E402

AMP_LEVELS = ("O0", "O1", "O2", "O3")


def _depthwise_kinds(text: str) -> tuple[str, ...]:
    kinds = ("native", "banded") if text == "both" else tuple(
        k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in DEPTHWISE_CHOICES]
    if not kinds or bad or len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError(
            f"expected one or more distinct of {', '.join(DEPTHWISE_CHOICES)} (or both), "
            f"got {text!r}")
    return kinds


def _modes(text: str) -> tuple[str, ...]:
    from src.context import MODES
    modes = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(
            f"expected one or more distinct of {', '.join(MODES)}, got {text!r}")
    return modes


def variants(kinds: tuple[str, ...], modes: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """label -> (depthwise kind, mode) of each MindSpore worker: labelled by what differs."""
    out = {}
    for mode in modes:
        for kind in kinds:
            label = (kind if len(modes) == 1 else mode if len(kinds) == 1
                     else f"{kind}_{mode}")
            out[label] = (kind, mode)
    return out


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="config/arch/fbnet_b.yaml", metavar="FILE")
    p.add_argument("--batch_size", type=int, default=64, metavar="N")
    p.add_argument("--steps", type=int, default=20, metavar="N",
                   help="timed steps per framework (default 20)")
    p.add_argument("--round_steps", type=int, default=2, metavar="N",
                   help="timed steps per request; the frameworks alternate between requests "
                        "(default 2)")
    p.add_argument("--image_size", type=int, default=32, metavar="S")
    p.add_argument("--num_classes", type=int, default=10, metavar="K")
    p.add_argument("--amp_level", default="O0", type=str.upper, choices=AMP_LEVELS,
                   help="MindSpore mixed precision as train.amp_level (GPU/Ascend; default O0)")
    p.add_argument("--device_target", default="CPU")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch twin")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--depthwise", default="auto", type=_depthwise_kinds, metavar="KIND[,KIND]",
                   help=f"depthwise gradients: {', '.join(DEPTHWISE_CHOICES)}, or a list "
                        f"to compare (default auto; both: native,banded)")
    p.add_argument("--mode", default=("graph",), type=_modes, metavar="MODE[,MODE]",
                   help="the step compiled (graph, default) or op by op (pynative, as "
                        "train.mode), or both to compare")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads of each framework (default: this machine's CPU count)")
    p.add_argument("--worker", choices=("mindspore", "pytorch"), default=None,
                   help=argparse.SUPPRESS)
    return p


def resized(path: str, size: int, classes: int):
    from src.space.space import arch_from_dict, load_arch

    data = load_arch(path).to_dict()
    data.update(input_size=size, num_classes=classes, name=f"{data['name']}_{size}px")
    return arch_from_dict(data)


def fixed_batch(arch, args):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, arch.in_channels, args.image_size,
                             args.image_size)).astype(np.float32)
    y = rng.integers(0, args.num_classes, size=args.batch_size).astype(np.int32)
    return x, y


def _timed(step, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _answer(step, req: dict) -> dict:
    """One request's timed steps, and the worker's peak resident memory so far."""
    return {"times": _timed(step, int(req["steps"])), "peak_rss_gb": peak_rss_gb()}


def _warm(step) -> tuple[float, float]:
    """(first step, the next two): compile / first-call costs, reported apart."""
    first = _timed(step, 1)[0]
    return first, sum(_timed(step, 2))


# ----------------------------------------------------------------------------- workers


def mindspore_worker(args) -> int:
    state = {}

    def setup():
        from src.context import setup_context
        facts = setup_context(args.device_target, args.mode[0], threads=args.threads)
        import mindspore as ms

        from src.train.config import TrainParams
        from src.train.factory import create_loss, create_model, create_optimizer
        from src.train.step import TrainStep

        arch = resized(args.arch, args.image_size, args.num_classes)
        x, y = fixed_batch(arch, args)
        amp = args.amp_level
        if facts["device_target"] == "CPU" and amp != "O0":
            print(f"amp_level {amp} -> O0: mixed precision is not supported on CPU",
                  file=sys.stderr)
            amp = "O0"
        ms.set_seed(0)
        p = TrainParams()
        net = create_model(arch)
        from src.ops import DepthwiseConv2d
        own = sum(isinstance(c, DepthwiseConv2d) for _, c in net.cells_and_names())
        if amp != "O0":
            net = ms.amp.auto_mixed_precision(net, amp)
        scaled = amp != "O0"
        cell = TrainStep(net, create_loss(p), create_optimizer(net, p),
                         loss_scale=p.loss_scale if scaled else 1.0,
                         dynamic=scaled and p.dynamic_loss_scale)
        cell.set_train()
        xt, yt, lr = ms.Tensor(x), ms.Tensor(y), ms.Tensor(0.01, ms.float32)
        state["step"] = lambda: cell(xt, yt, lr)[0].asnumpy()
        first, warm = _warm(state["step"])
        return {"framework": "mindspore", "version": ms.__version__,
                "device_target": facts["device_target"], "threads": facts["threads"],
                "amp_level": amp, "mode": args.mode[0], "first_step_s": first, "warmup_s": warm,
                "graphs": len(cell.compile_cache), "depthwise_cells": own}

    return serve(setup, lambda req: _answer(state["step"], req))


def torch_worker(args) -> int:
    state = {}

    def setup():
        import torch

        from benchmarks.torch_twin import torch_net

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        device = "cuda" if args.device_target == "GPU" else "cpu"
        arch = resized(args.arch, args.image_size, args.num_classes)
        x, y = fixed_batch(arch, args)
        net = torch_net(arch).to(device).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
        loss_fn = torch.nn.CrossEntropyLoss()
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y.astype(np.int64)).to(device)
        amp = device == "cuda" and args.amp_level != "O0"
        scaler = torch.amp.GradScaler("cuda") if amp else None

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.float16, enabled=amp):
                loss = loss_fn(net(xt), yt)
            if scaler:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            return float(loss.detach())  # waits for the device

        state["step"] = step
        first, warm = _warm(step)
        return {"framework": "pytorch", "version": torch.__version__, "device": device,
                "threads": torch.get_num_threads(), "autocast_fp16": amp,
                "first_step_s": first, "warmup_s": warm,
                "params": int(sum(p.numel() for p in net.parameters()))}

    return serve(setup, lambda req: _answer(state["step"], req))


# ----------------------------------------------------------------------------- parent


def torch_available(args) -> str | None:
    """None when the PyTorch half can run, else why it is skipped."""
    if args.no_torch:
        return "skipped (--no_torch)"
    try:
        import torch
    except ImportError:
        return "skipped (not installed; pip install torch to compare)"
    if args.device_target.upper() == "GPU" and not torch.cuda.is_available():
        return "skipped (this PyTorch has no CUDA device; it would run on the CPU)"
    if args.device_target.upper() not in ("CPU", "GPU"):
        return f"skipped (no PyTorch twin on {args.device_target})"
    return None


def figures(ready: dict, answers: list[dict], batch: int) -> dict:
    """A worker's figures from its answers: the median step, and its peak resident memory
    (set-up, compile and every timed step included)."""
    times = [t for a in answers for t in a["times"]]
    step_s = median(times)
    return {"images_per_s": batch / step_s, "step_s": step_s, "timed_steps": len(times),
            "peak_rss_gb": round(max(a["peak_rss_gb"] for a in answers), 3),
            **{k: v for k, v in ready.items() if k != "framework"}}


def _fmt_load(loads: list[float]) -> str:
    return f"{min(loads):.2f}" if min(loads) == max(loads) else f"{min(loads):.2f}-{max(loads):.2f}"


def main(args) -> int:
    if args.worker == "mindspore":
        return mindspore_worker(args)
    if args.worker == "pytorch":
        return torch_worker(args)
    if args.batch_size < 1 or args.steps < 1 or args.round_steps < 1:
        raise HourNASError("--batch_size, --steps and --round_steps must be >= 1")
    args.device_target = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}.get(
        args.device_target.lower(), args.device_target)
    arch = resized(args.arch, args.image_size, args.num_classes)
    from src.context import _cpu_count
    from src.resource import count
    threads = args.threads or _cpu_count()
    if threads < 1:
        raise HourNASError(f"--threads must be >= 1, got {threads}")
    c = count(arch)
    rounds = math.ceil(args.steps / args.round_steps)
    log(f"{arch.name}: {c['params'] / 1e6:.2f}M params, {c['flops'] / 1e6:.1f}M FLOPs/image, "
        f"batch {args.batch_size}, {args.steps} timed steps per framework in {rounds} "
        f"alternating rounds (median), {threads} threads; load average (1 min) "
        f"{os.getloadavg()[0]:.2f}")
    why_no_torch = torch_available(args)
    common = [os.path.abspath(__file__), "--arch", os.path.abspath(args.arch),
              "--batch_size", str(args.batch_size), "--image_size", str(args.image_size),
              "--num_classes", str(args.num_classes), "--amp_level", args.amp_level,
              "--device_target", args.device_target, "--threads", str(threads)]
    workers = {}
    runs = variants(args.depthwise, args.mode)
    labels = list(runs)
    names = {v: "mindspore" if len(runs) == 1 else f"mindspore_{v}" for v in labels}
    try:
        for label, name in names.items():
            kind, mode = runs[label]
            log(f"MindSpore (depthwise gradient: {kind}; {mode}): building the step and "
                f"running its first step ...")
            workers[name] = Worker(common + ["--worker", "mindspore", "--mode", mode], threads,
                                   env={DEPTHWISE_ENV: kind})
            ms_ready = workers[name].ready
            log(f"MindSpore {ms_ready['version']} ready: first step"
                f"{' incl. compile' if mode == 'graph' else ''} "
                f"{ms_ready['first_step_s']:.1f} s, next two {ms_ready['warmup_s']:.2f} s; "
                f"depthwise convolutions with gradients of their own: "
                f"{ms_ready['depthwise_cells']}")
        if why_no_torch is None:
            workers["pytorch"] = Worker(common + ["--worker", "pytorch"], threads)
            t_ready = workers["pytorch"].ready
            if t_ready["params"] != c["params"]:
                raise HourNASError(f"the PyTorch twin has {t_ready['params']} parameters, the "
                                   f"counter {c['params']}: the two builds differ")
            log(f"PyTorch {t_ready['version']} ready: first step {t_ready['first_step_s']:.2f} s, "
                f"next two {t_ready['warmup_s']:.2f} s")
        else:
            log(f"PyTorch: {why_no_torch}")
        sizes = [min(args.round_steps, args.steps - r * args.round_steps) for r in range(rounds)]
        res = interleave(workers, [{"steps": n} for n in sizes],
                         log=log if args.debug else None)
    except RuntimeError as e:  # a worker ended: its own error line is on stderr above
        code = re.search(r"\(exit (-?\d+)\)", str(e))
        raise HourNASError(f"a benchmark worker ended (exit {code.group(1) if code else '?'}); "
                           f"its error is above") from e
    finally:
        for w in workers.values():
            w.close()
    loads = res["load_avg_1min"]
    answers = res["answers"]
    ms_all = {}
    for label, name in names.items():
        kind, mode = runs[label]
        ms_all[label] = r = figures(workers[name].ready, answers[name], args.batch_size)
        log(f"MindSpore {mode} step (depthwise {kind}): {r['images_per_s']:.1f} images/s "
            f"({r['step_s'] * 1e3:.0f} ms/step; first step"
            f"{' incl. compile' if mode == 'graph' else ''} "
            f"{r['first_step_s']:.1f} s; compiled graphs {r['graphs']}; peak resident "
            f"{r['peak_rss_gb']:.2f} GiB; "
            f"{r['threads']} threads; amp {r['amp_level']}); load average {_fmt_load(loads)}")
    ms_r = ms_all[labels[-1]]
    vs_first = {}
    for label in labels[1:]:
        vs_first[label] = ms_all[label]["images_per_s"] / ms_all[labels[0]]["images_per_s"]
        log(f"{label} / {labels[0]} throughput: {vs_first[label]:.2f}x "
            f"(load average {_fmt_load(loads)})")
    last = f" ({labels[-1]})" if len(labels) > 1 else ""
    torch_r = None
    if "pytorch" in answers:
        torch_r = figures(workers["pytorch"].ready, answers["pytorch"], args.batch_size)
        log(f"PyTorch {torch_r['version']} eager step ({torch_r['device']}): "
            f"{torch_r['images_per_s']:.1f} images/s ({torch_r['step_s'] * 1e3:.0f} ms/step; "
            f"first step {torch_r['first_step_s']:.2f} s; peak resident "
            f"{torch_r['peak_rss_gb']:.2f} GiB; {torch_r['threads']} threads); "
            f"load average {_fmt_load(loads)}")
    ratio = ms_r["images_per_s"] / torch_r["images_per_s"] if torch_r else None
    rss_ratio = (ms_r["peak_rss_gb"] / torch_r["peak_rss_gb"]
                 if torch_r and torch_r["peak_rss_gb"] > 0 else None)
    if ratio is not None:
        log(f"MindSpore{last} / PyTorch throughput: "
            f"{ratio:.2f}x (load average {_fmt_load(loads)})")
    if rss_ratio is not None:
        log(f"MindSpore{last} / PyTorch peak resident "
            f"memory: {rss_ratio:.2f}x ({ms_r['peak_rss_gb']:.2f} against "
            f"{torch_r['peak_rss_gb']:.2f} GiB, each worker process's own)")
    if args.json:
        emit_json({"arch": arch.name, "batch_size": args.batch_size, "params": c["params"],
                   "flops": c["flops"], "device_target": args.device_target,
                   "threads": threads, "steps": args.steps, "rounds": rounds,
                   "mindspore": ms_r, "pytorch": torch_r, "ratio": ratio,
                   "rss_ratio": rss_ratio,
                   "depthwise": ms_all,  # every MindSpore worker, by label
                   "vs_first": vs_first,
                   "pytorch_skipped": why_no_torch, "load_avg_1min": loads})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
