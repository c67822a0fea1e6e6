"""benchmarks/graph_choice.py: random graphs of one in-degree, and the test that graphs' win counts share one rate."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

spec = importlib.util.spec_from_file_location("graph_choice", Path(__file__).parents[1] / "benchmarks" /
                                              "graph_choice.py")
graph_choice = importlib.util.module_from_spec(spec)
spec.loader.exec_module(graph_choice)


@given(st.integers(2, 10), st.data())
@settings(max_examples=30, deadline=None)
def test_random_graphs_give_every_receiver_k_other_senders(n, data):
    k = data.draw(st.integers(1, n - 1))
    graphs = graph_choice.random_graphs(n, k, 5, seed=data.draw(st.integers(0, 100)))
    assert len(graphs) == 5
    for g in graphs:
        assert g.shape == (n, n) and set(np.unique(g)) <= {0.0, 1.0}
        assert (g.sum(1) == k).all() and (np.diag(g) == 0).all()
    again = graph_choice.random_graphs(n, k, 5, seed=0)
    assert all((a == b).all() for a, b in zip(again, graph_choice.random_graphs(n, k, 5, seed=0), strict=True))


@given(st.lists(st.integers(0, 40), min_size=2, max_size=12))
@settings(max_examples=50, deadline=None)
def test_the_statistic_is_pearsons_chi_square_of_the_wins_and_losses_table(wins):
    from scipy.stats import chi2_contingency

    n = 40
    stat = float(graph_choice.chi_square(np.array(wins, float), n))
    if 0 < sum(wins) < n * len(wins):
        expected = chi2_contingency(np.array([[w, n - w] for w in wins]), correction=False)[0]
        assert np.isclose(stat, expected)
    else:  # every battle lost, or every one won: nothing differs
        assert stat == 0.0


def test_the_permutation_p_value_tells_one_rate_from_several():
    stat, p = graph_choice.homogeneity([5, 5, 5, 5], 100, permutations=2000)
    assert stat == 0.0 and p == 1.0  # equal counts: every deal is at least as far apart
    stat, p = graph_choice.homogeneity([0, 0, 0, 60], 100, permutations=2000)
    assert stat > 100 and p == 1 / 2001  # no deal of 60 wins over 400 battles comes close
    assert graph_choice.homogeneity([0, 0, 0], 100, permutations=2000) == (0.0, 1.0)
    # the same seed gives the same p-value
    assert graph_choice.homogeneity([3, 7, 5, 9], 50, 2000, seed=3) == graph_choice.homogeneity([3, 7, 5, 9], 50, 2000,
                                                                                                 seed=3)


def test_every_graph_plays_both_ways_and_the_runs_own_graph_is_marl_eval(tmp_path, capsys):
    from marl import config as config_mod
    from marl.cli import evaluate_run
    from marl.trainer import Trainer

    cfg = config_mod.load("smac", "3m", "commformer", [
        "train.envs=2", "train.rollout=20", "train.steps=40", "train.eval_interval=0", "train.torch_threads=1",
        "train.update_threads=1", "train.record_replays=false"])
    run = tmp_path / "3m-learned-s1"
    Trainer(cfg, run, show_progress=False).run()
    with pytest.raises(SystemExit, match=r"3m-learned-s1: its last checkpoint is in the graph's warm-up \(1 of 10 "
                       r"updates\); train past it first"):
        graph_choice.main([str(run), "--graphs", "2", "--episodes", "3"])
    cfg["algo"]["warmup"] = 0  # the top-k graph acts from the first update
    run = tmp_path / "3m-learned-s2"
    Trainer(cfg, run, show_progress=False).run()
    assert graph_choice.main([str(run), "--graphs", "2", "--episodes", "3", "--seed", "50", "--sampled"]) == 0
    out = json.loads((run / "graph_choice.json").read_text())
    names = [r["graph"] for r in out["rows"]]
    assert names[:5] == ["own", "full", "none", "r00", "r01"] and names[7] == "own-sampled"
    assert names[5] == "own-again" and names[6] in ("r00-again", "r01-again")
    assert [r["graph"] for r in out["sampled_rows"]] == names[:5]
    assert [r["seed"] for r in out["sampled_rows"]] == [50, 51, 52, 53, 54] == [r["seed"] for r in out["rows"][:5]]
    n = 3
    assert out["k"] == 1 and out["rows"][1]["edges"] == (1 - np.eye(n, dtype=int)).tolist()
    assert out["rows"][2]["edges"] == np.zeros((n, n), int).tolist()
    assert all(np.array(r["edges"]).sum(1).tolist() == [1, 1, 1] for r in out["rows"][3:5])
    # the run's own graph is what marl eval plays: its argmax, and its sampled actions seeded by the battles' seed
    for row, sampled in [(out["rows"][0], False), (out["sampled_rows"][0], True)]:
        res = evaluate_run(run, 3, 50, sampled=sampled)
        assert (row["win_rate"], row["episode_return"]) == (res["win_rate"], res["episode_return"])
    res = evaluate_run(run, 3, 50 + 100000, sampled=True)
    assert out["rows"][7]["episode_return"] == res["episode_return"]
    assert out["sampled_summary"]["graphs"] == 2 and "3m-learned-s2, sampled actions: own " in capsys.readouterr().out
