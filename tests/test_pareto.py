"""Multi-objective metrics and the Pareto archive (marl.pareto): exact values on known fronts, archive invariants."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marl import checkpoint
from marl.checkpoint import CheckpointError
from marl.pareto import (
    ParetoArchive,
    check_preference,
    crowding_distance,
    expected_utility,
    hypervolume,
    non_dominated,
    sparsity,
    weight_grid,
)

# deep-sea-treasure's true fronts as (treasure value, steps to reach it), undiscounted. Source: mo-gymnasium
# 1.3.2, mo_gymnasium/envs/deep_sea_treasure/deep_sea_treasure.py: CONVEX_FRONT (the default map, Yang et al.
# 2019) and CONCAVE_FRONT (CONCAVE_MAP, Vamplew et al. 2018), stored there as [treasure, -steps].
DST_CONVEX = [(0.7, 1), (8.2, 3), (11.5, 5), (14.0, 7), (15.1, 8), (16.1, 9), (19.6, 13), (20.3, 14), (22.4, 17),
              (23.7, 19)]
DST_CONCAVE = [(1.0, 1), (2.0, 3), (3.0, 5), (5.0, 7), (8.0, 8), (16.0, 9), (24.0, 13), (50.0, 14), (74.0, 17),
               (124.0, 19)]
DST_REF = (0.0, -25.0)


def discounted(front, gamma: float) -> np.ndarray:
    """The vector returns [treasure, time] of the front's policies under discount gamma, as mo-gymnasium's pareto_front.

    The treasure is paid on the last of `steps` steps: treasure * gamma**(steps - 1); the time penalty is
    -1 on every step: -(1 + gamma + ... + gamma**(steps - 1)) = -(1 - gamma**steps) / (1 - gamma).
    """
    return np.array([[t * gamma ** (s - 1), -(1 - gamma ** s) / (1 - gamma) if gamma < 1 else -float(s)]
                     for t, s in front])


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text, f"message is not one line: {text!r}"
    return text


# ---- exact metric values (docs: LEARNERS.md, C-MORL facts) -------------------------------------------------------


def test_discounted_front_matches_mo_gymnasium_convention():
    front = discounted(DST_CONVEX, 0.99)
    assert front[0] == pytest.approx([0.7, -1.0], abs=1e-15)  # one step: no discount on the treasure
    assert front[-1] == pytest.approx([23.7 * 0.99 ** 18, -sum(0.99 ** i for i in range(19))], rel=1e-13)
    assert discounted(DST_CONVEX, 1.0)[-1].tolist() == [23.7, -19.0]


@pytest.mark.parametrize("gamma, hv, eu, sp", [(0.99, 360.4009, 5.5630, 12.6194), (1.0, 401.8, 6.7658, 15.3822)])
def test_deep_sea_treasure_metrics(gamma, hv, eu, sp):
    front = discounted(DST_CONVEX, gamma)
    assert non_dominated(front).all()
    assert hypervolume(front, DST_REF) == pytest.approx(hv, abs=5e-5)
    assert expected_utility(front, weight_grid(2)) == pytest.approx(eu, abs=5e-5)
    assert sparsity(front) == pytest.approx(sp, abs=5e-5)


def test_deep_sea_treasure_supported_points():
    """At gamma 0.99 every front point is some weight's best; at gamma 1 (20.3, -14) is no weight's best."""
    w = weight_grid(2, 10_000)
    best = np.unique((w @ discounted(DST_CONVEX, 0.99).T).argmax(axis=1))
    assert best.tolist() == list(range(10))
    front = discounted(DST_CONVEX, 1.0)
    best = np.unique((w @ front.T).argmax(axis=1))
    assert best.tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9]
    assert hypervolume(front[best], DST_REF) == pytest.approx(399.7, abs=1e-9)


@pytest.mark.parametrize("gamma, hv, hv_linear", [(0.99, 1101.3844, 804.5738), (1.0, 1155.0, 762.0)])
def test_concave_deep_sea_treasure(gamma, hv, hv_linear):
    """Only the two end points are any weight's best, so linear scalarisation tops out at hv_linear."""
    front = discounted(DST_CONCAVE, gamma)
    assert non_dominated(front).all()
    assert hypervolume(front, DST_REF) == pytest.approx(hv, abs=5e-5)
    supported = np.unique((weight_grid(2, 10_000) @ front.T).argmax(axis=1))
    assert supported.tolist() == [0, 9]
    assert hypervolume(front[supported], DST_REF) == pytest.approx(hv_linear, abs=5e-5)


