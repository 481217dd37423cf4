"""Space proposals: the formula, its gradient, feasibility, the solver, the report, latency."""
import dataclasses
import itertools
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from src.errors import HourNASError, ResourceTargetError
from src.proposal import (check_feasible, choice_costs, compliance_report, diversity, ensemble,
                          ensemble_sample, feasible_range, init_proposal_logits, load_proposals,
                          loss_and_grad, objective_arrays, plot_proposals, resource_loss,
                          solve_proposals)
from src.resource import ResourceTable, resource_table
from src.sampler import GumbelNoise, get_sampler
from src.search.config import ProposalConfig
from src.space.space import load_space, space_from_dict


def toy_table(num_layers=8, num_ops=4, seed=0) -> ResourceTable:
    """Layer x op costs with the usual spread: some cheap ops, some ten times dearer."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 2.0, size=(num_layers, 1))
    params = np.sort(rng.uniform(0.0, 1e5, size=(num_layers, num_ops)), axis=1) * scale
    flops = params * rng.uniform(20, 80, size=(num_layers, num_ops))
    return ResourceTable(layers=list(range(num_layers)), objectives=("params", "flops"),
                         table={"params": params, "flops": flops},
                         base={"params": 2e5, "flops": 1e7})


def random_arch_targets(table, seed):
    rng = np.random.default_rng(seed)
    n_layers, n_ops = table.table["params"].shape
    return table.cost(np.eye(n_ops)[rng.integers(0, n_ops, n_layers)])


# ----------------------------------------------------------------------------- the formula


def test_resource_loss_is_eq6_in_numpy_and_mindspore():
    table = toy_table()
    arrays = objective_arrays(table, {"params": 6e5, "flops": 3e7})
    a = np.random.default_rng(1).dirichlet(np.ones(4), size=8)
    cost = table.cost(a)
    expected = np.mean([abs(cost[o] - t) / m for o, t, m in
                        zip(arrays.names, arrays.targets, arrays.maxima)])
    assert resource_loss(a, arrays.tables, arrays.base, arrays.targets,
                         arrays.maxima) == pytest.approx(expected, rel=1e-12)
    tensors = [Tensor(x) for x in (a.astype(np.float32),) + arrays.as_float32()]
    assert float(resource_loss(*tensors).asnumpy()) == pytest.approx(expected, rel=1e-5)
    assert float(ms.jit(resource_loss)(*tensors).asnumpy()) == pytest.approx(expected, rel=1e-5)
    # a batch of m architectures gives the mean over proposals (Eq. 7's first term)
    batch = np.stack([a, np.roll(a, 1, axis=1)])
    per = [resource_loss(b, arrays.tables, arrays.base, arrays.targets, arrays.maxima)
           for b in batch]
    assert resource_loss(batch, arrays.tables, arrays.base, arrays.targets,
                         arrays.maxima) == pytest.approx(np.mean(per))


def test_ensemble_combines_proposals_by_pi():
    a = np.random.default_rng(2).random((3, 5, 4)).astype(np.float32)
    pi = np.array([0.0, 1.0, 0.0], np.float32)
    np.testing.assert_allclose(ensemble(Tensor(pi), Tensor(a)).asnumpy(), a[1])
    uniform = np.full(3, 1 / 3, np.float32)
    np.testing.assert_allclose(ensemble(Tensor(uniform), Tensor(a)).asnumpy(), a.mean(0),
                               rtol=1e-6)
    assert np.all(init_proposal_logits(3) == 0)


def test_ensemble_sample_gives_the_chosen_proposals_architecture_and_gradients():
    theta = np.random.default_rng(3).normal(size=(3, 5, 4)).astype(np.float32)
    noise = GumbelNoise(4)
    gp, gt = noise.sample((3,)), noise.sample((3, 5, 4))
    g = get_sampler("gumbel_max")
    a = ensemble_sample(g, Tensor(init_proposal_logits(3)), Tensor(theta), Tensor(gp),
                        Tensor(gt), 1.0).asnumpy()
    j = int(np.argmax(gp))
    np.testing.assert_array_equal(a.argmax(-1), (theta[j] + gt[j]).argmax(-1))
    w = Tensor(np.random.default_rng(5).normal(size=(5, 4)).astype(np.float32))

    def loss(pi_logits, thetas):
        return (ensemble_sample(g, pi_logits, thetas, Tensor(gp), Tensor(gt), 1.0) * w).sum()

    g_pi, g_theta = ms.grad(loss, grad_position=(0, 1))(Tensor(init_proposal_logits(3)),
                                                         Tensor(theta))
    assert np.abs(g_pi.asnumpy()).sum() > 0
    assert np.abs(g_theta.asnumpy()[j]).sum() > 0


@pytest.mark.parametrize("sampler,orthogonality", [("gumbel_softmax", "cosine"),
                                                   ("softmax", "cosine"),
                                                   ("gumbel_softmax", "paper")])
def test_analytic_gradient_matches_finite_differences(sampler, orthogonality):
    table = toy_table(num_layers=4, num_ops=3)
    arrays = objective_arrays(table, {"params": 4e5, "flops": 2e7})
    rng = np.random.default_rng(6)
    theta = rng.normal(size=(3, 4, 3))
    noise = GumbelNoise(8).sample((3, 4, 3)).astype(np.float64)
    f = lambda th: loss_and_grad(th, noise, 0.7, arrays, 0.05, sampler, orthogonality)  # noqa
    _, _, orth, grad = f(theta)
    assert orth > 0
    numeric = np.zeros_like(theta)
    eps = 1e-6
    for idx in itertools.product(*map(range, theta.shape)):
        up, down = theta.copy(), theta.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (f(up)[0] - f(down)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-9)


# ----------------------------------------------------------------------------- feasibility


def test_feasible_range_is_the_true_min_and_max():
    table = toy_table(num_layers=3, num_ops=3)
    costs = [table.cost(np.eye(3)[list(c)]) for c in itertools.product(range(3), repeat=3)]
    rng = feasible_range(table)
    for obj in ("params", "flops"):
        values = [c[obj] for c in costs]
        assert rng[obj] == pytest.approx((min(values), max(values)))


def test_check_feasible_names_objective_target_and_range():
    table = resource_table(load_space("fbnet_imagenet"))
    lo, hi = feasible_range(table)["flops"]
    check_feasible(table, {"params": 4.8e6, "flops": 295e6})
    with pytest.raises(ResourceTargetError) as err:
        check_feasible(table, {"params": 4.8e6, "flops": 30e6})
    msg = str(err.value)
    assert msg == (f"target flops 30.00M is below the space's minimum {lo / 1e6:.2f}M "
                   f"(feasible: {lo / 1e6:.2f}M .. {hi / 1e6:.2f}M)")
    with pytest.raises(ResourceTargetError, match=r"target params 9.00M is above the space's "
                                                  r"maximum 5.75M \(feasible: 2.77M .. 5.75M\)"):
        check_feasible(table, {"params": 9e6})
    with pytest.raises(ResourceTargetError, match="unknown objective 'macs'.*valid: params, flops"):
        check_feasible(table, {"macs": 1e6})


def test_solver_checks_feasibility_first():
    with pytest.raises(ResourceTargetError, match="below the space's minimum"):
        solve_proposals(toy_table(), {"params": 1.0}, ProposalConfig(iterations=5))


# ----------------------------------------------------------------------------- the solver


def small_cfg(**kw):
    return dataclasses.replace(ProposalConfig(m=4, report_taus=[1.0, 0.1]), **kw)


def test_solver_meets_targets_on_a_toy_table():
    table = toy_table()  # 824 of its 65,536 architectures are within ±5% of both targets
    targets = random_arch_targets(table, seed=11)
    props = solve_proposals(table, targets, small_cfg(iterations=1000))
    assert props.theta.shape == (4, 8, 4)
    assert props.history["loss"].shape == (1000,)
    assert props.history["resource"][-50:].mean() < props.history["resource"][:50].mean()
    rep = compliance_report(props, table, n=2000, tau=0.1, seed=0)
    assert rep["all"]["within_5pct"] >= 0.9
    for obj in ("params", "flops"):
        assert abs(rep["objectives"][obj]["p50"]) < 0.05


def test_solver_is_deterministic_under_a_seed():
    table = toy_table()
    targets = random_arch_targets(table, seed=12)
    a = solve_proposals(table, targets, small_cfg(iterations=100, seed=3))
    b = solve_proposals(table, targets, small_cfg(iterations=100, seed=3))
    c = solve_proposals(table, targets, small_cfg(iterations=100, seed=4))
    assert a.theta.tobytes() == b.theta.tobytes()
    assert not np.array_equal(a.theta, c.theta)


def test_fbnet_imagenet_proposals_meet_the_paper_targets_and_differ():
    table = resource_table(load_space("fbnet_imagenet"))
    props = solve_proposals(table, {"params": 4.8e6, "flops": 295e6}, ProposalConfig())
    assert props.theta.shape == (8, 22, 9)
    rep = compliance_report(props, table, n=10000, tau=0.1, seed=0)
    assert rep["all"]["within_5pct"] >= 0.9
    assert rep["diversity"]["distinct_architectures"] >= 6
    assert rep["diversity"]["mean_pairwise_overlap"] < 0.5
    loose = compliance_report(props, table, n=10000, tau=5.0, seed=0)
    assert loose["all"]["within_5pct"] < rep["all"]["within_5pct"]  # Fig. 3: τ sharpens


def test_stage2_subset_with_vital_layers_fixed():
    space = load_space("fbnet_cifar10")
    vital = space.vital_layers()
    table = resource_table(space, layers=space.nonvital_layers(), fixed={i: 7 for i in vital})
    assert table.table["params"].shape == (len(space.nonvital_layers()), 9)
    targets = random_arch_targets(table, seed=13)
    props = solve_proposals(table, targets, ProposalConfig(m=4))
    assert props.layers == space.nonvital_layers()
    assert compliance_report(props, table, n=2000, tau=0.1)["all"]["within_5pct"] >= 0.9


def test_report_sampling_matches_costs_and_diversity_counts():
    table = toy_table()
    props = solve_proposals(table, random_arch_targets(table, 14), small_cfg(iterations=50))
    rep = compliance_report(props, table, n=500, tau=1.0, seed=2)
    assert set(rep["objectives"]["params"]) >= {"mean", "p5", "p50", "p95", "within_2pct",
                                                "within_5pct"}
    assert len(rep["per_proposal_within_5pct"]) == 4
    best = props.argmax_choices()
    arrays = objective_arrays(table, props.targets)
    np.testing.assert_allclose(choice_costs(best, arrays)[:, 0],
                               [table.cost(np.eye(4)[c])["params"] for c in best])
    assert diversity(np.zeros((3, 5), int)) == {"mean_pairwise_overlap": 1.0,
                                                "distinct_architectures": 1}
    d = diversity(np.array([[0, 0, 0, 0], [0, 1, 1, 1]]))
    assert d == {"mean_pairwise_overlap": 0.25, "distinct_architectures": 2}


def test_proposals_save_and_load_without_pickle(tmp_path):
    table = toy_table()
    props = solve_proposals(table, random_arch_targets(table, 15), small_cfg(iterations=20))
    path = props.save(str(tmp_path / "p.npz"))
    with np.load(path, allow_pickle=False) as z:
        assert "theta" in z.files
    back = load_proposals(path)
    assert back.theta.tobytes() == props.theta.tobytes()
    assert back.targets == props.targets and back.layers == props.layers
    np.testing.assert_array_equal(back.history["loss"], props.history["loss"])
    with pytest.raises(HourNASError, match="cannot read proposals"):
        load_proposals(str(tmp_path / "missing.npz"))


def test_plot_writes_a_png(tmp_path):
    table = toy_table()
    props = solve_proposals(table, random_arch_targets(table, 16), small_cfg(iterations=50))
    path = plot_proposals(props, table, str(tmp_path / "fig3.png"), [1.0, 0.1], n=300)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- latency

TINY = {"name": "tiny_latency", "input_size": 8, "num_classes": 3, "stem": {"c": 4, "k": 3, "s": 1},
        "ops": ["k3_e1", "k3_e3", "skip"], "stages": [{"c": 8, "n": 2, "s": 2}], "head": 16}


def test_latency_table_measured_saved_and_used_as_an_objective(tmp_path):
    from src.latency import latency_table, load_latency_table
    space = space_from_dict(TINY)
    path, table = latency_table(space, cache_dir=str(tmp_path), warmup=1, repeats=2)
    assert path.endswith("tiny_latency_CPU.json")
    assert table.shape == (2, 3) and np.all(table > 0)
    data = json.load(open(path))
    assert data["space"] == "tiny_latency" and data["fixed_ms"] > 0
    rt = resource_table(space, extra_tables={"latency": table},
                        objectives=("params", "flops", "latency"))
    lo, hi = rt.bounds()["latency"]
    assert lo == pytest.approx(table.min(1).sum()) and hi == pytest.approx(table.max(1).sum())
    target = {"params": rt.cost(np.eye(3)[[1, 0]])["params"], "latency": (lo + hi) / 2}
    props = solve_proposals(rt, target, ProposalConfig(m=2, iterations=50))
    assert props.objectives == ("params", "latency")
    with pytest.raises(ResourceTargetError, match=r"target latency .* ms is above"):
        check_feasible(rt, {"latency": hi * 2})
    # a file for another space (same labels, other shapes) is refused
    other = space_from_dict({**TINY, "input_size": 16})
    with pytest.raises(HourNASError, match="does not match the layers and ops"):
        load_latency_table(path, other)


def test_a_proposal_that_misses_is_solved_again_with_the_others_fixed(monkeypatch):
    import src.proposal as proposal
    table = toy_table()
    targets = random_arch_targets(table, seed=17)
    cfg = small_cfg(iterations=200, resolve=1)
    first = solve_proposals(table, targets, dataclasses.replace(cfg, resolve=0))
    calls = []

    def fake_missing(theta, arrays, tolerance=0.05):
        calls.append(theta.copy())
        return np.array([True, False, False, False])

    monkeypatch.setattr(proposal, "missing_proposals", fake_missing)
    again = solve_proposals(table, targets, cfg)
    assert len(calls) == 1 and again.settings["resolved"] == [[0]]
    np.testing.assert_array_equal(again.theta[1:], first.theta[1:])
    assert not np.allclose(again.theta[0], first.theta[0])
    assert again.history["loss"].shape == (400,)
    # every proposal missing: the targets look unreachable, nothing is re-solved
    monkeypatch.setattr(proposal, "missing_proposals", lambda theta, arrays: np.ones(4, bool))
    assert solve_proposals(table, targets, cfg).settings["resolved"] == []
