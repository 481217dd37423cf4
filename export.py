"""Export a trained checkpoint to MINDIR (dynamic batch) and/or ONNX (fixed batch), then check it.

    python export.py --ckpt runs/train/fbnet_b_best.ckpt                       # MINDIR
    python export.py --ckpt CKPT --file_format both --batch_size 8 --output_dir export/

MINDIR is written with a dynamic batch dimension (None); ONNX needs a fixed batch (MindSpore 2.10
fails to export BatchNorm with a dynamic one). After writing, the MINDIR is loaded back
(ms.load + nn.GraphCell) and run on a random batch of --batch_size and of --batch_size + 1; its
outputs must match the checkpointed network within --tolerance (max abs difference printed).
The ONNX file is checked the same way when onnxruntime is installed. Each file is exported and
checked in a fresh temporary folder (MindSpore's exporters accept only plain ASCII paths:
letters, digits and @_-.:/\\), then moved into place atomically, so --output_dir may be any
folder ("my run", "实验") and a file that fails its check is never written:
{arch}.mindir and {arch}_b{N}.onnx in --output_dir (default: the checkpoint's folder).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from src.interrupt import exit_on_interrupt, on_interrupt  # noqa: E402

exit_on_interrupt()  # before the heavy imports: Ctrl-C while they load is one line

from src.cli import common_parser, emit_json, log, run_main  # noqa: E402
from src.errors import HourNASError  # noqa: E402

class ExportMismatchError(HourNASError):
    """An exported model computes something else than the checkpointed network."""


def parser():
    p = common_parser(__doc__)
    p.add_argument("--ckpt", metavar="PATH", required=True, help="training checkpoint (.ckpt)")
    p.add_argument("--arch", metavar="FILE", help="architecture YAML (default: the checkpoint's)")
    p.add_argument("--file_format", default="MINDIR", type=str.upper,
                   choices=("MINDIR", "ONNX", "BOTH"), help="MINDIR (default), ONNX or both")
    p.add_argument("--batch_size", type=int, default=1, metavar="N",
                   help="batch of the ONNX model and of the check (default 1)")
    p.add_argument("--tolerance", type=float, default=1e-4, metavar="T",
                   help="largest allowed |exported - network| output difference (default 1e-4)")
    return p


# the file names ms.export and mindspore.onnx.export accept (MindSpore 2.10)
_MS_PATH = re.compile(r"^[0-9a-zA-Z@_\-.:/\\]+$")


def ms_accepts_path(path: str) -> bool:
    """Whether MindSpore's exporters accept ``path`` (checked as an absolute path)."""
    return bool(_MS_PATH.match(os.path.abspath(path)))


def staging_dir() -> str:
    """A new empty temporary folder whose path MindSpore's exporters accept (the caller
    removes it). The system temp folder ($TMPDIR) first, then /tmp, /var/tmp, /dev/shm."""
    tried = []
    for base in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        if base in tried:
            continue
        tried.append(base)
        if os.path.isdir(base) and ms_accepts_path(os.path.join(base, "hournas_export_x")):
            try:
                return tempfile.mkdtemp(prefix="hournas_export_", dir=base)
            except OSError:
                continue
    raise HourNASError(f"no writable temporary folder with a plain ASCII path for MindSpore's "
                       f"exporter (tried {', '.join(tried)}); set TMPDIR to such a folder")


def place(src: str, dst: str) -> str:
    """Move the finished file ``src`` to ``dst`` atomically (copied next to ``dst``, then
    renamed over it): ``dst`` is either the old file or the complete new one."""
    from src.checkpoint import atomic_write

    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _check(name: str, got, want, tol: float) -> float:
    import numpy as np

    if got.shape != want.shape:
        raise ExportMismatchError(f"{name}: output shape {got.shape}, the network gives {want.shape}")
    diff = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())
    if not diff <= tol:
        raise ExportMismatchError(f"{name}: outputs differ from the checkpointed network by up to "
                                  f"{diff:.3g} (tolerance {tol:g})")
    return diff


def _check_args(args) -> str:
    """The flags' checks; returns the output folder (default: the checkpoint's)."""
    from src.checkpoint import check_output_dir

    if args.batch_size < 1:
        raise HourNASError(f"--batch_size must be >= 1, got {args.batch_size}")
    if not (args.tolerance >= 0 and math.isfinite(args.tolerance)):
        raise HourNASError(f"--tolerance must be a number >= 0 (the largest allowed output "
                           f"difference), got {args.tolerance:g}")
    for flag in ("config", "data_path"):
        if getattr(args, flag):
            raise HourNASError(f"--{flag} does not apply to export.py")
    if args.overrides:
        raise HourNASError("--set does not apply to export.py")
    out_dir = args.output_dir or os.path.dirname(os.path.abspath(args.ckpt))
    return check_output_dir(out_dir)


