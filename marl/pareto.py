"""Multi-objective metrics and the Pareto archive: hypervolume, expected utility, sparsity, crowding distance.

Every objective is maximised. A front is an array f64[N, K]: one row per policy (its vector return),
one column per objective. The metrics are the ones the C-MORL paper and morl-baselines report:

- `hypervolume(points, ref)`: the volume the points dominate above the reference point (moocore);
- `expected_utility(points, weights)`: the mean over a weight grid of the best w . G on the front;
- `sparsity(points)`: the mean squared gap between neighbours, per objective, summed (lower is denser).

`ParetoArchive` keeps the non-dominated entries (a vector return, an opaque payload such as a policy's
weights, and metadata such as the step and discount it was evaluated with), capped and pruned by
crowding distance, and hands out entries for extension without ever handing one out twice.

Bad input raises a one-line ValueError naming what was wrong and what is accepted; the CLI prints it
as `marl: error: ...`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import moocore
import numpy as np
import torch

from marl.checkpoint import to_tensors

MAX_GRID = 1_000_000  # weight_grid refuses more weights than this: the grid grows as C(steps+K-1, K-1)


def _fmt(v) -> str:
    """A vector as `(0.7, -1)`, for error messages."""
    return "(" + ", ".join(f"{float(x):g}" for x in np.ravel(v)) + ")"


def _points(points, n_objectives: int | None = None, what: str = "points") -> np.ndarray:
    """points as f64[N, K], checked: two axes, K columns when K is known, finite values."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0 and arr.ndim <= 2 and n_objectives is not None:  # an empty front, however it was spelt
        return np.zeros((0, n_objectives))
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be an array of shape [N, K] (one row per policy, one column per "
                         f"objective); got shape {arr.shape}")
    if n_objectives is not None and arr.shape[1] != n_objectives:
        raise ValueError(f"{what} have {arr.shape[1]} objectives per row; expected {n_objectives}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} must be finite; row {int(np.argwhere(~np.isfinite(arr))[0, 0])} is "
                         f"{_fmt(arr[np.argwhere(~np.isfinite(arr))[0, 0]])}")
    return arr


