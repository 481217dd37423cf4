"""The counter against the literature and against the real Cells."""
import zlib

import numpy as np
import pytest

from src.childnet import ChildNet, trainable_size
from src.resource import count, profile, resource_table
from src.space.space import available_spaces, load_arch, load_space

# Published figures (params, FLOPs as multiply-adds), as rounded in the papers.
PUBLISHED = {
    "mobilenet_v2": ((3.4e6, 3.55e6), 300e6),
    "efficientnet_b0": ((5.25e6, 5.35e6), 390e6),
    "mnasnet_a1": ((3.85e6, 3.95e6), 312e6),
    "fbnet_a": ((4.25e6, 4.35e6), 249e6),
    "hournas_f": ((5.25e6, 5.35e6), 383e6),
}
# Exact counts of the public reference definitions (torchvision / timm builders).
EXACT_PARAMS = {"mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548, "mnasnet_a1": 3_887_038}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_counts_match_literature(name):
    c = count(load_arch(f"config/arch/{name}.yaml"))
    (lo, hi), flops = PUBLISHED[name]
    assert lo <= c["params"] <= hi, c
    # FLOPs within 1% of the published figure (EfficientNet-B0's exact count is a little under).
    tol = 0.02 if name == "efficientnet_b0" else 0.01
    assert abs(c["flops"] - flops) / flops < tol, c
    if name in EXACT_PARAMS:
        assert c["params"] == EXACT_PARAMS[name]


@pytest.mark.parametrize("name", ["fbnet_a", "fbnet_b", "fbnet_c", "mobilenet_v2", "efficientnet_b0",
                                  "mnasnet_a1", "hournas_f_c10", "hournas_f"])
def test_counter_equals_cell(name):
    arch = load_arch(f"config/arch/{name}.yaml")
    assert trainable_size(ChildNet(arch)) == count(arch)["params"]


@pytest.mark.parametrize("space_name", sorted(available_spaces()))
def test_counter_equals_cell_random_archs(space_name):
    space = load_space(space_name)
    rng = np.random.default_rng(zlib.crc32(space_name.encode()))  # replayable (hash() is salted)
    for _ in range(2):
        choices = [int(rng.integers(len(space.layers[i].ops))) for i in space.searchable]
        arch = space.arch(choices)
        assert trainable_size(ChildNet(arch)) == count(arch)["params"]


def test_profile_rows_sum_and_mark_vital():
    arch = load_arch("config/arch/fbnet_a.yaml")
    rows = profile(arch)
    assert [r.name for r in rows[:2]] == ["stem", "L1"] and rows[-1].name == "classifier"
    assert sum(r.flops for r in rows) == count(arch)["flops"]
    vital = [r.name for r in rows if r.vital]
    assert vital == ["stem", "L2", "L6", "L10", "L14", "L18", "L22", "head", "classifier"]


def test_table_cost_equals_count():
    space = load_space("fbnet_imagenet")
    table = resource_table(space)
    rng = np.random.default_rng(0)
    choices = rng.integers(9, size=22)
    onehot = np.eye(9)[choices]
    got = table.cost(onehot)
    want = count(space.arch([int(c) for c in choices]))
    assert got == {k: float(v) for k, v in want.items()}


def test_table_with_fixed_vital_layers():
    space = load_space("fbnet_cifar10")
    vital, nonvital = space.vital_layers(), space.nonvital_layers()
    fixed = {i: 3 for i in vital}
    table = resource_table(space, layers=nonvital, fixed=fixed)
    assert table.table["flops"].shape == (16, 9)
    choices = [3 if i in fixed else 0 for i in space.searchable]
    want = count(space.arch(choices))
    got = table.cost(np.eye(9)[[0] * 16])
    assert got == {k: float(v) for k, v in want.items()}
    lo, hi = table.bounds()["params"]
    assert lo < want["params"] <= hi
