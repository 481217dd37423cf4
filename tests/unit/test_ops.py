"""Blocks as Cells: output shapes in graph mode, residual and shuffle semantics."""
import numpy as np
import pytest
import mindspore as ms
import mindspore.nn as nn

from src.context import setup_context
from src.ops import Block, ChannelShuffle
from src.space.blockstr import parse_op
from src.space.plan import Conventions, plan_layer

CASES = [  # op, c_in, c_out, stride
    ("k3_e6", 8, 16, 2), ("k5_e1_g2", 8, 8, 1), ("k3_e3_se0.25", 8, 8, 1), ("ds_k3", 8, 12, 1),
    ("skip", 8, 8, 1), ("skip", 8, 16, 2), ("k7_e6_se0.05", 16, 16, 1), ("k3_e1", 16, 24, 1),
]


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    setup_context("CPU", mode="graph")


def test_block_shapes_in_graph_mode():
    h, conv = 16, Conventions(se_base="mid", activation="swish")
    plans = [plan_layer(parse_op(op), cin, cout, s, h, conv) for op, cin, cout, s in CASES]

    class Probe(nn.Cell):  # one graph for all blocks: one compile
        def __init__(self):
            super().__init__()
            self.blocks = nn.CellList([Block(p) for p in plans])

        def construct(self, x8, x16):
            return tuple(b(x8 if p.c_in == 8 else x16) for b, p in zip(self.blocks, plans))

    probe = Probe()
    probe.set_train(False)
    x8 = ms.Tensor(np.random.randn(2, 8, h, h).astype(np.float32))
    x16 = ms.Tensor(np.random.randn(2, 16, h, h).astype(np.float32))
    outs = probe(x8, x16)
    for out, p in zip(outs, plans):
        assert out.shape == (2, p.c_out, p.h_out, p.h_out), p.op.name
    # The identity skip returns its input unchanged.
    assert np.array_equal(outs[4].asnumpy(), x8.asnumpy())


def test_residual_only_where_shape_allows():
    conv = Conventions()
    assert plan_layer(parse_op("k3_e6"), 8, 8, 1, 8, conv).residual
    assert not plan_layer(parse_op("k3_e6"), 8, 16, 1, 8, conv).residual
    assert not plan_layer(parse_op("k3_e6"), 8, 8, 2, 8, conv).residual
    assert not plan_layer(parse_op("k3_e6_noskip"), 8, 8, 1, 8, conv).residual


def test_expansion_convention_is_data():
    op = parse_op("k3_e1")
    assert plan_layer(op, 16, 16, 1, 8, Conventions(expand_at_e1=True)).expand is not None
    assert plan_layer(op, 16, 16, 1, 8, Conventions(expand_at_e1=False)).expand is None


def test_se_width_rules():
    op = parse_op("k3_e6_se0.25")
    assert plan_layer(op, 16, 16, 1, 8, Conventions(se_base="in")).se.reduced == 4
    op = parse_op("k3_e6_se0.05")
    assert plan_layer(op, 16, 16, 1, 8, Conventions(se_base="mid")).se.reduced == 4  # int(96*.05)
    assert plan_layer(parse_op("k3_e1_se0.05"), 16, 16, 1, 8,
                      Conventions(se_base="mid")).se.reduced == 1  # max(1, int(0.8))


def test_channel_shuffle_interleaves():
    x = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1)
    y = ChannelShuffle(2)(ms.Tensor(x)).asnumpy().ravel()
    assert list(y) == [0, 2, 1, 3]