def _vector(v, n_objectives: int, what: str, names=None) -> np.ndarray:
    """v as a finite f64[K], with a one-line error naming the objectives when its length is wrong."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != n_objectives:
        named = f" ({', '.join(names)})" if names else ""
        raise ValueError(f"{what} has {arr.size} value{'s' if arr.size != 1 else ''}; give one per objective: "
                         f"{n_objectives}{named}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} must be finite; got {_fmt(arr)}")
    return arr


def check_preference(w, n_objectives: int, names=None) -> np.ndarray:
    """A preference (weight vector) as f64[K]; one-line ValueError if its length is wrong, any is negative or all are 0.

    The vector is returned as given, not normalised: the argmax of w . G does not depend on its scale,
    and a learner that scalarises rewards decides itself whether to normalise.
    """
    arr = _vector(w, n_objectives, "the preference", names)
    if (arr < 0).any():
        raise ValueError(f"the preference {_fmt(arr)} has a negative weight; weights must be >= 0, not all 0")
    if not (arr > 0).any():
        raise ValueError(f"the preference {_fmt(arr)} is all zero; weights must be >= 0, not all 0")
    return arr


def hypervolume(points, ref, *, strict: bool = True) -> float:
    """The volume dominated by points and bounded below by ref, every objective maximised (moocore).

    With strict=True (the default) a point below ref in any objective is an error, because it would
    silently add nothing and make the number misleading; strict=False lets such points add nothing, as
    pymoo and moocore do. An empty front has hypervolume 0.
    """
    ref = np.asarray(ref, dtype=np.float64)
    if ref.ndim != 1 or ref.size == 0:
        raise ValueError(f"the reference point must be a vector with one value per objective; got shape {ref.shape}")
    ref = _vector(ref, ref.size, "the reference point")
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] != ref.size and arr.shape[0] > 0:
        raise ValueError(f"the reference point has {ref.size} values; the points have {arr.shape[1]} objectives")
    pts = _points(arr, ref.size)
    below = pts < ref
    if strict and below.any():
        i, j = np.argwhere(below)[0]
        raise ValueError(f"the reference point {_fmt(ref)} does not bound the points: point {i} {_fmt(pts[i])} is "
                         f"below it in objective {j}; accepted: a reference at or below every point in every "
                         "objective (maximisation), or strict=False to let such points add nothing")
    if len(pts) == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref, maximise=True))


def weight_grid(n_objectives: int, steps: int = 100) -> np.ndarray:
    """Every weight vector on the simplex with entries k/steps: f64[C(steps+K-1, K-1), K], rows summing to 1.

    Built from the integer compositions of `steps` into K parts (stars and bars), so the grid is
    complete: 101 weights for 2 objectives and steps 100, 5151 for 3. The common shortcut, a product of
    `np.linspace(0, 1, steps + 1)` per axis kept where the float sum == 1, drops weights whose rounded
    sum is not exactly 1 (for 3 objectives and steps 100 it keeps 5027 of the 5151), so the expected
    utility would average over a lopsided grid. Rows are in lexicographic order of their integer
    parts, the first weight rising slowest: for 2 objectives (0, 1), (0.01, 0.99), ..., (1, 0).
    """
    if isinstance(n_objectives, bool) or not isinstance(n_objectives, (int, np.integer)) or n_objectives < 1:
        raise ValueError(f"n_objectives must be an integer >= 1; got {n_objectives!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps (divisions of each weight) must be an integer >= 1; got {steps!r}")
    count = math.comb(steps + n_objectives - 1, n_objectives - 1)
    if count > MAX_GRID:
        raise ValueError(f"a weight grid with {n_objectives} objectives and steps {steps} has {count} weights; "
                         f"at most {MAX_GRID} are accepted: choose fewer steps")
    if n_objectives == 1:
        return np.ones((1, 1))
    # bar positions among steps + K - 1 slots; the parts are the gaps between consecutive bars
    bars = np.array(list(combinations(range(steps + n_objectives - 1), n_objectives - 1)), dtype=np.int64)
    edges = np.concatenate([np.full((count, 1), -1), bars, np.full((count, 1), steps + n_objectives - 1)], axis=1)
    parts = np.diff(edges, axis=1) - 1  # combinations() yields the bars, hence the parts, in lexicographic order
    return parts / steps


def expected_utility(points, weights) -> float:
    """The mean over the weights of the best w . G on the front (the utility of the front's best policy)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(f"weights must be an array of shape [W, K] (one row per weight vector); got shape {w.shape}")
    pts = _points(points, w.shape[1])
    if len(pts) == 0:
        raise ValueError("expected utility needs at least one point: the front is empty")
    if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any(axis=1).all():
        bad = int(np.flatnonzero(~np.isfinite(w).all(1) | (w < 0).any(1) | ~(w > 0).any(1))[0])
        raise ValueError(f"weight row {bad} {_fmt(w[bad])} is not a preference; weights must be finite, >= 0 and "
                         "not all 0 in each row")
    return float((w @ pts.T).max(axis=1).mean())


def sparsity(points) -> float:
    """Sum over objectives of the squared gaps between sorted neighbours, divided by |P| - 1 (lower is denser).

    A front of 0 or 1 points has no gaps: its sparsity is 0 (as morl-baselines defines it).
    """
    pts = _points(points)
    if len(pts) < 2:
        return 0.0
    gaps = np.diff(np.sort(pts, axis=0), axis=0)
    return float((gaps ** 2).sum() / (len(pts) - 1))


def non_dominated(points, *, keep_duplicates: bool = False) -> np.ndarray:
    """bool[N]: True where no other point is at least as good in every objective and better in one (moocore).

    An exact duplicate of an earlier point is marked False unless keep_duplicates, so the mask picks
    each point of the front once.
    """
    pts = _points(points)
    if len(pts) == 0:
        return np.zeros(0, bool)
    return np.asarray(moocore.is_nondominated(pts, maximise=True, keep_weakly=keep_duplicates), dtype=bool)


def crowding_distance(points) -> np.ndarray:
    """f64[N]: NSGA-II's crowding distance, the sum over objectives of the normalised gap around each point.

    Per objective the points are sorted (stably, so ties keep their order); the first and last get an
    infinite distance, an interior point (f[i+1] - f[i-1]) / (max - min). An objective whose values
    are all equal has no extremes and adds 0 to every point (no division by zero, no nan). With one
    or two points every distance is infinite.
    """
    pts = _points(points)
    n = len(pts)
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for j in range(pts.shape[1]):
        order = np.argsort(pts[:, j], kind="stable")
        f = pts[order, j]
        span = f[-1] - f[0]
        if span <= 0:
            continue
        dist[order[1:-1]] += (f[2:] - f[:-2]) / span
        dist[order[0]] = dist[order[-1]] = np.inf
    return dist


@dataclass
class ArchiveEntry:
    """One archived policy: its evaluated vector return, its payload (weights), metadata and a unique id."""

    returns: np.ndarray  # f64[K]
    payload: Any
    meta: dict = field(default_factory=dict)
    id: int = 0


def _copy_payload(payload: Any) -> Any:
    """A copy that the caller's later in-place updates (a training step) cannot change."""
    if isinstance(payload, torch.Tensor):
        return payload.detach().clone()
    if isinstance(payload, np.ndarray):
        return payload.copy()
    if isinstance(payload, dict):
        return {k: _copy_payload(v) for k, v in payload.items()}
    if isinstance(payload, (list, tuple)):
        return type(payload)(_copy_payload(v) for v in payload)
    return copy.deepcopy(payload)


class ParetoArchive:
    """The non-dominated entries seen so far, at most `capacity`, pruned by crowding distance.

    `add` keeps an entry unless an archived entry dominates it or has the same return; entries it
    dominates leave. Past the capacity, the entry with the smallest crowding distance leaves (among
    equals, the newest), so the extremes of every objective, whose distance is infinite, survive:
    the capacity must be at least 2 K, the most extremes K objectives can have. `select(n)` hands
    out the n entries with the largest crowding distance not handed out before. Entries keep their
    order of arrival. The archive keeps its own copy of each payload.
    """

    def __init__(self, n_objectives: int, capacity: int = 200):
        if isinstance(n_objectives, bool) or not isinstance(n_objectives, (int, np.integer)) or n_objectives < 1:
            raise ValueError(f"n_objectives must be an integer >= 1; got {n_objectives!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 2 * n_objectives:
            raise ValueError(f"the archive's capacity must be an integer >= {2 * n_objectives} (2 per objective, so "
                             f"the extremes of every objective survive pruning); got {capacity!r}")
        self.n_objectives = int(n_objectives)
        self.capacity = int(capacity)
        self.entries: list[ArchiveEntry] = []
        self._next_id = 0
        self._selected: set[int] = set()  # ids handed out by select(); ids are never reused

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def returns(self) -> np.ndarray:
        """The archived returns, f64[N, K], in order of arrival."""
        if not self.entries:
            return np.zeros((0, self.n_objectives))
        return np.stack([e.returns for e in self.entries])

    def add(self, returns, payload: Any = None, **meta) -> bool:
        """Offer an evaluated policy; True when it is in the archive afterwards."""
        g = _vector(returns, self.n_objectives, "the return vector")
        for e in self.entries:
            if (e.returns >= g).all():  # dominated by, or equal to, an archived entry
                return False
        self.entries = [e for e in self.entries if not (g >= e.returns).all()]
        entry = ArchiveEntry(g.copy(), _copy_payload(payload), _copy_payload(meta), self._next_id)
        self._next_id += 1
        self.entries.append(entry)
        while len(self.entries) > self.capacity:
            dist = crowding_distance(self.returns())
            # the smallest distance leaves; among equals the newest, so the archive changes least
            drop = max(np.flatnonzero(dist == dist.min()))
            del self.entries[drop]
        self._selected &= {e.id for e in self.entries}
        return any(e is entry for e in self.entries)

    def select(self, n: int) -> list[ArchiveEntry]:
        """Up to n entries with the largest crowding distance not selected before (older first among equals)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"select needs a count >= 0; got {n!r}")
        dist = crowding_distance(self.returns()) if self.entries else np.zeros(0)
        # a stable sort on -distance keeps the order of arrival among equal distances
        order = np.argsort(-dist, kind="stable")
        chosen = [self.entries[i] for i in order if self.entries[i].id not in self._selected][:n]
        self._selected.update(e.id for e in chosen)
        return chosen

    def best(self, preference) -> ArchiveEntry:
        """The entry with the largest w . G for the preference w (the first among equals)."""
        w = check_preference(preference, self.n_objectives)
        if not self.entries:
            raise ValueError("the Pareto archive is empty: no policy has been evaluated yet")
        return self.entries[int(np.argmax(self.returns() @ w))]

    def state_dict(self) -> dict:
        """Plain containers and tensors (numpy turned into tensors), loadable with torch.load(weights_only=True)."""
        return {
            "n_objectives": self.n_objectives,
            "capacity": self.capacity,
            "next_id": self._next_id,
            "selected": sorted(self._selected),
            "returns": torch.from_numpy(self.returns().copy()),
            "ids": [e.id for e in self.entries],
            "payloads": [to_tensors(e.payload) for e in self.entries],
            "meta": [to_tensors(e.meta) for e in self.entries],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned; a ValueError when it was saved for another number of objectives."""
        if state["n_objectives"] != self.n_objectives or state["capacity"] != self.capacity:
            raise ValueError(f"the saved Pareto archive has {state['n_objectives']} objectives and capacity "
                             f"{state['capacity']}; this one has {self.n_objectives} and {self.capacity}")
        returns = torch.as_tensor(state["returns"]).numpy().astype(np.float64).reshape(-1, self.n_objectives)
        ids, payloads, meta = list(state["ids"]), list(state["payloads"]), list(state["meta"])
        if not len(returns) == len(ids) == len(payloads) == len(meta):
            raise ValueError(f"the saved Pareto archive is inconsistent: {len(returns)} returns, {len(ids)} ids, "
                             f"{len(payloads)} payloads, {len(meta)} metadata")
        self.entries = [ArchiveEntry(returns[i].copy(), payloads[i], dict(meta[i]), int(ids[i]))
                        for i in range(len(ids))]
        self._next_id = int(state["next_id"])
        self._selected = {int(i) for i in state["selected"]}


def front_image(points, names, ref=None, dpi: int = 80) -> np.ndarray:
    """The archive as an HWC uint8 picture: for 2 objectives a scatter of the points with the front drawn
    as a staircase; for more, one scatter panel per pair of objectives (the front's points marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _points(points, len(names))
    front = non_dominated(pts) if len(pts) else np.zeros(0, bool)
    pairs = list(combinations(range(len(names)), 2))
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), dpi=dpi, squeeze=False)
    for ax, (i, j) in zip(axes.flat, pairs):
        ax.scatter(pts[:, i], pts[:, j], s=14, c="tab:gray", label="archive")
        f = pts[front][np.argsort(-pts[front][:, i])] if front.any() else np.zeros((0, len(names)))
        ax.scatter(f[:, i], f[:, j], s=22, c="tab:red", label="front", zorder=3)
        if len(names) == 2 and len(f):
            ax.step(f[:, i], f[:, j], where="post", c="tab:red", lw=1)
        if ref is not None:
            ax.scatter([ref[i]], [ref[j]], marker="x", c="k", label="reference")
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Pareto archive: {len(pts)} policies, {int(front.sum())} on the front", fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img