# ---- the metrics on hand-computed cases ---------------------------------------------------------------------------


def test_hypervolume_small_cases():
    assert hypervolume([[1, 2], [2, 1]], [0, 0]) == pytest.approx(3.0)
    assert hypervolume([[1, 2, 3]], [0, 0, 0]) == pytest.approx(6.0)
    assert hypervolume([[1, 2], [1, 2], [0.5, 0.5]], [0, 0]) == pytest.approx(2.0)  # duplicates and dominated add 0
    assert hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0
    assert hypervolume([], [0, 0]) == 0.0
    assert hypervolume([[0, 5]], [0, 0]) == 0.0  # on the reference: bounded, adds nothing
    assert hypervolume([[1, 2], [-1, 9]], [0, 0], strict=False) == pytest.approx(2.0)


def test_weight_grid_is_complete():
    w = weight_grid(2)
    assert w.shape == (101, 2)
    assert w[:3].tolist() == [[0.0, 1.0], [0.01, 0.99], [0.02, 0.98]] and w[-1].tolist() == [1.0, 0.0]
    w3 = weight_grid(3)
    assert w3.shape == (5151, 3)
    assert np.allclose(w3.sum(axis=1), 1.0) and (w3 >= 0).all()
    assert len(np.unique(np.round(w3 * 100).astype(int), axis=0)) == 5151
    # the shortcut the docstring warns about: a float sum == 1 filter over a linspace product drops weights
    axis = np.linspace(0, 1, 101)
    assert sum(1 for a, b, c in itertools.product(axis, axis, axis) if a + b + c == 1) == 5027
    assert weight_grid(4, 4).shape == (35, 4)
    assert weight_grid(1).tolist() == [[1.0]]


def test_expected_utility_small_case():
    # w = (1, 0) picks 3, (0.5, 0.5) picks 2 (both points give 2), (0, 1) picks 3
    assert expected_utility([[3, 1], [1, 3]], weight_grid(2, 2)) == pytest.approx((3 + 2 + 3) / 3)


def test_sparsity():
    assert sparsity(np.zeros((0, 2))) == 0.0
    assert sparsity([[4.0, 2.0]]) == 0.0
    # sorted per objective: (0, 1, 3) and (0, 2, 3); squared gaps 1 + 4 and 4 + 1; divided by |P| - 1 = 2
    assert sparsity([[0, 0], [1, 2], [3, 3]]) == pytest.approx(5.0)


def test_non_dominated():
    pts = [[1, 2], [1, 2], [2, 1], [0, 0], [1, 1], [2, 1.5]]
    assert non_dominated(pts).tolist() == [True, False, False, False, False, True]
    assert non_dominated(pts, keep_duplicates=True).tolist() == [True, True, False, False, False, True]
    assert non_dominated(np.zeros((0, 3))).shape == (0,)


def test_crowding_distance():
    d = crowding_distance([[0, 4], [1, 3], [3, 1], [4, 0]])
    # objective 0 spans 4: interior gaps (3 - 0) / 4 and (4 - 1) / 4; objective 1 the same, mirrored
    assert d.tolist() == [np.inf, 1.5, 1.5, np.inf]
    assert crowding_distance([[1, 1]]).tolist() == [np.inf]
    assert crowding_distance([[1, 1], [2, 0]]).tolist() == [np.inf, np.inf]
    # objective 1 is constant: it adds 0 and has no extremes; objective 0 gives the only infinities
    d = crowding_distance([[0, 7], [1, 7], [3, 7]])
    assert d.tolist() == [np.inf, 1.0, np.inf] and not np.isnan(d).any()
    assert crowding_distance([[2, 2]] * 4).tolist() == [0.0] * 4


