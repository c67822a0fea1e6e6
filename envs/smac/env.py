"""The two faces of the embedded SMAC simulator over one numba core.

- `SMACVecEnv`: E battles stepped together (marl's `VecEnv`), resetting themselves.
- `SMACEnv`: one battle behind SMAC's `MultiAgentEnv` API (`StarCraft2Env`), so that code written
  for SMAC runs on it unchanged.

Both play the SMAC v1 maps and SMACv2's generator scenarios (`protoss_5_vs_5`, ...), whose options
`obs_own_pos` and `use_unit_ranges` default to on, as in SMACv2's configs.

Both are deterministic under a seed: battle e of a VecEnv seeded with s plays the same as an
SMACEnv seeded with s when e = 0, whatever E is.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from marl.spec import EnvSpec, ObsBlock, Step, check_actions, first_step

from . import core, layout
from .layout import N_NO_ATTACK_ACTIONS, SHOOT_RANGE, SIGHT_RANGE, Battles, Tables
from .maps import GENERATOR_RACES, REFLECT_PROBABILITY, SMACMap, get_map
from .navigation import nav_tables
from .units import (
    F_ACCEL,
    F_DECAY,
    F_HP,
    F_RANGE,
    F_SHIELD,
    F_SIGHT,
    I_KIND,
    KIND_MEDIVAC,
    TYPE_INDEX,
    TYPE_NAMES,
    unit_tables,
)

# SMACv2 numbers agents by their *_RL type id first; those ids are alphabetical over its nine unit types
_RL_RANK = {name: i for i, name in enumerate(sorted({u for _, pool, _ in GENERATOR_RACES.values() for u in pool}))}

# SMAC's StarCraft2Env options and their defaults, from configs/envs/smac.yaml
DEFAULTS: dict[str, Any] = yaml.safe_load(resources.files("marl.configs").joinpath("envs/smac.yaml").read_text())
# options that only concern the real game's process and are accepted and ignored here
_IGNORED = {"game_version", "replay_dir", "replay_prefix", "window_size_x", "window_size_y", "debug",
            "continuing_episode"}
# options that must keep the one value the simulator implements
_FIXED = {"step_mul": (8,), "move_amount": (2,), "difficulty": ("7",), "heuristic_ai": (False,),
          "heuristic_rest": (False,)}


# the objectives a SMACVecEnv can report (option `objectives`), with the fixed hypervolume reference point of each
# (docs/smac_rules.md section 17): combat is SMAC's shaped reward, an episode's sum in [0, ~20];
# safety the team's health and shields kept, an episode's sum in [-20, 0]
OBJECTIVES = {"combat": 0.0, "safety": -20.0}


class SMACError(ValueError):
    """A bad option, action or call on the simulator; the message is one line."""


def one_reward(options: dict[str, Any]) -> None:
    """SMAC's API faces return SMAC's one reward: objectives other than [combat] are SMACVecEnv's."""
    if list(options["objectives"]) != ["combat"]:
        raise SMACError(f"objectives {list(options['objectives'])} need the VecEnv face (SMACVecEnv, marl train "
                        f"smac); SMAC's API returns its one reward, objectives [combat]")


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """SMAC's defaults updated with `options`; unknown keys and bad types raise SMACError."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise SMACError(f"unknown SMAC option {unknown[0]!r}; accepted options: {', '.join(DEFAULTS)}")
    out = dict(DEFAULTS)
    for key, value in options.items():
        default = DEFAULTS[key]
        if key in _FIXED and value not in _FIXED[key]:
            raise SMACError(f"{key}={value!r} is not supported by the embedded simulator; accepted: "
                            f"{', '.join(repr(v) for v in _FIXED[key])}")
        if isinstance(default, bool) and not isinstance(value, (bool, np.bool_)):
            raise SMACError(f"SMAC option {key} must be True or False, got {value!r}")
        if key == "objectives" and (not isinstance(value, (list, tuple)) or not value
                                    or any(v not in OBJECTIVES for v in value) or len(set(value)) != len(value)):
            raise SMACError(f"SMAC option objectives must be a non-empty list of {', '.join(OBJECTIVES)}, each at "
                            f"most once, got {value!r}")
        if key in ("obs_own_pos", "use_unit_ranges") and not isinstance(value, (bool, np.bool_, type(None))):
            raise SMACError(f"SMAC option {key} must be True, False or None (the map's default), got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise SMACError(f"SMAC option {key} must be a number, got {value!r}")
        out[key] = value
    return out


class SMACBatch:
    """E battles of one map: the arrays the kernels work on and their flags."""

    def __init__(self, map_name: str, n_envs: int = 1, autoreset: bool = True, threads: int | None = None,
                 **options):
        if not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise SMACError(f"n_envs must be a positive integer, got {n_envs!r}")
        try:
            self.map: SMACMap = get_map(map_name)
        except ValueError as err:
            raise SMACError(str(err)) from None
        self.options = check_options(options)
        if self.options["obs_all_health"]:
            self.options["obs_own_health"] = True  # SMAC forces this in its constructor too
        m = self.map
        for key in ("obs_own_pos", "use_unit_ranges"):
            if self.options[key] is None:
                self.options[key] = m.generator  # SMACv2's scenario configs turn both on
        o = self.options
        E, A, N, U = int(n_envs), m.n_agents, m.n_enemies, m.n_units
        self.n_envs, self.n_agents, self.n_enemies, self.n_units = E, A, N, U
        self.n_actions = N_NO_ATTACK_ACTIONS + N
        self.ft, self.it = unit_tables()
        if not o["off_creep_decay"]:
            self.ft[:, F_DECAY] = 0.0
        if not o["acceleration"]:  # every unit at full speed at once
            self.ft[:, F_ACCEL] = 0.0
        self.utype = np.broadcast_to(m.unit_type, (E, U)).copy()
        self.tid = np.broadcast_to(m.type_id, (E, U)).copy()
        self.spawn = np.broadcast_to(m.spawn, (E, U, 2)).copy()
        if o["use_unit_ranges"]:
            self.sight = self.ft[self.utype, F_SIGHT].copy()
            self.shoot = np.maximum(self.ft[self.utype, F_RANGE], float(o["min_attack_range"]))
        else:
            self.sight = np.full((E, U), SIGHT_RANGE)
            self.shoot = np.full((E, U), SHOOT_RANGE)
        self.walk = m.pathing
        self.cliff = m.cliff_pathing
        self.nav = nav_tables(m.name)
        self.height = m.height
        self.enemy_order = m.enemy_order

        self.shield_a = int(m.a_race == "P")
        self.shield_e = int(m.b_race == "P")
        bits = m.unit_type_bits
        cfg = np.zeros(layout.N_CFG_I, np.int64)
        cfg[layout.C_N_AGENTS], cfg[layout.C_N_ENEMIES], cfg[layout.C_N_ACTIONS] = A, N, self.n_actions
        cfg[layout.C_LIMIT] = m.limit
        cfg[layout.C_SHIELD_A], cfg[layout.C_SHIELD_E], cfg[layout.C_TYPE_BITS] = self.shield_a, self.shield_e, bits
        for idx, key in [(layout.C_OBS_ALL_HEALTH, "obs_all_health"), (layout.C_OBS_OWN_HEALTH, "obs_own_health"),
                         (layout.C_OBS_LAST_ACTION, "obs_last_action"), (layout.C_OBS_PATHING, "obs_pathing_grid"),
                         (layout.C_OBS_TERRAIN, "obs_terrain_height"), (layout.C_OBS_TIMESTEP, "obs_timestep_number"),
                         (layout.C_STATE_LAST_ACTION, "state_last_action"),
                         (layout.C_STATE_TIMESTEP, "state_timestep_number"),
                         (layout.C_OBS_INSTEAD_OF_STATE, "obs_instead_of_state"),
                         (layout.C_REWARD_SPARSE, "reward_sparse"),
                         (layout.C_REWARD_ONLY_POSITIVE, "reward_only_positive"),
                         (layout.C_REWARD_SCALE, "reward_scale")]:
            cfg[idx] = int(bool(o[key]))
        cfg[layout.C_MMM] = int(m.map_type in ("MMM", "terran_gen"))
        cfg[layout.C_AUTORESET] = int(autoreset)
        cfg[layout.C_MAP_X], cfg[layout.C_MAP_Y] = m.map_x, m.map_y
        cfg[layout.C_OBS_OWN_POS] = int(bool(o["obs_own_pos"]))
        cfg[layout.C_UNIT_RANGES] = int(bool(o["use_unit_ranges"]))
        cfg[layout.C_WEAPON_DELAY] = int(bool(o["weapon_delay"]))
        cfg[layout.C_TURNING] = int(bool(o["turning"]))
        cfg_f = np.zeros(layout.N_CFG_F)
        if m.generator:
            cfg[layout.C_GENERATOR] = 1
            for k, name in enumerate(m.pool):
                cfg[layout.C_POOL_ALLY + k] = TYPE_INDEX["medivac_rl" if name == "medivac" else name]
                cfg[layout.C_POOL_ENEMY + k] = TYPE_INDEX[name]
                cfg[layout.C_POOL_EXCEPTION + k] = int(name in m.pool_exceptions)
                cfg[layout.C_POOL_RANK + k] = _RL_RANK[name]
            cum = np.cumsum(m.pool_weights) / np.sum(m.pool_weights)
            cfg_f[layout.C_POOL_CUM:layout.C_POOL_CUM + len(cum)] = cum
            cfg_f[layout.C_REFLECT_P] = REFLECT_PROBABILITY
        self.cfg_i = cfg
        enemy_types = m.unit_type[A:]
        # generator maps: each battle's own scale, fixed by its first drawn team (see spawn.draw_generator_battle)
        max_reward = float(N * o["reward_death_value"] + o["reward_win"]
                           + sum(self.ft[t, F_HP] + self.ft[t, F_SHIELD] for t in enemy_types))
        cfg_f[:layout.C_MIN_ATTACK_RANGE + 1] = [o["reward_death_value"], o["reward_win"], o["reward_defeat"],
                                               o["reward_negative_scale"], o["reward_scale_rate"], max_reward,
                                               o["min_attack_range"]]
        self.cfg_f = cfg_f

        # the one place the observation's and state's sizes are computed; the kernels read them from cfg_i
        self.sizes = layout.write_obs_sizes(cfg)
        self.move_dim, self.enemy_dim, self.ally_dim = self.sizes.move, self.sizes.enemy, self.sizes.ally
        self.own_dim, self.timestep_dim = self.sizes.own, self.sizes.timestep
        self.obs_dim, self.state_dim = self.sizes.obs, self.sizes.state

        self.uf = np.zeros((E, U, layout.NUF))
        self.ui = np.zeros((E, U, layout.NUI), np.int64)
        self.ei = np.zeros((E, layout.NEI), np.int64)
        self.ef = np.zeros((E, layout.NEF))
        self.rng = np.zeros(E, np.uint64)
        self.order_buf = np.zeros((E, U), np.int64)
        self.tables = Tables(self.ft, self.it, self.walk, self.cliff, self.nav, self.height, self.enemy_order,
                             self.cfg_i, self.cfg_f)
        self.battles = Battles(self.uf, self.ui, self.ei, self.ef, self.utype, self.spawn, self.tid, self.sight,
                               self.shoot, self.rng, self.order_buf)
        # the kernels' bundles as plain tuples, made once: numba types a plain tuple of arrays as fast as
        # separate arrays, a namedtuple about 1 us slower per call; every array above is edited in place only
        self._kernel_tables, self._kernel_battles = tuple(self.tables), tuple(self.battles)
        self.obs = np.zeros((E, A, self.obs_dim), np.float32)
        self.state = np.zeros((E, self.state_dim), np.float32)
        self.avail = np.zeros((E, A, self.n_actions), np.bool_)
        # one battle of 3s5z steps in ~20 us: below ~32 battles a second thread costs more than it gives
        self._threads = max(1, min(threads or os.cpu_count() or 1, E // 16))
        self._pool = ThreadPoolExecutor(self._threads) if self._threads > 1 else None
        self._started = False

    def seed(self, seed: int | None, first: int = 0) -> None:
        """Give battle e the stream SeedSequence(seed, spawn_key=(first + e,)), independent of E.

        `first` numbers these battles from there: a mixture's members (envs/smac/mixture.py) give each
        battle the stream of its index in the whole mixture.
        """
        entropy = np.random.SeedSequence(seed).entropy if seed is None else int(seed)
        for e in range(self.n_envs):
            ss = np.random.SeedSequence(entropy, spawn_key=(first + e,))
            self.rng[e] = ss.generate_state(1, np.uint64)[0]
        self.ef[:, layout.MAX_REWARD] = 0.0  # a re-seeded battle starts afresh, as a new SMACv2 env would

    @property
    def max_reward(self) -> float:
        """SMAC's max_reward of battle 0 (the reward scale's divisor times reward_scale_rate)."""
        return float(self.ef[0, layout.MAX_REWARD] if self._started else self.cfg_f[layout.C_MAX_REWARD])

    def reset_battles(self, envs, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> None:
        """Reset the battles `envs` as auto-reset would, writing their first obs, state and avail rows."""
        for e in envs:
            one = _rows(self._kernel_battles, e, e + 1)  # one-battle views of the batch arrays
            core.reset_batch(self._kernel_tables, one, obs[e:e + 1], state[e:e + 1], avail[e:e + 1])

    def _run(self, kernel, *per_battle) -> None:
        """Run a batch kernel over all battles, in slices on the thread pool when E is large.

        Each of `per_battle` is an array or a tuple of arrays, first axis E.
        """
        tables, battles = self._kernel_tables, self._kernel_battles
        if self._pool is None:
            kernel(tables, battles, *per_battle)
            return
        bounds = np.linspace(0, self.n_envs, self._threads + 1).astype(int)
        jobs = [self._pool.submit(kernel, tables, _rows(battles, lo, hi), *(_rows(a, lo, hi) for a in per_battle))
                for lo, hi in zip(bounds[:-1], bounds[1:])]
        for job in jobs:
            job.result()

    def reset(self) -> None:
        """Reset every battle and compute the first observations."""
        self._run(core.reset_batch, self.obs, self.state, self.avail)
        self._started = True

    def observe(self) -> None:
        """Recompute obs, state and avail after the unit arrays were edited (scenario set-up, tests)."""
        self._run(core.observe_batch, self.obs, self.state, self.avail)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step all battles with int actions[E, A]; fresh output arrays each call."""
        if not self._started:
            raise SMACError("step() called before reset()")
        actions = check_actions(actions, self.n_envs, self.n_agents, SMACError)
        E, A = self.n_envs, self.n_agents
        # in StepOut's field order, which the step kernel unpacks (a dict: cheaper to make than a StepOut)
        out = dict(
            obs=np.empty((E, A, self.obs_dim), np.float32), state=np.empty((E, self.state_dim), np.float32),
            avail=np.empty((E, A, self.n_actions), np.bool_), reward=np.empty(E, np.float32),
            done=np.empty(E, np.bool_), truncated=np.empty(E, np.bool_), won=np.empty(E, np.bool_),
            alive=np.empty((E, A), np.bool_), episode_return=np.empty(E, np.float32),
            episode_length=np.empty(E, np.int64), final_obs=np.empty((E, A, self.obs_dim), np.float32),
            final_state=np.empty((E, self.state_dim), np.float32), safety=np.empty(E, np.float32),
            safety_return=np.empty(E, np.float32),
        )
        actions = actions.astype(np.int64, copy=False)
        bad = core.first_invalid_action(actions, self.avail)
        if bad >= 0:
            e, a = divmod(int(bad), A)
            act = int(actions[e, a])
            ok = np.flatnonzero(self.avail[e, a]).tolist()
            where = f"env {e}, " if E > 1 else ""
            raise SMACError(f"{where}agent {a} cannot take action {act}; available actions: {ok}")
        self._run(core.step_batch, actions, tuple(out.values()))
        self.obs, self.state, self.avail = out["obs"], out["state"], out["avail"]
        return out

    _STATE_FIELDS = ("uf", "ui", "ei", "ef", "rng", "obs", "state", "avail", "utype", "tid", "spawn", "sight",
                     "shoot")

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every array that defines the battles now, for an exact resume."""
        return {k: getattr(self, k).copy() for k in self._STATE_FIELDS}

    def restore(self, snap: dict[str, np.ndarray]) -> None:
        """Put the battles back to a snapshot() of the same map and number of battles."""
        snap = self._upgrade(snap)
        for k in self._STATE_FIELDS:
            mine = getattr(self, k)
            if k not in snap or snap[k].shape != mine.shape or snap[k].dtype != mine.dtype:
                raise SMACError(f"saved battles do not match these ({k}: expected {mine.dtype} {mine.shape})")
            mine[...] = snap[k]
        self._started = True

    def _upgrade(self, snap: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A snapshot from before acceleration (uf one column short), before turning (uf three columns short),
        from before weapon_delay (uf five and ui two columns short) or, of a v1 map, from before the SMACv2
        scenarios (4 env ints, 1 env float, no ranges) made current."""
        snap = dict(snap)
        # the missing last columns: no attack winding up, no missile in flight (WINDUP, FLIGHT, SHOT_AT, MISSILE_AT),
        # facing east (HX, HY: read only with the option turning, which did not exist then), at rest (VEL: read only
        # with the option acceleration, which did not exist then)
        tails = {"uf": np.array([0.0, 0.0, 1.0, 0.0, 0.0]), "ui": np.array([-1, -1])}
        for k, missing in (("uf", (layout.NUF - 5, layout.NUF - 3, layout.NUF - 1)), ("ui", (layout.NUI - 2,))):
            a = snap.get(k)
            if a is not None and a.shape[-1] in missing:
                tail = tails[k][a.shape[-1] - (layout.NUF if k == "uf" else layout.NUI):].astype(a.dtype)
                snap[k] = np.concatenate([a, np.broadcast_to(tail, a.shape[:-1] + tail.shape)], axis=-1)
        if self.map.generator:
            return snap
        E = self.n_envs
        ei, ef = snap.get("ei"), snap.get("ef")
        if ei is not None and ei.shape == (E, layout.NEI - 1):
            snap["ei"] = np.concatenate([ei, np.full((E, 1), layout.LAYOUT_FIXED, ei.dtype)], axis=1)
        if ef is not None and ef.shape == (E, layout.NEF - 1):
            snap["ef"] = np.concatenate([ef, np.full((E, 1), self.cfg_f[layout.C_MAX_REWARD], ef.dtype)], axis=1)
        for k in ("sight", "shoot"):  # a v1 map's ranges never change within a run
            snap.setdefault(k, getattr(self, k).copy())
        return snap

    def spec(self) -> EnvSpec:
        """EnvSpec of these battles, with the observation's entity blocks."""
        m = self.map
        blocks = [ObsBlock("move", 1, self.move_dim), ObsBlock("enemy", self.n_enemies, self.enemy_dim),
                  ObsBlock("ally", self.n_agents - 1, self.ally_dim), ObsBlock("own", 1, self.own_dim)]
        if self.timestep_dim:
            blocks.append(ObsBlock("timestep", 1, 1))
        if self.cfg_i[layout.C_OBS_INSTEAD_OF_STATE]:  # the state is every agent's observation, one after another
            state_blocks = [ObsBlock("agent_obs", self.n_agents, self.obs_dim)]
        else:  # SMAC's get_state(): allies, enemies, then each agent's last action and the timestep
            state_blocks = [ObsBlock("ally", self.n_agents, self.sizes.state_ally),
                            ObsBlock("enemy", self.n_enemies, self.sizes.state_enemy)]
            if self.cfg_i[layout.C_STATE_LAST_ACTION]:
                state_blocks.append(ObsBlock("last_action", self.n_agents, self.n_actions))
            if self.cfg_i[layout.C_STATE_TIMESTEP]:
                state_blocks.append(ObsBlock("timestep", 1, 1))
        if m.generator:  # unit types change every episode: agents are named by race and slot
            types = ()
            names = [f"{m.map_type.removesuffix('_gen')}_{a}" for a in range(self.n_agents)]
        else:
            types = tuple(m.unit_names("ally"))
            counts: dict[str, int] = {}
            names = []
            for t in types:
                names.append(f"{t}_{counts.get(t, 0)}")
                counts[t] = counts.get(t, 0) + 1
        return EnvSpec(n_agents=self.n_agents, obs_dim=self.obs_dim, state_dim=self.state_dim,
                       n_actions=self.n_actions, episode_limit=m.limit, agent_names=tuple(names),
                       unit_types=types, obs_layout=tuple(blocks), state_layout=tuple(state_blocks),
                       name=f"smac:{m.name}")

    def units(self, e: int = 0) -> dict[str, np.ndarray]:
        """Battle e's units as named arrays (positions, health, shields, alive, type, team)."""
        uf, ui = self.uf[e], self.ui[e]
        return dict(x=uf[:, layout.X].copy(), y=uf[:, layout.Y].copy(), health=uf[:, layout.HP].copy(),
                    shield=uf[:, layout.SH].copy(), energy=uf[:, layout.EN].copy(),
                    cooldown=uf[:, layout.CD].copy(), alive=ui[:, layout.ALIVE].astype(bool),
                    order=ui[:, layout.ORDER].copy(), target=ui[:, layout.TARGET].copy(),
                    unit_type=np.array([TYPE_NAMES[t].removesuffix("_rl") for t in self.utype[e]]),
                    team=np.array([0] * self.n_agents + [1] * self.n_enemies))


