"""Bad inputs through the real CLIs: each gives one `error:` line that names the thing (path,
key, op, step) and says what would be valid, exits 2, prints no traceback (unless --debug),
and leaves every file as it was (nothing half-written, no temp files).

Inputs are tiny and built once per module: CIFAR-10 `.bin` files are sparse (no 180 MB of
writes), one 2-step training run gives a real checkpoint, one search stopped by SIGTERM after
its first step gives a real search state. "Not writable" uses a path under a regular file:
these tests may run as root, for whom chmod does not stop a write.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fixture_text
from tests.e2e.helpers import HANG, ROOT, cli_env, records, run_cli, wait_until

SEARCH_CFG = "tests/fixtures/tiny_search.yaml"
TINY_ARCH = fixture_text("tiny_arch.yaml")
CIFAR_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
CIFAR_SIZE = 3073 * 10000


def _sparse_cifar(folder: Path, sizes: dict[str, int]) -> None:
    folder.mkdir(parents=True)
    for name in CIFAR_FILES:
        with open(folder / name, "wb") as f:
            f.truncate(sizes.get(name, CIFAR_SIZE))


def _imagenet(root: Path, broken: bool, classes=("n01", "n02")) -> None:
    import cv2
    import numpy as np
    for sub in ("train", "val"):
        for c in classes:
            (root / sub / c).mkdir(parents=True)
            cv2.imwrite(str(root / sub / c / "a.JPEG"), np.full((20, 24, 3), 128, np.uint8))
    if broken:
        (root / "train" / "n02" / "b.JPEG").write_bytes(b"\xff\xd8 not really a jpeg")


def _cut(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])


def _stopped_search(w: Path) -> Path:
    """A search over a copy of the tiny space, stopped by SIGTERM after its first step."""
    space = w / "sp" / "space.yaml"
    space.parent.mkdir()
    shutil.copy(Path(ROOT) / "tests/fixtures/tiny_space.yaml", space)
    cfg = (Path(ROOT) / SEARCH_CFG).read_text().replace("tests/fixtures/tiny_space.yaml",
                                                         str(space))
    (w / "sp" / "search.yaml").write_text(cfg)
    out = w / "sp" / "run"
    with open(w / "sp" / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "search.py", "--config",
                                 str(w / "sp" / "search.yaml"), "--output_dir", str(out)],
                                cwd=ROOT, env=cli_env(), stdout=log, stderr=log)
        try:
            if wait_until(proc, lambda: bool(records(out / "search_log.jsonl"))):
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=HANG)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (w / "sp" / "log.txt").read_text()
    return out


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """The inputs of every case, in one folder the cases must leave as they found it."""
    w = tmp_path_factory.mktemp("bad")
    (w / "a_file").write_text("a regular file, not a folder\n")
    _sparse_cifar(w / "cifar_cut", {"data_batch_3.bin": CIFAR_SIZE - 3073 // 2})
    _sparse_cifar(w / "cifar100", {n: 3074 * 10000 for n in CIFAR_FILES})  # CIFAR-100 records
    (w / "inet_empty" / "train").mkdir(parents=True)
    (w / "inet_empty" / "val").mkdir()
    _imagenet(w / "inet_broken", broken=True)
    _imagenet(w / "inet_trunc", broken=False)  # a real JPEG cut short: cv2 still decodes it
    import cv2
    import numpy as np
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (60, 80, 3), np.uint8),
                           (5, 5), 0)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    (w / "inet_trunc" / "train" / "n02" / "b.JPEG").write_bytes(jpeg[:len(jpeg) * 2 // 3])
    (w / "empty.yaml").write_text("# nothing here yet\n")
    _imagenet(w / "inet_one", broken=False, classes=("n01",))

    arch = w / "arch" / "tiny.yaml"
    arch.parent.mkdir()
    arch.write_text(TINY_ARCH)
    edits = {"bad_block": ("ir_r1_k3_s1_e1_c24", "ir_r1_k3_s1_x1_c24"),
             "even_kernel": ("ir_r1_k3_s2_e3_c16", "ir_r1_k4_s2_e3_c16"),
             "bad_type": ("input_size: 16", "input_size: sixteen"),
             "zero_classes": ("num_classes: 10", "num_classes: 0"),
             "neg_stem": ("{c: 8,", "{c: -8,"),
             "blocks_str": ("blocks: [ir_r1_k3_s2_e3_c16, ir_r1_k3_s1_e1_c24]",
                            "blocks: ir_r1_k3_s2_e3_c16"),
             "bad_yaml": ("num_classes: 10", "num_classes: [10"),
             "unknown_key": ("head: 32", "head: 32\nwidth: 2"),
             "timm_er": ("ir_r1_k3_s1_e1_c24", "er_r1_k3_s1_e1_c24"),
             "timm_cn": ("ir_r1_k3_s1_e1_c24", "cn_r1_k3_s1_c24"),
             "timm_cc": ("ir_r1_k3_s1_e1_c24", "ir_r1_k3_s1_e1_c24_cc4"),
             "timm_skip_flag": ("ir_r1_k3_s1_e1_c24", "ir_r1_k3_s1_e1_c24_skip"),
             # names that files are named after (round 3)
             "name_up": ("name: tiny", "name: ../../escaped"),
             "name_abs": ("name: tiny", f"name: {w}/abs_escaped"),
             "name_sub": ("name: tiny", "name: sub/dir/x"),
             "name_long": ("name: tiny", "name: " + "n" * 120)}
    for name, (old, new) in edits.items():
        assert old in TINY_ARCH
        (w / "arch" / f"{name}.yaml").write_text(TINY_ARCH.replace(old, new))
    space = (Path(ROOT) / "tests/fixtures/tiny_space.yaml").read_text()
    (w / "space_bad_op.yaml").write_text(space.replace("ops: [k3_e1, k3_e3, k5_e1, skip]",
                                                       "ops: [k3_e1, conv3x3, k5_e1, skip]"))
    (w / "space_dup_op.yaml").write_text(space.replace("ops: [k3_e1, k3_e3, k5_e1, skip]",
                                                       "ops: [k3_e1, k3_e3, k3_e1, skip]"))
    # YAML that would run code under yaml.load / yaml.unsafe_load
    evil = f'!!python/object/apply:os.system ["touch {w}/pwned"]'
    (w / "arch" / "python_tag.yaml").write_text(TINY_ARCH.replace("name: tiny", f"name: {evil}"))
    cfg = (Path(ROOT) / SEARCH_CFG).read_text()
    (w / "search_python_tag.yaml").write_text(cfg.replace("width_mult: 1.0",
                                                          f"width_mult: {evil}"))
    (w / "search_typo.yaml").write_text(cfg.replace("search:", "serach:"))
    (w / "search_bad_size.yaml").write_text(cfg.replace("flops: 500K", "flops: lots"))

    # a real training checkpoint (2 steps), and copies cut short
    train = w / "train"
    run_cli("train.py", "--arch", str(arch), "--epochs", "1", "--batch_size", "16",
            "--set", "data.image_size=16", "--set", "train.steps_per_epoch=2",
            "--set", "train.eval_batch_size=360", "--output_dir", str(train))
    ckpt = train / "tiny_best.ckpt"
    _cut(ckpt, w / "cut_half.ckpt", 0.5)
    _cut(ckpt, w / "cut_end.ckpt", 0.97)
    # a run folder whose newest checkpoint is unreadable (a damaged copy)
    shutil.copytree(train, w / "resume_train_cut")
    _cut(train / "tiny-1_2.ckpt", w / "resume_train_cut" / "tiny-2_2.ckpt", 0.5)

    # a real search state, and copies of its folder for the resume cases
    run = _stopped_search(w)
    for name in ("resume_cut", "resume_config"):
        shutil.copytree(run, w / name)
    _cut(run / "search_state.ckpt", w / "resume_cut" / "search_state.ckpt", 0.6)
    return w


# (id, script, arguments ({w}: the inputs folder), substrings of the error line)
CASES = [
    # -- search.py: config, space, targets -------------------------------------------------
    ("search-unknown-key", "search.py", ["--config", SEARCH_CFG, "--set", "search.lr=0.1",
                                         "--output_dir", "{w}/out"],
     ["unknown config key 'search.lr'", "valid keys in 'search':", "w_lr"]),
    ("search-yaml-key-typo", "search.py", ["--config", "{w}/search_typo.yaml",
                                           "--output_dir", "{w}/out"],
     ["unknown config key 'serach'", "did you mean 'search'"]),
    ("search-wrong-type", "search.py", ["--config", SEARCH_CFG, "--set", "search.batch_size=eight",
                                        "--output_dir", "{w}/out"],
     ["'search.batch_size' must be an integer", "'eight'"]),
    ("search-bad-size", "search.py", ["--config", "{w}/search_bad_size.yaml",
                                      "--output_dir", "{w}/out"],
     ["invalid size 'lots'", "proposal.targets.flops", "e.g. 4.8M"]),
    ("search-config-python-tag", "search.py", ["--config", "{w}/search_python_tag.yaml",
                                               "--output_dir", "{w}/out"],
     ["invalid YAML in '{w}/search_python_tag.yaml' at line", "python/object/apply"]),
    ("search-missing-config", "search.py", ["--config", "{w}/nope.yaml"],
     ["config file '{w}/nope.yaml' does not exist"]),
    ("search-unknown-space", "search.py", ["--config", SEARCH_CFG, "--set", "space=fbnet_cifar100",
                                           "--output_dir", "{w}/out"],
     ["unknown space 'fbnet_cifar100'", "valid:", "fbnet_cifar10"]),
    ("search-unknown-op", "search.py", ["--config", SEARCH_CFG, "--set",
                                        "space={w}/space_bad_op.yaml", "--output_dir", "{w}/out"],
     ["{w}/space_bad_op.yaml", "ops[1]", "unknown token 'conv3x3'", "valid tokens"]),
    ("search-zero-epochs", "search.py", ["--config", SEARCH_CFG, "--set", "search.epochs_nvital=0",
                                         "--output_dir", "{w}/out"],
     ["search.epochs_nvital must be >= 1, got 0"]),
    ("search-negative-batch", "search.py", ["--config", SEARCH_CFG,
                                            "--set", "search.batch_size=-8",
                                            "--output_dir", "{w}/out"],
     ["search.batch_size must be >= 1, got -8"]),
    ("search-infeasible-target", "search.py", ["--config", SEARCH_CFG, "--stage", "proposals",
                                               "--set", "proposal.targets.params=1K",
                                               "--output_dir", "{w}/out"],
     ["target params 1", "below the space's minimum", "feasible:"]),
    ("search-missing-dataset", "search.py", ["--config", SEARCH_CFG, "--set", "data.name=cifar10",
                                             "--data_path", "{w}/no_such_folder",
                                             "--output_dir", "{w}/out"],
     ["CIFAR-10 folder '{w}/no_such_folder' does not exist", "data_batch_1.bin"]),
    ("search-cifar-truncated", "search.py", ["--config", SEARCH_CFG, "--set", "data.name=cifar10",
                                             "--data_path", "{w}/cifar_cut",
                                             "--output_dir", "{w}/out"],
     ["'{w}/cifar_cut/data_batch_3.bin' has 30728464 bytes", "expected 30730000", "truncated"]),
    ("search-output-not-writable", "search.py", ["--config", SEARCH_CFG,
                                                 "--output_dir", "{w}/a_file/run"],
     ["'{w}/a_file/run'", "'{w}/a_file' is a file, not a folder"]),
    ("search-no-gpu", "search.py", ["--config", SEARCH_CFG, "--device_target", "GPU",
                                    "--output_dir", "{w}/out"],
     ["device target 'GPU' is not available here", "use --device_target CPU"]),
    ("search-resume-cut-state", "search.py", ["--config", "{w}/sp/search.yaml", "--resume",
                                              "--output_dir", "{w}/resume_cut"],
     ["'{w}/resume_cut/search_state.ckpt' is unreadable", "truncated"]),
    ("search-resume-other-config", "search.py", ["--config", "{w}/sp/search.yaml", "--resume",
                                                 "--set", "search.seed=1",
                                                 "--output_dir", "{w}/resume_config"],
     ["--resume with a different configuration", "search.seed: checkpoint 0, now 1"]),
    ("search-resume-other-space", "search.py", ["--config", "{w}/sp/search.yaml", "--resume",
                                                "--output_dir", "{w}/sp/run"],
     ["'{w}/sp/run/search_state.ckpt' does not fit", "head.conv.weight: (32,24,1,1) vs (40,24,1,1)",
      "the space or the config changed"]),
    # -- round 3: every check before the first write -----------------------------------
    ("search-batch-over-split", "search.py", ["--config", SEARCH_CFG,
                                              "--set", "search.batch_size=100000",
                                              "--output_dir", "{w}/out"],
     ["the weight split has 1150 samples, fewer than one batch of 100000"]),
    ("search-imagenet-one-class", "search.py", ["--config", SEARCH_CFG, "--set",
                                                "data.name=imagenet", "--data_path",
                                                "{w}/inet_one", "--output_dir", "{w}/out"],
     ["ImageNet folder '{w}/inet_one' has 1 class folder", "at least two"]),
    ("search-duplicate-op", "search.py", ["--config", SEARCH_CFG, "--set",
                                          "space={w}/space_dup_op.yaml", "--output_dir", "{w}/out"],
     ["{w}/space_dup_op.yaml", "ops[2] 'k3_e1' is the same op as ops[0]", "list each op once"]),
    ("search-seed-negative", "search.py", ["--config", SEARCH_CFG, "--set", "search.seed=-1",
                                           "--output_dir", "{w}/out"],
     ["'search.seed' must be a seed, an integer 0 .. 4294967295, got -1"]),
    ("search-seed-huge", "search.py", ["--config", SEARCH_CFG, "--set",
                                       "proposal.seed=18446744073709551616",
                                       "--output_dir", "{w}/out"],
     ["'proposal.seed' must be a seed", "got 18446744073709551616"]),
    ("search-tau-tiny", "search.py", ["--config", SEARCH_CFG, "--set", "search.tau=1e-300",
                                      "--output_dir", "{w}/out"],
     ["search.tau must be a temperature in [0.001, 1000], got 1e-300", "overflow float32"]),
    ("search-tau-min-inf", "search.py", ["--config", SEARCH_CFG, "--set", "search.tau_min=.inf",
                                         "--output_dir", "{w}/out"],
     ["search.tau_min must be a temperature", "got inf"]),
    ("train-seed-negative", "train.py", ["--arch", "{w}/arch/tiny.yaml", "--set", "train.seed=-1",
                                         "--output_dir", "{w}/out"],
     ["'train.seed' must be a seed, an integer 0 .. 4294967295, got -1"]),
    ("compare-dry-run-output-under-a-file", "analyze.py",
     ["compare", "--config", "tests/fixtures/tiny_compare.yaml", "--dry-run",
      "--output_dir", "{w}/a_file/cmp"],
     ["cannot create output folder '{w}/a_file/cmp'", "'{w}/a_file' is a file"]),
    ("ablations-dry-run-output-under-a-file", "analyze.py",
     ["ablations", "--dry-run", "--output_dir", "{w}/a_file/abl"],
     ["cannot create output folder '{w}/a_file/abl'", "'{w}/a_file' is a file"]),
    # -- round 3: a name that files are named after stays a file name ----------------------
    ("train-arch-name-up", "train.py", ["--arch", "{w}/arch/name_up.yaml",
                                        "--output_dir", "{w}/out"],
     ["{w}/arch/name_up.yaml: 'name' '../../escaped' cannot name files", "path separator"]),
    ("train-arch-name-absolute", "train.py", ["--arch", "{w}/arch/name_abs.yaml",
                                              "--output_dir", "{w}/out"],
     ["{w}/arch/name_abs.yaml: 'name' '{w}/abs_escaped' cannot name files"]),
    ("export-arch-name-subfolder", "export.py", ["--ckpt", "{w}/train/tiny_best.ckpt",
                                                 "--arch", "{w}/arch/name_sub.yaml",
                                                 "--output_dir", "{w}/out"],
     ["{w}/arch/name_sub.yaml: 'name' 'sub/dir/x' cannot name files"]),
    ("train-arch-name-long", "train.py", ["--arch", "{w}/arch/name_long.yaml",
                                          "--output_dir", "{w}/out"],
     ["{w}/arch/name_long.yaml: 'name'", "is 120 bytes long, over 100"]),
    # -- train.py: data, architecture files, numbers, outputs -----------------------------
    ("train-cifar-wrong-size", "train.py", ["--config", "config/train/cifar10.yaml",
                                            "--arch", "{w}/arch/tiny.yaml",
                                            "--data_path", "{w}/cifar100",
                                            "--output_dir", "{w}/out"],
     ["'{w}/cifar100/data_batch_1.bin' has 30740000 bytes", "expected 30730000"]),
    ("train-imagenet-no-classes", "train.py", ["--config", "config/train/imagenet.yaml",
                                               "--arch", "{w}/arch/tiny.yaml",
                                               "--data_path", "{w}/inet_empty",
                                               "--output_dir", "{w}/out"],
     ["'{w}/inet_empty/train' holds no class folders", "<class>/<image>"]),
    ("train-imagenet-broken-image", "train.py", ["--config", "config/train/imagenet.yaml",
                                                 "--arch", "{w}/arch/tiny.yaml",
                                                 "--data_path", "{w}/inet_broken",
                                                 "--output_dir", "{w}/out"],
     ["image '{w}/inet_broken/train/n02/b.JPEG' cannot be decoded"]),
    ("train-zero-epochs", "train.py", ["--arch", "{w}/arch/tiny.yaml", "--epochs", "0",
                                       "--output_dir", "{w}/out"],
     ["train.epochs must be >= 1, got 0"]),
    ("train-negative-batch", "train.py", ["--arch", "{w}/arch/tiny.yaml", "--batch_size", "-8",
                                          "--output_dir", "{w}/out"],
     ["train.batch_size must be >= 1, got -8"]),
    ("train-wrong-type", "train.py", ["--arch", "{w}/arch/tiny.yaml", "--set", "train.lr=fast",
                                      "--output_dir", "{w}/out"],
     ["config key 'train.lr' must be a number, got 'fast'"]),
    ("train-malformed-block", "train.py", ["--arch", "{w}/arch/bad_block.yaml",
                                           "--output_dir", "{w}/out"],
     ["{w}/arch/bad_block.yaml: blocks[1]", "unknown token 'x1'", "valid tokens"]),
    ("train-even-kernel", "train.py", ["--arch", "{w}/arch/even_kernel.yaml",
                                       "--output_dir", "{w}/out"],
     ["{w}/arch/even_kernel.yaml: blocks[0]", "kernel size must be odd", "k3, k5"]),
    ("train-arch-edited-type", "train.py", ["--arch", "{w}/arch/bad_type.yaml",
                                            "--output_dir", "{w}/out"],
     ["{w}/arch/bad_type.yaml: 'input_size' must be an integer >= 8, got 'sixteen'"]),
    ("train-arch-negative-stem", "train.py", ["--arch", "{w}/arch/neg_stem.yaml",
                                              "--output_dir", "{w}/out"],
     ["{w}/arch/neg_stem.yaml: stem: 'c' must be an integer >= 1, got -8"]),
    ("train-arch-blocks-not-list", "train.py", ["--arch", "{w}/arch/blocks_str.yaml",
                                                "--output_dir", "{w}/out"],
     ["{w}/arch/blocks_str.yaml: 'blocks' must be a non-empty list"]),
    ("train-arch-broken-yaml", "train.py", ["--arch", "{w}/arch/bad_yaml.yaml",
                                            "--output_dir", "{w}/out"],
     ["invalid YAML in '{w}/arch/bad_yaml.yaml' at line 4", "expected ',' or ']'"]),
    ("train-arch-unknown-key", "train.py", ["--arch", "{w}/arch/unknown_key.yaml",
                                            "--output_dir", "{w}/out"],
     ["{w}/arch/unknown_key.yaml: unknown key 'width'", "valid keys"]),
    ("train-arch-python-tag", "train.py", ["--arch", "{w}/arch/python_tag.yaml",
                                           "--output_dir", "{w}/out"],
     ["invalid YAML in '{w}/arch/python_tag.yaml' at line 1", "python/object/apply"]),
    ("train-arch-missing", "train.py", ["--arch", "{w}/arch/nope.yaml", "--output_dir", "{w}/out"],
     ["architecture file not found: '{w}/arch/nope.yaml'", "reference nets"]),
    ("train-output-not-writable", "train.py", ["--arch", "{w}/arch/tiny.yaml",
                                               "--output_dir", "{w}/a_file/run"],
     ["'{w}/a_file/run'", "is a file, not a folder"]),
    ("train-no-gpu", "train.py", ["--arch", "{w}/arch/tiny.yaml", "--device_target", "GPU",
                                  "--output_dir", "{w}/out"],
     ["device target 'GPU' is not available here"]),
    # -- eval.py / export.py: checkpoints -------------------------------------------------
    ("eval-truncated-ckpt", "eval.py", ["--ckpt", "{w}/cut_half.ckpt"],
     ["checkpoint '{w}/cut_half.ckpt' is unreadable (truncated"]),
    ("eval-search-state", "eval.py", ["--ckpt", "{w}/sp/run/search_state.ckpt"],
     ["'{w}/sp/run/search_state.ckpt' is a search state", "python train.py --arch"]),
    ("eval-zero-batch", "eval.py", ["--ckpt", "{w}/train/tiny_best.ckpt", "--batch_size", "0"],
     ["--batch_size must be >= 1, got 0"]),
    ("eval-missing-ckpt", "eval.py", ["--ckpt", "{w}/train/nope.ckpt"],
     ["checkpoint '{w}/train/nope.ckpt' does not exist"]),
    ("eval-profile-zero-classes", "eval.py", ["--profile", "--arch", "{w}/arch/zero_classes.yaml"],
     ["{w}/arch/zero_classes.yaml: 'num_classes' must be an integer >= 1, got 0"]),
    ("export-truncated-ckpt", "export.py", ["--ckpt", "{w}/cut_end.ckpt",
                                            "--output_dir", "{w}/out"],
     ["checkpoint '{w}/cut_end.ckpt' is unreadable (truncated"]),
    ("export-other-arch", "export.py", ["--ckpt", "{w}/train/tiny_best.ckpt",
                                        "--arch", "config/arch/fbnet_b.yaml",
                                        "--output_dir", "{w}/out"],
     ["checkpoint '{w}/train/tiny_best.ckpt' (trained as 'tiny') does not fit the network of "
      "--arch 'config/arch/fbnet_b.yaml' ('fbnet_b')", "missing", "other shapes"]),
    ("export-output-not-writable", "export.py", ["--ckpt", "{w}/train/tiny_best.ckpt",
                                                 "--output_dir", "{w}/a_file/x"],
     ["'{w}/a_file' is a file, not a folder"]),
    ("export-no-gpu", "export.py", ["--ckpt", "{w}/train/tiny_best.ckpt", "--device_target",
                                    "GPU", "--output_dir", "{w}/out"],
     ["device target 'GPU' is not available here"]),
    # -- round 2: argparse errors are one line too ----------------------------------------
    ("search-argparse-device", "search.py", ["--device_target", "TPU"],
     ["argument --device_target: unknown device target 'TPU'; valid: CPU, GPU, Ascend"]),
    ("search-argparse-stage", "search.py", ["--stage", "bogus"],
     ["argument --stage: invalid choice: 'bogus'", "'describe'", "(see search.py --help)"]),
    ("export-argparse-format", "export.py", ["--ckpt", "{w}/train/tiny_best.ckpt",
                                             "--file_format", "XYZ"],
     ["argument --file_format: invalid choice: 'XYZ'", "'MINDIR'"]),
    ("train-argparse-number", "train.py", ["--arch", "{w}/arch/tiny.yaml", "--epochs", "two"],
     ["argument --epochs: invalid int value: 'two'"]),
    ("eval-argparse-unknown-flag", "eval.py", ["--ckpt", "{w}/train/tiny_best.ckpt", "--bogus"],
     ["unrecognized arguments: --bogus"]),
    ("analyze-argparse-probability", "analyze.py", ["importance", "--ckpt",
                                                    "{w}/train/tiny_best.ckpt", "--p", "2"],
     ["argument --p: mask probability 2 is outside (0, 1]", "(see analyze.py importance --help)"]),
    # -- round 2: the smaller items --------------------------------------------------------
    ("export-negative-tolerance", "export.py", ["--ckpt", "{w}/train/tiny_best.ckpt",
                                                "--tolerance", "-1", "--output_dir", "{w}/out"],
     ["--tolerance must be a number >= 0", "got -1"]),
    ("search-empty-config", "search.py", ["--config", "{w}/empty.yaml", "--output_dir", "{w}/out"],
     ["config file '{w}/empty.yaml' is empty"]),
    ("train-empty-config", "train.py", ["--config", "{w}/empty.yaml", "--arch", "{w}/arch/tiny.yaml",
                                        "--output_dir", "{w}/out"],
     ["config file '{w}/empty.yaml' is empty"]),
    ("train-resume-unreadable-latest", "train.py", ["--output_dir", "{w}/resume_train_cut",
                                                    "--resume"],
     ["--resume: checkpoint '{w}/resume_train_cut/tiny-2_2.ckpt' in '{w}/resume_train_cut' is "
      "unreadable", "the newest readable one is '{w}/resume_train_cut/tiny-1_2.ckpt' (global "
      "step 2)", "mv "]),
    ("train-imagenet-truncated-jpeg", "train.py", ["--config", "config/train/imagenet.yaml",
                                                   "--arch", "{w}/arch/tiny.yaml",
                                                   "--data_path", "{w}/inet_trunc",
                                                   "--output_dir", "{w}/out"],
     ["image '{w}/inet_trunc/train/n02/b.JPEG' cannot be decoded: it is truncated"]),
    ("train-verify-data-truncated", "train.py", ["--config", "config/train/imagenet.yaml",
                                                 "--arch", "{w}/arch/tiny.yaml",
                                                 "--data_path", "{w}/inet_trunc",
                                                 "--output_dir", "{w}/out", "--verify-data"],
     ["1 of 5 images cannot be decoded: '{w}/inet_trunc/train/n02/b.JPEG' is truncated"]),
    # -- round 2: block strings of other tools ---------------------------------------------
    ("profile-timm-block-type", "eval.py", ["--profile", "--arch", "{w}/arch/timm_er.yaml"],
     ["{w}/arch/timm_er.yaml: blocks[1]", "block type 'er'", "supported: ir, ds, skip"]),
    ("profile-timm-cn", "eval.py", ["--profile", "--arch", "{w}/arch/timm_cn.yaml"],
     ["block type 'cn'", "supported: ir, ds, skip"]),
    ("profile-timm-condconv", "eval.py", ["--profile", "--arch", "{w}/arch/timm_cc.yaml"],
     ["token 'cc4' (timm's CondConv experts) is not supported"]),
    ("profile-timm-skip-flag", "eval.py", ["--profile", "--arch", "{w}/arch/timm_skip_flag.yaml"],
     ["token 'skip' (timm's force-skip flag) is not supported"]),
    ("eval-timm-grouped-shuffle", "eval.py", ["--arch", "fbnet_a", "--format", "timm"],
     ["'fbnet_a' cannot be written for timm", "grouped 1x1 convs with channel shuffle (_g2)",
      "L12 'k5_e1_g2'"]),
    ("eval-timm-se-without-bias", "eval.py", ["--arch", "hournas_f", "--format", "timm"],
     ["'hournas_f' cannot be written for timm", "squeeze-and-excitation without bias"]),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: content hash (size+mtime for big files)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.join(dirpath, d)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            if st.st_size > 1 << 20:
                out[p] = f"{st.st_size}:{st.st_mtime_ns}"
            else:
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.mark.parametrize("case_id,script,args,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error_and_changes_nothing(w, case_id, script, args, expect):
    args = [a.replace("{w}", str(w)) for a in args]
    expect = [e.replace("{w}", str(w)) for e in expect]
    space = w / "sp" / "space.yaml"
    original_space = space.read_text()
    if case_id == "search-resume-other-space":  # the space file edited after the search began
        space.write_text(original_space.replace("head: 32", "head: 40"))
    before = _snapshot(w)
    try:
        proc = run_cli(script, *args, check=False, timeout=HANG)
    finally:
        space.write_text(original_space)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for text in expect:
        assert text in errors[0], f"{text!r} not in: {errors[0]}"
    after = _snapshot(w)
    if case_id == "search-resume-other-space":
        before[str(space)] = after[str(space)]  # the case's own edit, undone
    assert after == before, {k: (before.get(k), after.get(k))
                             for k in set(before) | set(after) if before.get(k) != after.get(k)}


def test_debug_shows_the_traceback(w):
    proc = run_cli("eval.py", "--ckpt", str(w / "cut_half.ckpt"), "--debug", check=False)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint")



# ----------------------------------------------------------------------------- the scripts

# (id, script, arguments, substrings of the one error line, whether the Python entry point ran:
# then the script's logs, and only they, appear under OUTPUT_DIR/log/)
SCRIPT_CASES = [
    ("devices-not-a-number", "run_search_cpu.sh", ["two", SEARCH_CFG, "{w}/sout"],
     ["DEVICE_NUM must be a whole number >= 1, got 'two'"], False),
    ("config-missing", "run_search_cpu.sh", ["1", "{w}/nope.yaml", "{w}/sout"],
     ["CONFIG '{w}/nope.yaml' is not a file"], False),
    ("data-path-missing", "run_standalone_train_cpu.sh",
     ["{w}/arch/tiny.yaml", "config/train/cifar10.yaml", "{w}/tout", "{w}/no_such_folder"],
     ["DATA_PATH '{w}/no_such_folder' is not a directory"], False),
    ("ckpt-missing", "run_eval_cpu.sh", ["{w}/train/nope.ckpt"],
     ["CKPT '{w}/train/nope.ckpt' is not a file"], False),
    # checked before the launch: no msrun traceback after the error line
    ("no-gpu", "run_search_gpu.sh", ["1", SEARCH_CFG, "{w}/sout"],
     ["device target 'GPU' is not available here", "scripts/run_search_cpu.sh"], False),
    ("no-gpu-msrun", "run_distribute_train_gpu.sh",
     ["2", "{w}/arch/tiny.yaml", "config/train/digits.yaml", "{w}/tout"],
     ["device target 'GPU' is not available here", "scripts/run_distribute_train_cpu.sh"], False),
    ("malformed-block", "run_standalone_train_cpu.sh",
     ["{w}/arch/bad_block.yaml", "config/train/digits.yaml", "{w}/tout"],
     ["{w}/arch/bad_block.yaml: blocks[1]", "unknown token 'x1'"], True),
    ("output-under-a-file", "run_search_cpu.sh", ["1", SEARCH_CFG, "{w}/a_file/run"],
     ["'{w}/a_file/run'"], False),
]
@pytest.mark.parametrize("case_id,script,args,expect,ran", [
    pytest.param(*c, id=c[0]) for c in SCRIPT_CASES])
def test_script_bad_input_gives_one_clear_error(w, case_id, script, args, expect, ran):
    args = [a.replace("{w}", str(w)) for a in args]
    expect = [e.replace("{w}", str(w)) for e in expect]
    before = _snapshot(w)
    proc = subprocess.run(["bash", f"scripts/{script}", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=HANG)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, out  # a job's own error line too (it also stays in the log)
    for text in expect:
        assert text in errors[0], f"{text!r} not in: {errors[0]}"
    if ran:
        assert "the job failed with exit code 2" in proc.stderr, out
    else:
        assert proc.stderr.splitlines()[-1].startswith(f"usage: bash scripts/{script} "), out
    after = _snapshot(w)
    new = set(after) - set(before)
    # the launcher's logs (OUTPUT_DIR/log/NAME.command, NAME.log) and their folders, only
    logs = {k for k in new if ran and (after[k] == "dir" or k.endswith((".log", ".command")))
            and os.path.relpath(k, w).split(os.sep)[1:2] in ([], ["log"])}
    assert {k: v for k, v in after.items() if k not in logs} == before, sorted(new - logs)
    shutil.rmtree(w / "sout", ignore_errors=True)
    shutil.rmtree(w / "tout", ignore_errors=True)


# ----------------------------------------------------------------------------- round 2

@pytest.mark.parametrize("folder", ["my run", "实验"])
def test_export_into_a_folder_with_spaces_or_non_ascii(w, folder):
    """MindSpore's exporter rejects such file names; export.py writes through an ASCII temp
    folder. The checkpoint lies in that folder too and the default output is its folder."""
    where = w / "names" / folder / "sub dir"
    where.mkdir(parents=True)
    shutil.copy(w / "train" / "tiny_best.ckpt", where / "tiny_best.ckpt")
    proc = run_cli("export.py", "--ckpt", str(where / "tiny_best.ckpt"), "--file_format", "both",
                   "--batch_size", "2", check=False, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(os.listdir(where)) == ["tiny.mindir", "tiny_b2.onnx", "tiny_best.ckpt"]
    import mindspore as ms
    import numpy as np

    from src.context import setup_context
    setup_context("CPU", mode="graph")  # before the first kernel of this test process
    graph = ms.nn.GraphCell(ms.load(str(where / "tiny.mindir")))
    assert graph(ms.Tensor(np.zeros((3, 3, 16, 16), np.float32))).shape == (3, 10)
    shutil.rmtree(w / "names")


def test_failures_leave_the_working_folder_clean(w, tmp_path):
    """Run failing commands from an empty working folder: it stays empty (no MindSpore dumps,
    no rank_0/, no temp files)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    runs = [("train.py", "--config", f"{ROOT}/config/train/imagenet.yaml", "--arch",
             str(w / "arch" / "tiny.yaml"), "--data_path", str(w / "inet_trunc"),
             "--output_dir", str(tmp_path / "o1")),
            ("export.py", "--ckpt", str(w / "train" / "tiny_best.ckpt"), "--tolerance", "0",
             "--output_dir", str(tmp_path / "o2")),
            ("search.py", "--stage", "bogus")]
    for script, *args in runs:
        proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                              env=cli_env(), capture_output=True, text=True, timeout=HANG)
        assert proc.returncode in (0, 2), proc.stderr  # tolerance 0 may pass bit-exactly
        assert sorted(os.listdir(cwd)) == [], (script, sorted(os.listdir(cwd)))
    assert not (tmp_path / "o1").exists()


def test_resume_may_lower_the_learning_rate_and_says_so(w, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(w / "train", run)
    proc = run_cli("train.py", "--output_dir", str(run), "--resume", "--epochs", "2",
                   "--set", "train.lr=0.002", check=False, timeout=HANG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("learning rate changed on resume: train.lr 0.1 -> 0.002; the schedule continues "
            "at global step 2") in proc.stdout
    assert (run / "tiny-2_2.ckpt").is_file()