# ---- one-line errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, text", [
    (lambda: hypervolume([1, 2], [0, 0]),
     "points must be an array of shape [N, K] (one row per policy, one column per objective); got shape (2,)"),
    (lambda: hypervolume([[1, 2]], [0, 0, 0]), "the reference point has 3 values; the points have 2 objectives"),
    (lambda: hypervolume([[1, 2]], [[0, 0]]),
     "the reference point must be a vector with one value per objective; got shape (1, 2)"),
    (lambda: hypervolume([[1, 2], [3, -30]], DST_REF),
     "the reference point (0, -25) does not bound the points: point 1 (3, -30) is below it in objective 1; "
     "accepted: a reference at or below every point in every objective (maximisation), or strict=False to let such "
     "points add nothing"),
    (lambda: hypervolume([[1, np.nan]], [0, 0]), "points must be finite; row 0 is (1, nan)"),
    (lambda: expected_utility([[1, 2, 3]], weight_grid(2)), "points have 3 objectives per row; expected 2"),
    (lambda: expected_utility(np.zeros((0, 2)), weight_grid(2)),
     "expected utility needs at least one point: the front is empty"),
    (lambda: expected_utility([[1, 2]], [[0.5, 0.5], [-1, 2]]),
     "weight row 1 (-1, 2) is not a preference; weights must be finite, >= 0 and not all 0 in each row"),
    (lambda: expected_utility([[1, 2]], [0.5, 0.5]),
     "weights must be an array of shape [W, K] (one row per weight vector); got shape (2,)"),
    (lambda: check_preference([0.3, 0.3, 0.4], 2, ["combat", "safety"]),
     "the preference has 3 values; give one per objective: 2 (combat, safety)"),
    (lambda: check_preference([0.3, -0.7], 2),
     "the preference (0.3, -0.7) has a negative weight; weights must be >= 0, not all 0"),
    (lambda: check_preference([0, 0], 2), "the preference (0, 0) is all zero; weights must be >= 0, not all 0"),
    (lambda: check_preference([np.inf, 1], 2), "the preference must be finite; got (inf, 1)"),
    (lambda: weight_grid(6, 100),
     "a weight grid with 6 objectives and steps 100 has 96560646 weights; at most 1000000 are accepted: choose "
     "fewer steps"),
    (lambda: weight_grid(0), "n_objectives must be an integer >= 1; got 0"),
    (lambda: weight_grid(2, 0), "steps (divisions of each weight) must be an integer >= 1; got 0"),
    (lambda: ParetoArchive(2, capacity=3),
     "the archive's capacity must be an integer >= 4 (2 per objective, so the extremes of every objective survive "
     "pruning); got 3"),
    (lambda: ParetoArchive(2).add([1, 2, 3]), "the return vector has 3 values; give one per objective: 2"),
    (lambda: ParetoArchive(2).best([1, 0]), "the Pareto archive is empty: no policy has been evaluated yet"),
    (lambda: ParetoArchive(2).select(-1), "select needs a count >= 0; got -1"),
])
def test_errors_are_one_line(call, text):
    with pytest.raises(ValueError) as err:
        call()
    assert _one_line(err) == text


def test_check_preference_returns_the_vector_unnormalised():
    assert check_preference([3, 7], 2).tolist() == [3.0, 7.0]
    assert check_preference((0, 1), 2).dtype == np.float64


# ---- the archive -------------------------------------------------------------------------------------------------


def _candidates(returns: np.ndarray, g: np.ndarray) -> np.ndarray:
    """What the archive should hold before pruning: returns without those g dominates, then g, unless g is beaten."""
    if any((r >= g).all() for r in returns):
        return returns
    kept = [r for r in returns if not (g >= r).all()]
    return np.array([*kept, g])


# offers near the plane sum(g) = 12, a little below it (noise), so fronts grow past the cap and prune, with ties
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 2))),
    st.tuples(st.just("select"), st.integers(0, 3)),
), min_size=1, max_size=40)


def _offer(k: int, a: int, b: int, noise: int) -> np.ndarray:
    """A return vector of k objectives from drawn integers: on or just below the plane where they sum to 12."""
    return np.array([a, 12 - a - noise] if k == 2 else [a, b, 12 - a - b - noise], float)


