"""Times the search step of each executor, and of a PyTorch twin, on two supernets.

    python benchmarks/search_step.py [--json] [--sizes default,full] [--repeats 3]
                                     [--executors eager,graph,allpath] [--allpath_repeats 1]
                                     [--searched all|vital] [--no_torch] [--device_target CPU]
                                     [--batch_size N]

Sizes: ``default`` is the built-in default search's supernet (config/search/default.yaml:
FBNetSS CIFAR at its width, its batch); ``full`` is the FBNetSS CIFAR supernet at full width
(22 x 9, 11.2M parameters), batch 64. Every layer is searched (stage 2's size; ``--searched
vital`` times stage 1's S_vital instead).

For each executor, the weight step (forward + backward + SGD on the sampled path) and the
architecture step (forward + backward to θ), median over ``--repeats`` timed repeats after one
untimed repeat; set-up and warm-up (``graph``: every candidate compiled once) are reported
apart as ``warmup_s``. ``single_path_s`` is the device's default executor (weight + arch step),
``all_path_s`` the FBNet-style all-path step, ``ratio`` their quotient (the paper: ~O = 9).
``pytorch_s`` is the same single-path step (same paths, same layer plans, straight-through
Gumbel-Max) of a PyTorch twin, ``vs_pytorch`` = single_path_s / pytorch_s. ``peak_rss_gb`` is
each executor's (and PyTorch's) peak resident memory: every one runs in a worker process of its
own, so it is that process's high-water mark over set-up, warm-up and the timed repeats;
``rss_vs_eager_per_executor`` and ``rss_vs_pytorch_per_executor`` are their quotients.

How it measures: MindSpore and PyTorch each run in their own worker process with the same
thread count (PyTorch with OMP_WAIT_POLICY=PASSIVE); the parent sends both the same paths and
the repeats alternate between them, so other work on the machine hits both alike; the 1-minute
load average is printed beside the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.harness import (Worker, interleave, median, memory_gb, peak_rss_gb, rss_gb,  # noqa: E402
                                serve)

FULL = {"space": "fbnet_cifar10", "width": 1.0, "batch": 64}


def size_spec(size: str, batch: int | None = None) -> dict:
    """The supernet and batch of a size; ``batch`` (--batch_size) replaces the size's own."""
    if size == "full":
        spec = dict(FULL)
    elif size == "default":
        from src.config import load_config
        from src.search.config import SearchConfig
        cfg = load_config(SearchConfig, os.path.join(ROOT, "config", "search", "default.yaml"))
        spec = {"space": cfg.space, "width": cfg.width_mult, "batch": cfg.search.batch_size}
    else:
        raise SystemExit(f"error: unknown size '{size}'; valid: default, full")
    return dict(spec, batch=batch) if batch else spec


def build_space(spec: dict, searched_mode: str):
    from src.space.space import load_space
    space = load_space(spec["space"], spec["width"])
    if searched_mode == "all":
        return space, list(space.searchable), None
    keep = [i for i in range(len(space.layers)) if space.vital[i]]
    return space, space.vital_layers(), keep


def batch(space, n: int):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, space.input_size, space.input_size)).astype(np.float32)
    y = rng.integers(0, space.num_classes, n).astype(np.int32)
    return x, y


# ----------------------------------------------------------------------------- workers


