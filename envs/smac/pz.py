"""The embedded SMAC simulator as a PettingZoo ParallelEnv.

Each agent's observation is a dict {"observation": f32[obs_dim] in [-1, 1], "action_mask": int8
[n_actions]}; `state()` gives SMAC's global state. An agent leaves `agents` on the step it dies
(terminated), and all leave when the battle ends. Rewards are SMAC's team reward, given to every agent
that was alive at the start of the step; `infos[agent]["battle_won"]` carries the outcome.

Unavailable actions raise SMACError by default, as in SMAC; `invalid_action="stop"` turns them into
the stop action instead (useful for tools that sample actions without the mask, such as PettingZoo's
own seed test).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from .env import SMACBatch, SMACError, one_reward


class SMACParallelEnv(ParallelEnv):
    """One embedded SMAC battle behind PettingZoo's ParallelEnv API."""

    metadata = {"name": "marl_smac_v1", "render_modes": [], "is_parallelizable": True}

    def __init__(self, map_name: str = "3m", invalid_action: str = "raise", **options):
        if invalid_action not in ("raise", "stop"):
            raise SMACError(f"invalid_action must be 'raise' or 'stop', got {invalid_action!r}")
        self.batch = SMACBatch(map_name, 1, autoreset=False, **options)
        one_reward(self.batch.options)
        self.invalid_action = invalid_action
        self.spec_ = self.batch.spec()
        self.possible_agents = list(self.spec_.agent_names)
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._seed = self.batch.options["seed"]
        self.render_mode = None
        self._seeded = False
        b = self.batch
        self._obs_space = spaces.Dict({"observation": spaces.Box(-1.0, 1.0, (b.obs_dim,), np.float32),
                                       "action_mask": spaces.Box(0, 1, (b.n_actions,), np.int8)})
        # one action space per agent, so that seeding one does not shift another's samples
        self._act_spaces = {a: spaces.Discrete(b.n_actions) for a in self.possible_agents}
        self.state_space = spaces.Box(-1.0, 2.0, (b.state_dim,), np.float32)  # cooldown ratios pass 1 as in SMAC

    def observation_space(self, agent: str) -> spaces.Dict:
        """Dict of the flat observation and the action mask (the same object on every call)."""
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Discrete:
        """Discrete(6 + n_enemies): no-op, stop, 4 moves, one attack (or heal) per target."""
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start a new battle; returns (observations, infos)."""
        if seed is not None or not self._seeded:
            self._seed = self._seed if seed is None else seed
            self.batch.seed(self._seed)
            self._seeded = True
        self.batch.reset()
        self.agents = list(self.possible_agents)
        obs = self._observations(self.agents)
        return obs, {a: {"battle_won": False} for a in self.agents}

    def step(self, actions: dict):
        """Step with one action per live agent; returns (obs, rewards, terminations, truncations, infos)."""
        if not self.agents:
            raise SMACError("step() called on a finished battle; call reset() first")
        b = self.batch
        acts = np.zeros((1, b.n_agents), np.int64)  # no-op for the dead
        for agent in self.agents:
            if agent not in actions:
                raise SMACError(f"no action for live agent {agent!r}; live agents: {', '.join(self.agents)}")
            i = self._index[agent]
            a = int(actions[agent])
            if self.invalid_action == "stop" and not (0 <= a < b.n_actions and b.avail[0, i, a]):
                a = 1
            acts[0, i] = a
        unknown = set(actions) - set(self.agents)
        if unknown:
            raise SMACError(f"actions given for agents that are not alive: {sorted(unknown)}; "
                            f"live agents: {', '.join(self.agents)}")
        out = b.step(acts)
        done = bool(out["done"][0])
        truncated = bool(out["truncated"][0])
        won = bool(out["won"][0])
        acting = self.agents
        alive = out["alive"][0]
        reward = float(out["reward"][0])
        rewards = {a: reward for a in acting}
        terminations = {a: (done and not truncated) or not alive[self._index[a]] for a in acting}
        truncations = {a: truncated for a in acting}
        infos = {a: {"battle_won": won} for a in acting}
        obs = self._observations(acting)
        self.agents = [] if done else [a for a in acting if alive[self._index[a]]]
        return obs, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """SMAC's global state of the battle (float32)."""
        return self.batch.state[0].copy()

    def close(self) -> None:
        """Nothing to close: no game process runs."""

    def _observations(self, agents: list[str]) -> dict:
        b = self.batch
        return {a: {"observation": b.obs[0, self._index[a]].copy(),
                    "action_mask": b.avail[0, self._index[a]].astype(np.int8)} for a in agents}