@settings(max_examples=100, deadline=None)
@given(k=st.sampled_from([2, 3]), extra=st.integers(0, 3), ops=ops)
def test_archive_invariants(k, extra, ops):
    capacity = 2 * k + extra
    archive = ParetoArchive(k, capacity=capacity)
    handed_out: list[int] = []
    for op, arg in ops:
        if op == "add":
            g = _offer(k, *arg)
            before = archive.returns()
            cand = _candidates(before, g)
            kept = archive.add(g, payload={"w": torch.tensor(g)}, step=len(handed_out))
            after = archive.returns()
            assert len(archive) <= capacity  # the cap holds
            assert non_dominated(after).all()  # no dominated (or repeated) point stays
            if len(cand) > capacity:  # one entry over: the pruned one had the smallest, finite, distance
                dist = crowding_distance(cand)
                survived = np.array([any((c == a).all() for a in after) for c in cand])
                assert survived.sum() == capacity
                assert np.isfinite(dist[~survived]).all() and dist[~survived].min() == dist.min()
                assert survived[np.isinf(dist)].all()  # the extremes survive pruning
            else:
                assert np.array_equal(after, cand)
            beaten = any((r >= g).all() for r in before)  # dominated by or equal to an archived entry
            assert kept == (not beaten and any((a == g).all() for a in after))
            assert not kept or (after[-1] == g).all()  # a new entry comes last
            for j in range(k):  # so each objective's best value is never lost to pruning
                assert after[:, j].max() == cand[:, j].max() and after[:, j].min() == cand[:, j].min()
        else:
            dist = crowding_distance(archive.returns()) if len(archive) else np.zeros(0)
            left = {e.id: d for e, d in zip(archive.entries, dist) if e.id not in handed_out}
            chosen = archive.select(arg)
            ids = [e.id for e in chosen]
            assert len(ids) == min(arg, len(left)) and set(ids) <= set(left)
            assert not set(ids) & set(handed_out)  # never the same entry twice
            rest = [d for i, d in left.items() if i not in ids]
            if ids and rest:  # the largest distances were chosen
                assert min(left[i] for i in ids) >= max(rest)
            handed_out += ids
    assert len(handed_out) == len(set(handed_out))


def test_select_hands_out_extremes_first_and_never_twice():
    archive = ParetoArchive(2, capacity=10)
    for g in [(0, 4), (1, 3), (2, 2.5), (3, 1), (4, 0)]:
        assert archive.add(g, payload=torch.tensor(g))
    assert [e.returns.tolist() for e in archive.select(2)] == [[0, 4], [4, 0]]
    # distances of the interior: (1, 3): 2/4 + 1.5/4; (2, 2.5): 2/4 + 2/4; (3, 1): 2/4 + 2.5/4
    assert [e.returns.tolist() for e in archive.select(2)] == [[3, 1], [2, 2.5]]
    assert [e.returns.tolist() for e in archive.select(5)] == [[1, 3]]
    assert archive.select(5) == []
    archive.add((5, -1))  # a new extreme can be handed out; the old ones cannot
    assert [e.returns.tolist() for e in archive.select(5)] == [[5, -1]]


def test_add_rejects_dominated_and_repeated_returns_and_removes_what_it_dominates():
    archive = ParetoArchive(2)
    assert archive.add([1, 1], payload="a")
    assert not archive.add([1, 1], payload="b") and not archive.add([0, 1])
    assert archive.add([2, 0], payload="c") and archive.add([2, 2], payload="d")
    assert [e.payload for e in archive] == ["d"] and archive.returns().tolist() == [[2.0, 2.0]]
    assert [e.id for e in archive] == [2]  # ids count the entries taken in (0, 1, 2); rejected offers get none


