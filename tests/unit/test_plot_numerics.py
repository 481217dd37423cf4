"""Pictures and reports of a run whose θ/Π took extreme values (a huge architecture lr):
no numpy warnings, no nan in any title or label."""
from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np
import pytest

from src.sampler import softmax_np, stable_softmax
from tests.analysis_fixtures import make_synthetic_run


def test_stable_softmax_is_finite_for_any_input_and_exact_for_ordinary_input():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        assert np.allclose(stable_softmax([1e30, 0.0, -1e30]), [1, 0, 0])
        assert np.allclose(stable_softmax([np.inf, 1.0, np.inf]), [0.5, 0, 0.5])
        assert np.allclose(stable_softmax([np.nan, 2.0]), [0, 1])
        assert np.allclose(stable_softmax([-np.inf, -np.inf]), [0.5, 0.5])
        assert np.allclose(stable_softmax([[1e4, 0.0], [0.0, 0.0]], axis=1), [[1, 0], [0.5, 0.5]])
    z = np.random.default_rng(0).standard_normal((4, 9))
    assert np.allclose(stable_softmax(z, axis=-1), softmax_np(z))


@pytest.fixture
def extreme_run(tmp_path):
    folder = tmp_path / "run"
    make_synthetic_run(str(folder), m=4)
    with np.load(folder / "arch_params.npz") as d:
        theta = d["theta"] * 1e6   # |θ| ~ 1e6: exp overflows without the max shift
        pi = np.array([3e4, -2e4, 1e5, 7e2])
    theta[0, 0, 0] = np.inf
    np.savez(folder / "arch_params.npz", theta=theta, pi=pi)
    recs = [json.loads(ln) for ln in (folder / "search_log.jsonl").read_text().splitlines()]
    for r in recs:
        if r["stage"] == "nonvital":
            r["pi"] = pi.tolist()
    (folder / "search_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


def _record_texts(monkeypatch) -> list[str]:
    from matplotlib.axes import Axes
    texts = []
    for name in ("set_title", "set_xlabel", "set_ylabel"):
        orig = getattr(Axes, name)

        def wrapped(self, label, *a, _orig=orig, **k):
            texts.append(str(label))
            return _orig(self, label, *a, **k)
        monkeypatch.setattr(Axes, name, wrapped)
    return texts


def test_search_pictures_of_extreme_values_warn_nothing_and_show_no_nan(extreme_run,
                                                                       monkeypatch):
    from src.analysis.report import draw_search_pictures
    texts = _record_texts(monkeypatch)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        written = draw_search_pictures(str(extreme_run))
    assert [os.path.basename(p) for p in written] == ["search_theta.png", "search_progress.png"]
    assert all(os.path.getsize(p) > 5000 for p in written)
    titles = [t for t in texts if t.startswith("Final op probabilities")]
    assert titles == ["Final op probabilities of proposal 2 (softmax(Π) = 1.00); red box = "
                      "derived op"], texts
    assert not any("nan" in t.lower() for t in texts), texts


def test_report_of_extreme_values_warns_nothing_and_shows_no_nan(extreme_run, monkeypatch):
    from src.analysis import report
    texts = _record_texts(monkeypatch)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        path, info = report.build_report(str(extreme_run))
    page = open(path, encoding="utf-8").read()
    assert info["problems"] == [], info["problems"]
    assert not any("nan" in t.lower() for t in texts), texts
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)  # the pictures' bytes
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