def mindspore_worker(args) -> int:
    state = {}

    def setup():
        from src.context import setup_context
        facts = setup_context(args.device_target, mode="pynative", threads=args.threads)
        import mindspore as ms
        import numpy as np

        from src.search.step import EXECUTORS, ArchParams, SparseSGD
        from src.supernet import Supernet

        spec = size_spec(args.size, args.batch_size)
        space, searched, keep = build_space(spec, args.searched)
        num_ops = len(space.layers[searched[0]].ops)
        x, y = batch(space, spec["batch"])
        state.update(x=ms.Tensor(x), y=ms.Tensor(y), L=len(searched), O=num_ops, ex={})
        warm = {}
        for name in args.executors:
            ms.set_seed(0)
            net = Supernet(space, searched, keep=keep)
            net.set_train(True)
            sampler = "gumbel_softmax" if name == "allpath" else "gumbel_max"
            arch = ArchParams(len(searched), num_ops, sampler=sampler)
            sgd = SparseSGD(list(net.trainable_params()), 0.9, 4e-5)
            ex = EXECUTORS[name](net, arch, sgd)
            state["ex"][name] = ex
            t0 = time.perf_counter()
            # graph: each op index once on every layer, so every candidate is compiled
            paths = range(num_ops) if name == "graph" else range(1)
            zero = np.zeros((len(searched), num_ops), np.float32)
            for o in paths:
                _one_step(ex, [o] * len(searched), zero)
                if name == "graph" and rss_gb() > args.max_rss_gb:  # they keep their memory
                    raise MemoryError(
                        f"{name}: {rss_gb():.1f} GiB resident after compiling {o + 1} of "
                        f"{len(paths)} ops on every layer (more than --max_rss_gb "
                        f"{args.max_rss_gb:.1f}); stopped before the machine runs out")
            warm[name] = time.perf_counter() - t0
        return {"framework": "mindspore", "version": ms.__version__, "threads": facts["threads"],
                "device_target": facts["device_target"], "warmup_s": warm,
                "layers": len(searched), "ops": num_ops,
                "params": int(sum(p.size for p in state["ex"][args.executors[0]].net
                                  .trainable_params()))}

    def step(req):
        import numpy as np
        g = np.asarray(req["g"], np.float32)
        out = {}
        for name, ex in state["ex"].items():
            if name == "allpath" and not req["allpath"]:
                continue
            out[name] = dict(_one_step(ex, req["path"], g), peak_rss_gb=peak_rss_gb())
        return out

    def _one_step(ex, path, g):
        from src.search.step import PathSample
        x, y = state["x"], state["y"]
        sample = PathSample(g, None, 5.0, None, list(path))  # all-path: soft weights from g
        t0 = time.perf_counter()
        ex.weight_step(x, y, sample, 0.1)
        t1 = time.perf_counter()
        ex.arch_step(x, y, sample)
        t2 = time.perf_counter()
        return {"weight_s": t1 - t0, "arch_s": t2 - t1}

    return serve(setup, step)


def torch_worker(args) -> int:
    state = {}

    def setup():
        import numpy as np
        import torch

        from benchmarks.torch_twin import TorchSupernet
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        spec = size_spec(args.size, args.batch_size)
        space, searched, keep = build_space(spec, args.searched)
        net = TorchSupernet(space, searched, keep).train()
        num_ops = len(space.layers[searched[0]].ops)
        theta = torch.zeros(len(searched), num_ops, requires_grad=True)
        x, y = batch(space, spec["batch"])
        state.update(net=net, theta=theta, x=torch.from_numpy(x),
                     y=torch.from_numpy(y.astype(np.int64)),
                     opt=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9,
                                         weight_decay=4e-5))
        t0 = time.perf_counter()
        step({"path": [0] * len(searched), "g": np.zeros((len(searched), num_ops)).tolist()})
        return {"framework": "pytorch", "version": torch.__version__,
                "threads": torch.get_num_threads(), "warmup_s": time.perf_counter() - t0}

    def step(req):
        import torch
        import torch.nn.functional as F
        net, theta, opt, x, y = (state[k] for k in ("net", "theta", "opt", "x", "y"))
        path = [int(i) for i in req["path"]]
        g = torch.tensor(req["g"], dtype=torch.float32)
        t0 = time.perf_counter()
        # weight step: only the path's parameters get gradients, so only they move
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, None, path), y).backward()
        opt.step()
        t1 = time.perf_counter()
        # architecture step: straight-through Gumbel-Max, gradient to θ only
        soft = F.softmax(theta / 5.0 + g, dim=-1)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        a = hard - soft.detach() + soft
        loss = F.cross_entropy(net(x, a, path), y)
        torch.autograd.grad(loss, [theta])
        t2 = time.perf_counter()
        return {"pytorch": {"weight_s": t1 - t0, "arch_s": t2 - t1,
                            "peak_rss_gb": peak_rss_gb()}}

    return serve(setup, step)


# ----------------------------------------------------------------------------- parent


