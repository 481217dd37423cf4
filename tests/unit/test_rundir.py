"""src/rundir.py: names that files are named after, and the one-run-per-folder lock."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from src.errors import HourNASError
from src.rundir import LOCK_NAME, STEM_MAX, FolderLock, check_stem, lock_output_dir
from tests.e2e.helpers import ROOT


@pytest.mark.parametrize("name", ["tiny", "hournas_fbnet_cifar10_w0.25", "random-01", "实验",
                                  "a" * STEM_MAX, "v1.2"])
def test_plain_stems_pass(name):
    assert check_stem(name, "name") == name


@pytest.mark.parametrize("name,why", [
    ("../../x", "path separator"), ("/abs/x", "path separator"), ("sub/dir", "path separator"),
    ("a\\b", "path separator"), ("..", "'..'"), ("a..b", "'..'"), ("a\x00b", "control"),
    ("tab\tname", "control"), ("", "empty"), ("  ", "empty"),
    ("a" * (STEM_MAX + 1), f"{STEM_MAX + 1} bytes long"),
    ("é" * (STEM_MAX // 2 + 1), "bytes long"),  # counted in UTF-8 bytes, as file systems do
])
def test_names_that_could_leave_the_folder_are_refused(name, why):
    with pytest.raises(HourNASError, match="cannot name files") as e:
        check_stem(name, "arch.yaml: 'name'")
    assert why in str(e.value) and str(e.value).startswith("arch.yaml: 'name' ")


def test_the_lock_makes_the_folder_holds_the_pid_and_is_removed_on_release(tmp_path):
    folder = tmp_path / "a" / "b"
    lock = FolderLock(str(folder), "search").acquire()
    assert (folder / LOCK_NAME).read_text() == f"{os.getpid()} search\n"
    lock.release()
    assert not (folder / LOCK_NAME).exists()
    FolderLock(str(folder)).acquire().release()  # free again


def _holder(folder) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c",
                             "import time; from src.rundir import FolderLock; "
                             f"FolderLock({str(folder)!r}, 'training').acquire(); "
                             "print('held', flush=True); time.sleep(600)"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(HourNASError) as e:
            FolderLock(str(tmp_path), "search").acquire()
        assert f"in use by process {proc.pid} (a training)" in str(e.value)
    finally:
        proc.kill()
        proc.wait()
    # killed (no clean exit): its file stays, naming a dead process, and is taken over
    assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(proc.pid)
    lock = FolderLock(str(tmp_path), "search").acquire()
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()} search\n"
    lock.release()


def test_one_process_takes_a_folder_once(tmp_path):
    first = lock_output_dir(str(tmp_path / "x"))
    assert lock_output_dir(str(tmp_path / "x" / ".." / "x")) is first
    first.release()
