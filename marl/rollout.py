"""Collect T steps of a VecEnv with a learner into a Rollout (arrays of T x E x A)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from marl.spec import Learner, Rollout, Step, VecEnv, finished_envs


def episode_return(step: Step, e: int) -> float | list[float]:
    """The finished episode e's return: a number for one reward, a list of K numbers for K objectives."""
    ret = step.episode_return[e]
    return float(ret) if np.ndim(ret) == 0 else [float(r) for r in ret]


def collect(env: VecEnv, learner: Learner, step: Step, steps: int, timing: dict | None = None,
            clock=time.perf_counter) -> tuple[Rollout, Step, list[dict]]:
    """Step env `steps` times from `step`; returns the Rollout, the next Step and finished episodes.

    Each finished episode is a dict: "return" (a number, or a list of K numbers for a vector reward),
    "length" and "won".

    When `timing` is given, the seconds spent acting and stepping the env are added to its "act" and
    "env" entries, read from `clock` (wall time by default; time.process_time gives CPU time).
    """
    E = step.n_envs
    obs = np.empty((steps, *step.obs.shape), np.float32)
    state = np.empty((steps, *step.state.shape), np.float32)
    avail = np.empty((steps, *step.avail.shape), bool)
    alive = np.empty((steps, *step.alive.shape), bool)
    actions = np.empty((steps, *step.alive.shape), np.int64)
    reward = None
    done = np.empty((steps, E), bool)
    truncated = np.empty((steps, E), bool)
    extras: dict[str, np.ndarray] = {}
    scenario = None if step.scenario is None else np.empty((steps, E), np.int64)
    final_t, final_e, final_obs, final_state = [], [], [], []
    episodes: list[dict] = []
    for t in range(steps):
        obs[t], state[t], avail[t], alive[t] = step.obs, step.state, step.avail, step.alive
        if scenario is not None:
            scenario[t] = step.scenario
        t0 = clock()
        acts, extra = learner.act(step, deterministic=False)
        t1 = clock()
        actions[t] = acts
        for k, v in extra.items():
            if k not in extras:
                extras[k] = np.empty((steps, *np.shape(v)), np.asarray(v).dtype)
            extras[k][t] = v
        step = env.step(acts)
        if timing is not None:
            timing["act"] = timing.get("act", 0.0) + t1 - t0
            timing["env"] = timing.get("env", 0.0) + clock() - t1
        if reward is None:
            reward = np.empty((steps, *step.reward.shape), np.float32)
        reward[t], done[t], truncated[t] = step.reward, step.done, step.truncated
        for e in np.flatnonzero(step.truncated):
            final_t.append(t)
            final_e.append(e)
            final_obs.append(step.final_obs[e])
            final_state.append(step.final_state[e])
        for e in finished_envs(step):  # episodes a crashed worker took with it are not counted
            episodes.append({"return": episode_return(step, e), "length": int(step.episode_length[e]),
                             "won": bool(step.won[e])})
    A = step.alive.shape[1]
    rollout = Rollout(
        obs=obs, state=state, avail=avail, alive=alive, actions=actions, reward=reward, done=done,
        truncated=truncated, extras=extras, next_obs=step.obs, next_state=step.state, next_avail=step.avail,
        next_alive=step.alive, final_t=np.asarray(final_t, np.int64), final_e=np.asarray(final_e, np.int64),
        final_obs=np.asarray(final_obs, np.float32).reshape(len(final_t), A, step.obs.shape[-1]),
        final_state=np.asarray(final_state, np.float32).reshape(len(final_t), step.state.shape[-1]),
        scenario=scenario,
    )
    return rollout, step, episodes


def play_episodes(env: VecEnv, act: Callable[[Step], np.ndarray], quota: np.ndarray, seed: int,
                  gamma: float = 1.0, on_done: Callable[[int, bool], None] | None = None) -> dict:
    """Battle e of `env` plays quota[e] episodes with act(step) -> actions, from reset(seed).

    Returns "env" int[n] (each episode's battle, in order of finishing), "return" f32[n] or f32[n, K],
    "discounted_return" f64[n] or f64[n, K] (the sum of gamma^t r_t, which multi-objective metrics are
    computed on; equal to "return" for gamma 1), "length" int[n], "won" bool[n] and "env_steps"
    (transitions taken). A battle past its quota keeps playing (the VecEnv steps all together) but its
    episodes are not counted, so short episodes are not over-counted; episodes a crashed worker took
    with it are played again. on_done(e, counted), when given, is told of every episode that ends in battle
    e, counted or not (evaluate() keeps per-episode tallies of the learner's extras with it).
    """
    quota = np.asarray(quota, np.int64)
    step = env.reset(seed=seed)
    taken = np.zeros(step.n_envs, np.int64)
    envs: list[int] = []
    returns: list = []
    discounted: list = []
    lengths: list[int] = []
    won: list[bool] = []
    env_steps = 0
    running = np.zeros(np.shape(step.episode_return), np.float64)  # sum of gamma^t r_t of each episode under way
    power = np.ones(step.n_envs, np.float64)
    while len(envs) < int(quota.sum()):
        step = env.step(act(step))
        env_steps += step.n_envs
        running += power.reshape(-1, *([1] * (running.ndim - 1))) * step.reward  # the reward of the step taken
        power *= gamma
        lost = step.info.get("lost")
        if on_done is not None and lost is not None:
            for e in np.flatnonzero(step.done & lost):  # lost with a crashed worker: played again, never counted
                on_done(int(e), False)
        for e in finished_envs(step):
            counted = bool(taken[e] < quota[e])
            if on_done is not None:
                on_done(int(e), counted)
            if counted:
                taken[e] += 1
                envs.append(int(e))
                returns.append(step.episode_return[e].copy())
                discounted.append(running[e].copy())
                lengths.append(int(step.episode_length[e]))
                won.append(bool(step.won[e]))
        running[step.done] = 0.0
        power[step.done] = 1.0
    K = np.shape(step.episode_return)[1:]
    return {"env": np.asarray(envs, np.int64), "return": np.asarray(returns, np.float32).reshape(len(envs), *K),
            "discounted_return": np.asarray(discounted, np.float64).reshape(len(envs), *K),
            "length": np.asarray(lengths, np.int64), "won": np.asarray(won, bool), "env_steps": env_steps}