def summarize(spec, ms_ready, answers, torch_answers, default: str, loads) -> dict:
    execs = {}
    for name, warm in ms_ready["warmup_s"].items():
        rows = [a[name] for a in answers[1:] if name in a] or [a[name] for a in answers
                                                                 if name in a]
        w, a = median([r["weight_s"] for r in rows]), median([r["arch_s"] for r in rows])
        execs[name] = {"weight_s": round(w, 4), "arch_s": round(a, 4), "step_s": round(w + a, 4),
                       "warmup_s": round(warm, 2), "timed_repeats": len(rows),
                       "peak_rss_gb": _peak(answers, name)}
    out = {"space": spec["space"], "width": spec["width"], "batch": spec["batch"],
           "layers": ms_ready["layers"], "ops": ms_ready["ops"], "params": ms_ready["params"],
           "executors": execs, "default_executor": default, "load_avg_1min": loads}
    single = [n for n in execs if n != "allpath"]
    if single:
        out["fastest_single_path"] = min(single, key=lambda n: execs[n]["step_s"])
    if default in execs:
        out["single_path_s"] = execs[default]["step_s"]
    if "allpath" in execs:
        out["all_path_s"] = execs["allpath"]["step_s"]
    if "single_path_s" in out and "all_path_s" in out:
        out["ratio"] = round(out["all_path_s"] / out["single_path_s"], 2)
    if torch_answers:
        rows = [a["pytorch"] for a in torch_answers[1:]]
        w, a = median([r["weight_s"] for r in rows]), median([r["arch_s"] for r in rows])
        out["pytorch"] = {"weight_s": round(w, 4), "arch_s": round(a, 4),
                          "peak_rss_gb": _peak(torch_answers, "pytorch")}
        out["pytorch_s"] = round(w + a, 4)
        if "single_path_s" in out:
            out["vs_pytorch"] = round(out["single_path_s"] / out["pytorch_s"], 2)
        out["vs_pytorch_per_executor"] = {n: round(e["step_s"] / out["pytorch_s"], 2)
                                          for n, e in execs.items() if n != "allpath"}
        if out["pytorch"]["peak_rss_gb"] > 0:
            out["rss_vs_pytorch_per_executor"] = {
                n: round(e["peak_rss_gb"] / out["pytorch"]["peak_rss_gb"], 2)
                for n, e in execs.items()}
    if "eager" in execs and execs["eager"]["peak_rss_gb"] > 0:
        out["rss_vs_eager_per_executor"] = {
            n: round(e["peak_rss_gb"] / execs["eager"]["peak_rss_gb"], 2)
            for n, e in execs.items()}
    return out


def _peak(answers: list[dict], name: str) -> float:
    """A worker's peak resident memory (GiB) over its answers: each executor runs in a worker
    process of its own, so this is its set-up, warm-up and timed steps alone."""
    return round(max((a[name]["peak_rss_gb"] for a in answers if name in a), default=0.0), 3)


