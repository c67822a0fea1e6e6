"""StepMix and EpsMix, the tabular reference: conservative exploration that never falls below a safe baseline.

A finite-horizon MDP has a stationary model (P[S, A, S'], mean rewards R[S, A] in [0, 1], observed as
Bernoulli draws), a horizon H, a start state s1 and a safe baseline policy pi_b[H, S, A]. Every episode k
the learner must deploy a policy whose exact expected value clears (1 - alpha) V_b, V_b the baseline's
value at s1, with probability 1 - delta over the whole run. The pieces:

- `evaluate`: exact dynamic programming for a batch of Markov policies; `value_epsmix` and
  `value_stepmix` give the exact value of the two mixtures (the numbers violations are judged by).
- `ucbvi_plan`: UCB-VI (Azar et al. 2017, Hoeffding form) on the empirical model.
- `pessimistic_values`: the same recursion with the bonus subtracted and each Q clipped at 0.
- `epsmix_eps` (one coin per episode) and `stepmix_kappa` (one switch time per episode, the learner
  first, then the baseline).
- `run`: one learning run of "ucbvi", "epsmix" or "stepmix", optionally with the baseline cloned
  from an offline dataset.

Decisions (the README's StepMix section says the same):

- One confidence level, DELTA = 0.05, and one bonus constant, C_BONUS = 1, in the Hoeffding bonus
  c H sqrt(ln(S A H K / delta) / max(1, N)). `required_c` is the constant a proof needs (Weissman's L1
  bound on P, uniform over every policy, since the policies judged depend on the data, plus Hoeffding
  on the rewards, a union over pairs, sample counts and the two events). It is 0.82 for the benchmark's
  S=10, A=3, H=5, K=20,000 (and <= 1 up to S = 34 there), so c = 1 makes the lower bounds proven; the CLI
  warns where it is not.
- V_b is KNOWN when the baseline is given (the usual setting of conservative exploration: the team has
  deployed its baseline long enough to know its value at s1). The baseline's values at other states
  are not assumed: the learner's bounds use the pessimistic model for the baseline's steps too. In the
  offline variant V_b is ESTIMATED: a Hoeffding interval [lo, hi] on the behaviour policy's value from
  the dataset's returns; the threshold is (1 - alpha) hi and the cloned baseline is credited with lo.
- StepMix's member kappa = h + rho (h integer, rho in [0, 1)) plays the learner for the first h steps,
  at step h the learner with probability rho (else the baseline), and the baseline after. Its value is
  affine in rho between integers, so the lower bound of a member is the same affine mix of the bounds
  of its two integer neighbours; member 0 is the baseline, credited with V_b (known) or lo (offline).
  The largest kappa whose bound clears the threshold is found exactly: the highest integer member that
  clears, then the affine crossing on the next segment (this is what bisection converges to, without
  its tolerance, and it does not need the bound to be monotone in kappa).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DELTA = 0.05  # the one confidence level: UCB-VI, the lower bounds, EpsMix, StepMix, the benchmarks
C_BONUS = 1.0  # the one bonus constant; see required_c for why 1 is a proof for the benchmark's sizes
ALGOS = ("ucbvi", "epsmix", "stepmix")
TOL = 1e-9  # float slack when judging a value against the threshold (the true-model mixture sits on it)


class MDPError(ValueError):
    """A malformed MDP; the message is one line naming the array and what is accepted."""


@dataclass(frozen=True)
class MDP:
    """A finite-horizon tabular MDP with a baseline policy: P[S, A, S'], R[S, A] in [0, 1], H, s1, baseline[H, S, A]."""

    P: np.ndarray
    R: np.ndarray
    H: int
    s1: int
    baseline: np.ndarray

    @property
    def S(self) -> int:
        """Number of states."""
        return self.P.shape[0]

    @property
    def A(self) -> int:
        """Number of actions."""
        return self.P.shape[1]


def check_mdp(P, R, H, s1, baseline, name: str = "MDP") -> MDP:
    """An MDP from raw arrays, each check failing with a one-line MDPError."""
    P = np.asarray(P, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    H_arr, s1_arr = np.asarray(H), np.asarray(s1)
    if H_arr.ndim != 0 or not np.issubdtype(H_arr.dtype, np.integer) or int(H_arr) < 1:
        raise MDPError(f"{name}: H must be an integer >= 1, got {H_arr.tolist()!r}")
    H = int(H_arr)
    if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] < 1 or P.shape[1] < 1:
        raise MDPError(f"{name}: P has shape {P.shape}, needs (S, A, S) with S, A >= 1")
    S, A = P.shape[:2]
    if not np.all(np.isfinite(P)) or P.min() < 0:
        raise MDPError(f"{name}: P has negative or non-finite entries; probabilities must be >= 0")
    rows = P.sum(axis=2)
    if np.abs(rows - 1).max() > 1e-6:
        s, a = np.unravel_index(np.abs(rows - 1).argmax(), rows.shape)
        raise MDPError(f"{name}: P[{s}, {a}, :] sums to {rows[s, a]:.6g}; every row of P must sum to 1 (within 1e-6)")
    if R.shape != (S, A):
        raise MDPError(f"{name}: R has shape {R.shape}, needs (S, A) = {(S, A)}")
    if not np.all(np.isfinite(R)) or R.min() < 0 or R.max() > 1:
        raise MDPError(f"{name}: R has values outside [0, 1] (min {np.nanmin(R):.6g}, max {np.nanmax(R):.6g})")
    if s1_arr.ndim != 0 or not np.issubdtype(s1_arr.dtype, np.integer) or not 0 <= int(s1_arr) < S:
        raise MDPError(f"{name}: s1 must be an integer state in [0, {S - 1}], got {s1_arr.tolist()!r}")
    if baseline.shape != (H, S, A):
        raise MDPError(f"{name}: baseline has shape {baseline.shape}, needs (H, S, A) = {(H, S, A)}")
    if not np.all(np.isfinite(baseline)) or baseline.min() < 0:
        raise MDPError(f"{name}: baseline has negative or non-finite entries; probabilities must be >= 0")
    brows = baseline.sum(axis=2)
    if np.abs(brows - 1).max() > 1e-6:
        h, s = np.unravel_index(np.abs(brows - 1).argmax(), brows.shape)
        raise MDPError(f"{name}: baseline[{h}, {s}, :] sums to {brows[h, s]:.6g}; each row must sum to 1 (within 1e-6)")
    # renormalise within the tolerance, so sampling and DP see exact distributions
    return MDP(P / rows[..., None], R, H, int(s1_arr), baseline / brows[..., None])


def load_npz(path) -> MDP:
    """An MDP from an .npz holding P, R, H, s1 and baseline (no pickles), checked by check_mdp."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MDPError(f"{path}: cannot read as an .npz of arrays ({first})") from None
    missing = [k for k in ("P", "R", "H", "s1", "baseline") if k not in arrays]
    if missing:
        raise MDPError(f"{path}: missing arrays {missing}; an MDP file holds P, R, H, s1 and baseline")
    return check_mdp(arrays["P"], arrays["R"], arrays["H"], arrays["s1"], arrays["baseline"], name=str(path))


def save_npz(path, mdp: MDP) -> None:
    """Write an MDP in the format load_npz reads."""
    np.savez(path, P=mdp.P, R=mdp.R, H=np.int64(mdp.H), s1=np.int64(mdp.s1), baseline=mdp.baseline)


# ---------------------------------------------------------------- dynamic programming


def evaluate(P, R, policies, bonus=None) -> np.ndarray:
    """V[B, H+1, S] of Markov policies[B, H, S, A] (or one [H, S, A]) under (P, R); with a bonus, pessimistic.

    The pessimistic form subtracts bonus[S, A] from every Q and clips Q at 0 (a lower bound stays one
    after clipping, since every true Q is >= 0 with rewards >= 0).
    """
    pis = np.asarray(policies, dtype=np.float64)
    single = pis.ndim == 3
    if single:
        pis = pis[None]
    B, H, S, A = pis.shape
    P2 = np.asarray(P).reshape(S * A, S)
    V = np.zeros((B, H + 1, S))
    for t in range(H - 1, -1, -1):
        Q = R + (V[:, t + 1] @ P2.T).reshape(B, S, A)
        if bonus is not None:
            Q = np.maximum(Q - bonus, 0.0)
        V[:, t] = (pis[:, t] * Q).sum(axis=2)
    return V[0] if single else V


def optimal(P, R, H: int) -> tuple[np.ndarray, np.ndarray]:
    """The optimal values V[H+1, S] and a deterministic optimal policy pi[H, S, A] (ties to the lowest action)."""
    S, A = R.shape
    P2 = P.reshape(S * A, S)
    V = np.zeros((H + 1, S))
    pi = np.zeros((H, S, A))
    for t in range(H - 1, -1, -1):
        Q = R + (P2 @ V[t + 1]).reshape(S, A)
        a = Q.argmax(axis=1)
        pi[t, np.arange(S), a] = 1.0
        V[t] = Q[np.arange(S), a]
    return V, pi


def uniform_policy(H: int, S: int, A: int) -> np.ndarray:
    """The uniformly random policy [H, S, A]."""
    return np.full((H, S, A), 1.0 / A)


def switch_members(learner, baseline) -> np.ndarray:
    """StepMix's integer members [H+1, H, S, A]: member h plays the learner at steps < h, the baseline from h."""
    H = learner.shape[0]
    steps = np.arange(H)[None, :, None, None] < np.arange(H + 1)[:, None, None, None]
    return np.where(steps, learner[None], baseline[None])


def switch_policy(learner, baseline, kappa: float) -> np.ndarray:
    """StepMix member kappa as a Markov policy [H, S, A]: learner before floor(kappa), the mix at it, baseline after."""
    H = learner.shape[0]
    if not 0.0 <= kappa <= H:
        raise ValueError(f"kappa must lie in [0, {H}], got {kappa}")
    h = int(math.floor(kappa))
    rho = kappa - h
    pi = switch_members(learner, baseline)[min(h, H)].copy()
    if h < H:  # the switch coin is drawn once, at step h, so the mixture is Markov
        pi[h] = rho * learner[h] + (1 - rho) * baseline[h]
    return pi


def value_epsmix(mdp: MDP, learner, eps: float) -> float:
    """Exact value at s1 of EpsMix: one coin per episode, the learner with probability eps, else the baseline."""
    v = evaluate(mdp.P, mdp.R, np.stack([learner, mdp.baseline]))[:, 0, mdp.s1]
    return float(eps * v[0] + (1 - eps) * v[1])


def value_stepmix(mdp: MDP, learner, kappa: float) -> float:
    """Exact value at s1 of StepMix member kappa."""
    return float(evaluate(mdp.P, mdp.R, switch_policy(learner, mdp.baseline, kappa))[0, mdp.s1])


# ---------------------------------------------------------------- garnets


def garnet(S: int = 10, A: int = 3, H: int = 5, *, branching: int = 3, baseline_level: float = 0.5,
           seed: int = 0) -> MDP:
    """A random garnet MDP with its baseline set baseline_level of the way from the uniform policy's value to V*.

    Each (s, a) leads to `branching` distinct next states drawn uniformly, with probabilities from a
    flat Dirichlet; mean rewards R[s, a] are i.i.d. uniform on [0, 1] (observed as Bernoulli draws);
    s1 = 0. The baseline is pi_b = beta pi* + (1 - beta) uniform at every (h, s), beta found by bisection
    so that V_b = V_u + baseline_level (V* - V_u) at s1 (the value is continuous in beta, so a root exists).
    """
    if not 1 <= branching <= S:
        raise ValueError(f"branching must lie in [1, S={S}], got {branching}")
    if not 0.0 <= baseline_level <= 1.0:
        raise ValueError(f"baseline_level must lie in [0, 1], got {baseline_level}")
    rng = np.random.default_rng(seed)
    P = np.zeros((S, A, S))
    for s in range(S):
        for a in range(A):
            nxt = rng.choice(S, size=branching, replace=False)
            P[s, a, nxt] = rng.dirichlet(np.ones(branching))
    R = rng.uniform(0.0, 1.0, size=(S, A))
    _, pi_star = optimal(P, R, H)
    uni = uniform_policy(H, S, A)

    def value(beta: float) -> float:
        return float(evaluate(P, R, beta * pi_star + (1 - beta) * uni)[0, 0])

    v_u, v_star = value(0.0), value(1.0)
    target = v_u + baseline_level * (v_star - v_u)
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2^-60: beta to float precision
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if value(mid) < target else (lo, mid)
    beta = hi if baseline_level > 0 else 0.0
    return check_mdp(P, R, H, 0, beta * pi_star + (1 - beta) * uni, name="garnet")


# ---------------------------------------------------------------- confidence


def log_term(S: int, A: int, H: int, K: int, delta: float = DELTA) -> float:
    """L = ln(S A H K / delta), the log factor of the bonus."""
    return math.log(S * A * H * K / delta)


def bonus(N, H: int, L: float, c: float = C_BONUS) -> np.ndarray:
    """The Hoeffding bonus c H sqrt(L / max(1, N)) per (s, a)."""
    return c * H * np.sqrt(L / np.maximum(1, N))


def required_c(S: int, A: int, H: int, K: int, delta: float = DELTA) -> float:
    """The smallest c for which c H sqrt(L / N) provably covers every policy's one-step error (see the module doc).

    Needed: (r^ - r) + (P^ - P) V <= bonus for every V in [0, H-1]^S (the values after one step), at every
    pair and sample count. Weissman et al. 2003: ||P^ - P||_1 <= sqrt(2 (S ln 2 + ln 1/d) / N), and
    (P^ - P) V <= (H-1)/2 ||P^ - P||_1 since the rows of P^ - P sum to 0;
    Hoeffding: r^ - r <= sqrt(ln(1/d) / (2N)); d = delta / (2 S A H K) for the union over pairs, counts
    1..HK and the two events.
    """
    L = log_term(S, A, H, K, delta)
    ld = L + math.log(2)
    return (H - 1) / H * math.sqrt((S * math.log(2) + ld) / (2 * L)) + math.sqrt(ld / (2 * L)) / H


# ---------------------------------------------------------------- the learners' pieces


@dataclass
class Counts:
    """Visit counts N[S, A], reward sums and transition counts N[S, A, S'] of every step seen."""

    S: int
    A: int
    N: np.ndarray = field(init=False)
    rsum: np.ndarray = field(init=False)
    nsas: np.ndarray = field(init=False)

    def __post_init__(self):
        self.N = np.zeros((self.S, self.A), dtype=np.int64)
        self.rsum = np.zeros((self.S, self.A))
        self.nsas = np.zeros((self.S, self.A, self.S), dtype=np.int64)

    def add(self, s: int, a: int, r: float, s2: int) -> None:
        """Record one step."""
        self.N[s, a] += 1
        self.rsum[s, a] += r
        self.nsas[s, a, s2] += 1

    def model(self) -> tuple[np.ndarray, np.ndarray]:
        """The empirical model (P^[S, A, S'], r^[S, A]); unvisited pairs have zero rows (their bonus covers them)."""
        n = np.maximum(self.N, 1)
        return self.nsas / n[..., None], self.rsum / n


def ucbvi_plan(P_hat, r_hat, b, H: int) -> tuple[np.ndarray, np.ndarray]:
    """UCB-VI: optimistic Q[H, S, A] = min(H - t, r^ + P^ V + b) and its greedy policy [H, S, A] (ties: lowest)."""
    S, A = r_hat.shape
    P2 = P_hat.reshape(S * A, S)
    V = np.zeros(S)
    Q = np.zeros((H, S, A))
    pi = np.zeros((H, S, A))
    for t in range(H - 1, -1, -1):
        Q[t] = np.minimum(H - t, r_hat + (P2 @ V).reshape(S, A) + b)
        a = Q[t].argmax(axis=1)
        pi[t, np.arange(S), a] = 1.0
        V = Q[t, np.arange(S), a]
    return Q, pi


def pessimistic_values(P_hat, r_hat, b, policies, s1: int) -> np.ndarray:
    """Lower bounds at s1 of the values of policies[B, H, S, A]: the DP with the bonus subtracted, clipped at 0."""
    return evaluate(P_hat, r_hat, policies, bonus=b)[:, 0, s1]


def epsmix_eps(lower: float, baseline_lower: float, threshold: float) -> float:
    """EpsMix's chance of playing the learner: 1 if its lower bound clears the threshold, else the largest safe eps.

    The episode's value is eps V_learner + (1 - eps) V_b, linear in eps; with V_learner >= lower and
    V_b >= baseline_lower it clears the threshold for eps <= (baseline_lower - threshold) / (baseline_lower - lower).
    With V_b known this is alpha V_b / (V_b - lower). A baseline not credited above the threshold gives 0.
    """
    if lower >= threshold:
        return 1.0
    if baseline_lower <= threshold:
        return 0.0
    return float((baseline_lower - threshold) / (baseline_lower - lower))


def stepmix_kappa(lowers, threshold: float) -> float:
    """StepMix's switch time: the largest kappa in [0, H] whose lower bound clears the threshold (0 if none does).

    lowers[h] bounds integer member h from below (lowers[0]: the baseline); between integers the bound
    is the affine mix of its neighbours, as the value is.
    """
    lowers = np.asarray(lowers, dtype=np.float64)
    H = len(lowers) - 1
    ok = np.flatnonzero(lowers >= threshold)
    if ok.size == 0:
        return 0.0
    h = int(ok[-1])
    if h == H:
        return float(H)
    rho = (lowers[h] - threshold) / (lowers[h] - lowers[h + 1])  # lowers[h + 1] < threshold <= lowers[h]
    return float(h + min(max(rho, 0.0), 1.0 - 1e-12))


# ---------------------------------------------------------------- the offline baseline


def play_episodes(mdp: MDP, policy, n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n episodes of a Markov policy: states, actions, rewards and next states, each [n, H]."""
    H = mdp.H
    s = np.full(n, mdp.s1)
    out = np.zeros((4, n, H))
    pcum = np.cumsum(mdp.P, axis=2)
    pcum[..., -1] = 1.0
    picum = np.cumsum(policy, axis=2)
    picum[..., -1] = 1.0
    for t in range(H):
        a = (rng.random(n)[:, None] >= picum[t, s]).sum(axis=1)
        r = (rng.random(n) < mdp.R[s, a]).astype(np.float64)
        s2 = (rng.random(n)[:, None] >= pcum[s, a]).sum(axis=1)
        out[:, :, t] = s, a, r, s2
        s = s2
    return tuple(out[i].astype(np.int64) if i != 2 else out[i] for i in range(4))


def behaviour_clone(states, actions, H: int, S: int, A: int) -> np.ndarray:
    """The tabular behaviour cloning of a dataset: action frequencies at each (h, s), uniform where (h, s) is unseen."""
    counts = np.zeros((H, S, A))
    h = np.broadcast_to(np.arange(H), states.shape)
    np.add.at(counts, (h.ravel(), states.ravel(), actions.ravel()), 1.0)
    tot = counts.sum(axis=2, keepdims=True)
    return np.where(tot > 0, counts / np.maximum(tot, 1), 1.0 / A)


def return_bounds(returns, H: int, delta: float = DELTA) -> tuple[float, float]:
    """Hoeffding's two-sided interval on an episode value from returns in [0, H], clipped to [0, H]."""
    n = len(returns)
    w = H * math.sqrt(math.log(2 / delta) / (2 * n))
    m = float(np.mean(returns))
    return max(0.0, m - w), min(float(H), m + w)


# ---------------------------------------------------------------- a learning run


@dataclass
class Run:
    """One learning run: per-episode exact deployed values and mixing parameters, and what they are judged by."""

    algo: str
    seed: int
    v_star: float
    v_baseline: float  # the safe baseline's exact value (the behaviour policy's in the offline variant)
    v_uniform: float
    threshold: float  # (1 - alpha) v_baseline: what violations are judged by
    values: np.ndarray  # [K] exact value of the deployed policy (the mixture for EpsMix and StepMix)
    mixing: np.ndarray  # [K] 1 for UCB-VI, eps for EpsMix, kappa for StepMix
    final_learner_value: float  # exact value of UCB-VI's greedy policy after the last episode
    final_deployed_value: float  # exact value of what would be deployed next
    baseline_played_value: float  # exact value of the baseline actually mixed in (the clone, offline)
    offline: dict | None = None

    @property
    def regret(self) -> np.ndarray:
        """Cumulative regret sum_k V* - V(deployed_k)."""
        return np.cumsum(self.v_star - self.values)

    @property
    def violated(self) -> np.ndarray:
        """Per episode: the deployed policy's exact value falls below the threshold."""
        return self.values < self.threshold - TOL


def run(mdp: MDP, algo: str, episodes: int, alpha: float, seed: int, *, offline_episodes: int = 0,
        c: float = C_BONUS, delta: float = DELTA, progress=None) -> Run:
    """One run of "ucbvi", "epsmix" or "stepmix" for `episodes` episodes; offline_episodes > 0 clones the baseline.

    Random streams: the environment's (one set of uniforms per step, drawn whatever is played, so runs that
    deploy the same policies see the same trajectories), the mixing coins', and the offline dataset's.
    """
    if algo not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")
    S, A, H = mdp.S, mdp.A, mdp.H
    env_ss, coin_ss, data_ss = np.random.SeedSequence(seed).spawn(3)
    env_rng, coin_rng = np.random.default_rng(env_ss), np.random.default_rng(coin_ss)
    V_opt, _ = optimal(mdp.P, mdp.R, H)
    v_star = float(V_opt[0, mdp.s1])
    v_b = float(evaluate(mdp.P, mdp.R, mdp.baseline)[0, mdp.s1])
    v_u = float(evaluate(mdp.P, mdp.R, uniform_policy(H, S, A))[0, mdp.s1])
    threshold = (1 - alpha) * v_b
    counts = Counts(S, A)
    baseline, baseline_lower, decide_threshold = mdp.baseline, v_b, threshold  # V_b known
    offline = None
    n_off = offline_episodes if algo != "ucbvi" else 0  # UCB-VI is the unconstrained reference: no dataset
    if n_off > 0:
        st, ac, rw, s2 = play_episodes(mdp, mdp.baseline, n_off, np.random.default_rng(data_ss))
        for s_, a_, r_, n_ in zip(st.ravel(), ac.ravel(), rw.ravel(), s2.ravel()):
            counts.add(s_, a_, r_, n_)
        baseline = behaviour_clone(st, ac, H, S, A)
        lo, hi = return_bounds(rw.sum(axis=1), H, delta)
        baseline_lower, decide_threshold = lo, (1 - alpha) * hi  # V_b estimated: credit lo, guard against hi
        offline = {"episodes": n_off, "v_lower": lo, "v_upper": hi,
                   "v_clone": float(evaluate(mdp.P, mdp.R, baseline)[0, mdp.s1])}
    L = log_term(S, A, H, episodes + n_off, delta)
    v_played_base = float(evaluate(mdp.P, mdp.R, baseline)[0, mdp.s1])
    pcum = np.cumsum(mdp.P, axis=2)
    pcum[..., -1] = 1.0
    values = np.zeros(episodes)
    mixing = np.zeros(episodes)

    def decide():
        P_hat, r_hat = counts.model()
        b = bonus(counts.N, H, L, c)
        _, learner = ucbvi_plan(P_hat, r_hat, b, H)
        if algo == "ucbvi":
            v = float(evaluate(mdp.P, mdp.R, learner)[0, mdp.s1])
            return learner, 1.0, v, [learner]
        if algo == "epsmix":
            lower = float(pessimistic_values(P_hat, r_hat, b, learner[None], mdp.s1)[0])
            eps = epsmix_eps(lower, baseline_lower, decide_threshold)
            v_l = float(evaluate(mdp.P, mdp.R, learner)[0, mdp.s1])
            return learner, eps, eps * v_l + (1 - eps) * v_played_base, [baseline, learner]
        members = switch_members(learner, baseline)
        lowers = pessimistic_values(P_hat, r_hat, b, members, mdp.s1)
        lowers[0] = baseline_lower  # member 0 is the baseline: credited with V_b (or the data's lower bound)
        kappa = stepmix_kappa(lowers, decide_threshold)
        h = int(kappa)
        rho = kappa - h
        ends = members[[h, min(h + 1, H)]]
        v_ends = evaluate(mdp.P, mdp.R, ends)[:, 0, mdp.s1]
        return learner, kappa, float((1 - rho) * v_ends[0] + rho * v_ends[1]), list(ends)

    for k in range(episodes):
        learner, param, value, choices = decide()
        values[k], mixing[k] = value, param
        if algo == "ucbvi":
            pi = learner
        else:
            coin = coin_rng.random()  # drawn every episode, so the coin stream never depends on the choices
            if algo == "epsmix":
                pi = choices[1] if coin < param else choices[0]
            else:
                pi = choices[1] if coin < param - int(param) else choices[0]
        picum = np.cumsum(pi, axis=2)
        picum[..., -1] = 1.0
        u = env_rng.random((H, 3))
        s = mdp.s1
        for t in range(H):
            a = int(np.searchsorted(picum[t, s], u[t, 0], side="right"))
            r = float(u[t, 1] < mdp.R[s, a])
            s2 = int(np.searchsorted(pcum[s, a], u[t, 2], side="right"))
            counts.add(s, a, r, s2)
            s = s2
        if progress is not None:
            progress(k)
    learner, _, final_deployed, _ = decide()
    final_learner = float(evaluate(mdp.P, mdp.R, learner)[0, mdp.s1])
    return Run(algo, seed, v_star, v_b, v_u, threshold, values, mixing, final_learner, final_deployed,
               v_played_base, offline)


# ---------------------------------------------------------------- the CLI


def subsample_points(K: int, n: int = 200) -> np.ndarray:
    """About n episode counts in 1..K, denser early (log-spaced) and even later, always including K."""
    pts = np.concatenate([np.geomspace(1, K, n // 2), np.linspace(1, K, n // 2)])
    return np.unique(np.round(pts).astype(np.int64).clip(1, K))


def summarize(runs: dict[str, list[Run]], K: int) -> dict:
    """results.json's body: per algorithm and seed the subsampled regret, violations and final values; ratios."""
    pts = subsample_points(K)
    out: dict = {"episodes_at": pts.tolist(), "runs": {}, "summary": {}}
    for algo, rs in runs.items():
        out["runs"][algo] = []
        for r in rs:
            viol = r.violated
            out["runs"][algo].append({
                "seed": r.seed, "v_star": r.v_star, "v_baseline": r.v_baseline, "v_uniform": r.v_uniform,
                "threshold": r.threshold, "violations": int(viol.sum()),
                "violations_first_100": int(viol[:100].sum()), "violations_first_1000": int(viol[:1000].sum()),
                "first_violation": int(np.argmax(viol)) + 1 if viol.any() else None,
                "regret": r.regret[pts - 1].round(4).tolist(),
                "mixing": r.mixing[pts - 1].round(4).tolist(),
                "final_policy_value": r.final_learner_value, "final_deployed_value": r.final_deployed_value,
                "baseline_played_value": r.baseline_played_value, "offline": r.offline,
            })
        regret = np.stack([r.regret for r in rs])
        out["summary"][algo] = {
            "seeds": len(rs),
            "seeds_without_violations": int(sum(not r.violated.any() for r in rs)),
            "violations_total": int(sum(r.violated.sum() for r in rs)),
            "mean_regret_final": float(regret[:, -1].mean()),
        }
    if "ucbvi" in runs:
        ref = np.stack([r.regret for r in runs["ucbvi"]]).mean(axis=0)
        for algo in runs:
            if algo == "ucbvi":
                continue
            ratio = np.stack([r.regret for r in runs[algo]]).mean(axis=0) / np.maximum(ref, 1e-12)
            above = np.flatnonzero(ratio[pts - 1] > 2)
            if above.size == 0:
                k2 = int(pts[0])
            elif above[-1] + 1 < len(pts):
                k2 = int(pts[above[-1] + 1])
            else:
                k2 = None
            out["summary"][algo]["regret_ratio_to_ucbvi"] = ratio[pts - 1].round(4).tolist()
            out["summary"][algo]["ratio_final"] = float(ratio[-1])
            out["summary"][algo]["k_ratio_stays_at_most_2"] = k2
    return out


def plot(runs: dict[str, list[Run]], out_dir: Path) -> list[Path]:
    """regret.png (mean cumulative regret over seeds, min-max band) and values.png (seed 0's exact deployed values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ucbvi": "tab:red", "epsmix": "tab:blue", "stepmix": "tab:green"}
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for algo, rs in runs.items():
        reg = np.stack([r.regret for r in rs])
        x = np.arange(1, reg.shape[1] + 1)
        ax.plot(x, reg.mean(axis=0), color=colors[algo], label=f"{algo} (mean of {len(rs)})")
        ax.fill_between(x, reg.min(axis=0), reg.max(axis=0), color=colors[algo], alpha=0.2, lw=0)
    ax.set_xlabel("episodes")
    ax.set_ylabel("cumulative regret")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths = [out_dir / "regret.png"]
    fig.savefig(paths[0])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    first = next(iter(runs.values()))[0]
    for algo, rs in runs.items():
        r = rs[0]
        x = np.arange(1, len(r.values) + 1)
        ax.plot(x, r.values, color=colors[algo], lw=0.6, alpha=0.8, label=f"{algo} (seed {r.seed})")
    ax.axhline(first.threshold, color="k", ls="--", lw=1, label="threshold (1-alpha) V_b")
    ax.axhline(first.v_baseline, color="grey", ls=":", lw=1, label="V_b")
    ax.axhline(first.v_star, color="grey", ls="-.", lw=1, label="V*")
    ax.set_xscale("log")
    ax.set_xlabel("episode")
    ax.set_ylabel("exact value of the deployed policy")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "values.png")
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


class _Parser(argparse.ArgumentParser):
    """argparse with marl's one-line errors (exit 2, no usage dump)."""

    def error(self, message):
        """Print `marl: error: ...` and exit 2."""
        print(f"marl: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options."""
    p = _Parser(prog="python -m marl.agents.stepmix.tabular",
                description="StepMix, EpsMix and UCB-VI on a tabular MDP: regret and baseline violations.")
    p.add_argument("--mdp", default="garnet",
                   help="'garnet' (a random MDP per seed) or FILE.npz (P, R, H, s1, baseline)")
    p.add_argument("--episodes", type=int, default=2000, help="episodes K per run (default 2000)")
    p.add_argument("--alpha", type=float, default=0.1, help="allowed loss: deploy >= (1-alpha) V_b (default 0.1)")
    p.add_argument("--algos", default="ucbvi,epsmix,stepmix", help="comma-separated from ucbvi, epsmix, stepmix")
    p.add_argument("--seeds", type=int, default=5, help="runs per algorithm, seeds 0..N-1 (default 5)")
    p.add_argument("--out", required=True, help="folder for results.json, regret.png and values.png")
    p.add_argument("--offline-episodes", type=int, default=0,
                   help="clone EpsMix's and StepMix's baseline from this many episodes of the MDP's baseline "
                   "(default 0: the baseline is given)")
    g = p.add_argument_group("garnet (with --mdp garnet)")
    g.add_argument("--states", type=int, help="S (default 10)")
    g.add_argument("--actions", type=int, help="A (default 3)")
    g.add_argument("--horizon", type=int, help="H (default 5)")
    g.add_argument("--branching", type=int, help="next states per (s, a) (default 3)")
    g.add_argument("--baseline-level", type=float, help="V_b's place between V_uniform (0) and V* (1) (default 0.5)")
    g.add_argument("--garnet-seed", type=int, help="seed i uses garnet number garnet-seed + i (default 0)")
    return p


GARNET_DEFAULTS = {"states": 10, "actions": 3, "horizon": 5, "branching": 3, "baseline_level": 0.5, "garnet_seed": 0}


def _check_args(p: argparse.ArgumentParser, args) -> list[str]:
    """Validate the options, each failure one line; returns the algorithms."""
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGOS]
    if bad or not algos or len(set(algos)) != len(algos):
        p.error(f"--algos {args.algos!r}: give distinct names from {', '.join(ALGOS)}")
    if args.episodes < 1:
        p.error(f"--episodes must be >= 1, got {args.episodes}")
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.offline_episodes < 0:
        p.error(f"--offline-episodes must be >= 0, got {args.offline_episodes}")
    given = [k for k in GARNET_DEFAULTS if getattr(args, k) is not None]
    if args.mdp != "garnet":
        if given:
            p.error(f"--{given[0].replace('_', '-')} applies to --mdp garnet only, not to a file")
        return algos
    for k, v in GARNET_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    for k in ("states", "actions", "horizon"):
        if getattr(args, k) < 1:
            p.error(f"--{k} must be >= 1, got {getattr(args, k)}")
    if not 1 <= args.branching <= args.states:
        p.error(f"--branching must lie in [1, --states={args.states}], got {args.branching}")
    if not 0.0 <= args.baseline_level <= 1.0:
        p.error(f"--baseline-level must lie in [0, 1], got {args.baseline_level}")
    return algos


def main(argv=None) -> int:
    """Run the algorithms over the seeds; write results.json and the plots."""
    from tqdm import tqdm

    from marl.checkpoint import atomic_write_text

    p = build_parser()
    args = p.parse_args(argv)
    algos = _check_args(p, args)
    if args.mdp == "garnet":
        def make(i):
            return garnet(args.states, args.actions, args.horizon, branching=args.branching,
                          baseline_level=args.baseline_level, seed=args.garnet_seed + i)
        mdp0 = make(0)
    else:
        try:
            mdp0 = load_npz(args.mdp)
        except MDPError as err:
            p.error(str(err))

        def make(i):
            return mdp0
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        p.error(f"--out {args.out} exists and is not a folder")
    S, A, H = mdp0.S, mdp0.A, mdp0.H
    c_req = required_c(S, A, H, args.episodes + args.offline_episodes)
    if c_req > C_BONUS:
        print(f"marl: warning: c = {C_BONUS} proves the lower bounds only where required_c <= c; here required_c = "
              f"{c_req:.3f} (S={S}, A={A}, H={H}): violations are possible", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[Run]] = {a: [] for a in algos}
    total = len(algos) * args.seeds * args.episodes
    with tqdm(total=total, unit="ep", unit_scale=True, desc="stepmix tabular", dynamic_ncols=True) as bar:
        step = max(1, args.episodes // 100)

        def tick(k):
            if (k + 1) % step == 0 or k + 1 == args.episodes:
                bar.update((k + 1) - tick.done)
                tick.done = k + 1

        for i in range(args.seeds):
            mdp = make(i)
            for algo in algos:
                tick.done = 0
                runs[algo].append(run(mdp, algo, args.episodes, args.alpha, i,
                                      offline_episodes=args.offline_episodes, progress=tick))
    body = summarize(runs, args.episodes)
    result = {"format": "marl-stepmix-tabular", "version": 1,
              "config": {"mdp": args.mdp, "S": S, "A": A, "H": H, "episodes": args.episodes, "alpha": args.alpha,
                         "algos": algos, "seeds": args.seeds, "offline_episodes": args.offline_episodes,
                         "delta": DELTA, "c": C_BONUS, "required_c": c_req, "bound_proven": c_req <= C_BONUS,
                         "garnet": ({k: getattr(args, k) for k in GARNET_DEFAULTS} if args.mdp == "garnet" else None)},
              **body}
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=1) + "\n")
    plot(runs, out_dir)
    for algo in algos:
        s = body["summary"][algo]
        extra = f", regret ratio to UCB-VI {s['ratio_final']:.2f}" if "ratio_final" in s else ""
        print(f"{algo}: {s['seeds_without_violations']}/{s['seeds']} seeds without violations "
              f"({s['violations_total']} violating episodes), mean regret {s['mean_regret_final']:.1f}{extra}")
    print(f"wrote {out_dir / 'results.json'}, {out_dir / 'regret.png'}, {out_dir / 'values.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
