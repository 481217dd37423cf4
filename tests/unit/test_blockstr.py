import pytest

from src.errors import HourNASError
from src.space.blockstr import Block, Op, format_block, format_op, parse_block, parse_op

OPS = ["k3_e1", "k3_e1_g2", "k5_e6", "k7_e3_se0.25", "k3_e6_se0.05", "skip", "ds_k3",
       "ds_k3_se0.25", "ds_k3_noskip", "k3_e1.5", "k5_e6_noskip"]
BLOCKS = ["ir_r2_k3_s2_e6_c24_se0.25", "ds_r1_k3_s1_c16_noskip", "skip_r1_s1_c24",
          "ir_r4_k5_s2_e6_c192_se0.25", "ir_r1_k3_s1_e1_c16_g2", "ds_r1_k3_s1_c16_se0.25"]


@pytest.mark.parametrize("s", OPS)
def test_op_round_trip(s):
    assert format_op(parse_op(s)) == s


@pytest.mark.parametrize("s", BLOCKS)
def test_block_round_trip(s):
    assert format_block(parse_block(s)) == s


def test_parse_values():
    op = parse_op("k5_e1_g2")
    assert op == Op(kind="ir", k=5, e=1, g=2)
    b = parse_block("ir_r2_k3_s2_e6_c24_se0.25")
    assert b == Block(op=Op(kind="ir", k=3, e=6, se=0.25), c=24, s=2, r=2)
    assert parse_op("skip").is_skip


@pytest.mark.parametrize("bad", ["k4_e6", "k3_e6_x1", "k3_e6_k3", "e6_k3", "k3", "kx_e6",
                                 "k3_e0", "skip_k3", "ds_k3_e6", "k3_e6_se", "", "k03_e6",
                                 "k3_e6_noskip2", "k3__e6"])
def test_op_rejects(bad):
    with pytest.raises(HourNASError):
        parse_op(bad)


@pytest.mark.parametrize("bad", ["r2_k3_s2_e6_c24", "ir_k3_s2_e6_c24", "ir_r2_k3_s2_e6",
                                 "ir_r2_k3_e6_c24", "xx_r1_k3_s1_e1_c16", "ir_r1_k3_s1_e6_c24_q"])
def test_block_rejects(bad):
    with pytest.raises(HourNASError):
        parse_block(bad)


def test_unknown_token_message_lists_valid():
    with pytest.raises(HourNASError, match=r"unknown token 'x1' in 'k3_e6_x1'; valid tokens"):
        parse_op("k3_e6_x1")


# ----------------------------------------------------------------------------- timm

@pytest.mark.parametrize("text,expect", [
    ("er_r1_k3_s1_e6_c24", "block type 'er' (timm's edge residual) is not supported in "
                           "'er_r1_k3_s1_e6_c24'; supported: ir, ds, skip"),
    ("cn_r1_k1_s1_c16", "block type 'cn' (timm's conv-BN-act) is not supported"),
    ("uir_r1_k3_s1_e4_c32", "block type 'uir'"),
    ("ir_r1_k3_s1_e6_c24_cc4", "token 'cc4' (timm's CondConv experts) is not supported"),
    ("ir_r1_k3_s1_e6_c24_skip", "token 'skip' (timm's force-skip flag) is not supported"),
    ("ir_r1_k3_s1_e6_c24_nsw", "token 'nsw' (timm's per-block activation) is not supported"),
    ("ir_r1_k3.5.7_s1_e6_c24", "token 'k3.5.7' (timm's mixed kernel sizes (MixNet))"),
    ("ir_r1_k3_s1_e6_c24_gs8", "token 'gs8' (timm's group size)"),
])
def test_timm_tokens_we_lack_are_refused_by_name(text, expect):
    with pytest.raises(HourNASError) as e:
        parse_block(text)
    assert expect in str(e.value)


