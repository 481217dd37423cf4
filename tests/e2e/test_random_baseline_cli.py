"""The random baseline through the real CLI: ``search.py --strategy random`` on the tiny space
(no training; the built-in digits only give the classes and the input size)."""
import hashlib
import json
import os

import pytest

from src.resource import count
from src.search.derive import _within
from src.space.space import arch_to_yaml, load_arch, load_space
from tests.e2e.helpers import last_json, run_cli

CONFIG = "tests/fixtures/tiny_search.yaml"
TOL = 0.05                          # the fixture's search.tolerance
TARGETS = {"params": 6e3, "flops": 500e3}


def _random(out, *extra, check=True):
    return run_cli("search.py", "--config", CONFIG, "--strategy", "random",
                   "--output_dir", str(out), "--json", *extra, check=check)


def _snapshot(root) -> dict:
    """Every file under ``root``: its content hash and mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("random") / "run"
    proc = _random(out, "--num_archs", "3")
    return out, last_json(proc.stdout), proc


def test_writes_three_records_within_the_targets(drawn):
    out, summary, proc = drawn
    names = sorted(os.listdir(out))
    assert names == ["config.yaml", "random_01.yaml", "random_02.yaml", "random_03.yaml",
                     "random_archs.json"]
    with open(out / "random_archs.json") as f:
        report = json.load(f)
    assert summary == dict(report, output_dir=str(out))
    assert report["request"] == {"space": "tiny", "targets": TARGETS, "tolerance": TOL,
                                 "seed": 0, "num_archs": 3, "fixed": None}
    assert report["method"] == "rejection" and 0 < report["acceptance_rate"] < 1
    space = load_space("tests/fixtures/tiny_space.yaml")
    for k, entry in enumerate(report["archs"], start=1):
        arch = load_arch(str(out / entry["file"]))
        counted = count(arch)
        assert _within(counted, TARGETS, TOL)
        assert (entry["params"], entry["flops"]) == (counted["params"], counted["flops"])
        assert entry["ops"] == [op.name for op in arch.ops]
        assert arch.meta["strategy"] == "random" and arch.meta["index"] == k
        assert arch.name == f"random_tiny_{k:02d}" and arch.space == "tiny"
        space.choices_of(arch)  # an architecture of the space
        assert f"{entry['file']}: params" in proc.stderr
    assert len({tuple(a["ops"]) for a in report["archs"]}) == 3


def test_rerun_is_a_no_op_that_prints_the_same(drawn):
    out, summary, _ = drawn
    before = _snapshot(out)
    proc = _random(out, "--num_archs", "3")
    assert last_json(proc.stdout) == summary
    assert "already holds these draws" in proc.stderr
    assert _snapshot(out) == before


def test_fixed_vital_ops_come_from_an_arch_file(drawn, tmp_path):
    out, _, _ = drawn
    source = out / "random_01.yaml"
    summary = last_json(_random(tmp_path / "fixed", "--num_archs", "2", "--set",
                                f"search.random_fix_vital={source}").stdout)
    space = load_space("tests/fixtures/tiny_space.yaml")
    vital = space.vital_layers()
    ops = [load_arch(str(source)).ops[i].name for i in vital]
    assert summary["request"]["fixed"] == {space.layers[i].label: o for i, o in zip(vital, ops)}
    for entry in summary["archs"]:
        arch = load_arch(str(tmp_path / "fixed" / entry["file"]))
        assert [arch.ops[i].name for i in vital] == ops
        assert arch.meta["fixed_from"] == str(source)
        assert _within(count(arch), TARGETS, TOL)


def _unreachable_arch(folder) -> str:
    """An architecture of the tiny space whose vital ops (k3_e3) cost more params than a
    3K target allows."""
    space = load_space("tests/fixtures/tiny_space.yaml")
    path = folder / "heavy_vital.yaml"
    path.write_text(arch_to_yaml(space.arch([1] * len(space.searchable), name="heavy")))
    return str(path)


BAD = [
    ("zero", ["--num_archs", "0"], ["search.num_archs (--num_archs) must be >= 1, got 0"]),
    ("negative", ["--num_archs", "-2"], ["search.num_archs (--num_archs) must be >= 1, got -2"]),
    ("strategy", ["--set", "search.strategy=grid"],
     ["unknown search.strategy 'grid'; valid: hournas, random"]),
    ("other-space", ["--set", "search.random_fix_vital=config/arch/fbnet_a.yaml"],
     ["'config/arch/fbnet_a.yaml' is an architecture of space 'fbnet_imagenet'",
      "this run's space 'tiny'"]),
    ("unreachable", ["--set", "proposal.targets.params=3K", "--set",
                     "search.random_fix_vital={heavy}"],
     ["the vital ops of search.random_fix_vital '{heavy}' leave the targets unreachable",
      "target params 3.00K (±5%) is below the minimum", "L4=k3_e3, L7=k3_e3 fixed",
      "reachable params 4.91K"]),
    ("other-request", ["--num_archs", "4", "--output_dir", "{drawn}"],
     ["already holds random draws of another request (num_archs: there 3, now 4)"]),
]


@pytest.mark.parametrize("case,args,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_error_and_writes_nothing(drawn, tmp_path, case, args, expect):
    heavy = _unreachable_arch(tmp_path)
    fill = lambda s: s.replace("{heavy}", heavy).replace("{drawn}", str(drawn[0]))  # noqa: E731
    args, expect = [fill(a) for a in args], [fill(e) for e in expect]
    before = _snapshot(tmp_path), _snapshot(drawn[0])
    proc = _random(tmp_path / "out", *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for text in expect:
        assert text in errors[0], f"{text!r} not in: {errors[0]}"
    assert (_snapshot(tmp_path), _snapshot(drawn[0])) == before
