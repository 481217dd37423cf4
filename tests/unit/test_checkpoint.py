"""Tests for src/checkpoint.py: atomic writes, round trips, corrupt and mismatched files."""
from __future__ import annotations

import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.checkpoint import (atomic_write, atomic_write_bytes, atomic_write_text, load_checkpoint,
                            load_into, save_checkpoint)
from src.errors import CheckpointError, HourNASError


def small_net(channels: int = 16) -> nn.Cell:
    return nn.SequentialCell([nn.Conv2d(3, channels, 3), nn.BatchNorm2d(channels), nn.Dense(4, 5)])


def shapes(cell: nn.Cell) -> dict[str, tuple]:
    return {n: tuple(p.shape) for n, p in cell.parameters_dict().items()}


def test_atomic_write_keeps_old_file_when_writer_fails_midway(tmp_path):
    path = tmp_path / "state.bin"
    atomic_write_bytes(str(path), b"old contents")

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"new con")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(str(path), half_then_fail)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]  # temp file removed


def test_atomic_write_text_creates_directories_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "note.txt"
    atomic_write_text(str(path), "one")
    atomic_write_text(str(path), "two")
    assert path.read_text() == "two"
    assert oct(path.stat().st_mode & 0o600) == oct(0o600)


def test_atomic_write_unwritable_directory_names_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HourNASError, match=r"'.*file/sub'"):
        atomic_write_text(str(blocker / "sub" / "out.txt"), "data")


def test_save_load_round_trip_with_extra_types(tmp_path):
    net = small_net()
    rng = np.random.default_rng(123)
    rng.random(3)
    mt = np.random.Generator(np.random.MT19937(5))
    extra = {
        "epoch": 7, "lr": 0.125, "name": "stage1", "done": False, "none": None, "big": 2**100,
        "pair": (1, 2.5), "inf": float("inf"),
        "theta": np.arange(6, dtype=np.float32).reshape(2, 3),
        "rng": rng.bit_generator.state, "mt": mt.bit_generator.state,
        "history": [{"step": 1, "loss": np.float64(0.5)}, {"step": 2, "loss": 0.25}],
    }
    path = str(tmp_path / "s.ckpt")
    save_checkpoint(path, net, extra)
    params, got = load_checkpoint(path, expected=shapes(net))
    assert set(params) == set(shapes(net))
    for name, p in net.parameters_dict().items():
        np.testing.assert_array_equal(params[name].asnumpy(), p.asnumpy())
    for key in ("epoch", "lr", "name", "done", "none", "big", "pair", "inf", "history"):
        assert got[key] == extra[key] and type(got[key]) is type(extra[key]), key
    assert type(got["history"][0]["loss"]) is float
    assert got["theta"].dtype == np.float32 and got["theta"].shape == (2, 3)
    np.testing.assert_array_equal(got["theta"], extra["theta"])
    # the numpy RNG resumes bit-exactly from the restored state
    resumed = np.random.default_rng()
    resumed.bit_generator.state = got["rng"]
    np.testing.assert_array_equal(resumed.random(4), rng.random(4))
    resumed_mt = np.random.Generator(np.random.MT19937())
    resumed_mt.bit_generator.state = got["mt"]
    np.testing.assert_array_equal(resumed_mt.integers(0, 2**31, 4), mt.integers(0, 2**31, 4))
    assert sorted(os.listdir(tmp_path)) == ["s.ckpt"]


def test_save_from_dict_and_list_and_overwrite(tmp_path):
    path = str(tmp_path / "d.ckpt")
    save_checkpoint(path, {"w": np.ones((2, 2), np.float32), "b": ms.Tensor(np.zeros(3, np.float32))})
    params, extra = load_checkpoint(path, expected={"w": (2, 2), "b": (3,)})
    assert extra == {} and params["w"].asnumpy().sum() == 4
    net = small_net()
    save_checkpoint(path, list(net.get_parameters()), {"step": 1})
    params, extra = load_checkpoint(path)
    assert set(params) == set(shapes(net)) and extra == {"step": 1}


@pytest.mark.parametrize("cut", [0, 11, 0.5, -5])
def test_truncated_checkpoint_is_unreadable(tmp_path, cut):
    path = tmp_path / "t.ckpt"
    save_checkpoint(str(path), small_net(), {"step": 3})
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match=r"checkpoint '.*t.ckpt' is unreadable \(truncated or not a MindSpore"):
        load_checkpoint(str(path))


def test_checkpoint_cut_at_every_record_boundary_is_detected(tmp_path):
    # protobuf parses a file cut between records; the header/extra records catch it
    path = tmp_path / "t.ckpt"
    save_checkpoint(str(path), {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, {"k": 1})
    data = path.read_bytes()
    loaded = []
    for n in range(len(data)):
        path.write_bytes(data[:n])
        try:
            load_checkpoint(str(path))
            loaded.append(n)
        except CheckpointError:
            pass
    assert loaded == []


def test_missing_and_not_ckpt(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope.ckpt' does not exist"):
        load_checkpoint(str(tmp_path / "nope.ckpt"))
    (tmp_path / "notes.ckpt").write_text("hello, this is not a checkpoint")
    with pytest.raises(CheckpointError, match="is unreadable"):
        load_checkpoint(str(tmp_path / "notes.ckpt"))
    with pytest.raises(CheckpointError, match=r"must end with '.ckpt'"):
        save_checkpoint(str(tmp_path / "weights"), small_net())


def test_expected_shapes_mismatch_lists_names(tmp_path):
    path = str(tmp_path / "m.ckpt")
    save_checkpoint(path, small_net(16))
    expected = shapes(small_net(24))
    expected.pop("2.bias")
    expected["extra.weight"] = (1,)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, expected=expected)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint '{path}' does not fit this network: 1 missing (extra.weight)")
    assert "1 unexpected (2.bias)" in msg
    assert "5 with other shapes (0.weight: (16,3,3,3) vs (24,3,3,3), 1.moving_mean: (16,) vs (24,)" in msg
    assert "... 2 more" in msg


def test_load_into_checks_then_loads(tmp_path):
    src, dst = small_net(), small_net()
    for p in src.get_parameters():
        p.set_data(ms.Tensor(np.full(p.shape, 0.5, np.float32)))
    path = str(tmp_path / "w.ckpt")
    save_checkpoint(path, src)
    params, _ = load_checkpoint(path)
    load_into(dst, params)
    for name, p in dst.parameters_dict().items():
        np.testing.assert_array_equal(p.asnumpy(), src.parameters_dict()[name].asnumpy())
    with pytest.raises(CheckpointError, match=r"does not fit this network: .*0.weight: \(16,3,3,3\) vs \(8,3,3,3\)"):
        load_into(small_net(8), params)


def test_extra_rejects_unsupported_values(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint extra 'extra.f' has type function"):
        save_checkpoint(str(tmp_path / "x.ckpt"), small_net(), {"f": lambda: 0})
    with pytest.raises(CheckpointError, match="keys must be strings"):
        save_checkpoint(str(tmp_path / "x.ckpt"), small_net(), {"d": {1: 2}})
    assert not (tmp_path / "x.ckpt").exists()
