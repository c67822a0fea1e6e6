"""benchmarks/graph_choice.py: random graphs of one in-degree, and the test that graphs' win counts share one rate."""

import importlib.util
from pathlib import Path

import numpy as np
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
