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
