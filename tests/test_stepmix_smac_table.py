"""benchmarks/stepmix_smac.py's table on synthetic episodes: windows, their means and upper bounds, the counts
below the threshold, the steps to reach a win rate, and a whole table read from run directories."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("stepmix_smac", Path(__file__).parents[1] / "benchmarks" /
                                              "stepmix_smac.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_windows_by_hand():
    # windows of 4: [1, 3, 5, 7] mean 4, sd sqrt(20/3); [2, 2, 2, 2] mean 2, sd 0; the partial [9, 9] is left out
    mean, upper = bench.windows([1, 3, 5, 7, 2, 2, 2, 2, 9, 9], 4)
    assert mean.tolist() == [4.0, 2.0]
    assert upper.tolist() == [4.0 + 1.96 * math.sqrt(20 / 3) / 2, 2.0]
    assert bench.windows([1.0, 2.0], 4)[0].size == 0


def test_window_row_counts_means_and_upper_bounds_below_the_threshold():
    returns = [1, 3, 5, 7, 2, 2, 2, 2, 9, 9, 9, 9]  # means 4, 2, 9; uppers 6.58, 2, 9
    # family-wise over 3 windows: z = 2.394 (1 - 0.025 / 3), the first window's upper bound 4 + 2.394 * 1.291 = 7.09
    common = {"windows": 3, "expected_at_threshold": 0.075}
    assert bench.window_row(returns, 4.5, 4) == {**common, "below_fraction": 2 / 3, "upper_below": 1,
                                                 "upper_below_familywise": 1}
    assert bench.window_row(returns, 7.0, 4) == {**common, "below_fraction": 2 / 3, "upper_below": 2,
                                                 "upper_below_familywise": 1}
    assert bench.window_row(returns, 7.2, 4)["upper_below_familywise"] == 2
    assert bench.window_row(returns, 1.0, 4) == {**common, "below_fraction": 0.0, "upper_below": 0,
                                                 "upper_below_familywise": 0}
    assert bench.window_row([1.0], 1.0, 4) == {"windows": 0, "below_fraction": None, "upper_below": 0,
                                               "expected_at_threshold": 0.0, "upper_below_familywise": 0}


def test_steps_to_reach():
    evals = [(300, 0.5), (100, 0.2), (200, 0.45), (400, 0.9)]
    assert bench.steps_to_reach(evals, 0.45) == 200
    assert bench.steps_to_reach(evals, 0.5) == 300
    assert bench.steps_to_reach(evals, 0.95) is None


def test_table_from_run_directories(tmp_path, monkeypatch):
    (tmp_path / "baseline.json").write_text(json.dumps({"v_b": 10.0, "deterministic_win_rate": 0.5}))
    rng = np.random.default_rng(0)
    for name, mode, offset in [("epsmix-s1", "epsmix", 0.0), ("mappo-s1", "mappo", -6.0)]:
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "bench.json").write_text(json.dumps({"mode": mode, "seed": 1, "alpha": 0.1}))
        returns = np.round(10 + offset + rng.normal(0, 1, 520), 3)
        rows = "".join(f"1,100,{float(r)!r},20,0\n" for r in returns)
        (run / "episodes.csv").write_text("update,env_steps,return,length,won\n" + rows)
    (tmp_path / "runs" / "unfinished").mkdir()  # no episodes.csv: not a row
    monkeypatch.setattr(bench, "read_evals", lambda run: [(64, 0.3), (128, 0.5)] if "epsmix" in run.name else [])
    rows = bench.table(tmp_path, 256)
    assert [r["run"] for r in rows] == ["epsmix-s1", "mappo-s1"]
    eps, scratch = rows
    assert eps["threshold"] == pytest.approx(9.0) and eps["windows"] == 2
    assert eps["below_fraction"] == 0.0 and eps["upper_below"] == 0 and eps["steps_to_baseline_win_rate"] == 128
    assert scratch["below_fraction"] == 1.0 and scratch["upper_below"] == 2
    assert scratch["steps_to_baseline_win_rate"] is None
    ret = bench.read_returns(tmp_path / "runs" / "mappo-s1")
    assert ret.shape == (520,) and bench.window_row(ret, 9.0, 256) == {k: scratch[k] for k in
                                                                       ("windows", "below_fraction", "upper_below",
                                                                        "expected_at_threshold",
                                                                        "upper_below_familywise")}


def test_precise_vb_measures_once_and_keeps_the_picks_figure(tmp_path, monkeypatch):
    pick = {"checkpoint": "step-64.pt", "v_b": 10.0, "v_b_episodes": 256, "deterministic_win_rate": 0.5}
    (tmp_path / "baseline.json").write_text(json.dumps(pick))
    monkeypatch.setattr("marl.config.load_file", lambda path: {"path": str(path)})
    monkeypatch.setattr("marl.checkpoint.load", lambda path: {"learner": "weights"})
    calls = []

    def play(config, state, episodes, seed, with_eval=True):
        calls.append((config["path"], state, episodes, with_eval))
        return {"return": [8.0, 9.0, 10.0, 13.0], "won": [0, 0, 1, 1]}, None

    monkeypatch.setattr(bench, "_play", play)
    args = type("Args", (), {"root": str(tmp_path), "vb_episodes": 4})()
    base = bench.precise_vb(args, pick)
    assert calls == [(str(tmp_path / "baseline" / "config.yaml"), "weights", 4, False)]
    assert base["v_b"] == 10.0 and base["v_b_episodes"] == 4 and base["v_b_win_rate"] == 0.5
    assert base["v_b_se"] == pytest.approx(np.std([8, 9, 10, 13], ddof=1) / 2)
    assert base["v_b_pick"] == 10.0 and base["v_b_pick_episodes"] == 256
    assert json.loads((tmp_path / "baseline.json").read_text()) == base
    assert bench.precise_vb(args, base) == base and len(calls) == 1  # measured once
    off = type("Args", (), {"root": str(tmp_path), "vb_episodes": 0})()
    assert bench.precise_vb(off, pick) == pick


def test_modes_and_tag_name_the_runs(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(bench, "_config", lambda args, algo, seed, *more: {"algo": algo, "more": more})
    monkeypatch.setattr(bench, "_train", lambda cfg, run, resume: trained.append((run.name, cfg["algo"])))
    args = bench.build_parser().parse_args(["--root", str(tmp_path), "--seeds", "2", "--modes", "stepmix,epsmix",
                                             "--tag", "init-baseline", "-o", "algo.init=baseline"])
    bench.runs(args)
    assert trained == [("stepmix-init-baseline-s1", "stepmix"), ("epsmix-init-baseline-s1", "stepmix"),
                       ("stepmix-init-baseline-s2", "stepmix"), ("epsmix-init-baseline-s2", "stepmix")]
    meta = json.loads((tmp_path / "runs" / "epsmix-init-baseline-s2" / "bench.json").read_text())
    assert meta == {"mode": "epsmix", "seed": 2, "alpha": 0.1, "tag": "init-baseline",
                    "override": ["algo.init=baseline"]}
    with pytest.raises(bench.argparse.ArgumentTypeError,
                       match=r"^'ppo' is not a comma list of epsmix, stepmix, mappo$"):
        bench._modes("stepmix,ppo")
