import pytest

from src.errors import HourNASError
from src.space.space import (arch_from_dict, available_spaces, load_arch, load_space,
                             space_from_dict)

EXPECTED = {  # number of architectures, searchable layers, candidate ops (the papers' figures)
    "fbnet": (9 ** 22, 22, 9),
    "efbnet": (10 ** 22, 22, 10),
    "mnasnet": (13 ** 21, 21, 13),
    "efficientnet": (7 ** 22, 22, 7),
}


def test_all_spaces_present():
    # every paper space in its ImageNet and CIFAR layout, and the FBNet layout for Fashion-MNIST
    # (one input channel, stride-2 stem; docs/results.md)
    paper = {f"{f}_{v}" for f in EXPECTED for v in ("imagenet", "cifar10")}
    assert set(available_spaces()) == paper | {"fbnet_fashion_mnist"}


@pytest.mark.parametrize("name", sorted(available_spaces()))
def test_space_sizes(name):
    space = load_space(name)
    total, layers, ops = EXPECTED[name.split("_")[0]]
    assert space.num_architectures == total
    assert len(space.searchable) == layers
    assert all(len(space.layers[i].ops) == ops for i in space.searchable)


def test_paper_magnitudes():
    assert f"{load_space('fbnet_imagenet').num_architectures:.0e}" == "1e+21"
    assert f"{load_space('efbnet_imagenet').num_architectures:.0e}" == "1e+22"
    assert f"{load_space('mnasnet_imagenet').num_architectures:.1e}" == "2.5e+23"
    assert f"{load_space('efficientnet_imagenet').num_architectures:.0e}" == "4e+18"


def test_vital_layers_fbnet():
    space = load_space("fbnet_imagenet")
    labels = [space.layers[i].label for i in space.vital_layers()]
    # First layer of each stage that changes resolution or channels (L14: 64 -> 112, stride 1).
    assert labels == ["L2", "L6", "L10", "L14", "L18", "L22"]
    assert len(space.nonvital_layers()) == 16


def test_vital_follows_structure_not_names():
    data = {"name": "t", "input_size": 32, "num_classes": 10, "stem": {"c": 8, "s": 1},
            "ops": ["k3_e1", "skip"],
            "stages": [{"c": 8, "n": 2, "s": 1}, {"c": 8, "n": 1, "s": 2},
                       {"c": 16, "n": 2, "s": 1}]}
    space = space_from_dict(data)
    assert space.vital == [False, False, True, True, False]
    # A layer whose every candidate refuses the shortcut is on every path.
    data["stages"][0]["ops"] = ["k3_e1_noskip"]
    data["stages"][0]["n"] = 1
    assert space_from_dict(data).vital[0] is True


def test_mnasnet_fixed_first_block():
    space = load_space("mnasnet_imagenet")
    first = space.layers[0]
    assert not first.searchable and first.label == "F1" and space.vital[0]
    assert space.layers[1].label == "L1"


def test_cifar_downsamples_by_four():
    for name in available_spaces():
        if name.endswith("cifar10"):
            space = load_space(name)
            arch = space.arch([0] * len(space.searchable))
            assert arch.net_plan().head.h_out == 8, name


def test_space_rejects_unknown_keys_and_ops():
    data = {"name": "t", "input_size": 32, "num_classes": 10, "stem": 8, "ops": ["k3_e1"],
            "stages": [{"c": 8, "n": 1, "s": 1}], "colour": "red"}
    with pytest.raises(HourNASError, match="unknown key 'colour'"):
        space_from_dict(data)
    del data["colour"]
    data["ops"] = ["k4_e1"]
    with pytest.raises(HourNASError, match="kernel size must be odd"):
        space_from_dict(data)
    with pytest.raises(HourNASError, match="unknown space 'nope'; valid: efbnet_cifar10"):
        load_space("nope")


def test_arch_choices_and_round_trip():
    space = load_space("fbnet_cifar10")
    arch = space.arch(["k5_e6"] * 22, name="x")
    assert space.choices_of(arch) == [space.op_index(0, "k5_e6")] * 22
    again = arch_from_dict(arch.to_dict())
    assert again.to_dict() == arch.to_dict()
    assert again.vital == arch.vital
    with pytest.raises(HourNASError, match="not a candidate of layer L1"):
        space.arch(["k7_e6"] * 22)
    with pytest.raises(HourNASError, match="22 searchable"):
        space.arch(["k3_e1"] * 5)


def test_block_strings_group_repeats():
    arch = load_arch("config/arch/mobilenet_v2.yaml")
    assert arch.block_strings() == ["ds_r1_k3_s1_c16", "ir_r2_k3_s2_e6_c24", "ir_r3_k3_s2_e6_c32",
                                    "ir_r4_k3_s2_e6_c64", "ir_r3_k3_s1_e6_c96",
                                    "ir_r3_k3_s2_e6_c160", "ir_r1_k3_s1_e6_c320"]
    assert len(arch.layers) == 17


def test_missing_arch_file():
    with pytest.raises(HourNASError, match="architecture file not found: 'nope.yaml'.*fbnet_a"):
        load_arch("nope.yaml")


def test_reference_arch_files_are_up_to_date():
    """config/arch/*.yaml are what tools/make_reference_archs.py writes from the definitions."""
    import importlib.util
    import os
    spec = importlib.util.spec_from_file_location("make_ref", "tools/make_reference_archs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, (arch, desc) in mod.reference_archs().items():
        with open(os.path.join("config", "arch", f"{name}.yaml"), encoding="utf-8") as f:
            assert f.read() == mod.render(arch, desc), name
