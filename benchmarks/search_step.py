"""Times the search step of each executor on the FBNetSS CIFAR supernet (one run).

    python benchmarks/search_step.py [--json] [--batch 64] [--repeats 3] [--width 1.0]
                                     [--executors eager,graph,allpath] [--device_target CPU]

For each executor: the weight step (forward + backward + SGD on the sampled path, 80% split)
and the architecture step (forward + backward to θ, 20% split), median over ``--repeats`` after
one warm-up (compile time reported apart). ``single_path_s`` is the device's default executor
(weight + arch step), ``all_path_s`` the FBNet-style all-path step, ``ratio`` their quotient:
the paper's claim is ~O (= 9 ops) for single path over all paths.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--space", default="fbnet_cifar10")
    ap.add_argument("--executors", default="eager,graph,allpath")
    ap.add_argument("--searched", choices=("all", "vital"), default="all",
                    help="search every layer (stage 2 / ablation size) or only the vital ones "
                         "(stage 1's S_vital)")
    ap.add_argument("--device_target", default="CPU")
    args = ap.parse_args()

    from src.context import setup_context
    facts = setup_context(args.device_target, mode="pynative")
    import mindspore as ms
    import numpy as np

    from src.search.step import EXECUTORS, ArchParams, SparseSGD, default_executor
    from src.space.space import load_space
    from src.supernet import Supernet

    space = load_space(args.space, args.width)
    searched = list(space.searchable) if args.searched == "all" else space.vital_layers()
    keep = None if args.searched == "all" else [i for i in range(len(space.layers))
                                                if space.vital[i]]
    num_ops = len(space.layers[searched[0]].ops)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((args.batch, 3, space.input_size, space.input_size))
                  .astype(np.float32))
    y = ms.Tensor(rng.integers(0, space.num_classes, args.batch).astype(np.int32))
    results = {}
    for name in [e.strip() for e in args.executors.split(",") if e.strip()]:
        ms.set_seed(0)
        net = Supernet(space, searched, keep=keep)
        net.set_train(True)
        sampler = "gumbel_softmax" if name == "allpath" else "gumbel_max"
        arch = ArchParams(len(searched), num_ops, sampler=sampler)
        sgd = SparseSGD(list(net.trainable_params()), 0.9, 4e-5)
        ex = EXECUTORS[name](net, arch, sgd)
        w_times, a_times = [], []
        for rep in range(args.repeats + 1):
            g = rng.gumbel(size=(len(searched), num_ops)).astype(np.float32)
            _, idx = arch.host_path(g, None, 5.0)
            t0 = time.perf_counter()
            if name == "allpath":
                a = arch(ms.Tensor(g), None, ms.Tensor(5.0, ms.float32)).asnumpy()
                ex.weight_step(x, y, a, 0.1)
            else:
                ex.weight_step(x, y, idx, 0.1)
            t1 = time.perf_counter()
            ex.arch_step(x, y, g, None, 5.0, idx)
            t2 = time.perf_counter()
            w_times.append(t1 - t0)
            a_times.append(t2 - t1)
            print(f"{name}: repeat {rep} weight {t1 - t0:.2f} s arch {t2 - t1:.2f} s",
                  file=sys.stderr, flush=True)
        results[name] = {"first_weight_s": w_times[0], "first_arch_s": a_times[0],
                         "weight_s": statistics.median(w_times[1:]),
                         "arch_s": statistics.median(a_times[1:])}
        results[name]["step_s"] = results[name]["weight_s"] + results[name]["arch_s"]
    default = default_executor(facts["device_target"])
    out = {"space": space.name, "batch": args.batch, "layers": len(searched), "ops": num_ops,
           "device_target": facts["device_target"], "default_executor": default,
           "executors": results}
    if default in results:
        out["single_path_s"] = results[default]["step_s"]
    if "allpath" in results:
        out["all_path_s"] = results["allpath"]["step_s"]
    if "single_path_s" in out and "all_path_s" in out:
        out["ratio"] = out["all_path_s"] / out["single_path_s"]
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
