"""Fixtures shared by the analysis tests: a tiny architecture, a briefly trained checkpoint of
it, and a synthetic search run folder in the formats search.py writes."""
from __future__ import annotations

import json
import os

import numpy as np

TINY_ARCH = {
    "name": "tiny",
    "input_size": 16,
    "num_classes": 10,
    "stem": {"c": 8, "k": 3, "s": 1},
    # L1 and L3, L4 can be bypassed (residual); L2 and L5 change stride/width: vital.
    "blocks": ["ir_r1_k3_s1_e1_c8", "ir_r1_k3_s2_e3_c16", "ir_r1_k3_s1_e3_c16",
               "ir_r1_k3_s1_e3_c16", "ir_r1_k3_s2_e3_c24"],
    "head": 32,
}

SYN_SPACE = "fbnet_cifar10"
SYN_TARGETS = {"params": 2.8e6, "flops": 120e6}


def tiny_arch():
    from src.space.space import arch_from_dict
    return arch_from_dict(dict(TINY_ARCH), where="tiny test architecture")


def train_tiny_checkpoint(path: str, epochs: int = 6, seed: int = 0) -> float:
    """Train the tiny net on the built-in digits (16x16) with a plain loop and save it in the
    project's checkpoint format (architecture record under 'arch'); returns eval top-1 (%)."""
    import mindspore as ms
    import mindspore.nn as nn

    from src.checkpoint import save_checkpoint
    from src.childnet import ChildNet
    from src.context import setup_context
    from src.data import DataConfig, make_dataset

    setup_context("CPU", "graph")
    ms.set_seed(seed)
    arch = tiny_arch()
    net = ChildNet(arch)
    cfg = DataConfig(name="digits", image_size=16)
    opt = nn.Adam(net.trainable_params(), learning_rate=0.01)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()), opt)
    step.set_train(True)
    for epoch in range(epochs):
        data = make_dataset(cfg, "train", 64, shuffle=True, seed=seed, epoch=epoch,
                            augment=False, drop_remainder=True)
        for x, y in data.create_tuple_iterator(num_epochs=1):
            step(x, y)
    net.set_train(False)
    correct = n = 0
    for x, y in make_dataset(cfg, "eval", 120).create_tuple_iterator(output_numpy=True,
                                                                   num_epochs=1):
        correct += int((net(ms.Tensor(x)).asnumpy().argmax(1) == y).sum())
        n += len(y)
    save_checkpoint(path, net, {"arch": arch.to_dict(),
                                "config": {"data": {"name": "digits", "image_size": 16}}})
    return 100.0 * correct / n


def make_synthetic_run(folder: str, *, steps_vital: int = 30, steps_nonvital: int = 60,
                       m: int = 4, with_files=("config.yaml", "search_log.jsonl",
                                               "arch_params.npz", "arch.yaml",
                                               "summary.json"), seed: int = 0) -> dict:
    """A search run folder as search.py writes it (fbnet_cifar10, m proposals). Returns facts
    (targets, achieved, vital/non-vital layer counts)."""
    from src.resource import count
    from src.space.space import arch_to_yaml, load_space

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    space = load_space(SYN_SPACE)
    vital, nonvital = space.vital_layers(), space.nonvital_layers()
    n_ops = len(space.layers[space.searchable[0]].ops)
    choices = {i: int(rng.integers(n_ops)) for i in space.searchable}
    arch = space.arch([choices[i] for i in space.searchable], name="hournas_synthetic")
    achieved = {k: float(v) for k, v in count(arch).items()}
    log, g = [], 0
    for stage, layers, n in (("vital", vital, steps_vital), ("nonvital", nonvital, steps_nonvital)):
        for k in range(n):
            g += 1
            # paths drift towards the chosen ops, like a converging search
            bias = k / max(1, n - 1)
            path = [choices[i] if rng.random() < bias else int(rng.integers(n_ops))
                    for i in layers]
            rec = {"stage": stage, "epoch": 0, "step": k + 1, "global_step": g,
                   "tau": 5.0 * 0.99 ** g, "lr": 0.1, "w_loss": 2.3 - 1.5 * g / 90,
                   "w_acc": 0.1 + 0.8 * g / 90, "a_loss": 2.4 - 1.4 * g / 90,
                   "a_ce": 2.3 - 1.4 * g / 90, "a_reg": 0.05 * rng.random(), "a_acc": 0.5,
                   "path": path, "proposal": int(rng.integers(m)) if stage == "nonvital"
                   else None, "entropy": 2.1 * (1 - bias / 2), "step_seconds": 0.1}
            if stage == "nonvital":
                rec["path_params"] = SYN_TARGETS["params"] * (1 + 0.2 * rng.standard_normal())
                rec["path_flops"] = SYN_TARGETS["flops"] * (1 + 0.2 * rng.standard_normal())
            log.append(rec)
    vital_probs = rng.dirichlet(np.ones(n_ops), size=len(vital))
    summary = {"arch": os.path.join(folder, "arch.yaml"), "space": SYN_SPACE,
               "targets": SYN_TARGETS, "achieved": achieved,
               "relative_error": {k: achieved[k] / SYN_TARGETS[k] - 1 for k in SYN_TARGETS},
               "within_tolerance": False, "tolerance": 0.02, "derivation": "argmax",
               "proposal": 1, "stage_seconds": {"vital": 12.5, "nonvital": 30.25},
               "vital": {"layers": [space.layers[i].label for i in vital],
                         "ops": [space.layers[i].ops[choices[i]].name for i in vital],
                         "probabilities": vital_probs.round(4).tolist(), "method": "argmax"},
               "proposals": {"solve_seconds": 0.8, "m": m}, "executor": "eager",
               "ops": [op.name for op in arch.ops], "blocks": arch.block_strings(),
               "params": int(achieved["params"]), "flops": int(achieved["flops"])}
    files = {
        "config.yaml": lambda p: open(p, "w").write(
            f"space: {SYN_SPACE}\nwidth_mult: 1.0\nproposal:\n  m: {m}\n  targets: "
            f"{{params: 2.8M, flops: 120M}}\nsearch:\n  sampler: gumbel_max\n"
            f"  vital_priori: true\n"),
        "search_log.jsonl": lambda p: open(p, "w").write(
            "".join(json.dumps(r) + "\n" for r in log)),
        "arch_params.npz": lambda p: np.savez(p, theta=rng.standard_normal((m, len(nonvital),
                                                                             n_ops)),
                                              pi=rng.standard_normal(m)),
        "arch.yaml": lambda p: open(p, "w").write(arch_to_yaml(arch)),
        "summary.json": lambda p: open(p, "w").write(json.dumps(summary, indent=2)),
    }
    for name in with_files:
        files[name](os.path.join(folder, name))
    return {"targets": SYN_TARGETS, "achieved": achieved, "vital": len(vital),
            "nonvital": len(nonvital), "arch": arch}
