"""Conformance check of marl's VecEnv contract, as PettingZoo's `parallel_api_test` is for ParallelEnvs.

Run it on an environment before training on it, for example in a plug-in's tests:

    from marl.testing import vec_env_api_test

    env = make_my_env(scenario=None, n_envs=2, options={})
    vec_env_api_test(env, seed=0, steps=200)

It plays `steps` steps with random valid actions (drawn from `avail` by a seeded numpy Generator) and
checks every Step against `env.spec` and the rules `marl/spec.py` states:

- shapes and dtypes: obs f32[E, A, obs_dim], state f32[E, state_dim], avail bool[E, A, n_actions],
  reward f32[E] (f32[E, K] when reward_dim K > 1), episode_return shaped as reward, done, truncated
  and won bool[E], alive bool[E, A], t and episode_length int[E]; floats are finite;
- reset(): nothing done, no reward, t == 0;
- every agent has an action to take, and a dead agent (alive False) only the no-op (action 0);
- truncated implies done; won is never set when EnvSpec.can_win is False;
- where done is set the environment has been reset already: t == 0, and the finished episode's
  episode_length and episode_return are the steps and rewards it had; elsewhere t went up by one;
- final_obs f32[E, A, obs_dim] and final_state f32[E, state_dim] are there wherever an episode ended;
- no episode runs past EnvSpec.episode_limit (when it is set, > 0);
- the same seed gives the same steps: reset(seed) again and the same actions give identical Steps;
- where the env is `Resumable` (get_state/set_state), set_state(get_state()) mid-run returns the Step
  it was taken at and the same actions then give the same Steps again.

Episodes an adapter marks as lost (`info["lost"]`, a crashed or hung worker) are exempt from the
length and return checks. A broken rule raises VecEnvAPIError (an AssertionError) with one line that
names the rule, the step, the field and the environment index. The env is left wherever the check
ended; close it yourself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

import numpy as np

from marl.spec import EnvSpec, Resumable, Step, VecEnv

FIELDS = ("obs", "state", "avail", "reward", "done", "truncated", "alive", "t", "episode_return", "episode_length",
          "won", "final_obs", "final_state")


class VecEnvAPIError(AssertionError):
    """An environment broke a rule of marl's VecEnv contract; the message is one line."""


def random_actions(step: Step, rng: np.random.Generator) -> np.ndarray:
    """int64[E, A]: for each agent an action drawn uniformly from those `avail` allows."""
    draw = np.where(step.avail, rng.random(step.avail.shape), -1.0)
    return np.argmax(draw, axis=-1).astype(np.int64)


def _fail(where: str, message: str) -> NoReturn:
    raise VecEnvAPIError(f"{where}: {message}")


def _check_array(where: str, step: Step, name: str, shape: tuple, kind: str) -> None:
    """Field `name` is an ndarray of `shape` with a dtype of `kind` ('f32', 'bool' or 'int'), finite if float."""
    value = getattr(step, name)
    if not isinstance(value, np.ndarray):
        _fail(where, f"Step.{name} must be a numpy array, got {type(value).__name__}")
    if value.shape != shape:
        _fail(where, f"Step.{name} has shape {value.shape}, expected {shape}")
    ok = {"f32": value.dtype == np.float32, "bool": value.dtype == np.bool_,
          "int": np.issubdtype(value.dtype, np.integer)}[kind]
    if not ok:
        expected = {"f32": "float32", "bool": "bool", "int": "an integer dtype"}[kind]
        _fail(where, f"Step.{name} has dtype {value.dtype}, expected {expected}")
    if kind == "f32":
        bad = ~np.isfinite(value)
        if bad.any():
            _fail(where, f"Step.{name} is not finite at index {tuple(int(i) for i in np.argwhere(bad)[0])}")