def run_size(args, size: str, threads: int, have_torch: bool) -> dict:
    import numpy as np

    from src.search.step import default_executor
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    spec = size_spec(size, args.batch_size)
    common = [os.path.abspath(__file__), "--size", size, "--threads", str(threads),
              "--searched", args.searched, "--device_target", args.device_target,
              "--max_rss_gb", str(args.max_rss_gb)] + (
                  ["--batch_size", str(args.batch_size)] if args.batch_size else [])
    log(f"[{size}] {spec['space']} width {spec['width']} batch {spec['batch']}: setting up "
        f"(graph: compiling every candidate once)")
    workers, failed = {}, {}
    for name in args.executors:  # one process per executor: one that fails is reported alone
        try:
            workers[name] = Worker(common + ["--executors", name, "--worker", "mindspore"],
                                   threads)
            log(f"[{size}] MindSpore {name} ready: {workers[name].ready}")
        except RuntimeError as e:
            failed[name] = str(e)
            log(f"[{size}] MindSpore {name} failed: {e}")
    if not workers:
        raise SystemExit(f"error: no executor could be set up at size {size}: {failed}")
    if have_torch:
        workers["pytorch"] = Worker(common + ["--worker", "pytorch"], threads)
        log(f"[{size}] PyTorch ready: {workers['pytorch'].ready}")
    first = next(iter(workers.values())).ready
    L, O = first["layers"], first["ops"]
    rng = np.random.default_rng(1)
    requests = []
    for r in range(args.repeats + 1):
        g = rng.gumbel(size=(L, O)).astype(np.float32)
        requests.append({"path": [int(i) for i in g.argmax(-1)], "g": g.tolist(),
                         "allpath": r <= args.allpath_repeats})
    try:
        res = interleave(workers, requests, log=log)
    finally:
        for w in workers.values():
            w.close()
    ms_names = [n for n in workers if n != "pytorch"]
    ready = dict(first, warmup_s={n: workers[n].ready["warmup_s"][n] for n in ms_names})
    answers = [{n: res["answers"][n][r][n] for n in ms_names if n in res["answers"][n][r]}
               for r in range(len(requests))]
    out = summarize(spec, ready, answers, res["answers"].get("pytorch"),
                    default_executor(args.device_target), res["load_avg_1min"])
    out["mindspore_version"] = first["version"]
    if failed:
        out["failed"] = {n: e.splitlines()[0] for n, e in failed.items()}
    if have_torch:
        out["pytorch_version"] = workers["pytorch"].ready["version"]
        out["pytorch_warmup_s"] = round(workers["pytorch"].ready["warmup_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object as the last line")
    ap.add_argument("--sizes", default="default,full")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--allpath_repeats", type=int, default=1,
                    help="timed repeats of the (slow) all-path step")
    ap.add_argument("--executors", default="eager,graph,allpath")
    ap.add_argument("--searched", choices=("all", "vital"), default="all",
                    help="search every layer (stage 2) or only the vital ones (S_vital)")
    ap.add_argument("--no_torch", action="store_true", help="skip the PyTorch twin")
    ap.add_argument("--batch_size", type=int, default=None,
                    help="every size at this batch instead of its own (e.g. 2: the step's "
                         "per-op host cost, with little arithmetic)")
    ap.add_argument("--device_target", default="CPU")
    ap.add_argument("--max_rss_gb", type=float, default=round(0.5 * memory_gb(), 1),
                    help="the graph executor's set-up is stopped and reported as failed when "
                         "it holds more than this (GiB; default half the machine's memory): "
                         "the compiled candidates keep each candidate's memory")
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=("mindspore", "pytorch"), default=None,
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    if args.repeats < 1 or args.allpath_repeats < 0:
        raise SystemExit("error: --repeats must be >= 1 and --allpath_repeats >= 0")
    if args.batch_size is not None and args.batch_size < 1:
        raise SystemExit("error: --batch_size must be >= 1")
    if args.worker == "mindspore":
        return mindspore_worker(args)
    if args.worker == "pytorch":
        return torch_worker(args)

    from src.context import _cpu_count
    threads = _cpu_count()
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("PyTorch is not installed: pytorch_s / vs_pytorch skipped", file=sys.stderr)
    t0 = time.perf_counter()
    sizes = {}
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        sizes[size] = run_size(args, size, threads, have_torch)
        s = sizes[size]
        print(f"[{size}] " + ", ".join(f"{n} {e['step_s']:.3f} s (weight {e['weight_s']:.3f} + "
                                        f"arch {e['arch_s']:.3f}; warm-up {e['warmup_s']:.1f} s; "
                                        f"peak {e['peak_rss_gb']:.2f} GiB)"
                                        for n, e in s["executors"].items())
              + (f"; PyTorch {s['pytorch_s']:.3f} s (peak {s['pytorch']['peak_rss_gb']:.2f} GiB)"
                 if "pytorch_s" in s else "")
              + (f"; ratio {s['ratio']}" if "ratio" in s else "")
              + (f"; vs_pytorch {s['vs_pytorch']}" if "vs_pytorch" in s else "")
              + f"; load {s['load_avg_1min']}", file=sys.stderr, flush=True)
    out = {"device_target": args.device_target, "threads": threads, "searched": args.searched,
           "sizes": sizes, "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
