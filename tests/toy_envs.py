"""Tiny environments for the adapter tests (importable by the adapters' worker processes)."""

from __future__ import annotations

import os
import time

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl.spec import EnvSpec, Step, check_actions, first_step


class LeaveEnv(ParallelEnv):
    """Three agents; agent_1 leaves after step `leave_at`, the episode is cut at step `limit`.

    Observations are [agent number + 1, t]; agent_0's are dicts with an action mask (action 2 off),
    agent_2's mask comes through infos (action 1 off), agent_1 has none. An action for an agent
    that is not live raises, as in SMAC.
    """

    metadata = {"name": "leave_v0"}

    def __init__(self, leave_at: int = 2, limit: int = 5, box_actions: bool = False):
        self.possible_agents = ["agent_0", "agent_1", "agent_2"]
        self.agents: list[str] = []
        self.leave_at, self.limit, self.box_actions = leave_at, limit, box_actions
        self.received: list[dict] = []
        self.t = 0

    def observation_space(self, agent):
        """agent_0: dict with mask; others: a Box."""
        box = spaces.Box(-10, 10, (2,), np.float32)
        if agent == "agent_0":
            return spaces.Dict({"observation": box, "action_mask": spaces.MultiBinary(3)})
        return box

    def action_space(self, agent):
        """Discrete(3), or a Box when box_actions."""
        return spaces.Box(-1, 1, (2,)) if self.box_actions else spaces.Discrete(3)

    def _obs(self, agents):
        out = {}
        for a in agents:
            x = np.array([self.possible_agents.index(a) + 1, self.t], np.float32)
            out[a] = {"observation": x, "action_mask": np.array([1, 1, 0], np.int8)} if a == "agent_0" else x
        return out

    def _infos(self):
        mask = np.array([1, 0, 1], np.int8)
        return {a: ({"action_mask": mask} if a == "agent_2" else {}) for a in self.possible_agents}

    def reset(self, seed=None, options=None):
        """Start an episode."""
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._obs(self.agents), self._infos()

    def step(self, actions):
        """Record the actions; agent_1 leaves at leave_at; everyone at limit."""
        if set(actions) != set(self.agents):
            raise ValueError(f"actions for {sorted(actions)}, live agents {self.agents}")
        self.received.append(dict(actions))
        self.t += 1
        acting = list(self.agents)
        rewards = {a: float(self.possible_agents.index(a) + 1) for a in acting}
        terminations = {a: a == "agent_1" and self.t >= self.leave_at for a in acting}
        truncations = {a: self.t >= self.limit for a in acting}
        self.agents = [] if self.t >= self.limit else [a for a in acting if not terminations[a]]
        return self._obs(acting), rewards, terminations, truncations, self._infos()


