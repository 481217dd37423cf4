"""Tests for src/cli.py (exit codes, one-line errors, JSON output) and src/context.py."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from src.cli import common_parser, emit_json, log, overrides_from_args, run_main
from src.config import load_config
from src.errors import HourNASError
from tests.e2e.helpers import HANG

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Data:
    path: str = "data"


@dataclass
class WithData:
    data: Data = field(default_factory=Data)
    output_dir: str = "out"
    tau: float = 1.0


@dataclass
class NoData:
    tau: float = 1.0


def test_parser_flags_and_repeatable_set():
    args = common_parser("x").parse_args(
        ["--config", "c.yaml", "--set", "a=1", "--set", "b.c=2", "--device_target", "gpu", "--json"])
    assert args.config == "c.yaml" and args.overrides == ["a=1", "b.c=2"]
    assert args.device_target == "GPU" and args.json and not args.debug


def test_bad_device_target_is_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        common_parser("x").parse_args(["--device_target", "TPU"])
    assert e.value.code == 2
    assert "unknown device target 'TPU'; valid: CPU, GPU, Ascend" in capsys.readouterr().err


def test_run_main_returns_exit_code_and_passes_args():
    seen = {}

    def main(args):
        seen["overrides"] = args.overrides
        return 3

    assert run_main(main, ["--set", "tau=2"]) == 3
    assert seen["overrides"] == ["tau=2"]
    assert run_main(lambda args: None, []) == 0


def test_hournas_error_one_line_exit_2_no_traceback(capsys):
    def main(args):
        load_config(NoData, overrides=["tua=3"])

    with pytest.raises(SystemExit) as e:
        run_main(main, [])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: unknown config key 'tua'; valid keys at the top level: tau "
                                "(did you mean 'tau'?) (in override 'tua=3')"]


def test_internal_error_exit_1_with_hint_and_debug_traceback(capsys):
    def main(args):
        raise ValueError("boom\nsecond line")

    with pytest.raises(SystemExit) as e:
        run_main(main, [])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: internal error: ValueError: boom (run with --debug for the traceback)\n"
    with pytest.raises(SystemExit) as e:
        run_main(main, ["--debug"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == "error: internal error: ValueError: boom"


def test_file_error_without_a_path_is_one_line_exit_2(capsys):
    """A full disk met by a write (an OSError with an errno but no file name) is a file error
    with what to do, not an internal error."""
    import errno

    def main(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SystemExit) as e:
        run_main(main, [])
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        "error: file operation failed on a file: No space left on device; the disk is full; "
        "free space or choose an --output_dir on another disk\n")


def test_keyboard_interrupt_exit_130(capsys):
    def main(args):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run_main(main, [])
    assert e.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_json_mode_logs_to_stderr_and_json_is_last_stdout_line(capsys):
    def main(args):
        log("step 1")
        emit_json({"acc": np.float32(0.5), "n": np.int64(3), "v": np.arange(2), "bad": float("nan")})
        return 0

    assert run_main(main, ["--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "step 1\n"
    assert json.loads(out.splitlines()[-1]) == {"acc": 0.5, "n": 3, "v": [0, 1], "bad": None}
    run_main(main, [])  # without --json the human lines go to stdout
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == "step 1"


def test_overrides_from_args_maps_only_existing_keys():
    args = common_parser().parse_args(["--data_path", "/d x", "--output_dir", "o", "--set", "tau=2"])
    overrides = overrides_from_args(args, WithData)
    cfg = load_config(WithData, overrides=overrides)
    assert (cfg.data.path, cfg.output_dir, cfg.tau) == ("/d x", "o", 2.0)
    assert overrides[-1] == "tau=2"  # --set comes last, so it wins
    with pytest.raises(HourNASError, match=r"--data_path does not apply to this command .*'data.path'"):
        overrides_from_args(args, NoData)
    assert overrides_from_args(common_parser().parse_args([]), NoData) == []


def test_usage_error_and_error_line_in_a_real_process(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent("""
        import sys
        from src.cli import run_main
        from src.errors import ConfigError
        def main(args):
            raise ConfigError("bad thing in 'x'; valid: a, b")
        sys.exit(run_main(main))
    """))
    env_cmd = [sys.executable, str(script)]
    r = subprocess.run(env_cmd, cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, timeout=HANG)
    assert (r.returncode, r.stderr, r.stdout) == (2, "error: bad thing in 'x'; valid: a, b\n", "")
    r = subprocess.run(env_cmd + ["--nope"], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT)}, timeout=HANG)
    assert r.returncode == 2 and "unrecognized arguments: --nope" in r.stderr


def test_context_setup_in_a_fresh_process():
    # A fresh process: device state is per process and other tests must not inherit it.
    code = textwrap.dedent("""
        import json, os
        os.environ.pop("ONEDNN_MAX_CPU_ISA", None)
        from src.context import setup_context, set_mode
        from src.errors import HourNASError
        out = {}
        for bad in ("TPU", "GPU", "Ascend"):
            try:
                setup_context(bad)
            except HourNASError as e:
                out[bad] = str(e)
        try:
            setup_context("CPU", distributed=True)
        except HourNASError as e:
            out["dist"] = str(e)
        out["first"] = setup_context("CPU", mode="pynative", threads=1)
        out["second"] = setup_context("cpu", mode="graph")
        import mindspore as ms
        out["mode"] = ms.get_context("mode")
        out["isa"] = os.environ.get("ONEDNN_MAX_CPU_ISA")
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=HANG)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["TPU"] == "unknown device target 'TPU'; valid: CPU, GPU, Ascend"
    import mindspore as ms
    from src.context import device_available
    if not device_available("GPU")[0]:
        assert out["GPU"].startswith("device target 'GPU' is not available here: ")
        assert out["GPU"].endswith("; use --device_target CPU")
    assert "not started by a launcher; start it with msrun" in out["dist"]
    assert out["first"] == {"device_target": "CPU", "device_id": None, "mode": "pynative", "rank": 0,
                            "group_size": 1, "threads": 1, "distributed": False}
    assert out["second"]["mode"] == "graph" and out["second"]["threads"] == 1
    assert out["mode"] == ms.GRAPH_MODE
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert out["isa"] == "AVX2"
