"""Gymnasium and MO-Gymnasium single-agent environments as one-agent teams (through the PettingZoo adapter).

`marl train gym CartPole-v1` makes E copies of `gymnasium.make("CartPole-v1", **kwargs)`, each seen as
a ParallelEnv with one agent, "agent_0", and trains them with marl's learners: the state is the
observation, an `info["action_mask"]` is honoured, and an episode that is `truncated` (and not
`terminated`) ends as a time-limit cut. MO-Gymnasium environments (mo-mountaincar-v0, deep-sea-treasure-v0,
...; an id Gymnasium does not know makes marl import mo_gymnasium, which registers them) keep their
vector reward as reward_dim = K objectives (they declare `reward_space`). Only Discrete action
spaces are accepted, as marl's learners sample discrete actions.

MO-Gymnasium is optional and asks for `pygame`, which would overwrite pygame-ce's module of the same
name: install it with `pip install --no-deps mo-gymnasium==1.3.2` (what it imports, scipy and
pygame-ce's pygame among them, comes with marl).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from .pettingzoo import ADAPTER_OPTIONS, PettingZooError, make_vec_env

AGENT = "agent_0"
MO_HINT = ("{id} is an MO-Gymnasium environment: pip install --no-deps mo-gymnasium==1.3.2 "
           "(--no-deps keeps pygame-ce's pygame module)")


class GymAsParallel(ParallelEnv):
    """One Gymnasium environment as a PettingZoo ParallelEnv with a single agent."""

    metadata = {"name": "gym_as_parallel", "is_parallelizable": True}

    def __init__(self, env):
        self.env = env
        self.possible_agents = [AGENT]
        self.agents: list[str] = []
        space = getattr(env.unwrapped, "reward_space", None)  # MO-Gymnasium's vector reward
        self._reward_space = space if isinstance(space, spaces.Space) else None
        self.max_cycles = getattr(env.spec, "max_episode_steps", None) or 0

    def observation_space(self, agent: str) -> spaces.Space:
        """The wrapped environment's observation space."""
        return self.env.observation_space

    def action_space(self, agent: str) -> spaces.Space:
        """The wrapped environment's action space."""
        return self.env.action_space

    def reward_space(self, agent: str) -> spaces.Space:
        """The vector reward's space of an MO-Gymnasium environment (one float otherwise)."""
        space = self._reward_space
        return space if space is not None else spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Reset the wrapped environment; returns ({agent: obs}, {agent: info})."""
        obs, info = self.env.reset(seed=seed, options=options)
        self.agents = [AGENT]
        return {AGENT: obs}, {AGENT: info}

    def step(self, actions: dict):
        """Step with {agent_0: action}; the agent leaves when the episode ends."""
        obs, reward, terminated, truncated, info = self.env.step(actions[AGENT])
        if terminated or truncated:
            self.agents = []
        return ({AGENT: obs}, {AGENT: reward}, {AGENT: bool(terminated)},
                {AGENT: bool(truncated) and not terminated}, {AGENT: info})

    def close(self) -> None:
        """Close the wrapped environment."""
        self.env.close()


@dataclass(frozen=True)
class GymMaker:
    """A picklable recipe for one Gymnasium environment seen as a one-agent ParallelEnv."""

    env_id: str
    kwargs: dict = field(default_factory=dict)

    def __call__(self) -> GymAsParallel:
        """Build one environment."""
        import gymnasium

        if self.env_id not in gymnasium.registry:  # MO-Gymnasium's ids (mo-*, deep-sea-treasure-v0, ...) register
            try:                                    # when it is imported
                import mo_gymnasium  # noqa: F401
            except ImportError:
                if self.env_id.startswith("mo-"):
                    raise PettingZooError(MO_HINT.format(id=self.env_id)) from None
        try:
            env = gymnasium.make(self.env_id, **self.kwargs)
        except gymnasium.error.Error as err:
            raise PettingZooError(f"gymnasium cannot make {self.env_id!r}: {str(err).splitlines()[0]}") from None
        except TypeError as err:
            raise PettingZooError(f"{self.env_id} does not accept these options {sorted(self.kwargs)}: "
                                  f"{str(err).splitlines()[0]}") from None
        return GymAsParallel(env)


def make_gym(scenario: str | None, n_envs: int, options: dict):
    """`marl train gym ENV_ID` with env.KEY=VALUE as gymnasium.make kwargs (adapter options as for pettingzoo)."""
    if not scenario:
        raise PettingZooError("gym needs an environment id, e.g. `marl train gym CartPole-v1`")

    maker_kwargs = {k: v for k, v in options.items() if k not in ADAPTER_OPTIONS}
    probe = GymMaker(scenario, maker_kwargs)
    env = probe()  # a bad id or option fails here with its one-line message
    env.close()
    return make_vec_env(_GymFactory(scenario), n_envs, options, name=f"gym:{scenario}")


@dataclass(frozen=True)
class _GymFactory:
    """GymMaker's factory form (kwargs given at call time), so EnvMaker can pickle it for workers."""

    env_id: str

    def __call__(self, **kwargs) -> GymAsParallel:
        """Build one environment with these gymnasium.make kwargs."""
        return GymMaker(self.env_id, kwargs)()