class CrashEnv(ParallelEnv):
    """Two agents that play 4-step episodes; the process dies (os._exit) on step `crash_at` once.

    The file `marker` records that the crash happened, so the restarted worker does not crash again.
    With `hang` set the step sleeps for an hour instead of dying: a hung worker.
    """

    metadata = {"name": "crash_v0"}

    def __init__(self, marker: str = "", crash_at: int = 3, hang: bool = False):
        self.possible_agents = ["a", "b"]
        self.agents: list[str] = []
        self.marker, self.crash_at, self.hang = marker, crash_at, hang
        self.calls = 0
        self.t = 0

    def observation_space(self, agent):
        """A Box of two floats."""
        return spaces.Box(-100, 100, (2,), np.float32)

    def action_space(self, agent):
        """Discrete(2)."""
        return spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        """Start an episode."""
        self.agents = list(self.possible_agents)
        self.t = 0
        return {a: np.array([self.t, 1.0], np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        """Step; die once on the crash_at-th call when a marker path is given."""
        self.calls += 1
        if self.marker and self.calls == self.crash_at:
            try:  # O_EXCL: of several workers reaching this step, exactly one dies
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                if self.hang:
                    time.sleep(3600)
                os._exit(3)
        self.t += 1
        acting = list(self.agents)
        done = self.t >= 4
        self.agents = [] if done else acting
        return ({a: np.array([self.t, 1.0], np.float32) for a in acting}, {a: 1.0 for a in acting},
                {a: False for a in acting}, {a: done for a in acting}, {a: {} for a in acting})


class CountVecEnv:
    """A hand-written Resumable VecEnv of two agents, with one flaw on request, for the conformance tests.

    Each episode draws a luck in [0, 1) from the env's generator; the agents see [t, agent, luck],
    the state is [t, luck], the team gets luck + 0.1 * (sum of actions) each step. Agent 1 dies at
    t == die_at (then only the no-op is available); agent 0 never has action 2. An episode ends
    (terminated) at t == 3 when luck < 0.3, won when luck < 0.15, else is cut at t == limit.

    `broken` names a rule to break: "no_reset" (t carries on after done), "obs_dtype" (float64
    observations), "truncated_without_done", "dead_avail" (the dead may take every action),
    "ignores_seed", "state_alias" (get_state hands out live arrays), "episode_length" (one short).
    With `lose_at` > 0, env 0's episode is lost on that step after reset, as a crashed worker's is in
    the PettingZoo adapter (info["lost"]; done, truncated, nothing counted).
    """

    def __init__(self, n_envs: int = 3, limit: int = 6, die_at: int = 2, broken: str = "", lose_at: int = 0):
        self.n_envs, self.limit, self.die_at, self.broken, self.lose_at = n_envs, limit, die_at, broken, lose_at
        self.steps = 0
        self.spec = EnvSpec(n_agents=2, obs_dim=3, state_dim=2, n_actions=3, episode_limit=limit,
                            agent_names=("agent_0", "agent_1"), name="count")
        self.rng = np.random.default_rng()
        self.t = np.zeros(n_envs, np.int64)
        self.returns = np.zeros(n_envs)
        self.luck = np.zeros(n_envs)

    def _arrays(self):
        E = self.n_envs
        obs = np.zeros((E, 2, 3), np.float64 if self.broken == "obs_dtype" else np.float32)
        obs[:, :, 0] = self.t[:, None]
        obs[:, 1, 1] = 1
        obs[:, :, 2] = self.luck[:, None]
        state = np.stack([self.t, self.luck], 1).astype(np.float32)
        alive = np.ones((E, 2), bool)
        alive[:, 1] = self.t < self.die_at
        avail = np.ones((E, 2, 3), bool)
        avail[:, 0, 2] = False
        if self.broken != "dead_avail":
            avail[~alive] = [True, False, False]
        return obs, state, avail, alive

    def reset(self, seed=None) -> Step:
        """Start every episode; the same seed draws the same lucks."""
        self.rng = np.random.default_rng(None if self.broken == "ignores_seed" else seed)
        self.t[:] = 0
        self.steps = 0
        self.returns[:] = 0
        self.luck[:] = self.rng.random(self.n_envs)
        obs, state, avail, alive = self._arrays()
        self.avail = avail
        return first_step(obs, state, avail, alive, self.t.copy())

    def step(self, actions) -> Step:
        """Advance every episode one step; ended ones start anew at once."""
        actions = check_actions(actions, self.n_envs, 2)
        if not np.take_along_axis(self.avail, actions[..., None], -1).all():
            raise ValueError("an unavailable action was taken")
        self.t += 1
        self.steps += 1
        reward = (self.luck + 0.1 * actions.sum(1)).astype(np.float32)
        self.returns += reward
        terminated = (self.t >= 3) & (self.luck < 0.3)
        truncated = (self.t >= self.limit) & ~terminated
        done = terminated | (truncated if self.broken != "truncated_without_done" else False)
        won = terminated & (self.luck < 0.15)
        final_obs, final_state, _, _ = self._arrays()
        episode_return = np.where(done, self.returns, 0).astype(np.float32)
        episode_length = np.where(done, self.t - (self.broken == "episode_length"), 0)
        lost = np.zeros(self.n_envs, bool)
        if self.steps == self.lose_at:
            lost[0] = done[0] = truncated[0] = True
            won[0], reward[0], episode_return[0], episode_length[0] = False, 0, 0, 0
        for e in np.flatnonzero(done):
            if self.broken != "no_reset":
                self.t[e] = 0
            self.returns[e] = 0
            self.luck[e] = self.rng.random()
        obs, state, avail, alive = self._arrays()
        self.avail = avail
        return Step(obs=obs, state=state, avail=avail, reward=reward, done=done, truncated=truncated, alive=alive,
                    t=self.t.copy(), episode_return=episode_return, episode_length=episode_length, won=won,
                    final_obs=final_obs, final_state=final_state,
                    info={"lost": lost} if self.lose_at else {})

    def get_state(self) -> dict:
        """The generator, steps, returns and lucks (copies, unless broken="state_alias")."""
        live = self.broken == "state_alias"
        return {"rng": self.rng.bit_generator.state, "steps": self.steps, "t": self.t if live else self.t.copy(),
                "returns": self.returns.copy(), "luck": self.luck.copy()}

    def set_state(self, state: dict) -> Step:
        """Continue from get_state()."""
        self.rng.bit_generator.state = state["rng"]
        self.steps = state["steps"]
        self.t[:], self.returns[:], self.luck[:] = state["t"], state["returns"], state["luck"]
        obs, state_, avail, alive = self._arrays()
        self.avail = avail
        return first_step(obs, state_, avail, alive, self.t.copy())

    def close(self) -> None:
        """Nothing to release."""


class VectorRewardEnv(gymnasium.Env):
    """A one-agent Gymnasium env with a 2-objective reward [1, -t] and 3-step episodes."""

    def __init__(self):
        self.observation_space = spaces.Box(-10, 10, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.reward_space = spaces.Box(-10, 10, (2,), np.float32)
        self.t = 0

    def reset(self, seed=None, options=None):
        """Start an episode."""
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        """Reward [1, -t]; ends (terminated) after 3 steps."""
        self.t += 1
        return (np.array([self.t], np.float32), np.array([1.0, -self.t], np.float32), self.t >= 3, False, {})


def relay_factory(scenario, n_envs, options):
    """A plug-in factory (the test's stand-in for an installed package): LeaveEnv through the adapter."""
    from marl.envs.pettingzoo import make_vec_env

    return make_vec_env(LeaveEnv, n_envs, options, name=f"relay:{scenario}")


relay_factory.description = "three agents, one leaves"
relay_factory.scenarios = ("short", "long")


class EchoLearner:
    """A plug-in learner stand-in: always action 0, remembers its settings."""

    defaults = {"lr": 0.1, "hidden": 8}

    def __init__(self, spec, cfg, seed=0, device="cpu"):
        self.spec, self.cfg = spec, cfg

    def act(self, step, deterministic=False):
        """Action 0 everywhere."""
        return np.zeros(step.alive.shape, np.int64), {}