class SMACVecEnv:
    """E embedded SMAC battles of one map as a marl VecEnv (arrays in and out, auto-reset).

    Replay capability: `frame_info()` (the map and roster), `frames()` (every battle's units) and
    `action_targets(actions)` (whom each action attacks or heals). With `keep_final_frames` set,
    `frames()` shows a battle that just ended as it ended rather than after its automatic reset.
    """

    def __init__(self, map_name: str = "3s5z", n_envs: int = 1, *, first_battle: int = 0, **options):
        self.batch = SMACBatch(map_name, n_envs, autoreset=True, **options)
        # battle e draws the random stream of battle first_battle + e (a mixture's members: their place in it)
        self.first_battle = int(first_battle)
        self.n_envs = self.batch.n_envs
        # the objectives the Steps report, in the option's order: [combat] is SMAC's one reward, f32[E]
        self.objectives = tuple(self.batch.options["objectives"])
        self.spec = dataclasses.replace(self.batch.spec(), reward_dim=len(self.objectives),
                                        reward_names=self.objectives)
        self._seed = self.batch.options["seed"]
        self.keep_final_frames = False
        self._final_frames: dict[str, np.ndarray] | None = None

    def reset(self, seed: int | None = None) -> Step:
        """Reset all battles; battle e's randomness derives from (seed, first_battle + e)."""
        self.batch.seed(self._seed if seed is None else seed, self.first_battle)
        self.batch.reset()
        self._final_frames = None
        return self.set_state(self.batch.snapshot())

    def step(self, actions: np.ndarray) -> Step:
        """Step all battles with int actions[E, A]; finished battles restart at once."""
        if self.keep_final_frames:
            return self._step_keeping_frames(actions)
        self._final_frames = None
        out = self._rewards(self.batch.step(actions))
        return Step(t=self.batch.ei[:, layout.T].copy(), **out)

    def _rewards(self, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The step's reward and episode return of the objectives asked for: f32[E] for one, f32[E, K] for K."""
        columns = {"combat": (out["reward"], out["episode_return"]),
                   "safety": (out.pop("safety"), out.pop("safety_return"))}
        if self.objectives == ("combat",):  # SMAC's own reward, untouched
            return out
        if len(self.objectives) == 1:
            out["reward"], out["episode_return"] = columns[self.objectives[0]]
        else:
            out["reward"] = np.stack([columns[k][0] for k in self.objectives], -1)
            out["episode_return"] = np.stack([columns[k][1] for k in self.objectives], -1)
        return out

    def _step_keeping_frames(self, actions: np.ndarray) -> Step:
        """step() with the kernel's auto-reset held back until the ended battles' units are copied."""
        b = self.batch
        b.cfg_i[layout.C_AUTORESET] = 0
        try:
            out = self._rewards(b.step(actions))
        finally:
            b.cfg_i[layout.C_AUTORESET] = 1
        self._final_frames = self._unit_frames()
        # the same reset and observation the kernel would have run, once per ended episode
        ended = np.flatnonzero(out["done"])
        b.reset_battles(ended, out["obs"], out["state"], out["avail"])
        out["alive"][ended] = b.ui[ended, : b.n_agents, layout.ALIVE] != 0
        return Step(t=b.ei[:, layout.T].copy(), **out)

    def _unit_frames(self) -> dict[str, np.ndarray]:
        uf, ui = self.batch.uf, self.batch.ui
        return dict(x=uf[:, :, layout.X].astype(np.float32), y=uf[:, :, layout.Y].astype(np.float32),
                    health=uf[:, :, layout.HP].astype(np.float32), shield=uf[:, :, layout.SH].astype(np.float32),
                    alive=ui[:, :, layout.ALIVE] != 0, target=ui[:, :, layout.TARGET].copy())

    def frames(self) -> dict[str, np.ndarray]:
        """Every battle's units now: x, y, health, shield f32[E, U], alive bool[E, U], order target int[E, U].

        With keep_final_frames set, a battle the last step ended appears as it ended (before its reset).
        """
        return self._final_frames if self._final_frames is not None else self._unit_frames()

    def frame_info(self) -> dict:
        """What a replay viewer draws besides the units: map size, walkable cells, levels, cliff faces, roster."""
        b, m = self.batch, self.batch.map
        utype = b.utype[0]
        return dict(map=m.name, map_x=int(m.map_x), map_y=int(m.map_y), walkable=m.pathing.copy(),
                    level=np.rint(m.height * 255.0 / 16.0).astype(np.uint8), cliff=m.cliff_pathing & ~m.pathing,
                    unit_type=np.array([TYPE_NAMES[t].removesuffix("_rl") for t in utype]),
                    team=np.array([0] * b.n_agents + [1] * b.n_enemies, np.int8),
                    health_max=b.ft[utype, F_HP].astype(np.float32),
                    shield_max=b.ft[utype, F_SHIELD].astype(np.float32), n_agents=b.n_agents,
                    episode_limit=int(m.limit))

    def action_targets(self, actions: np.ndarray) -> np.ndarray:
        """Unit index each agent's action aims at, int[E, A]: an enemy attacked, an ally healed, or -1.

        SMAC's actions 6 + j attack enemy j (unit A + j), or for a medivac heal ally j (unit j).
        """
        b = self.batch
        actions = np.asarray(actions, np.int64)
        A = b.n_agents
        medivac = b.it[b.utype[:, :A], I_KIND] == KIND_MEDIVAC
        j = actions - N_NO_ATTACK_ACTIONS
        return np.where(j >= 0, np.where(medivac, j, A + j), -1)

    def get_state(self) -> dict:
        """Everything needed to continue these battles exactly (see set_state)."""
        return self.batch.snapshot()

    def set_state(self, state: dict) -> Step:
        """Continue from get_state(); returns the Step the saved battles stood at."""
        self.batch.restore(state)
        self._final_frames = None
        b = self.batch
        return first_step(b.obs.copy(), b.state.copy(), b.avail.copy(), b.ui[:, :b.n_agents, layout.ALIVE].astype(bool),
                          b.ei[:, layout.T].copy(), self.spec.reward_dim)

    def close(self) -> None:
        """Release the worker threads, if any."""
        if self.batch._pool is not None:
            self.batch._pool.shutdown(wait=False)


class SMACEnv:
    """One embedded SMAC battle behind SMAC's MultiAgentEnv API (StarCraft2Env's methods)."""

    def __init__(self, map_name: str = "8m", **options):
        self.batch = SMACBatch(map_name, 1, autoreset=False, **options)
        b = self.batch
        one_reward(b.options)
        self.map_name = map_name
        self.n_agents, self.n_enemies = b.n_agents, b.n_enemies
        self.n_actions = b.n_actions
        self.episode_limit = b.map.limit
        self.map_type = b.map.map_type
        self.map_x, self.map_y = b.map.map_x, b.map.map_y
        self.unit_type_bits = b.map.unit_type_bits
        self.shield_bits_ally, self.shield_bits_enemy = b.shield_a, b.shield_e
        self.reward_scale = b.options["reward_scale"]
        self._seed = b.options["seed"]
        self._episode_count = 0
        self._episode_steps = 0
        self._total_steps = 0
        self.battles_won = self.battles_game = self.timeouts = self.force_restarts = 0
        self.battles_draw = 0
        self.last_action = np.zeros((self.n_agents, self.n_actions), np.float32)
        self._terminated = True
        self._seeded = False

    @property
    def max_reward(self) -> float:
        """SMAC's max_reward: 10 per enemy + 200 + the enemies' health and shields (SMACv2: its first team's)."""
        return self.batch.max_reward

    # --- episode control
    def reset(self, seed: int | None = None):
        """Start a new battle; returns (obs list, state) like SMAC."""
        if seed is not None:
            self._seed = seed
            self._seeded = False
        if not self._seeded:
            self.batch.seed(self._seed)
            self._seeded = True
        self.batch.reset()
        self._episode_steps = 0
        self._terminated = False
        self.last_action = np.zeros((self.n_agents, self.n_actions), np.float32)
        return self.get_obs(), self.get_state()

    def step(self, actions):
        """Apply one action per agent; returns (reward, terminated, info) like SMAC."""
        if self._terminated:
            raise SMACError("step() called on a finished episode; call reset() first")
        acts = np.asarray([int(a) for a in actions], np.int64)  # as SMAC reads them: tensors on any device work
        if acts.shape != (self.n_agents,):
            raise SMACError(f"expected {self.n_agents} actions, got {acts.shape[0]}")
        out = self.batch.step(acts[None])
        self.last_action = np.eye(self.n_actions, dtype=np.float32)[acts]
        self._episode_steps += 1
        self._total_steps += 1
        ei = self.batch.ei[0]
        info = {"battle_won": bool(out["won"][0]), "dead_allies": int(ei[layout.DEAD_ALLIES]),
                "dead_enemies": int(ei[layout.DEAD_ENEMIES])}
        terminated = bool(out["done"][0])
        if terminated:
            self._terminated = True
            self._episode_count += 1
            self.battles_game += 1
            if out["won"][0]:
                self.battles_won += 1
            if out["truncated"][0]:
                self.timeouts += 1
                self.battles_draw += 1  # SMAC counts a timeout as its draw
                info["episode_limit"] = True
        return float(out["reward"][0]), terminated, info

    # --- observations
    def get_obs(self):
        """List of every agent's observation (float32 arrays)."""
        return list(self.batch.obs[0].copy())

    def get_obs_agent(self, agent_id: int):
        """Observation of one agent."""
        return self.batch.obs[0, self._agent(agent_id)].copy()

    def get_obs_size(self) -> int:
        """Length of one agent's observation."""
        return self.batch.obs_dim

    def get_state(self):
        """The global state (float32)."""
        return self.batch.state[0].copy()

    def get_state_size(self) -> int:
        """Length of the global state."""
        return self.batch.state_dim

    def get_avail_actions(self):
        """List of every agent's available-action flags (0/1 ints, like SMAC)."""
        return [self.get_avail_agent_actions(a) for a in range(self.n_agents)]

    def get_avail_agent_actions(self, agent_id: int):
        """Available-action flags of one agent as a list of 0/1 ints."""
        return self.batch.avail[0, self._agent(agent_id)].astype(int).tolist()

    def get_total_actions(self) -> int:
        """Number of actions, 6 + n_enemies."""
        return self.n_actions

    def get_env_info(self) -> dict:
        """SMAC's env_info: state_shape, obs_shape, n_actions, n_agents, episode_limit."""
        return {"state_shape": self.get_state_size(), "obs_shape": self.get_obs_size(),
                "n_actions": self.n_actions, "n_agents": self.n_agents, "episode_limit": self.episode_limit,
                "agent_features": self._ally_state_names(), "enemy_features": self._enemy_state_names()}

    def get_obs_move_feats_size(self) -> int:
        """Size of the movement block of an observation."""
        return self.batch.move_dim

    def get_obs_enemy_feats_size(self) -> tuple[int, int]:
        """(n_enemies, features per enemy) of an observation."""
        return self.n_enemies, self.batch.enemy_dim

    def get_obs_ally_feats_size(self) -> tuple[int, int]:
        """(n_agents - 1, features per ally) of an observation."""
        return self.n_agents - 1, self.batch.ally_dim

    def get_obs_own_feats_size(self) -> int:
        """Size of the own-unit block of an observation (the timestep slot, if any, is not in it)."""
        return self.batch.own_dim

    def get_ally_num_attributes(self) -> int:
        """Features per ally in the state."""
        return len(self._ally_state_names())

    def get_enemy_num_attributes(self) -> int:
        """Features per enemy in the state."""
        return len(self._enemy_state_names())

    def _ally_state_names(self) -> list[str]:
        types = [f"type_{i}" for i in range(self.unit_type_bits)]
        return ["health", "energy/cooldown", "rel_x", "rel_y"] + ["shield"] * self.shield_bits_ally + types

    def _enemy_state_names(self) -> list[str]:
        types = [f"type_{i}" for i in range(self.unit_type_bits)]
        return ["health", "rel_x", "rel_y"] + ["shield"] * self.shield_bits_enemy + types

    def unit_shoot_range(self, agent_id: int) -> float:
        """Range within which attack actions are available (6; with unit ranges max(weapon range, 2))."""
        return float(self.batch.shoot[0, self._agent(agent_id)])

    def unit_sight_range(self, agent_id: int) -> float:
        """Range within which other units are observed (9; with unit ranges the unit type's sight)."""
        return float(self.batch.sight[0, self._agent(agent_id)])

    def get_visibility_matrix(self) -> np.ndarray:
        """bool[n_agents, n_agents + n_enemies]: which units each living agent sees."""
        u = self.batch.units(0)
        pos = np.stack([u["x"], u["y"]], 1)
        d = np.linalg.norm(pos[: self.n_agents, None] - pos[None], axis=-1)
        sight = self.batch.sight[0, : self.n_agents, None]
        vis = (d < sight) & u["alive"][None] & u["alive"][: self.n_agents, None]
        vis[np.arange(self.n_agents), np.arange(self.n_agents)] = False
        return vis

    def get_stats(self) -> dict:
        """Battle counters: battles won and played, win rate, timeouts, restarts."""
        return {"battles_won": self.battles_won, "battles_game": self.battles_game,
                "battles_draw": self.battles_draw,
                "win_rate": self.battles_won / self.battles_game if self.battles_game else 0.0,
                "timeouts": self.timeouts, "restarts": self.force_restarts}

    def _unit(self, slot: int) -> SimpleNamespace:
        u = self.batch.units(0)
        return SimpleNamespace(health=float(u["health"][slot]), shield=float(u["shield"][slot]),
                               energy=float(u["energy"][slot]), weapon_cooldown=max(float(u["cooldown"][slot]), 0.0),
                               pos=SimpleNamespace(x=float(u["x"][slot]), y=float(u["y"][slot])),
                               unit_type=str(u["unit_type"][slot]), alive=bool(u["alive"][slot]))

    def get_unit_by_id(self, a_id: int) -> SimpleNamespace:
        """Agent a_id's unit with SMAC's field names: .health, .shield, .energy, .weapon_cooldown, .pos.x/.y."""
        return self._unit(self._agent(a_id))

    @property
    def agents(self) -> dict[int, SimpleNamespace]:
        """SMAC's `agents`: agent id -> unit, as of now."""
        return {a: self._unit(a) for a in range(self.n_agents)}

    @property
    def enemies(self) -> dict[int, SimpleNamespace]:
        """SMAC's `enemies`: enemy id -> unit, as of now."""
        return {j: self._unit(self.n_agents + j) for j in range(self.n_enemies)}

    def seed(self):
        """The seed this environment was made with (SMAC returns it the same way)."""
        return self._seed

    def render(self, mode: str = "human"):
        """Not drawn here: `marl replay` shows recorded battles."""
        raise SMACError("SMACEnv does not render; record a replay and open it with `marl replay`")

    def save_replay(self):
        """SMAC writes an SC2 replay here; the embedded simulator has none to write."""
        raise SMACError("SMACEnv has no StarCraft II replay; use marl's replay recording instead")

    def close(self) -> None:
        """Nothing to close: no game process runs."""

    def _agent(self, agent_id: int) -> int:
        if not 0 <= int(agent_id) < self.n_agents:
            raise SMACError(f"agent id {agent_id} out of range; accepted: 0..{self.n_agents - 1}")
        return int(agent_id)

    def is_medivac(self, agent_id: int) -> bool:
        """Whether this agent is a medivac (its attack actions heal allies instead)."""
        return bool(self.batch.it[self.batch.utype[0, self._agent(agent_id)], I_KIND] == KIND_MEDIVAC)


def _rows(arrays, lo: int, hi: int):
    """Battles [lo, hi) of an array, or of each array of a tuple."""
    return tuple(a[lo:hi] for a in arrays) if isinstance(arrays, tuple) else arrays[lo:hi]