# timm's own definitions (timm/models/efficientnet.py, _gen_*), with its optional '_e1' of
# 'ds' blocks left out (ds has no expansion)
TIMM_DEFS = {
    "fbnet_c": [["ir_r1_k3_s1_e1_c16"], ["ir_r1_k3_s2_e6_c24", "ir_r2_k3_s1_e1_c24"],
                ["ir_r1_k5_s2_e6_c32", "ir_r1_k5_s1_e3_c32", "ir_r1_k5_s1_e6_c32",
                 "ir_r1_k3_s1_e6_c32"],
                ["ir_r1_k5_s2_e6_c64", "ir_r1_k5_s1_e3_c64", "ir_r2_k5_s1_e6_c64"],
                ["ir_r3_k5_s1_e6_c112", "ir_r1_k5_s1_e3_c112"], ["ir_r4_k5_s2_e6_c184"],
                ["ir_r1_k3_s1_e6_c352"]],
    "efficientnet_b0": [["ds_r1_k3_s1_c16_se0.25"], ["ir_r2_k3_s2_e6_c24_se0.25"],
                        ["ir_r2_k5_s2_e6_c40_se0.25"], ["ir_r3_k3_s2_e6_c80_se0.25"],
                        ["ir_r3_k5_s1_e6_c112_se0.25"], ["ir_r4_k5_s2_e6_c192_se0.25"],
                        ["ir_r1_k3_s1_e6_c320_se0.25"]],
    "mnasnet_a1": [["ds_r1_k3_s1_c16_noskip"], ["ir_r2_k3_s2_e6_c24"],
                   ["ir_r3_k5_s2_e3_c40_se0.25"], ["ir_r4_k3_s2_e6_c80"],
                   ["ir_r2_k3_s1_e6_c112_se0.25"], ["ir_r3_k5_s2_e6_c160_se0.25"],
                   ["ir_r1_k3_s1_e6_c320"]],
    "mobilenet_v2": [["ds_r1_k3_s1_c16"], ["ir_r2_k3_s2_e6_c24"], ["ir_r3_k3_s2_e6_c32"],
                     ["ir_r4_k3_s2_e6_c64"], ["ir_r3_k3_s1_e6_c96"], ["ir_r3_k3_s2_e6_c160"],
                     ["ir_r1_k3_s1_e6_c320"]],
}


@pytest.mark.parametrize("name", sorted(TIMM_DEFS))
def test_timm_export_of_reference_nets_is_timms_own_definition(name):
    from src.space.blockstr import timm_arch_def
    from src.space.space import load_arch
    arch = load_arch(name)
    out = timm_arch_def(arch)
    assert out["arch_def"] == TIMM_DEFS[name]
    assert out["kwargs"]["stem_size"] == arch.stem.c and out["kwargs"]["num_features"] == arch.head
    assert out["dropped_identity_layers"] == (["L3"] if name == "fbnet_c" else [])


def test_timm_export_writes_a_projection_skip_as_timm_does():
    from src.space.blockstr import timm_arch_def
    from src.space.space import arch_from_dict
    arch = arch_from_dict({"name": "p", "input_size": 64, "num_classes": 10,
                           "stem": {"c": 16, "k": 3, "s": 2}, "head": 64,
                           "blocks": ["skip_r1_s2_c24", "skip_r1_s1_c24", "ir_r1_k3_s1_e6_c24",
                                      "ir_r1_k3_s1_e6_c24"]})
    out = timm_arch_def(arch)
    # 1x1 conv-BN-act (stride 2, 16 -> 24), the identity dropped, equal blocks merged
    assert out["arch_def"] == [["cn_r1_k1_s2_c24", "ir_r2_k3_s1_e6_c24"]]
    assert out["dropped_identity_layers"] == ["L2"]


@pytest.mark.parametrize("name,expect", [
    ("fbnet_a", ["grouped 1x1 convs with channel shuffle (_g2)", "L12 'k5_e1_g2'"]),
    ("hournas_f", ["squeeze-and-excitation without bias"]),
    ("hournas_f_c10", ["k3 stride-1 stem", "squeeze-and-excitation without bias"]),
])
def test_timm_export_refuses_what_timm_cannot_express(name, expect):
    from src.space.blockstr import timm_arch_def
    from src.space.space import load_arch
    with pytest.raises(HourNASError) as e:
        timm_arch_def(load_arch(name))
    assert str(e.value).startswith(f"'{name}' cannot be written for timm: ")
    for text in expect:
        assert text in str(e.value)


def test_timm_export_refuses_channels_timm_would_round():
    from src.space.blockstr import timm_arch_def, timm_divisible
    from src.space.space import arch_from_dict
    assert [timm_divisible(v) for v in (8, 12, 16, 20, 24, 36, 1984)] == [8, 16, 16, 24, 24, 40, 1984]
    arch = arch_from_dict({"name": "w", "input_size": 64, "num_classes": 10,
                           "stem": {"c": 16, "k": 3, "s": 2}, "head": 64,
                           "blocks": ["ir_r1_k3_s2_e3_c12"]})
    with pytest.raises(HourNASError, match=r"12 output channels \(timm's builder rounds block "
                                           r"channels to multiples of 8: 16\)"):
        timm_arch_def(arch)