def test_pruning_drops_the_smallest_distance_and_the_newest_among_equals():
    archive = ParetoArchive(2, capacity=4)
    for g in [(0, 4), (1, 3), (3, 1), (4, 0)]:
        assert archive.add(g)
    # with (2, 2) the three interior points all have distance 2/4 + 2/4: the newest, (2, 2), leaves at once
    assert not archive.add((2, 2))
    assert archive.returns().tolist() == [[0, 4], [1, 3], [3, 1], [4, 0]]
    # (2.5, 1.8) crowds (3, 1): over the five, (1, 3) has 2.5/4 + 2.2/4, (3, 1) 1.5/4 + 1.8/4, (2.5, 1.8) 2/4 + 2/4
    assert archive.add((2.5, 1.8))
    assert archive.returns().tolist() == [[0, 4], [1, 3], [4, 0], [2.5, 1.8]]


def test_archive_keeps_its_own_copy_of_the_payload():
    weights = {"actor": torch.zeros(3), "obs_norm": np.zeros(2)}
    archive = ParetoArchive(2)
    archive.add([1, 2], payload=weights, step=100, gamma=0.99, episode_cap=500)
    weights["actor"] += 1  # a training step after the evaluation
    weights["obs_norm"][:] = 5
    entry = archive.entries[0]
    assert entry.payload["actor"].tolist() == [0, 0, 0] and entry.payload["obs_norm"].tolist() == [0, 0]
    assert entry.meta == {"step": 100, "gamma": 0.99, "episode_cap": 500}


def test_best_picks_the_largest_weighted_return():
    archive = ParetoArchive(2)
    for g in [(0.0, 10.0), (6.0, 6.0), (10.0, 0.0)]:
        archive.add(g, payload=g)
    assert archive.best([1, 0]).payload == (10.0, 0.0)
    assert archive.best([0.5, 0.5]).payload == (6.0, 6.0)
    assert archive.best([0.3, 0.7]).payload == (0.0, 10.0)


def _filled(seed: int) -> ParetoArchive:
    rng = np.random.default_rng(seed)
    archive = ParetoArchive(2, capacity=8)
    for step in range(60):
        a = rng.uniform(0, 1)
        g = np.array([a, np.sqrt(1 - a * a)]) * rng.uniform(0.9, 1.0)  # near a concave front: many survive
        archive.add(g, payload={"actor": torch.tensor(g, dtype=torch.float32), "norm": np.float32(a) * np.ones(2)},
                    step=step, gamma=0.99, episode_cap=500)
        if step % 10 == 9:
            archive.select(2)
    return archive


def test_state_dict_round_trip_is_exact(tmp_path):
    archive = _filled(0)
    checkpoint.save(tmp_path / "last.pt", {"archive": archive.state_dict()})  # torch.save, weights_only load
    state = checkpoint.load(tmp_path / "last.pt")["archive"]
    restored = ParetoArchive(2, capacity=8)
    restored.load_state_dict(state)
    assert np.array_equal(restored.returns(), archive.returns())
    assert [e.id for e in restored] == [e.id for e in archive]
    assert [e.meta for e in restored] == [e.meta for e in archive]
    for a, b in zip(archive, restored):
        assert torch.equal(a.payload["actor"], b.payload["actor"])
        assert torch.equal(torch.from_numpy(a.payload["norm"]), b.payload["norm"])  # numpy comes back as tensors
    # both continue the same way: the same entries selected, the same pruning
    rng = np.random.default_rng(1)
    for _ in range(20):
        g = rng.uniform(0, 1, 2)
        assert archive.add(g, step=1) == restored.add(g, step=1)
        assert [e.id for e in archive.select(1)] == [e.id for e in restored.select(1)]
    assert np.array_equal(restored.returns(), archive.returns())
    assert [e.id for e in restored] == [e.id for e in archive]


def test_state_dict_loads_with_weights_only():
    buf = io.BytesIO()
    torch.save(_filled(2).state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["returns"].dtype == torch.float64 and state["returns"].shape[1] == 2


def test_load_state_dict_for_another_archive_is_one_line(tmp_path):
    with pytest.raises(CheckpointError) as err:
        checkpoint.restore(ParetoArchive(3, capacity=8), _filled(0).state_dict(), tmp_path / "last.pt", "archive")
    assert _one_line(err) == (f"{tmp_path / 'last.pt'} does not fit this run's archive (another map or other "
                              "settings?): the saved Pareto archive has 2 objectives and capacity 8; this one has 3 "
                              "and 8")
