"""Images/second of the jitted training step (forward, backward, SGD) on this machine.

    python benchmarks/train_step.py [--arch config/arch/fbnet_b.yaml] [--batch_size 64]
                                    [--steps 20] [--json]

The network is the architecture re-sized to CIFAR (input 32x32, 10 classes; the layers as in
the file), trained on a fixed random batch with the trainer's own step (src.trainer.TrainStep:
one graph, compiled once). When PyTorch is importable, the same network is built from the same
layer plans in PyTorch (eager) and timed the same way, and the ratio is printed; otherwise that
half is skipped with a message.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from src.cli import emit_json, log, run_main  # noqa: E402
from src.errors import HourNASError  # noqa: E402


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="config/arch/fbnet_b.yaml", metavar="FILE")
    p.add_argument("--batch_size", type=int, default=64, metavar="N")
    p.add_argument("--steps", type=int, default=20, metavar="N", help="timed steps (default 20)")
    p.add_argument("--image_size", type=int, default=32, metavar="S")
    p.add_argument("--num_classes", type=int, default=10, metavar="K")
    p.add_argument("--device_target", default="CPU")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--debug", action="store_true")
    return p


def resized(path: str, size: int, classes: int):
    from src.space.space import arch_from_dict, load_arch

    data = load_arch(path).to_dict()
    data.update(input_size=size, num_classes=classes, name=f"{data['name']}_{size}px")
    return arch_from_dict(data)


def bench_mindspore(arch, x: np.ndarray, y: np.ndarray, steps: int, device: str) -> dict:
    import mindspore as ms

    from src.context import setup_context
    from src.trainer import TrainParams, TrainStep, create_loss, create_model, create_optimizer

    facts = setup_context(device, "graph")
    ms.set_seed(0)
    p = TrainParams()
    net = create_model(arch)
    step = TrainStep(net, create_loss(p), create_optimizer(net, p))
    step.set_train()
    xt, yt, lr = ms.Tensor(x), ms.Tensor(y), ms.Tensor(0.01, ms.float32)
    t0 = time.perf_counter()
    step(xt, yt, lr)[0].asnumpy()
    compile_s = time.perf_counter() - t0
    for _ in range(2):
        step(xt, yt, lr)[0].asnumpy()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(xt, yt, lr)[0].asnumpy()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"images_per_s": len(x) / med, "step_s": med, "first_step_s": compile_s,
            "graphs": len(step.compile_cache), "threads": facts.get("threads")}


def torch_net(arch):
    """The same network as src.childnet.ChildNet, built in PyTorch from the same layer plans."""
    import torch
    from torch import nn

    act = {"relu": nn.ReLU, "relu6": nn.ReLU6, "swish": nn.SiLU}

    def conv(spec):
        mods = [nn.Conv2d(spec.cin, spec.cout, spec.k, spec.stride, spec.padding,
                          groups=spec.groups, bias=spec.bias)]
        if spec.bn:
            mods.append(nn.BatchNorm2d(spec.cout))
        if spec.act:
            mods.append(act[spec.act]())
        return nn.Sequential(*mods)

    class Shuffle(nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, x):
            b, c, h, w = x.shape
            return x.view(b, self.g, c // self.g, h, w).transpose(1, 2).reshape(b, c, h, w)

    class SE(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.reduce = nn.Conv2d(s.channels, s.reduced, 1, bias=s.bias)
            self.expand = nn.Conv2d(s.reduced, s.channels, 1, bias=s.bias)
            self.act = act[s.act]()

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))

    class Block(nn.Module):
        def __init__(self, lp):
            super().__init__()
            self.identity, self.residual = lp.identity, lp.residual
            mods = []
            if lp.expand:
                mods.append(conv(lp.expand))
            if lp.shuffle > 1:
                mods.append(Shuffle(lp.shuffle))
            if lp.dw:
                mods.append(conv(lp.dw))
            if lp.se:
                mods.append(SE(lp.se))
            if lp.project:
                mods.append(conv(lp.project))
            self.body = nn.Sequential(*mods)

        def forward(self, x):
            if self.identity:
                return x
            y = self.body(x)
            return y + x if self.residual else y

    plan = arch.net_plan()
    mods = [conv(plan.stem)] + [Block(lp) for lp in plan.layers]
    if plan.head is not None:
        mods.append(conv(plan.head))
    body = nn.Sequential(*mods)
    fc = nn.Linear(plan.fc_in, plan.num_classes)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.fc = body, fc

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    return Net()


def bench_torch(arch, x: np.ndarray, y: np.ndarray, steps: int, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch_net(arch).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    params = sum(p.numel() for p in net.parameters())
    return {"images_per_s": len(x) / med, "step_s": med, "version": torch.__version__,
            "threads": torch.get_num_threads(), "params": int(params)}


def main(args) -> int:
    if args.batch_size < 1 or args.steps < 1:
        raise HourNASError("--batch_size and --steps must be >= 1")
    arch = resized(args.arch, args.image_size, args.num_classes)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch_size, arch.in_channels, args.image_size,
                             args.image_size)).astype(np.float32)
    y = rng.integers(0, args.num_classes, size=args.batch_size).astype(np.int32)
    from src.resource import count
    c = count(arch)
    log(f"{arch.name}: {c['params'] / 1e6:.2f}M params, {c['flops'] / 1e6:.1f}M FLOPs/image, "
        f"batch {args.batch_size}, {args.steps} timed steps (median)")
    ms_r = bench_mindspore(arch, x, y, args.steps, args.device_target)
    log(f"MindSpore graph-mode step: {ms_r['images_per_s']:.1f} images/s ({ms_r['step_s'] * 1e3:.0f} "
        f"ms/step; first step incl. compile {ms_r['first_step_s']:.1f} s; compiled graphs "
        f"{ms_r['graphs']}; {ms_r['threads']} threads)")
    try:
        import torch  # noqa: F401
    except ImportError:
        torch_r = None
        log("PyTorch: skipped (not installed; pip install torch to compare)")
    else:
        torch_r = bench_torch(arch, x, y, args.steps, ms_r["threads"])
        if torch_r["params"] != c["params"]:
            raise HourNASError(f"the PyTorch twin has {torch_r['params']} parameters, the counter "
                               f"{c['params']}: the two builds differ")
        log(f"PyTorch {torch_r['version']} eager step: {torch_r['images_per_s']:.1f} images/s "
            f"({torch_r['step_s'] * 1e3:.0f} ms/step; {torch_r['threads']} threads)")
    ratio = ms_r["images_per_s"] / torch_r["images_per_s"] if torch_r else None
    if ratio is not None:
        log(f"MindSpore / PyTorch throughput: {ratio:.2f}x")
    if args.json:
        emit_json({"arch": arch.name, "batch_size": args.batch_size, "params": c["params"],
                   "flops": c["flops"], "mindspore": ms_r, "pytorch": torch_r, "ratio": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