def check_step(step: Step, spec: EnvSpec, n_envs: int, where: str = "step") -> None:
    """One Step's fields against the spec: shapes, dtypes, finite floats, actions for all, the dead only the no-op."""
    if not isinstance(step, Step):
        _fail(where, f"expected a marl.spec.Step, got {type(step).__name__}")
    E, A = n_envs, spec.n_agents
    reward = (E, spec.reward_dim) if spec.reward_dim > 1 else (E,)
    for name, shape, kind in (("obs", (E, A, spec.obs_dim), "f32"), ("state", (E, spec.state_dim), "f32"),
                              ("avail", (E, A, spec.n_actions), "bool"), ("reward", reward, "f32"),
                              ("done", (E,), "bool"), ("truncated", (E,), "bool"), ("alive", (E, A), "bool"),
                              ("t", (E,), "int"), ("episode_return", reward, "f32"), ("episode_length", (E,), "int"),
                              ("won", (E,), "bool")):
        _check_array(where, step, name, shape, kind)
    if not isinstance(step.info, dict):
        _fail(where, f"Step.info must be a dict, got {type(step.info).__name__}")
    stuck = ~step.avail.any(-1)
    if stuck.any():
        e, a = np.argwhere(stuck)[0]
        _fail(where, f"agent {a} of env {e} has no available action (avail is all False); a dead agent has the no-op")
    noop = np.zeros(spec.n_actions, bool)
    noop[0] = True
    wrong = ~step.alive & (step.avail != noop).any(-1)
    if wrong.any():
        e, a = np.argwhere(wrong)[0]
        _fail(where, f"dead agent {a} of env {e} may take actions {np.flatnonzero(step.avail[e, a]).tolist()}; "
                     f"a dead agent (alive False) may take only the no-op, action 0")
    bad = step.truncated & ~step.done
    if bad.any():
        _fail(where, f"truncated is set without done in env {int(np.flatnonzero(bad)[0])}; truncated implies done")
    if not spec.can_win and (step.won & step.done).any():
        _fail(where, f"won is set in env {int(np.flatnonzero(step.won & step.done)[0])} but EnvSpec.can_win is False")
    if step.done.any():
        for name, shape in (("final_obs", (E, A, spec.obs_dim)), ("final_state", (E, spec.state_dim))):
            if getattr(step, name) is None:
                _fail(where, f"Step.{name} is None where done is set in env {int(np.flatnonzero(step.done)[0])}; "
                             f"it must hold the observation the episode ended on")
            _check_array(where, step, name, shape, "f32")


def _copy(step: Step) -> dict:
    return {k: None if getattr(step, k) is None else np.array(getattr(step, k)) for k in FIELDS}


def _compare(where: str, got: Step, expected: dict, fields=FIELDS, why: str = "") -> None:
    for name in fields:
        a, b = getattr(got, name), expected[name]
        if (a is None) != (b is None) or (a is not None and (np.shape(a) != np.shape(b)
                                                             or not np.array_equal(a, b, equal_nan=True))):
            diff = np.argwhere(np.asarray(a) != np.asarray(b)) if a is not None and np.shape(a) == np.shape(b) else []
            at = f" (first at index {tuple(int(i) for i in diff[0])})" if len(diff) else ""
            _fail(where, f"Step.{name} differs{at}; {why}")


def _play(env: VecEnv, spec: EnvSpec, first: Step, actions: list[np.ndarray] | None, rng, steps: int, label: str,
          check: bool, expected: list[dict] | None = None, why: str = "", save_at: int | None = None,
          policy: Callable[[Step, np.random.Generator], np.ndarray] = random_actions):
    """Step env from `first`; checks the rules when `check`, compares with `expected` when given.

    Returns (the actions taken, copies of the Steps, the state saved before step `save_at`, what was seen).
    """
    E = env.n_envs
    taken, record, saved = [], [], None
    seen = {"episodes": 0, "truncated": 0, "won": 0, "lost": 0, "dead": 0}
    step = first
    t_prev = first.t.astype(np.int64)
    returns = np.zeros(first.reward.shape, np.float64)
    for i in range(steps):
        if save_at == i:
            saved = env.get_state()
        acts = np.asarray(policy(step, rng) if actions is None else actions[i])
        taken.append(acts)
        step = env.step(acts.copy())
        where = f"{label} step {i + 1}"
        if check:
            check_step(step, spec, E, where)
            lost = np.asarray(step.info.get("lost", np.zeros(E, bool)), bool)
            seen["episodes"] += int((step.done & ~lost).sum())
            seen["truncated"] += int((step.truncated & ~lost).sum())
            seen["won"] += int((step.won & step.done & ~lost).sum())
            seen["lost"] += int(lost.sum())
            seen["dead"] += int((~step.alive).sum())
            returns += step.reward
            for e in range(E):
                if not step.done[e]:
                    if step.t[e] != t_prev[e] + 1:
                        _fail(where, f"Step.t[{e}] is {step.t[e]}, expected {t_prev[e] + 1} (one more than the "
                                     f"step before) where done is not set")
                    continue
                if step.t[e] != 0:
                    _fail(where, f"Step.t[{e}] is {step.t[e]} where done is set; the environment must already have "
                                 f"reset, its new episode at t == 0")
                if not lost[e]:
                    if step.episode_length[e] != t_prev[e] + 1:
                        _fail(where, f"Step.episode_length[{e}] is {step.episode_length[e]}, but the episode that "
                                     f"ended took {t_prev[e] + 1} steps")
                    if not np.allclose(step.episode_return[e], returns[e], rtol=1e-4, atol=1e-5):
                        _fail(where, f"Step.episode_return[{e}] is {step.episode_return[e]}, but the episode's "
                                     f"rewards sum to {returns[e]}")
                    if spec.episode_limit > 0 and step.episode_length[e] > spec.episode_limit:
                        _fail(where, f"the episode of env {e} lasted {step.episode_length[e]} steps, more than "
                                     f"EnvSpec.episode_limit {spec.episode_limit}")
                returns[e] = 0
            t_prev = step.t.astype(np.int64)
        if expected is not None:
            _compare(where, step, expected[i], why=why)
        record.append(_copy(step))
    return taken, record, saved, seen


