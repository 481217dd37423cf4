"""Writes config/arch/*.yaml, the reference networks, from their published definitions.

Run from the repository root: ``python tools/make_reference_archs.py``. The files are committed;
tests check that they are up to date and that their counts match the literature.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.checkpoint import atomic_write_text  # noqa: E402
from src.space.space import CONFIG_DIR, Arch, arch_from_dict, arch_to_yaml, load_space  # noqa: E402

FBNET = {
    "fbnet_a": ("skip k3_e3 k3_e1 skip skip k5_e6 k3_e3 k5_e1 k3_e3 k5_e6 k5_e3 k5_e1_g2 k5_e6 "
                "k3_e6 k5_e1_g2 k5_e3 k3_e1_g2 k5_e6 k5_e6 k5_e3 k5_e6 k5_e6", 1504),
    "fbnet_b": ("k3_e1 k3_e6 k5_e1 k3_e1 k3_e1 k5_e6 k5_e3 k3_e6 k5_e6 k5_e6 k5_e6 skip k5_e3 "
                "k5_e6 k3_e1 k5_e1 k5_e3 k5_e6 k5_e1 k5_e6 k5_e6 k3_e6", 1984),
    "fbnet_c": ("k3_e1 k3_e6 skip k3_e1 k3_e1 k5_e6 k5_e3 k5_e6 k3_e6 k5_e6 k5_e3 k5_e6 k5_e6 "
                "k5_e6 k5_e6 k5_e6 k5_e3 k5_e6 k5_e6 k5_e6 k5_e6 k3_e6", 1984),
}
HOURNAS_F = ("k3_e1 k5_e6 k5_e1 k5_e1 k3_e1 k5_e6 k5_e1 k3_e1 k5_e1 k5_e6 k3_e6 k3_e6 k3_e6 k5_e6 "
             "k5_e3 k5_e3 k5_e3 k5_e6 k5_e6 k3_e6 k5_e6 k5_e6")

# Whole-net block strings (timm / model-zoo style) for the nets outside our spaces.
BLOCKS = {
    "mobilenet_v2": dict(
        description="MobileNetV2 1.0 (Sandler et al. 2018); published 3.4M / 300M / 72.0%",
        conventions={"expand_at_e1": False, "se_base": "in", "se_bias": False,
                     "activation": "relu6"},
        stem={"c": 32, "k": 3, "s": 2}, head=1280, dropout=0.2,
        blocks=["ds_r1_k3_s1_c16", "ir_r2_k3_s2_e6_c24", "ir_r3_k3_s2_e6_c32",
                "ir_r4_k3_s2_e6_c64", "ir_r3_k3_s1_e6_c96", "ir_r3_k3_s2_e6_c160",
                "ir_r1_k3_s1_e6_c320"]),
    "efficientnet_b0": dict(
        description="EfficientNet-B0 (Tan & Le 2019); published 5.3M / 390M / 76.8%",
        conventions={"expand_at_e1": False, "se_base": "in", "se_bias": True,
                     "activation": "swish"},
        stem={"c": 32, "k": 3, "s": 2}, head=1280, dropout=0.2,
        blocks=["ds_r1_k3_s1_c16_se0.25", "ir_r2_k3_s2_e6_c24_se0.25",
                "ir_r2_k5_s2_e6_c40_se0.25", "ir_r3_k3_s2_e6_c80_se0.25",
                "ir_r3_k5_s1_e6_c112_se0.25", "ir_r4_k5_s2_e6_c192_se0.25",
                "ir_r1_k3_s1_e6_c320_se0.25"]),
    "mnasnet_a1": dict(
        description="MnasNet-A1 (Tan et al. 2019); published 3.9M / 312M / 75.2%",
        conventions={"expand_at_e1": False, "se_base": "in", "se_bias": True,
                     "activation": "relu"},
        stem={"c": 32, "k": 3, "s": 2}, head=1280, dropout=0.2,
        blocks=["ds_r1_k3_s1_c16_noskip", "ir_r2_k3_s2_e6_c24", "ir_r3_k5_s2_e3_c40_se0.25",
                "ir_r4_k3_s2_e6_c80", "ir_r2_k3_s1_e6_c112_se0.25", "ir_r3_k5_s2_e6_c160_se0.25",
                "ir_r1_k3_s1_e6_c320"]),
}


def reference_archs() -> dict[str, tuple[Arch, str]]:
    """name -> (architecture, description)."""
    out = {}
    space = load_space("fbnet_imagenet")
    for name, (ops, head) in FBNET.items():
        arch = space.arch(ops.split(), name=name)
        arch.head = head
        out[name] = (arch, f"{name.replace('_', '-').upper().replace('FBNET', 'FBNet')} "
                           "(Wu et al. 2019) in FBNetSS, original-builder conventions")
    for name, spec in BLOCKS.items():
        spec = dict(spec)
        desc = spec.pop("description")
        out[name] = (arch_from_dict(dict(name=name, input_size=224, num_classes=1000, **spec)),
                     desc)
    c10 = load_space("efficientnet_cifar10")
    out["hournas_f_c10"] = (c10.arch([f"{o}_se0.05" for o in HOURNAS_F.split()],
                                     name="hournas_f_c10"),
                            "HourNAS-F on CIFAR-10: the MindSpore model zoo's net (96.18% top-1 "
                            "reported), model-zoo builder conventions, ReLU")
    out["hournas_f_c10"][0].conventions = type(c10.conventions)(
        **{**c10.conventions.__dict__, "activation": "relu"})
    in1k = load_space("efficientnet_imagenet")
    out["hournas_f"] = (in1k.arch([f"{o}_se0.05" for o in HOURNAS_F.split()], name="hournas_f"),
                        "HourNAS-EfficientNetSS-F (ImageNet); published 5.3M / 383M / 77.0%")
    return out


def render(arch: Arch, description: str) -> str:
    return f"# {description}\n" + arch_to_yaml(arch)


def main() -> None:
    for name, (arch, desc) in reference_archs().items():
        atomic_write_text(os.path.join(CONFIG_DIR, "arch", f"{name}.yaml"), render(arch, desc))
        print(f"wrote config/arch/{name}.yaml")


if __name__ == "__main__":
    main()
