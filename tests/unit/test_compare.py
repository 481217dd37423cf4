"""The comparison of searched and random networks: its bookkeeping, statistics and the supernet
ranking (analyze.py compare; the whole chain runs in tests/e2e/test_compare_cli.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from src.analysis.compare import (Compare, CompareConfig, Net, Progress, _train_state,
                                  group_stats, markdown, mean_tests, proposal_choice, rankings,
                                  recipe_agreement, verdict)
from src.config import load_config
from src.errors import ConfigError, HourNASError


def _log(folder, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train_log.jsonl"), "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def test_train_state_reads_the_last_epoch_not_the_best(tmp_path):
    folder = str(tmp_path / "t")
    assert _train_state(folder) == ("new", None)
    _log(folder, [{"event": "start"}, {"event": "eval", "epoch": 1, "top1": 90.0}])
    open(os.path.join(folder, "net-1_10.ckpt"), "wb").close()
    assert _train_state(folder) == ("resume", None)
    _log(folder, [{"event": "start"}, {"event": "eval", "epoch": 1, "top1": 91.0},
                  {"event": "eval", "epoch": 2, "top1": 89.5}, {"event": "done", "wall_s": 12.5}])
    state, ev = _train_state(folder)
    assert state == "done" and ev["top1"] == 89.5 and ev["epoch"] == 2 and ev["wall_s"] == 12.5


def _nets(searched, random, vital=()):
    nets = [Net(f"searched_s{i}", "searched", "a", seed=i, top1=v) for i, v in enumerate(searched)]
    nets += [Net(f"random_{i:02d}", "random", "a", top1=v) for i, v in enumerate(random, 1)]
    nets += [Net(f"vital_{i:02d}", "random_vital", "a", top1=v) for i, v in enumerate(vital, 1)]
    return nets


def test_group_statistics_and_the_verdict():
    nets = _nets([91.0, 90.0], [88.0, 89.0, 90.0, None])
    stats = group_stats(nets)
    assert stats["searched"] == {"n": 2, "mean": 90.5, "std": pytest.approx(np.std([91, 90], ddof=1)),
                                 "min": 90.0, "max": 91.0}
    assert stats["random"]["n"] == 3 and stats["random"]["std"] == pytest.approx(1.0)
    v = verdict(stats)
    assert v["random_mean_plus_2std"] == pytest.approx(91.0) and v["beats_random"] is False
    assert verdict(group_stats(_nets([91.5], [88.0, 89.0, 90.0])))["beats_random"] is True
    assert verdict(group_stats(_nets([91.5], [88.0]))) is None  # one random net: no spread


def test_the_difference_of_means_is_tested_against_chance(tmp_path):
    from scipy.stats import ttest_ind

    searched, random, vital = [85.5, 85.1, 86.3], [85.6, 85.6, 87.0, 87.0, 85.2], [88.0]
    tests = mean_tests(group_stats(_nets(searched, random, vital)))
    assert set(tests) == {"random"}  # one random_vital net: no spread, no test
    assert tests["random"]["diff"] == pytest.approx(np.mean(searched) - np.mean(random))
    assert tests["random"]["n"] == [3, 5]
    assert tests["random"]["p"] == pytest.approx(ttest_ind(searched, random, equal_var=False).pvalue)
    assert tests["random"]["p"] > 0.05  # half a point at these counts: chance
    far = mean_tests(group_stats(_nets([95.0, 95.2, 94.9], [85.0, 85.3, 84.8, 85.1])))
    assert far["random"]["diff"] > 9 and far["random"]["p"] < 1e-4
    flat = mean_tests(group_stats(_nets([90.0, 90.0], [89.0, 89.0])))  # no spread at all
    assert flat["random"]["p"] == 0.0
    assert verdict(group_stats(_nets(searched, random)))["tests"] == mean_tests(
        group_stats(_nets(searched, random)))
    cmp = Compare(CompareConfig(search="config/search/default.yaml",
                                train="config/train/digits.yaml", seeds=[0, 1, 2],
                                output_dir=str(tmp_path)), None, None, log=lambda _: None)
    nets = _nets(searched, random)
    page = markdown(cmp, nets, group_stats(nets), {})
    assert (f"Searched mean - random mean: {tests['random']['diff']:+.2f} points (Welch's "
            f"t-test, n = 3 and 5: p = {tests['random']['p']:.2f}; no difference beyond chance"
            in page)


def test_kendall_tau_per_supernet_over_the_nets_it_can_run(tmp_path):
    cfg = CompareConfig(search="config/search/default.yaml", train="config/train/digits.yaml",
                        seeds=[0, 1], output_dir=str(tmp_path))
    cmp = Compare(cfg, None, None, log=lambda _: None)
    nets = _nets([90.0], [85.0], [88.0, 87.0])
    for n, acc in zip(nets, (0.9, None, 0.8, 0.7)):  # the random net: another vital op
        if acc is not None:
            n.supernet[0] = acc
    ranks = rankings(cmp, nets)
    assert list(ranks) == [0]  # seed 1 scored nothing
    assert ranks[0]["n"] == 3 and ranks[0]["tau"] == pytest.approx(1.0)
    assert ranks[0]["nets"] == ["searched_s0", "vital_01", "vital_02"]
    assert "others" not in ranks[0]  # two nets without the searched one: no ranking
    nets[3].supernet[0] = 0.95  # now the ranking is wrong for one pair
    assert rankings(cmp, nets)[0]["tau"] == pytest.approx(-1 / 3)
    page = markdown(cmp, nets, group_stats(nets), rankings(cmp, nets))
    assert "| searched_s0 | searched |" in page and "Kendall's τ = -0.33" in page


def test_kendall_tau_without_the_supernets_own_net(tmp_path):
    """The supernet rates its own derived net first while it retrains worst; the others it
    ranks in order: τ over all is low, τ without its own net is 1."""
    cfg = CompareConfig(search="config/search/default.yaml", train="config/train/digits.yaml",
                        seeds=[0], output_dir=str(tmp_path))
    cmp = Compare(cfg, None, None, log=lambda _: None)
    nets = _nets([85.0], [], [86.0, 87.0, 88.0])
    for n, acc in zip(nets, (0.99, 0.80, 0.85, 0.90)):
        n.supernet[0] = acc
    r = rankings(cmp, nets)[0]
    assert r["n"] == 4 and r["tau"] == pytest.approx(0.0)  # 3 concordant, 3 discordant pairs
    assert r["others"]["n"] == 3 and r["others"]["tau"] == pytest.approx(1.0)
    page = markdown(cmp, nets, group_stats(nets), rankings(cmp, nets))
    assert "without its own derived net (the path stage 2 trained most): τ = 1.00" in page


def test_config_is_checked(tmp_path):
    path = tmp_path / "c.yaml"
    for body, words in (("seeds: [0, 0]", "distinct"), ("random: -1", "must be >= 0"),
                        ("bogus: 1", "unknown config key 'bogus'")):
        path.write_text(f"search: a.yaml\ntrain: b.yaml\n{body}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=words):
            load_config(CompareConfig, str(path))
    cfg = CompareConfig(search="config/search/nope.yaml", train="config/train/digits.yaml")
    with pytest.raises(ConfigError, match="nope.yaml' does not exist"):
        Compare(cfg, None, None, log=print)


def test_progress_eta_comes_from_the_steps_done_and_survives_a_restart(tmp_path):
    lines = []
    p = Progress(str(tmp_path / "progress.json"), total=3, jobs=1, log=lines.append)
    assert "after the first step" in p.eta({"train": 2})
    p.step("train", 100.0, "net 1 retrained", {"train": 2})
    assert lines == ["[1/3] net 1 retrained (ETA 0:03:20)"]
    again = Progress(str(tmp_path / "progress.json"), total=2, jobs=2, log=lines.append)
    assert again.eta({"train": 1, "search": 0}) == "ETA 0:00:50"  # two steps at once


def test_two_recipes_on_the_same_networks_are_set_side_by_side(tmp_path):
    cfg = CompareConfig(search="config/search/default.yaml", train="config/train/digits.yaml",
                        seeds=[0], output_dir=str(tmp_path / "x2"),
                        archs_from=str(tmp_path / "x1"))
    cmp = Compare(cfg, None, None, log=lambda _: None)
    nets = _nets([88.0, 87.0], [86.0, 89.0, None])
    for n, before in zip(nets, (85.0, 85.5, 86.0, 87.0, 84.0)):
        n.source_top1 = before
    assert recipe_agreement(nets[:2]) is None  # fewer than three nets trained both ways
    r = recipe_agreement(nets)
    # 4 nets under both recipes; pairs: (s0,s1) -, (s0,r1) -, (s0,r2) +, (s1,r1) -, (s1,r2) +,
    # (r1,r2) +: 3 concordant, 3 discordant
    assert r["n"] == 4 and r["tau"] == pytest.approx(0.0)
    assert r["groups"]["searched"] == {"n": 2, "there": 85.25, "here": 87.5}
    assert r["groups"]["random"] == {"n": 2, "there": 86.5, "here": 87.5}
    page = markdown(cmp, nets, group_stats(nets), {}, agree=r)
    assert f"top-1 in {tmp_path / 'x1'} (%)" in page
    assert "| searched_s0 | searched | — | — | — | 88.00 | — | 85.00 |" in page
    assert "| random_03 | random | — | — | — | — | — | 84.00 |" in page
    assert "Kendall's τ = 0.00" in page and "searched 85.25 -> 87.50% (n = 2)" in page
    plain = Compare(CompareConfig(search=cfg.search, train=cfg.train, seeds=[0],
                                  output_dir=str(tmp_path / "p")), None, None, log=print)
    assert "top-1 in" not in markdown(plain, nets, group_stats(nets), {})


def test_archs_from_must_be_another_folder_with_the_same_draws(tmp_path):
    base = dict(search="config/search/default.yaml", train="config/train/digits.yaml", seeds=[0])
    with pytest.raises(ConfigError, match="'archs_from' is the output folder itself"):
        Compare(CompareConfig(**base, output_dir=str(tmp_path / "a"),
                              archs_from=str(tmp_path / "a")), None, None, log=print)
    src = tmp_path / "src"
    (src / "search" / "seed0").mkdir(parents=True)
    for name in ("arch.yaml", "summary.json"):
        (src / "search" / "seed0" / name).write_text("{}")
    (src / "random").mkdir()
    (src / "random" / "random_archs.json").write_text(json.dumps(
        {"archs": [{"file": f"random_0{k}.yaml"} for k in (1, 2, 3)]}))
    ok = Compare(CompareConfig(**base, random=3, output_dir=str(tmp_path / "b"),
                               archs_from=str(src)), None, None, log=print)
    ok.check_archs_from()
    assert [n.arch for n in ok.nets()][1:] == [str(src / "random" / f"random_0{k}.yaml")
                                               for k in (1, 2, 3)]
    fewer = Compare(CompareConfig(**base, random=2, output_dir=str(tmp_path / "c"),
                                  archs_from=str(src)), None, None, log=print)
    with pytest.raises(HourNASError, match="drew 3 'random' networks, this config asks for 2: "
                                           "set random: 3"):
        fewer.check_archs_from()


def test_pis_choice_is_ranked_among_its_proposals_networks(tmp_path):
    """Π chose the net that retrained third of four; π and top-1 disagree on 4 of 6 pairs."""
    cfg = CompareConfig(search="config/search/default.yaml", train="config/train/digits.yaml",
                        seeds=[0], random=2, proposals=True, output_dir=str(tmp_path))
    cmp = Compare(cfg, None, None, log=lambda _: None)
    nets = _nets([86.0], [85.0, 88.0])
    nets[0].pi = 0.5
    nets += [Net(f"proposal_{j}", "proposals", "a", seed=0, pi=pi, top1=t)
             for j, pi, t in ((1, 0.2, 87.0), (2, 0.2, 85.5), (3, 0.1, 88.5))]
    c = proposal_choice(cmp, nets)
    assert (c["chosen"], c["chosen_rank"], c["n"]) == ("searched_s0", 3, 4)
    assert (c["best"], c["best_top1"]) == ("proposal_3", 88.5)
    assert c["mean"] == pytest.approx(np.mean([86.0, 87.0, 85.5, 88.5]))
    from scipy.stats import kendalltau
    assert c["tau"] == pytest.approx(kendalltau([0.5, 0.2, 0.2, 0.1], [86, 87, 85.5, 88.5])[0])
    page = markdown(cmp, nets, group_stats(nets), {}, choice=c)
    assert "| proposal_3 | proposals | 0.100 |" in page and "| random_01 | random | — |" in page
    assert ("Π's choice among the 4 networks of seed 0's proposals: searched_s0 (Π 0.500) "
            "retrained to 86.00%, rank 3 of 4; the best, proposal_3, 88.50%") in page
    assert group_stats(nets)["proposals"]["n"] == 3
    seed0 = tmp_path / "search" / "seed0"   # a search that derived by the supernet says so
    seed0.mkdir(parents=True)
    (seed0 / "summary.json").write_text(json.dumps({"derive": "supernet"}), encoding="utf-8")
    c = proposal_choice(cmp, nets)
    assert c["derive"] == "supernet"
    assert "The supernet's choice among the 4 networks" in markdown(
        cmp, nets, group_stats(nets), {}, choice=c)
    # without the option, or before the searched net is retrained, there is nothing to rank
    nets[0].top1 = None
    assert proposal_choice(cmp, nets) is None
    cfg.proposals = False
    nets[0].top1 = 86.0
    assert proposal_choice(cmp, nets) is None
    assert "Π |" not in markdown(cmp, nets, group_stats(nets), {})
