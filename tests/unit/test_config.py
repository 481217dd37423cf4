"""Tests for src/config.py: strict keys and types, overrides, sizes, _base_, validate."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest
import yaml

from src.config import Size, format_size, load_config, parse_size, save_config, to_dict
from src.errors import ConfigError, HourNASError
from tests.e2e.helpers import HANG


@dataclass
class Search:
    tau: float = 5.0
    epochs: int = 10
    warmup: bool = False
    lrs: list[float] = field(default_factory=lambda: [0.1])
    arch: Optional[str] = None
    sampler: Literal["gumbel_max", "softmax"] = "gumbel_max"

    def validate(self) -> None:
        if self.epochs <= 0:
            raise ConfigError(f"search.epochs must be > 0, got {self.epochs}")


@dataclass
class Proposal:
    targets: dict[str, Size] = field(default_factory=lambda: {"flops": 295e6})
    budget: Size = 1e6


@dataclass
class Data:
    path: str = "data"
    batch: int = 64


@dataclass
class Cfg:
    search: Search = field(default_factory=lambda: Search(tau=3.0))
    proposal: Proposal = field(default_factory=Proposal)
    data: Data = field(default_factory=Data)
    misc: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "out"


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_defaults_and_parent_default_instance():
    cfg = load_config(Cfg)
    assert cfg.search.tau == 3.0  # the parent's default_factory, not Search's own default
    assert cfg.search.epochs == 10 and cfg.proposal.targets == {"flops": 295e6}


def test_yaml_partial_nested_keeps_other_defaults(tmp_path):
    cfg = load_config(Cfg, write(tmp_path / "c.yaml", "search:\n  epochs: 4\ndata:\n  batch: 8\n"))
    assert (cfg.search.epochs, cfg.search.tau, cfg.data.batch, cfg.data.path) == (4, 3.0, 8, "data")


def test_unknown_key_names_dotted_key_valid_keys_and_suggestion(tmp_path):
    path = write(tmp_path / "c.yaml", "search:\n  tua: 4.0\n")
    with pytest.raises(HourNASError) as e:
        load_config(Cfg, path)
    msg = str(e.value)
    assert "unknown config key 'search.tua'" in msg
    assert "valid keys in 'search': tau, epochs, warmup, lrs, arch, sampler" in msg
    assert "(did you mean 'tau'?)" in msg


def test_unknown_key_in_override_and_at_top_level():
    with pytest.raises(ConfigError, match=r"unknown config key 'serch'; valid keys at the top level: .*did you mean 'search'"):
        load_config(Cfg, overrides=["serch.tau=1"])
    with pytest.raises(ConfigError, match=r"'search.tua'.*did you mean 'tau'.*in override 'search.tua=1'"):
        load_config(Cfg, overrides=["search.tua=1"])


@pytest.mark.parametrize("override, pattern", [
    ("search.tau=abc", r"config key 'search.tau' must be a number, got 'abc' \(str\)"),
    ("search.epochs=2.5", r"config key 'search.epochs' must be an integer, got 2.5 \(float\)"),
    ("search.warmup=1", r"config key 'search.warmup' must be true or false, got 1 \(int\)"),
    ("search.lrs=[0.1, x]", r"config key 'search.lrs\[1\]' must be a number, got 'x'"),
    ("search.arch=3", r"config key 'search.arch' must be a string or null, got 3 \(int\)"),
    ("search.sampler=argmax", r"config key 'search.sampler' must be one of 'gumbel_max', 'softmax'"),
    ("search=3", r"config key 'search' must be a mapping \(Search\), got 3"),
])
def test_wrong_type_names_key_expected_and_given(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(Cfg, overrides=[override])


def test_coercions_and_nulls():
    cfg = load_config(Cfg, overrides=["search.tau=4", "search.arch=null", "search.lrs=[1, 0.5]",
                                      "search.warmup=true", "data.batch=3"])
    assert isinstance(cfg.search.tau, float) and cfg.search.tau == 4.0
    assert cfg.search.arch is None and cfg.search.lrs == [1.0, 0.5] and cfg.search.warmup is True
    # YAML 1.1 reads 1e-3 as a string; float fields accept it
    assert load_config(Cfg, overrides=["search.tau=1e-3"]).search.tau == 0.001


def test_nested_override_wins_over_yaml_and_open_mapping_passes_through(tmp_path):
    path = write(tmp_path / "c.yaml", "search:\n  tau: 4.0\n")
    cfg = load_config(Cfg, path, ["search.tau=5.0", "misc.anything.deep=[1, 2]"])
    assert cfg.search.tau == 5.0
    assert cfg.misc == {"anything": {"deep": [1, 2]}}


def test_size_units_in_fields_and_dict_overrides(tmp_path):
    path = write(tmp_path / "c.yaml", "proposal:\n  budget: 1.5G\n")
    cfg = load_config(Cfg, path, ["proposal.targets.params=4.2M"])
    assert cfg.proposal.budget == 1.5e9
    # an override sets one entry of an open mapping and keeps the default ones
    assert cfg.proposal.targets == {"flops": 295e6, "params": 4.2e6}
    with pytest.raises(ConfigError, match=r"invalid size '4.8q' for 'proposal.targets.flops'.*e.g. 4.8M"):
        load_config(Cfg, overrides=["proposal.targets.flops=4.8q"])


@pytest.mark.parametrize("text, value", [
    ("4.8M", 4_800_000), ("295M", 295_000_000), ("1.5G", 1_500_000_000), ("300K", 300_000),
    ("300k", 300_000), ("2.5e6", 2_500_000), ("4,800,000", 4_800_000), (" 12 ", 12), (7, 7), (0.5, 0.5),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["4.8X", "M", "", "-3M", True, [1], "1.2.3M"])
def test_parse_size_rejects_with_example(bad):
    with pytest.raises(HourNASError, match="4.8M"):
        parse_size(bad)


def test_format_size():
    assert format_size(4.8e6) == "4.80M" and format_size(295e6) == "295.00M"
    assert format_size(1.5e9) == "1.50G" and format_size(300e3) == "300.00K" and format_size(512) == "512"


def test_base_merge_relative_to_including_file(tmp_path):
    (tmp_path / "common").mkdir()
    write(tmp_path / "common" / "base.yaml", "search:\n  tau: 9.0\n  epochs: 7\ndata:\n  path: /d\n")
    (tmp_path / "exp").mkdir()
    path = write(tmp_path / "exp" / "child.yaml", "_base_: ../common/base.yaml\nsearch:\n  epochs: 2\n")
    cfg = load_config(Cfg, path)
    assert (cfg.search.tau, cfg.search.epochs, cfg.data.path) == (9.0, 2, "/d")


def test_base_cycle_and_missing_base(tmp_path):
    a = write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(Cfg, a)
    c = write(tmp_path / "c.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' does not exist"):
        load_config(Cfg, c)


def test_base_dict_argument_is_below_yaml(tmp_path):
    path = write(tmp_path / "c.yaml", "search:\n  tau: 2.0\n")
    cfg = load_config(Cfg, path, base={"search": {"tau": 1.0, "epochs": 5}})
    assert (cfg.search.tau, cfg.search.epochs) == (2.0, 5)


def test_validate_hook_runs_on_nested_dataclass():
    with pytest.raises(HourNASError, match="search.epochs must be > 0, got 0"):
        load_config(Cfg, overrides=["search.epochs=0"])


def test_missing_file_and_invalid_yaml_name_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*missing.yaml' does not exist"):
        load_config(Cfg, str(tmp_path / "missing.yaml"))
    path = write(tmp_path / "bad.yaml", "search:\n  tau: 1.0\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML in '.*bad.yaml' at line \d+, column \d+"):
        load_config(Cfg, path)


def test_duplicate_key_and_non_mapping_top_level(tmp_path):
    with pytest.raises(ConfigError, match=r"duplicate key 'tau' in '.*dup.yaml' at line 3"):
        load_config(Cfg, write(tmp_path / "dup.yaml", "search:\n  tau: 1.0\n  tau: 2.0\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Cfg, write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"override 'search.tau' must look like KEY=VALUE"):
        load_config(Cfg, overrides=["search.tau"])


def test_missing_required_key():
    @dataclass
    class Needs:
        name: str

    with pytest.raises(ConfigError, match=r"missing required config key 'name' \(a string\)"):
        load_config(Needs)
    assert load_config(Needs, overrides=["name=x"]).name == "x"


def test_save_config_round_trip(tmp_path):
    cfg = load_config(Cfg, overrides=["proposal.targets.params=4.2M", "search.lrs=[0.5]", "misc.k=[1, 2]"])
    out = tmp_path / "run" / "config.yaml"
    save_config(cfg, str(out))
    assert yaml.safe_load(out.read_text()) == to_dict(cfg)
    assert load_config(Cfg, str(out)) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp files left


def test_union_and_optional_nested_errors_are_precise():
    @dataclass
    class U:
        ids: int | list[int] = 0
        sub: Optional[Data] = None

    assert load_config(U, overrides=["ids=[1, 2]"]).ids == [1, 2]
    with pytest.raises(ConfigError, match=r"config key 'ids\[1\]' must be an integer, got 'a'"):
        load_config(U, overrides=["ids=[1, a]"])
    with pytest.raises(ConfigError, match=r"config key 'ids' must be an integer or a list \(of int\)"):
        load_config(U, overrides=["ids=x"])
    assert load_config(U, overrides=["sub.batch=2"]).sub == Data(batch=2)
    with pytest.raises(ConfigError, match=r"unknown config key 'sub.bacth'.*did you mean 'batch'"):
        load_config(U, overrides=["sub={bacth: 2}"])


def test_search_cross_field_check_is_in_validate(tmp_path):
    """search.epochs_vital=0 needs the ablation without the vital priori: refused when the
    config is loaded (before anything is written), accepted with vital_priori false."""
    from src.search.config import SearchConfig
    with pytest.raises(HourNASError, match="epochs_vital must be >= 1 with the vital priori"):
        load_config(SearchConfig, None, ["search.epochs_vital=0"])
    cfg = load_config(SearchConfig, None, ["search.vital_priori=false", "search.epochs_vital=0"])
    assert cfg.search.vital_priori is False and cfg.search.epochs_vital == 0


def test_no_vital_priori_flag_is_an_override_saved_as_run(tmp_path):
    """search.py --no-vital-priori becomes search.vital_priori=false before validation, so
    the config.yaml written is the one that ran."""
    import subprocess
    import sys
    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "search.py", "--stage", "proposals", "--no-vital-priori",
                           "--output_dir", str(out), "--set", "proposal.iterations=5",
                           "--set", "proposal.report_samples=10", "--set", "search.epochs_vital=0"],
                          capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["search"]["vital_priori"] is False and saved["search"]["epochs_vital"] == 0


def test_search_weight_lr_schedule_is_checked_and_followed():
    """search.w_lr_schedule: cosine (the default) falls to 0 over a stage, constant keeps
    w_lr; anything else is refused by name when the config is loaded."""
    from src.search.config import SearchConfig
    from src.search.loop import weight_lr
    with pytest.raises(HourNASError, match="unknown search.w_lr_schedule 'step'; valid: cosine, constant"):
        load_config(SearchConfig, None, ["search.w_lr_schedule=step"])
    cos = load_config(SearchConfig, None, ["search.w_lr=0.2"]).search
    const = load_config(SearchConfig, None, ["search.w_lr=0.2", "search.w_lr_schedule=constant"]).search
    assert cos.w_lr_schedule == "cosine"
    assert [weight_lr(cos, s, 4) for s in (0, 2)] == [0.2, pytest.approx(0.1)]
    assert weight_lr(cos, 4, 4) == pytest.approx(0.0, abs=1e-12)
    assert [weight_lr(const, s, 4) for s in (0, 2, 4)] == [0.2, 0.2, 0.2]