def export_mindir(net, arch, batches: dict, want: dict, stage: str, out_dir: str,
                  tol: float) -> dict:
    """{arch}.mindir with a dynamic batch, reloaded (ms.load + nn.GraphCell) and checked
    against the network at two batch sizes before it is placed in ``out_dir``."""
    import mindspore as ms
    import mindspore.nn as nn

    c, s = arch.in_channels, arch.input_size
    path = os.path.join(out_dir, f"{arch.name}.mindir")
    tmp = os.path.join(stage, "model.mindir")
    ms.export(net, ms.Tensor(shape=[None, c, s, s], dtype=ms.float32), file_name=tmp,
              file_format="MINDIR")
    graph = nn.GraphCell(ms.load(tmp))
    diffs = [_check(f"MINDIR '{path}' at batch {b}", graph(ms.Tensor(x)).asnumpy(), want[b], tol)
             for b, x in batches.items()]
    place(tmp, path)
    sizes = sorted(batches)
    log(f"wrote {path} (input [None, {c}, {s}, {s}]); reloaded with ms.load + nn.GraphCell: "
        f"max abs diff {max(diffs):.3g} at batches {sizes[0]} and {sizes[-1]} (tolerance {tol:g})")
    return {"path": path, "max_abs_diff": max(diffs), "batch": None}


def export_onnx(net, arch, n: int, batches: dict, want: dict, stage: str, out_dir: str,
                tol: float) -> dict:
    """{arch}_b{n}.onnx at batch ``n``, checked with onnxruntime when it is installed."""
    import numpy as np

    import mindspore as ms
    import mindspore.onnx

    c, s = arch.in_channels, arch.input_size
    path = os.path.join(out_dir, f"{arch.name}_b{n}.onnx")
    tmp = os.path.join(stage, "model.onnx")
    mindspore.onnx.export(net, ms.Tensor(np.zeros((n, c, s, s), np.float32)), file_name=tmp,
                          input_names=["image"], output_names=["logits"])
    entry = {"path": path, "batch": n, "max_abs_diff": None}
    try:
        import onnxruntime
    except ImportError:
        place(tmp, path)
        log(f"wrote {path} (input [{n}, {c}, {s}, {s}]); not run: onnxruntime is not installed "
            f"(pip install onnxruntime to check it)")
        return entry
    sess = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: batches[n]})[0]
    entry["max_abs_diff"] = _check(f"ONNX '{path}'", got, want[n], tol)
    place(tmp, path)
    log(f"wrote {path} (input [{n}, {c}, {s}, {s}]); onnxruntime max abs diff "
        f"{entry['max_abs_diff']:.3g}")
    return entry


def main(args) -> int:
    import numpy as np

    import mindspore as ms

    from src.checkpoint import read_checkpoint_extra, require_training_checkpoint
    from src.context import setup_context
    from src.evaluate import load_network

    out_dir = _check_args(args)
    require_training_checkpoint(args.ckpt, read_checkpoint_extra(args.ckpt))
    setup_context(args.device_target or "CPU", "graph")
    net, arch, _ = load_network(args.ckpt, args.arch)
    c, s, n = arch.in_channels, arch.input_size, args.batch_size
    rng = np.random.default_rng(0)
    batches = {b: rng.standard_normal((b, c, s, s)).astype(np.float32) for b in (n, n + 1)}
    want = {b: net(ms.Tensor(x)).asnumpy() for b, x in batches.items()}
    fmt = args.file_format
    result = {"arch": arch.name, "ckpt": args.ckpt, "input": [None, c, s, s], "files": {}}

    stage = staging_dir()
    forget = on_interrupt(lambda: shutil.rmtree(stage, ignore_errors=True))
    try:
        if fmt in ("MINDIR", "BOTH"):
            result["files"]["MINDIR"] = export_mindir(net, arch, batches, want, stage, out_dir,
                                                      args.tolerance)
        if fmt in ("ONNX", "BOTH"):
            result["files"]["ONNX"] = export_onnx(net, arch, n, batches, want, stage, out_dir,
                                                  args.tolerance)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        forget()

    if args.json:
        emit_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, parser=parser()))
