"""An example marl plug-in: Meet, a tiny cooperative game, declared through the marl.envs entry point.

N agents stand on a line of `size` cells and move left, stay or right; each step the team loses the
distance between its two farthest members (divided by the line's length), and gets +1 once all stand
on one cell. Episodes last `max_cycles` steps (the name PettingZoo games use, which marl reads as the
episode limit). The settings' domains are declared in `settings.py` (the plug-in's `schema`).
"""

from dataclasses import replace

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from marl.envs.pettingzoo import pettingzoo_plugin


class Meet(ParallelEnv):
    """N agents on a line who should all meet on one cell."""

    metadata = {"name": "meet_v0"}

    def __init__(self, n_agents: int = 2, size: int = 7, max_cycles: int = 12):
        self.possible_agents = [f"walker_{i}" for i in range(n_agents)]
        self.size, self.max_cycles = size, max_cycles
        self.rng = np.random.default_rng()
        self._obs_space = spaces.Box(0.0, 1.0, (n_agents,), np.float32)
        self._act_spaces = {a: spaces.Discrete(3) for a in self.possible_agents}

    def observation_space(self, agent):
        """Every agent sees all positions (scaled to [0, 1]), its own first."""
        return self._obs_space

    def action_space(self, agent):
        """0: left, 1: stay, 2: right."""
        return self._act_spaces[agent]

    def reset(self, seed=None, options=None):
        """Place the agents at random."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents, self.t = list(self.possible_agents), 0
        self.pos = self.rng.integers(0, self.size, len(self.agents))
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        """Move everyone; the team reward is shared."""
        moves = np.array([actions[a] for a in self.possible_agents]) - 1
        self.pos = np.clip(self.pos + moves, 0, self.size - 1)
        self.t += 1
        spread = self.pos.max() - self.pos.min()
        reward = -spread / self.size + (1.0 if spread == 0 else 0.0)
        over = self.t >= self.max_cycles
        obs, agents = self._obs(), self.agents
        self.agents = [] if over else agents
        return (obs, {a: reward for a in agents}, {a: False for a in agents}, {a: over for a in agents},
                {a: {} for a in agents})

    def _obs(self):
        scaled = self.pos / (self.size - 1)
        return {a: np.roll(scaled, -i).astype(np.float32) for i, a in enumerate(self.possible_agents)}


# the schema checks env.KEY=VALUE before anything is built; a string, so that `marl envs` skips pydantic
plugin = replace(pettingzoo_plugin(Meet, "Meet: agents walk a line to meet (example plug-in)",
                                   scenarios={"pair": {"n_agents": 2}, "trio": {"n_agents": 3}, "wide": {"size": 15}}),
                 schema="marl_plugin_example.settings:MeetSettings")