def vec_env_api_test(env: VecEnv, seed: int = 0, steps: int = 200,
                     policy: Callable[[Step, np.random.Generator], np.ndarray] = random_actions) -> dict:
    """Check `env` against marl's VecEnv contract with `steps` random valid steps; VecEnvAPIError names a broken rule.

    `steps` should cover a few episode ends of every kind the env has (cut by the time limit, won,
    lost). Returns what the checked run saw, so a test can tell the rules were exercised: episodes
    (finished), truncated, won, lost (with a worker), dead (agent-steps with alive False) and
    resumed (whether the get_state/set_state round trip ran). `policy(step, rng)` picks the actions of the
    checked run (they are replayed for the same-seed and round-trip checks); the default draws them at
    random from `avail`. See the module's docstring for the rules.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"steps must be an integer of at least 2, got {steps!r}")
    if not isinstance(env, VecEnv):
        missing = [m for m in ("spec", "n_envs", "reset", "step", "close") if not hasattr(env, m)]
        _fail("env", f"{type(env).__name__} is not a VecEnv: it lacks {', '.join(missing)}")
    spec = env.spec
    if not isinstance(spec, EnvSpec):
        _fail("env", f"env.spec must be a marl.spec.EnvSpec, got {type(spec).__name__}")
    E = env.n_envs
    if not isinstance(E, (int, np.integer)) or E < 1:
        _fail("env", f"env.n_envs must be a positive integer, got {E!r}")

    first = env.reset(seed=seed)
    check_step(first, spec, E, "reset")
    if first.done.any() or first.truncated.any():
        _fail("reset", "done or truncated is set on the Step reset() returned; nothing has ended yet")
    if (first.reward != 0).any() or (first.t != 0).any():
        _fail("reset", "the Step reset() returned must have zero reward and t == 0 everywhere")
    start = _copy(first)
    actions, record, _, seen = _play(env, spec, first, None, np.random.default_rng(seed), steps, "run", check=True,
                                     policy=policy)

    # the same seed, the same actions: the same Steps (state saved half-way when the env can resume)
    again = env.reset(seed=seed)
    _compare("reset(seed) again", again, start, why=f"reset(seed={seed}) must give the same Step every time")
    resumable = isinstance(env, Resumable)
    half = steps // 2 if resumable else None
    _, _, saved, _ = _play(env, spec, again, actions, None, steps, "replay", check=False, expected=record,
                        why=f"reset(seed={seed}) and the same actions must give the same Steps", save_at=half)
    seen["resumed"] = resumable
    if not resumable:
        return seen
    # set_state(get_state()) continues the saved episodes exactly
    back = env.set_state(saved)
    check_step(back, spec, E, "set_state")
    at = record[half - 1] if half > 0 else start
    _compare("set_state", back, at, fields=("obs", "state", "avail", "alive", "t"),
             why="set_state() must return the Step the environments stood at when get_state() was called")
    _play(env, spec, back, actions[half:], None, steps - half, "resumed", check=False, expected=record[half:],
          why="after set_state(get_state()) the same actions must give the same Steps")
    return seen
