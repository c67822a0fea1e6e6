"""The real StarCraft II behind marl's VecEnv face, through SMAC's MultiAgentEnv API (smacv2 or smac).

`marl train sc2 3s5z` runs E `StarCraft2Env` games (from `smacv2`, else `smac`) when the package and
the game are installed (SC2PATH, or ~/StarCraftII). `SC2VecEnv` takes the environment class as a
parameter, so any class with SMAC's API works: the tests run it on the embedded simulator's
`marl.envs.smac.SMACEnv` and check that it plays the same battles as `SMACVecEnv`.

The API it relies on: `cls(map_name=..., seed=..., **options)`, `reset()`, `step(actions) -> (reward,
terminated, info)` with info["battle_won"] and info["episode_limit"], `get_obs()`, `get_state()`,
`get_avail_actions()`, `get_env_info()`, `close()`; the block sizes `get_obs_move_feats_size()` etc.
when present. As in SMAC, an agent is dead when only its no-op (action 0) is available. Game e is
seeded with seed + e; a reset with another seed restarts the games with it unless the class's
`reset` takes a seed (the real game can only be seeded when it starts).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np

from marl.spec import EnvSpec, ObsBlock, Step, check_actions, first_step

INSTALL_HINT = ("marl train sc2 needs the smacv2 package and StarCraft II: pip install "
                "git+https://github.com/oxwhirl/smacv2 and set SC2PATH; the embedded simulator runs the same maps "
                "without them: marl train smac {map}")


class SC2Error(ValueError):
    """StarCraft II or its SMAC package is missing, or a bad call; the message is one line."""


def starcraft_env_class(map_name: str = "3s5z"):
    """smacv2's (else smac's) StarCraft2Env, when the package and the game are installed."""
    cls = None
    for module in ("smacv2.env", "smac.env"):
        try:
            cls = __import__(module, fromlist=["StarCraft2Env"]).StarCraft2Env
            break
        except ImportError:
            continue
    sc2path = os.environ.get("SC2PATH") or str(Path.home() / "StarCraftII")
    if cls is None or not Path(sc2path).is_dir():
        raise SC2Error(INSTALL_HINT.format(map=map_name))
    return cls


class SC2VecEnv:
    """E games with SMAC's MultiAgentEnv API (real StarCraft II by default) as a marl VecEnv."""

    def __init__(self, map_name: str = "3s5z", n_envs: int = 1, env_class=None, seed: int | None = None,
                 **options):
        if not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise SC2Error(f"n_envs must be a positive integer, got {n_envs!r}")
        self.map_name, self.n_envs, self.options = map_name, int(n_envs), options
        self.env_class = env_class or starcraft_env_class(map_name)
        self._reset_takes_seed = "seed" in inspect.signature(self.env_class.reset).parameters
        self._seed = seed
        self.envs = self._build(seed)
        info = self.envs[0].get_env_info()
        self.n_agents, self.n_actions = int(info["n_agents"]), int(info["n_actions"])
        self.obs_dim, self.state_dim = int(info["obs_shape"]), int(info["state_shape"])
        self.spec = EnvSpec(n_agents=self.n_agents, obs_dim=self.obs_dim, state_dim=self.state_dim,
                            n_actions=self.n_actions, episode_limit=int(info["episode_limit"]),
                            agent_names=tuple(f"agent_{i}" for i in range(self.n_agents)),
                            obs_layout=self._layout(self.envs[0]), name=f"sc2:{map_name}")
        self._returns = np.zeros(self.n_envs)  # float64 sums, as the simulator keeps them
        self._t = np.zeros(self.n_envs, np.int64)
        self._started = False

    def _build(self, seed: int | None) -> list:
        return [self.env_class(map_name=self.map_name, seed=None if seed is None else seed + e, **self.options)
                for e in range(self.n_envs)]

    def _layout(self, env) -> tuple[ObsBlock, ...]:
        """The observation's entity blocks, when the class reports their sizes (SMAC does)."""
        try:
            move = int(env.get_obs_move_feats_size())
            n_enemies, enemy = env.get_obs_enemy_feats_size()
            n_allies, ally = env.get_obs_ally_feats_size()
            own = int(env.get_obs_own_feats_size())
        except AttributeError:
            return ()
        blocks = [ObsBlock("move", 1, move), ObsBlock("enemy", int(n_enemies), int(enemy)),
                  ObsBlock("ally", int(n_allies), int(ally)), ObsBlock("own", 1, own)]
        rest = self.obs_dim - sum(b.size for b in blocks)
        if rest == 1:  # SMAC's obs_timestep_number slot
            blocks.append(ObsBlock("timestep", 1, 1))
        return tuple(blocks) if sum(b.size for b in blocks) == self.obs_dim else ()

    def _observe(self, env) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = np.asarray(env.get_obs(), np.float32).reshape(self.n_agents, self.obs_dim)
        state = np.asarray(env.get_state(), np.float32).reshape(self.state_dim)
        avail = np.asarray(env.get_avail_actions()).reshape(self.n_agents, self.n_actions).astype(bool)
        return obs, state, avail

    def reset(self, seed: int | None = None) -> Step:
        """Start a battle in every game; game e's randomness derives from seed + e."""
        E, A = self.n_envs, self.n_agents
        if seed is not None and not self._reset_takes_seed and seed != self._seed:
            self.close()
            self.envs = self._build(seed)  # the real game takes its seed when it starts
        if seed is not None:
            self._seed = seed
        obs = np.zeros((E, A, self.obs_dim), np.float32)
        state = np.zeros((E, self.state_dim), np.float32)
        avail = np.zeros((E, A, self.n_actions), bool)
        for e, env in enumerate(self.envs):
            if self._reset_takes_seed and seed is not None:
                env.reset(seed=seed + e)
            else:
                env.reset()
            obs[e], state[e], avail[e] = self._observe(env)
        self._returns[:] = 0
        self._t[:] = 0
        self._started = True
        return first_step(obs, state, avail, ~(avail[..., 0] & ~avail[..., 1:].any(-1)), self._t.copy())

    def step(self, actions: np.ndarray) -> Step:
        """Step every game with int actions[E, A]; finished games start a new battle at once."""
        if not self._started:
            raise SC2Error("step() called before reset()")
        E, A = self.n_envs, self.n_agents
        actions = check_actions(actions, E, A, SC2Error)
        obs = np.zeros((E, A, self.obs_dim), np.float32)
        state = np.zeros((E, self.state_dim), np.float32)
        avail = np.zeros((E, A, self.n_actions), bool)
        final_obs, final_state = np.zeros_like(obs), np.zeros_like(state)
        reward, done, truncated, won = np.zeros(E, np.float32), np.zeros(E, bool), np.zeros(E, bool), np.zeros(E, bool)
        episode_return, episode_length = np.zeros(E, np.float32), np.zeros(E, np.int64)
        for e, env in enumerate(self.envs):
            r, terminated, info = env.step(actions[e].tolist())
            reward[e] = r
            self._returns[e] += reward[e]
            self._t[e] += 1
            if terminated:
                final_obs[e], final_state[e], _ = self._observe(env)
                done[e] = True
                truncated[e] = bool(info.get("episode_limit", False))
                won[e] = bool(info.get("battle_won", False))
                episode_return[e], episode_length[e] = self._returns[e], self._t[e]
                self._returns[e], self._t[e] = 0, 0
                env.reset()
            obs[e], state[e], avail[e] = self._observe(env)
            if not terminated:
                final_obs[e], final_state[e] = obs[e], state[e]
        # SMAC's convention: a dead agent can only take the no-op
        alive = ~(avail[..., 0] & ~avail[..., 1:].any(-1))
        return Step(obs=obs, state=state, avail=avail, reward=reward, done=done, truncated=truncated, alive=alive,
                    t=self._t.copy(), episode_return=episode_return, episode_length=episode_length, won=won,
                    final_obs=final_obs, final_state=final_state)

    def close(self) -> None:
        """Close every game."""
        for env in self.envs:
            env.close()


def make_sc2(scenario: str | None, n_envs: int, options: dict) -> SC2VecEnv:
    """`marl train sc2 MAP` with env.KEY=VALUE as StarCraft2Env options."""
    if not scenario:
        raise SC2Error("sc2 needs a map, e.g. `marl train sc2 3s5z`")
    options = dict(options)
    return SC2VecEnv(scenario, n_envs, seed=options.pop("seed", None), **options)
