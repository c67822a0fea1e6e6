"""StepMix and EpsMix, the tabular reference: exact values, limits, lower-bound properties, the loader and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marl.agents.stepmix import tabular as T

# ---------------------------------------------------------------- a 2-state MDP computed by hand
# P[s, a, s']: state 0, action 0 stays; action 1 goes to either state with 1/2. State 1, action 0 stays;
# action 1 goes back to 0. Mean rewards R[s, a]. H = 2, s1 = 0.
P2 = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [1.0, 0.0]]])
R2 = np.array([[0.2, 0.5], [1.0, 0.0]])
UNI2 = np.full((2, 2, 2), 0.5)
OPT2 = np.array([[[0, 1], [1, 0]], [[0, 1], [1, 0]]], dtype=float)  # action 1 in state 0, action 0 in state 1


def hand_mdp() -> T.MDP:
    """The 2-state MDP above, the uniform policy as its baseline."""
    return T.check_mdp(P2, R2, 2, 0, UNI2)


def test_exact_dp_on_a_two_state_mdp_by_hand():
    # pi: step 0 plays action 1 in state 0 and action 0 in state 1; step 1 mixes 1/2-1/2 in state 0, action 1 in 1
    pi = np.array([[[0, 1], [1, 0]], [[0.5, 0.5], [0, 1]]])
    V = T.evaluate(P2, R2, pi)
    # V_1(0) = (0.2 + 0.5) / 2 = 0.35, V_1(1) = R[1, 1] = 0
    # V_0(0) = R[0, 1] + (V_1(0) + V_1(1)) / 2 = 0.5 + 0.175 = 0.675; V_0(1) = R[1, 0] + V_1(1) = 1.0
    np.testing.assert_allclose(V, [[0.675, 1.0], [0.35, 0.0], [0.0, 0.0]], atol=1e-15)
    Vs, pis = T.optimal(P2, R2, 2)
    # V*_1 = (0.5, 1.0); Q*_0(0, .) = (0.2 + 0.5, 0.5 + 0.75) = (0.7, 1.25); Q*_0(1, .) = (1 + 1, 0 + 0.5)
    np.testing.assert_allclose(Vs, [[1.25, 2.0], [0.5, 1.0], [0.0, 0.0]], atol=1e-15)
    np.testing.assert_array_equal(pis, OPT2)
    m = hand_mdp()
    # the uniform baseline: V_1 = (0.35, 0.5); V_0(0) = (0.2 + 0.35) / 2 + (0.5 + (0.35 + 0.5) / 2) / 2 = 0.7375
    assert T.evaluate(P2, R2, UNI2)[0, 0] == pytest.approx(0.7375, abs=1e-15)
    # EpsMix, eps = 1/4: 0.25 * 1.25 + 0.75 * 0.7375
    assert T.value_epsmix(m, OPT2, 0.25) == pytest.approx(0.865625, abs=1e-15)
    # StepMix kappa = 1.5: step 0 the learner; step 1 half-half: V_1 = ((0.5 + 0.35) / 2, (1.0 + 0.5) / 2)
    # = (0.425, 0.75); V_0(0) = 0.5 + (0.425 + 0.75) / 2 = 1.0875
    assert T.value_stepmix(m, OPT2, 1.5) == pytest.approx(1.0875, abs=1e-15)
    # kappa = 0.5: at step 0 half the learner's Q(0, 1) under the baseline's tail (0.5 + (0.35 + 0.5) / 2 = 0.925)
    # and half the baseline (0.7375)
    assert T.value_stepmix(m, OPT2, 0.5) == pytest.approx(0.83125, abs=1e-15)
    assert T.value_stepmix(m, OPT2, 0.0) == pytest.approx(0.7375, abs=1e-15)
    assert T.value_stepmix(m, OPT2, 2.0) == pytest.approx(1.25, abs=1e-15)
    # the pessimistic recursion with a bonus of 0.3 everywhere, each Q clipped at 0:
    # V_1(0) = (max(0, -0.1) + 0.2) / 2 = 0.1, V_1(1) = max(0, -0.3) = 0; V_0(0) = 0.5 + 0.05 - 0.3 = 0.25
    Vp = T.evaluate(P2, R2, pi, bonus=np.full((2, 2), 0.3))
    np.testing.assert_allclose(Vp[:, 0], [0.25, 0.1, 0.0], atol=1e-15)


def test_switch_members_run_the_learner_first_then_the_baseline():
    learner, base = np.zeros((3, 2, 2)), np.ones((3, 2, 2))
    members = T.switch_members(learner, base)
    assert members.shape == (4, 3, 2, 2)
    for h in range(4):
        assert [int(members[h, t, 0, 0]) for t in range(3)] == [0] * h + [1] * (3 - h)
    mixed = T.switch_policy(learner, base, 1.25)
    assert [float(mixed[t, 0, 0]) for t in range(3)] == [0.0, 0.75, 1.0]
    with pytest.raises(ValueError, match=r"kappa must lie in \[0, 3\]"):
        T.switch_policy(learner, base, 3.5)


def test_ucbvi_bonus_and_plan():
    L = T.log_term(10, 3, 5, 20_000)
    assert L == pytest.approx(math.log(10 * 3 * 5 * 20_000 / 0.05))
    np.testing.assert_allclose(T.bonus(np.array([0, 1, 4, 100]), 5, L), 5 * np.sqrt(L / np.array([1, 1, 4, 100])))
    assert T.bonus(np.array([9]), 2, 4.0, c=0.5)[0] == pytest.approx(0.5 * 2 * math.sqrt(4.0 / 9))
    assert (T.DELTA, T.C_BONUS) == (0.05, 1.0)
    # no data: every Q is clipped at the steps left
    Q, _ = T.ucbvi_plan(np.zeros((2, 2, 2)), np.zeros((2, 2)), T.bonus(np.zeros((2, 2)), 3, 5.0), 3)
    np.testing.assert_array_equal(Q[:, 0, 0], [3, 2, 1])
    # the true model and no bonus: UCB-VI is value iteration
    Q, pi = T.ucbvi_plan(P2, R2, np.zeros((2, 2)), 2)
    np.testing.assert_array_equal(pi, OPT2)
    np.testing.assert_allclose(Q[0], [[0.7, 1.25], [2.0, 0.5]])
    # a small bonus is added once per step, before the clip: Q_1(0, 1) = min(1, 0.5 + 0.1)
    Q, _ = T.ucbvi_plan(P2, R2, np.full((2, 2), 0.1), 2)
    assert Q[1, 0, 1] == pytest.approx(0.6)
    assert Q[0, 0, 1] == pytest.approx(0.5 + 0.1 + 0.5 * (0.6 + 1.0))


def test_required_c_proves_c_1_for_the_benchmark_and_not_for_large_S():
    c = T.required_c(10, 3, 5, 20_000)
    L = math.log(6e7)
    ld = L + math.log(2)
    assert c == pytest.approx(0.8 * math.sqrt((10 * math.log(2) + ld) / (2 * L)) + math.sqrt(ld / (2 * L)) / 5)
    assert 0.8 < c < T.C_BONUS
    assert T.required_c(32, 3, 5, 20_000) <= T.C_BONUS < T.required_c(40, 3, 5, 20_000)
    assert T.required_c(4, 2, 3, 120) < T.C_BONUS  # the CLI test's tiny garnet is covered too


def test_epsmix_eps_at_its_edges():
    vb = 2.0
    assert T.epsmix_eps(1.8, vb, 0.9 * vb) == 1.0  # the lower bound clears the threshold exactly
    assert T.epsmix_eps(3.0, vb, 0.9 * vb) == 1.0
    assert T.epsmix_eps(0.0, vb, 0.9 * vb) == pytest.approx(0.1)  # nothing known: eps = alpha
    assert T.epsmix_eps(1.0, vb, 0.9 * vb) == pytest.approx(0.1 * 2.0 / (2.0 - 1.0))  # alpha V_b / (V_b - L)
    assert T.epsmix_eps(1.8 - 1e-9, vb, 0.9 * vb) == pytest.approx(1.0, abs=1e-8)  # continuous at the threshold
    assert T.epsmix_eps(0.0, vb, 0.0) == 1.0  # alpha = 1: threshold 0
    assert T.epsmix_eps(1.9, vb, vb) == 0.0  # alpha = 0: the baseline unless the learner is proven as good
    assert T.epsmix_eps(2.0, vb, vb) == 1.0
    assert T.epsmix_eps(0.5, 1.0, 1.2) == 0.0  # a baseline credited below the threshold (offline, small data)


def test_stepmix_kappa_is_the_largest_member_that_clears():
    assert T.stepmix_kappa([2.0, 1.9, 1.95], 1.8) == 2.0
    # [0, 1] crossing: 2.0 - rho (2.0 - 1.0) = 1.8 -> rho = 0.2
    assert T.stepmix_kappa([2.0, 1.0, 0.5], 1.8) == pytest.approx(0.2)
    # not monotone: member 2 clears although member 1 does not; the crossing on [2, 3]
    assert T.stepmix_kappa([2.0, 1.0, 1.9, 1.5], 1.8) == pytest.approx(2.25)
    assert T.stepmix_kappa([1.7, 1.0], 1.8) == 0.0
    assert T.stepmix_kappa([2.0, 1.9], 0.0) == 1.0


def small_garnet(seed=0, H=3):
    """A garnet small enough for quick runs."""
    return T.garnet(4, 2, H, branching=2, baseline_level=0.5, seed=seed)


def test_garnet_is_built_as_documented():
    m = T.garnet(6, 3, 4, branching=2, baseline_level=0.3, seed=5)
    assert (np.count_nonzero(m.P, axis=2) == 2).all() and np.allclose(m.P.sum(axis=2), 1)
    assert m.R.min() >= 0 and m.R.max() <= 1 and m.s1 == 0
    vs = T.optimal(m.P, m.R, 4)[0][0, 0]
    vu = T.evaluate(m.P, m.R, T.uniform_policy(4, 6, 3))[0, 0]
    vb = T.evaluate(m.P, m.R, m.baseline)[0, 0]
    assert vb == pytest.approx(vu + 0.3 * (vs - vu), abs=1e-9)
    np.testing.assert_array_equal(T.garnet(6, 3, 4, branching=2, seed=5).P, m.P)  # the seed fixes the MDP
    assert np.allclose(T.garnet(6, 3, 4, baseline_level=0.0).baseline, 1 / 3)
    with pytest.raises(ValueError, match=r"branching must lie in \[1, S=6\]"):
        T.garnet(6, 3, 4, branching=7)


def test_alpha_1_makes_the_same_choices_as_ucbvi():
    m = small_garnet(1)
    ref = T.run(m, "ucbvi", 300, 1.0, seed=3)
    assert ref.violated.sum() == 0  # threshold 0: nothing can violate
    for algo in ("epsmix", "stepmix"):
        r = T.run(m, algo, 300, 1.0, seed=3)
        np.testing.assert_array_equal(r.values, ref.values)  # the same policies, episode by episode
        assert r.final_learner_value == ref.final_learner_value
        np.testing.assert_array_equal(r.mixing, 1.0 if algo == "epsmix" else float(m.H))


def test_alpha_0_always_plays_the_baseline():
    m = small_garnet(2)
    for algo in ("epsmix", "stepmix"):
        r = T.run(m, algo, 300, 0.0, seed=4)
        np.testing.assert_array_equal(r.mixing, 0.0)
        np.testing.assert_allclose(r.values, r.v_baseline, rtol=0, atol=1e-12)
        assert r.violated.sum() == 0
    assert T.run(m, "ucbvi", 300, 0.0, seed=4).violated[:50].sum() > 0  # the check has power


def test_a_learning_run_keeps_above_the_threshold_and_ucbvi_does_not():
    m = T.garnet(6, 3, 4, seed=11)
    runs = {a: T.run(m, a, 1500, 0.1, seed=0) for a in T.ALGOS}
    assert runs["ucbvi"].violated[:100].sum() > 10
    for a in ("epsmix", "stepmix"):
        assert runs[a].violated.sum() == 0
        assert runs[a].mixing.max() > 0  # it did play the learner
    assert (np.diff(runs["ucbvi"].regret) >= 0).all()


def random_mdp(rng, S, A, H):
    """A random MDP with a random stochastic baseline, for the property tests."""
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    R = rng.uniform(0, 1, size=(S, A))
    base = rng.dirichlet(np.ones(A), size=(H, S))
    return T.check_mdp(P, R, H, int(rng.integers(S)), base)


def random_deterministic(rng, H, S, A):
    """A random deterministic policy [H, S, A]."""
    return np.eye(A)[rng.integers(A, size=(H, S))]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(2, 3), A=st.integers(2, 3), H=st.integers(1, 3),
       n=st.sampled_from([1, 10, 100, 1000, 5000]))
def test_pessimistic_value_is_at_most_the_exact_value(seed, S, A, H, n):
    rng = np.random.default_rng(seed)
    m = random_mdp(rng, S, A, H)
    st_, ac, rw, s2 = T.play_episodes(m, T.uniform_policy(H, S, A), n, rng)
    counts = T.Counts(S, A)
    for s, a, r, s_ in zip(st_.ravel(), ac.ravel(), rw.ravel(), s2.ravel()):
        counts.add(s, a, r, s_)
    P_hat, r_hat = counts.model()
    b = T.bonus(counts.N, H, T.log_term(S, A, H, n))
    _, learner = T.ucbvi_plan(P_hat, r_hat, b, H)  # a policy that depends on the data
    pols = np.concatenate([T.switch_members(learner, m.baseline), random_deterministic(rng, H, S, A)[None]])
    lower = T.pessimistic_values(P_hat, r_hat, b, pols, m.s1)
    exact = T.evaluate(m.P, m.R, pols)[:, 0, m.s1]
    assert (lower <= exact + 1e-12).all(), (lower, exact)


def test_pessimistic_value_is_informative_with_much_data():
    m = hand_mdp()
    rng = np.random.default_rng(0)
    counts = T.Counts(2, 2)
    st_, ac, rw, s2 = T.play_episodes(m, UNI2, 50_000, rng)
    np.add.at(counts.N, (st_.ravel(), ac.ravel()), 1)
    np.add.at(counts.rsum, (st_.ravel(), ac.ravel()), rw.ravel())
    np.add.at(counts.nsas, (st_.ravel(), ac.ravel(), s2.ravel()), 1)
    P_hat, r_hat = counts.model()
    b = T.bonus(counts.N, 2, T.log_term(2, 2, 2, 50_000))
    lower = T.pessimistic_values(P_hat, r_hat, b, OPT2[None], 0)[0]
    assert 1.25 - 0.3 < lower < 1.25  # exact 1.25, the bonus is ~0.05 per visit


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), S=st.integers(2, 4), A=st.integers(2, 3), H=st.integers(1, 4),
       alpha=st.floats(0, 1))
def test_with_the_true_model_the_deployed_mixture_clears_the_threshold(seed, S, A, H, alpha):
    rng = np.random.default_rng(seed)
    m = random_mdp(rng, S, A, H)
    learner = random_deterministic(rng, H, S, A)  # any learner, not only a good one
    v_b = T.evaluate(m.P, m.R, m.baseline)[0, m.s1]
    thr = (1 - alpha) * v_b
    zero = np.zeros((S, A))  # the true model: no bonus, the lower bounds are the exact values
    lowers = T.pessimistic_values(m.P, m.R, zero, T.switch_members(learner, m.baseline), m.s1)
    lowers[0] = v_b
    kappa = T.stepmix_kappa(lowers, thr)
    v_step = T.value_stepmix(m, learner, kappa)
    assert v_step >= thr - 1e-9
    if kappa < H:
        assert v_step == pytest.approx(thr, abs=1e-9)  # the most optimistic safe member sits on the threshold
    eps = T.epsmix_eps(float(lowers[-1]), v_b, thr)
    v_eps = T.value_epsmix(m, learner, eps)
    assert v_eps >= thr - 1e-9
    if eps < 1:
        assert v_eps == pytest.approx(thr, abs=1e-9)


def test_offline_pieces():
    states = np.array([[0, 1], [0, 0], [0, 1]])
    actions = np.array([[1, 0], [1, 1], [0, 0]])
    pi = T.behaviour_clone(states, actions, 2, 3, 2)
    np.testing.assert_allclose(pi[0, 0], [1 / 3, 2 / 3])
    np.testing.assert_allclose(pi[1, 1], [1.0, 0.0])
    np.testing.assert_allclose(pi[1, 0], [0.0, 1.0])
    np.testing.assert_allclose(pi[0, 2], [0.5, 0.5])  # unseen: uniform
    lo, hi = T.return_bounds(np.array([1.0, 2.0, 3.0, 2.0]), 4)
    w = 4 * math.sqrt(math.log(2 / 0.05) / 8)
    assert (lo, hi) == pytest.approx((max(0, 2 - w), min(4, 2 + w)))
    m = small_garnet(3)
    r = T.run(m, "stepmix", 50, 0.1, seed=0, offline_episodes=4000)
    assert r.offline["episodes"] == 4000
    assert r.offline["v_lower"] <= r.v_baseline <= r.offline["v_upper"]
    assert r.offline["v_clone"] == pytest.approx(r.v_baseline, abs=0.05)  # 4000 episodes clone it closely
    assert T.run(m, "ucbvi", 50, 0.1, seed=0, offline_episodes=4000).offline is None


# ---------------------------------------------------------------- the .npz loader


def write_npz(path, **over):
    """An .npz of the hand MDP with some arrays replaced (None: left out)."""
    arrays = {"P": P2, "R": R2, "H": np.int64(2), "s1": np.int64(0), "baseline": UNI2} | over
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize("over, message", [
    ({"baseline": None}, r"missing arrays \['baseline'\]; an MDP file holds P, R, H, s1 and baseline"),
    ({"P": np.ones((2, 2))}, r"P has shape \(2, 2\), needs \(S, A, S\) with S, A >= 1"),
    ({"P": -P2}, r"P has negative or non-finite entries; probabilities must be >= 0"),
    ({"P": P2 * 0.9}, r"P\[0, 0, :\] sums to 0\.9; every row of P must sum to 1 \(within 1e-6\)"),
    ({"R": R2[:1]}, r"R has shape \(1, 2\), needs \(S, A\) = \(2, 2\)"),
    ({"R": R2 + 0.5}, r"R has values outside \[0, 1\] \(min 0\.5, max 1\.5\)"),
    ({"H": np.int64(0)}, r"H must be an integer >= 1, got 0"),
    ({"H": np.float64(2.0)}, r"H must be an integer >= 1, got 2\.0"),
    ({"s1": np.int64(2)}, r"s1 must be an integer state in \[0, 1\], got 2"),
    ({"baseline": UNI2[:1]}, r"baseline has shape \(1, 2, 2\), needs \(H, S, A\) = \(2, 2, 2\)"),
    ({"baseline": UNI2 * 2}, r"baseline\[0, 0, :\] sums to 2; each row must sum to 1 \(within 1e-6\)"),
])
def test_npz_loader_errors(tmp_path, over, message):
    path = write_npz(tmp_path / "m.npz", **over)
    with pytest.raises(T.MDPError, match=message) as err:
        T.load_npz(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_npz_loader_round_trip_and_unreadable_file(tmp_path):
    m = T.garnet(5, 2, 3, seed=1)
    T.save_npz(tmp_path / "g.npz", m)
    back = T.load_npz(tmp_path / "g.npz")
    np.testing.assert_array_equal(back.P, m.P)
    np.testing.assert_array_equal(back.baseline, m.baseline)
    assert (back.H, back.s1) == (3, 0)
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(T.MDPError, match=r"bad\.npz: cannot read as an \.npz of arrays"):
        T.load_npz(tmp_path / "bad.npz")
    with pytest.raises(T.MDPError, match=r"nope\.npz: cannot read"):
        T.load_npz(tmp_path / "nope.npz")


# ---------------------------------------------------------------- the CLI


def test_cli_writes_results_and_plots(tmp_path, capsys):
    out = tmp_path / "out"
    rc = T.main(["--episodes", "120", "--seeds", "2", "--states", "4", "--actions", "2", "--horizon", "3",
                 "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["delta"] == 0.05 and res["config"]["c"] == 1.0 and res["config"]["bound_proven"] is True
    assert set(res["runs"]) == {"ucbvi", "epsmix", "stepmix"}
    pts = res["episodes_at"]
    assert pts[0] == 1 and pts[-1] == 120 and len(pts) <= 200
    for rows in res["runs"].values():
        assert [r["seed"] for r in rows] == [0, 1]
        for r in rows:
            assert len(r["regret"]) == len(pts)
            assert r["threshold"] == pytest.approx(0.9 * r["v_baseline"])
            assert isinstance(r["violations"], int) and r["final_policy_value"] <= r["v_star"] + 1e-9
    assert res["summary"]["epsmix"]["seeds_without_violations"] == 2
    assert len(res["summary"]["stepmix"]["regret_ratio_to_ucbvi"]) == len(pts)
    for name in ("regret.png", "values.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))
    assert "stepmix: 2/2 seeds without violations" in capsys.readouterr().out

    T.save_npz(tmp_path / "m.npz", small_garnet(0))
    assert T.main(["--mdp", str(tmp_path / "m.npz"), "--episodes", "30", "--seeds", "1", "--algos", "stepmix",
                   "--offline-episodes", "100", "--out", str(tmp_path / "o2")]) == 0
    res = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert res["runs"]["stepmix"][0]["offline"]["episodes"] == 100 and res["config"]["garnet"] is None


@pytest.mark.parametrize("argv, message", [
    (["--alpha", "1.5"], "--alpha must lie in [0, 1], got 1.5"),
    (["--algos", "ucbvi,ppo"], "--algos 'ucbvi,ppo': give distinct names from ucbvi, epsmix, stepmix"),
    (["--episodes", "0"], "--episodes must be >= 1, got 0"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--offline-episodes", "-1"], "--offline-episodes must be >= 0, got -1"),
    (["--states", "3", "--branching", "4"], "--branching must lie in [1, --states=3], got 4"),
    (["--baseline-level", "2"], "--baseline-level must lie in [0, 1], got 2.0"),
    (["--mdp", "missing.npz", "--states", "3"], "--states applies to --mdp garnet only, not to a file"),
    (["--mdp", "missing.npz"], "missing.npz: cannot read as an .npz of arrays"),
    (["--episodes", "ten"], "argument --episodes: invalid int value: 'ten'"),
])
def test_cli_one_line_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as ex:
        T.main(argv + ["--out", str(tmp_path / "o")])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"marl: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_module_entry_point_errors_without_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "marl.agents.stepmix.tabular", "--alpha", "-1", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr == "marl: error: --alpha must lie in [0, 1], got -1.0\n"
