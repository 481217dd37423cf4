"""Shared test set-up: run from the repository root, CPU, AVX2 oneDNN kernels; the fixtures
that are expensive to make are made once per session and shared (no test may change them)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
os.environ.setdefault("GLOG_v", "3")

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TINY_SEARCH = "tests/fixtures/tiny_search.yaml"


def fixture_text(name: str) -> str:
    """The text of a file in tests/fixtures/ (e.g. the tiny architectures)."""
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return f.read()


def cifar_label(file_index: int, record):
    """The label of record ``record`` of file ``file_index`` (data_batch_1..5, then
    test_batch) in the ``cifar_dir`` fixture."""
    return (record + file_index) % 10


@pytest.fixture(scope="session", autouse=True)
def device_context():
    """The test process sets up MindSpore's CPU context once, before any test, as every entry
    point does: a kernel run before ``setup_context`` would make later calls to it fail, and
    then which test ran first would decide which tests pass. Tests may still switch the mode."""
    from src.context import setup_context
    return setup_context("CPU", mode="graph")


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> str:
    """A CIFAR-10 binary folder: 10,000 random records per file (Cifar10Dataset reads exactly
    that many), labels ``cifar_label``. 184 MB, written once per session; read-only."""
    import numpy as np

    from src.data import CIFAR_RECORD, CIFAR_TEST_FILES, CIFAR_TRAIN_FILES

    folder = str(tmp_path_factory.mktemp("cifar"))
    rng = np.random.default_rng(0)
    for fi, name in enumerate(CIFAR_TRAIN_FILES + CIFAR_TEST_FILES):
        rec = rng.integers(0, 256, size=(10000, CIFAR_RECORD), dtype=np.uint8)
        rec[:, 0] = cifar_label(fi, np.arange(10000))
        rec.tofile(os.path.join(folder, name))
    return folder


@pytest.fixture(scope="session")
def tiny_search_run(tmp_path_factory):
    """One uninterrupted tiny search (tests/fixtures/tiny_search.yaml, --json): the reference
    the CLI, resume and fault tests compare with. Returns (folder, summary, process); the
    folder is read-only for the tests."""
    from tests.e2e.helpers import last_json, run_cli

    out = tmp_path_factory.mktemp("tiny_search") / "reference"
    proc = run_cli("search.py", "--config", TINY_SEARCH, "--output_dir", str(out), "--json")
    return out, last_json(proc.stdout), proc
