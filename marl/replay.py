"""Replay files: recorded battles as versioned numpy archives, and the recorder that plays them.

A replay is an `.npz` archive read with `allow_pickle=False`, so a file from elsewhere cannot run
code. It holds T steps of one battle:

- the map and roster: `walkable` bool[X, Y], cliff `level` uint8[X, Y], `cliff` bool[X, Y] (the cliff
  faces between levels, blocked to all but cliff walkers), `unit_type` str[U], `team`
  int8[U] (0 = the learner's agents, who come first), `health_max` and `shield_max` f32[U];
- T + 1 frames of the units (the one each action was chosen on, then the one the battle ended on):
  `x`, `y`, `health`, `shield` f32[T+1, U], `alive` bool[T+1, U], and `unit_target` int16[T+1, U],
  the unit each one's current order aims at (how the enemies' focus shows);
- per step: the agents' `actions` int16[T, A] (SMAC's: 0 no-op, 1 stop, 2-5 move N/S/E/W, 6 + j
  attack enemy j, or heal ally j for a medivac), their `target` int16[T, A] as a unit index (an
  enemy attacked or an ally healed; -1 for none), the communication edges `comm` bool[T, A, A]
  (receiver x sender), the listening `gates` f32[T, A] and the team's `reward` f32[T];
- `meta`, a JSON object: format, version, env, map, learner, env_steps, seed, battle, outcome (won,
  lost, draw or timeout), episode_return, episode_length, episode_limit, map_x, map_y, n_agents,
  has_comm and has_gates (false when the learner shared no edges or gates: then `comm` is all false
  and `gates` all ones).
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marl.spec import FrameSource, Learner, VecEnv

FORMAT = "marl-replay"
VERSION = 1
OUTCOMES = ("won", "lost", "draw", "timeout")

STATIC_FIELDS = ("walkable", "level", "cliff", "unit_type", "team", "health_max", "shield_max")
FRAME_FIELDS = ("x", "y", "health", "shield", "alive", "unit_target")
STEP_FIELDS = ("actions", "target", "comm", "gates", "reward")
META_FIELDS = ("format", "version", "env", "map", "learner", "env_steps", "seed", "battle", "outcome",
               "episode_return", "episode_length", "episode_limit", "map_x", "map_y", "n_agents", "has_comm",
               "has_gates")
_DTYPES = {"walkable": np.bool_, "level": np.uint8, "cliff": np.bool_, "team": np.int8, "health_max": np.float32,
           "shield_max": np.float32, "x": np.float32, "y": np.float32, "health": np.float32,
           "shield": np.float32, "alive": np.bool_, "unit_target": np.int16, "actions": np.int16,
           "target": np.int16, "comm": np.bool_, "gates": np.float32, "reward": np.float32}
ARRAY_FIELDS = STATIC_FIELDS + FRAME_FIELDS + STEP_FIELDS


class ReplayError(ValueError):
    """A missing, corrupt, truncated or foreign replay file; the message is one line."""


@dataclass(eq=False)
class Replay:
    """One recorded battle: map and roster, T + 1 frames of units, T steps of actions and communication."""

    meta: dict
    walkable: np.ndarray
    level: np.ndarray
    cliff: np.ndarray
    unit_type: np.ndarray
    team: np.ndarray
    health_max: np.ndarray
    shield_max: np.ndarray
    x: np.ndarray
    y: np.ndarray
    health: np.ndarray
    shield: np.ndarray
    alive: np.ndarray
    unit_target: np.ndarray
    actions: np.ndarray
    target: np.ndarray
    comm: np.ndarray
    gates: np.ndarray
    reward: np.ndarray

    @property
    def n_steps(self) -> int:
        """T, the number of steps (there is one frame more)."""
        return self.actions.shape[0]

    @property
    def n_agents(self) -> int:
        """A, the learner's agents (the first A units)."""
        return self.actions.shape[1]

    @property
    def n_units(self) -> int:
        """U, agents plus enemies."""
        return self.x.shape[1]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array field by name, in the dtypes the file stores."""
        out = {k: np.asarray(getattr(self, k), _DTYPES[k]) for k in _DTYPES}
        out["unit_type"] = np.asarray(self.unit_type, str)
        return out


def save(replay: Replay, path) -> Path:
    """Write a replay atomically (temporary file in the same folder, flushed, renamed); returns the path."""
    from marl.checkpoint import atomic_write_bytes  # imported here: it brings torch, which reading needs not

    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **replay.meta}
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), **replay.arrays())
    atomic_write_bytes(path, buf.getvalue())
    return path


def load(path) -> Replay:
    """Read a replay written by save(); anything else raises ReplayError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"no replay file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {k: archive[k] for k in archive.files}
        meta = json.loads(str(data.pop("meta"))) if "meta" in data else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        # np.load on foreign bytes raises ValueError or OSError; a cut zip, BadZipFile or EOFError
        raise ReplayError(f"{path} is not a readable marl replay (corrupt or truncated file)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ReplayError(f"{path} is not a marl replay (no marl-replay metadata)")
    if meta.get("version") != VERSION:
        raise ReplayError(f"{path} is replay version {meta.get('version')}; this marl reads version {VERSION}")
    missing = [k for k in META_FIELDS if k not in meta] + [k for k in ARRAY_FIELDS if k not in data]
    if missing:
        raise ReplayError(f"{path} is a damaged marl replay (missing {', '.join(missing)})")
    problem = _shape_problem(data, meta)
    if problem:
        raise ReplayError(f"{path} is a damaged marl replay ({problem})")
    meta = {k: v for k, v in meta.items() if k not in ("format", "version")} | {"version": VERSION}
    return Replay(meta=meta, **{k: data[k] for k in ARRAY_FIELDS})


def _shape_problem(data: dict, meta: dict) -> str | None:
    """What is inconsistent about a replay's arrays, or None."""
    U, A = data["team"].shape[0] if data["team"].ndim == 1 else -1, meta.get("n_agents")
    T = data["actions"].shape[0] if data["actions"].ndim == 2 else -1
    grid = (meta.get("map_x"), meta.get("map_y"))
    expect = {"walkable": grid, "level": grid, "cliff": grid,
              "unit_type": (U,), "health_max": (U,), "shield_max": (U,), "actions": (T, A), "target": (T, A),
              "comm": (T, A, A), "gates": (T, A), "reward": (T,)}
    expect.update({k: (T + 1, U) for k in FRAME_FIELDS})
    for key, shape in expect.items():
        if data[key].shape != shape:
            return f"{key} has shape {data[key].shape}, expected {shape}"
    for key, dtype in _DTYPES.items():
        if data[key].dtype != dtype:
            return f"{key} has dtype {data[key].dtype}, expected {np.dtype(dtype)}"
    if data["unit_type"].dtype.kind != "U":
        return f"unit_type has dtype {data['unit_type'].dtype}, expected text"
    if meta.get("outcome") not in OUTCOMES:
        return f"outcome {meta.get('outcome')!r} is not one of {', '.join(OUTCOMES)}"
    return None


def file_name(replay: Replay) -> str:
    """A replay's default file name: <map>_<learner>_<env steps>_s<seed>b<battle>_<outcome>.npz."""
    m = replay.meta
    return f"{m['map']}_{m['learner']}_{m['env_steps']:09d}_s{m['seed']}b{m['battle']}_{m['outcome']}.npz"


def record(env: VecEnv, learner: Learner, episodes: int, seed: int, meta: dict) -> list[Replay]:
    """Play `episodes` deterministic episodes of the learner, one per battle slot, and record each.

    Rounds of up to E episodes are played, round r on battles seeded `seed + r`; battle e of a round
    is recorded until its first episode ends. `meta` adds env, learner and env_steps to each replay.
    """
    if not isinstance(env, FrameSource):
        raise ReplayError(f"environment {env.spec.name or type(env).__name__} cannot record replays "
                          "(it has no frames() capability)")
    replays: list[Replay] = []
    for round_index in range((episodes + env.n_envs - 1) // env.n_envs):
        wanted = min(env.n_envs, episodes - len(replays))
        replays += _record_round(env, learner, seed + round_index, wanted, meta)
    return replays


def _record_round(env, learner: Learner, seed: int, wanted: int, meta: dict) -> list[Replay]:
    """The first episode of battles 0..wanted-1 of env reset with seed."""
    info = env.frame_info()
    A = info["n_agents"]
    keep = env.keep_final_frames
    env.keep_final_frames = True
    try:
        step = env.reset(seed=seed)
        frames = [env.frames()]
        actions, targets, comms, gates, rewards = [], [], [], [], []
        ended_at = np.full(wanted, -1)
        outcome: list[str] = [""] * wanted
        returns = np.zeros(wanted)
        has_comm = has_gates = False
        while (ended_at < 0).any():
            acts, extras = learner.act(step, deterministic=True)
            # a padded env (marl.padding) has more agent slots than the battle's A real agents, which come first
            targets.append(env.action_targets(acts)[:, :A])
            has_comm, has_gates = "comm" in extras, "gates" in extras
            comms.append(np.asarray(extras["comm"], bool)[:, :A, :A] if has_comm
                         else np.zeros((env.n_envs, A, A), bool))
            gates.append(np.asarray(extras["gates"], np.float32)[:, :A] if has_gates
                         else np.ones((env.n_envs, A), np.float32))
            actions.append(np.asarray(acts)[:, :A])
            step = env.step(acts)
            frames.append(env.frames())
            rewards.append(np.asarray(step.reward).reshape(env.n_envs, -1).sum(-1))
            for e in np.flatnonzero(step.done[:wanted] & (ended_at < 0)):
                ended_at[e] = len(actions)
                returns[e] = float(np.sum(step.episode_return[e]))
                enemies_alive = frames[-1]["alive"][e, A:].any()
                outcome[e] = ("won" if step.won[e] else "timeout" if step.truncated[e]
                              else "lost" if enemies_alive else "draw")
    finally:
        env.keep_final_frames = keep
    out = []
    for e in range(wanted):
        T = int(ended_at[e])
        frame = {k: np.stack([f[k][e] for f in frames[: T + 1]]) for k in ("x", "y", "health", "shield", "alive",
                                                                           "target")}
        out.append(Replay(
            meta={"env": meta.get("env", ""), "map": info["map"], "learner": meta.get("learner", ""),
                  "env_steps": int(meta.get("env_steps", 0)), "seed": int(seed), "battle": e,
                  "outcome": outcome[e], "episode_return": float(returns[e]), "episode_length": T,
                  "episode_limit": int(info["episode_limit"]), "map_x": int(info["map_x"]),
                  "map_y": int(info["map_y"]), "n_agents": int(A), "has_comm": has_comm, "has_gates": has_gates,
                  "version": VERSION},
            walkable=np.asarray(info["walkable"], bool), level=np.asarray(info["level"], np.uint8),
            cliff=np.asarray(info["cliff"], bool),
            unit_type=np.asarray(info["unit_type"], str), team=np.asarray(info["team"], np.int8),
            health_max=np.asarray(info["health_max"], np.float32),
            shield_max=np.asarray(info["shield_max"], np.float32),
            x=frame["x"].astype(np.float32), y=frame["y"].astype(np.float32),
            health=frame["health"].astype(np.float32), shield=frame["shield"].astype(np.float32),
            alive=frame["alive"].astype(bool), unit_target=frame["target"].astype(np.int16),
            actions=np.stack([a[e] for a in actions[:T]]).astype(np.int16),
            target=np.stack([t[e] for t in targets[:T]]).astype(np.int16),
            comm=np.stack([c[e] for c in comms[:T]]), gates=np.stack([g[e] for g in gates[:T]]),
            reward=np.asarray([r[e] for r in rewards[:T]], np.float32)))
    return out


def save_all(replays: list[Replay], folder) -> list[Path]:
    """Write replays into folder under their default names; returns the paths."""
    return [save(r, Path(folder) / file_name(r)) for r in replays]
