"""Where the trainer's rollouts come from: the collector seam.

- `InProcessCollector` (the default): the trainer's learner acts on all E battles of one VecEnv, with its
  own random generator: the streams and bits every run had before collectors existed.
- `ShardedCollector` (`train.act_chunks N`): the E battles split into N contiguous shards, each a VecEnv
  of its own with a copy of the learner (`Shard`) that acts on it from a random stream of its own, seeded
  by (seed, shard, incarnation). The shards act one after another in this process.
- `marl.ray_collector.RayCollector` (`train.ray_workers N`, `--ray-workers N`): the same N shards, each
  inside a Ray actor, collecting at once. A run with N Ray workers is bit-identical to one with
  `train.act_chunks N`: both run the same `Shard` code on the same seeds.

Every collector returns the same `Rollout`. Shards are joined in shard order along the environment axis
of every field, as each Rollout field's metadata says (marl.spec.PER_STEP ...), and of every extras
array, so fields and extras added later join without a change here.
"""

from __future__ import annotations

import time
from dataclasses import fields
from numbers import Number

import numpy as np

from marl.rollout import collect
from marl.spec import ActingState, Learner, Resumable, Rollout, Step, VecEnv


class CollectorError(ValueError):
    """A collector that cannot start or go on (Ray missing, no cluster, too few CPUs); the message is one line."""


class WorkersFailed(CollectorError):
    """Rollout workers failed more often than train.ray_max_failures allows; the message names the node."""


ACT, ENV = 0, 1  # purposes of a shard's seeds: its acting streams, its battles


def shard_bounds(n_envs: int, n_shards: int) -> list[tuple[int, int]]:
    """(offset, size) of n_shards contiguous shards of n_envs battles; the first n_envs % n_shards get one more."""
    sizes = [n_envs // n_shards + (k < n_envs % n_shards) for k in range(n_shards)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    return [(int(o), int(s)) for o, s in zip(offsets, sizes)]


def shard_seed(seed: int, shard: int, incarnation: int, purpose: int) -> int:
    """A 32-bit seed of its own for (seed, shard, incarnation, purpose): a replaced worker draws a fresh stream."""
    return int(np.random.SeedSequence([seed, shard, incarnation, purpose]).generate_state(1, np.uint32)[0])


# ------------------------------------------------------------------------------------------- joining
def join_info(infos: list[dict], sizes: list[int]) -> dict:
    """Step.info of shards: arrays over the battles joined, numbers (counts such as lost_episodes) summed, any
    other value kept when every shard agrees and listed per shard otherwise."""
    out: dict = {}
    for key in dict.fromkeys(k for info in infos for k in info):
        vals = [info.get(key) for info in infos]
        if all(isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n for v, n in zip(vals, sizes)):
            out[key] = np.concatenate(vals, axis=0)
        elif all(isinstance(v, Number) and not isinstance(v, bool) for v in vals):
            out[key] = sum(vals)
        else:
            same = all(v is vals[0] or (type(v) is type(vals[0]) and not isinstance(v, np.ndarray) and v == vals[0])
                       for v in vals)
            out[key] = vals[0] if same else vals
    return out


def join_steps(steps: list[Step]) -> Step:
    """The Step of all battles from the shards' Steps, in shard order: every array field along axis 0."""
    out = {}
    for f in fields(Step):
        vals = [getattr(s, f.name) for s in steps]
        if f.name == "info":
            out[f.name] = join_info(vals, [s.n_envs for s in steps])
        elif all(v is None for v in vals):
            out[f.name] = None
        else:
            out[f.name] = np.concatenate(vals, axis=0)
    return Step(**out)


def _join(kind: str, name: str, vals: list, offsets: list[int]):
    if kind == "step":
        return np.concatenate(vals, axis=1)
    if kind in ("env", "events"):
        return np.concatenate(vals, axis=0)
    if kind == "event_env":
        return np.concatenate([np.asarray(v) + off for v, off in zip(vals, offsets)]).astype(np.asarray(vals[0]).dtype)
    raise TypeError(f"Rollout.{name} declares join {kind!r}; known: step, env, events, event_env")


def join_rollouts(parts: list[Rollout], offsets: list[int]) -> Rollout:
    """The Rollout of all battles from the shards' Rollouts, in shard order, each field joined as its metadata says;
    environment indices (final_e) shifted by the shard's offset."""
    out = {}
    for f in fields(Rollout):
        kind = f.metadata.get("join")
        if kind is None:
            raise TypeError(f"Rollout.{f.name} declares no join in its field metadata (marl.spec.PER_STEP, PER_ENV, "
                            f"EVENTS or EVENT_ENV)")
        vals = [getattr(p, f.name) for p in parts]
        if all(v is None for v in vals):
            out[f.name] = None
        elif isinstance(vals[0], dict):
            keys = list(vals[0])
            for k, v in enumerate(vals[1:], 1):
                if list(v) != keys:
                    raise ValueError(f"shard {k}'s Rollout.{f.name} holds {sorted(v)}, shard 0's {sorted(keys)}")
            out[f.name] = {key: _join(kind, f"{f.name}[{key!r}]", [v[key] for v in vals], offsets) for key in keys}
        else:
            out[f.name] = _join(kind, f.name, vals, offsets)
    return Rollout(**out)


# ------------------------------------------------------------------------------------------- collectors
class InProcessCollector:
    """The default: the trainer's learner acts on every battle of the trainer's VecEnv (today's streams)."""

    sharded = False

    def __init__(self, env: VecEnv):
        self.env = env

    def start(self, seed: int) -> Step:
        """Reset the battles from `seed`."""
        return self.env.reset(seed=seed)

    def collect(self, learner: Learner, step: Step, steps: int, timing: dict) -> tuple[Rollout, Step, list[dict]]:
        """`steps` steps of every battle from `step` (marl.rollout.collect)."""
        return collect(self.env, learner, step, steps, timing)

    def close(self) -> None:
        """Nothing of its own: the trainer closes its env."""


class Shard:
    """Battles offset .. offset + n_envs - 1 of a run (a VecEnv built here) and a CPU copy of the learner to act.

    The same object runs in the in-process ShardedCollector and inside each Ray worker, so both give the same
    bits. Its random streams come from (seed + reseed, index, incarnation): a replaced worker gets new ones.
    """

    def __init__(self, config: dict, index: int, offset: int, n_envs: int, total: int, incarnation: int = 0,
                 reseed: int = 0):
        from marl.registry import make_env, make_learner  # not marl.trainer: a worker needs no logger or replays

        t, r = config["train"], config["run"]
        self.index, self.offset, self.n_envs, self.total = index, offset, n_envs, total
        self.incarnation, self.reseed = incarnation, reseed
        self.env = make_env(r["env"], r["scenario"], n_envs, dict(config["env"]))  # as marl.trainer.build_env
        self.spec = self.env.spec
        self.learner = make_learner(config["run"]["algo"], self.spec, config["algo"], seed=t["seed"], device="cpu")
        base = t["seed"] + reseed
        if isinstance(self.learner, ActingState):
            self.learner.set_shard(offset, total, shard_seed(base, index, incarnation, ACT))
        self.step = self.env.reset(seed=shard_seed(base, index, incarnation, ENV))

    def load_policy(self, policy: dict | None, whole: bool) -> None:
        """The driver's acting state ("policy" of acting_state(), or a whole state_dict() when `whole`)."""
        if policy is None:
            return
        if whole:
            self.learner.load_state_dict(policy)
        else:
            self.learner.load_acting_state({"policy": policy})

    def collect(self, policy: dict | None, whole: bool, steps: int) -> tuple[Rollout, Step, list[dict], dict]:
        """Load the policy, then `steps` steps of this shard's battles: (rollout, next step, episodes, timing)."""
        self.load_policy(policy, whole)
        timing: dict[str, float] = {}
        start = time.perf_counter()
        rollout, self.step, episodes = collect(self.env, self.learner, self.step, steps, timing)
        timing["collect"] = time.perf_counter() - start
        return rollout, self.step, episodes, timing

    def state(self) -> dict:
        """What an exact resume needs of this shard: its place, incarnation, acting state and battles."""
        acting = self.learner.acting_state()["shard"] if isinstance(self.learner, ActingState) else None
        env = self.env.get_state() if isinstance(self.env, Resumable) else None
        return {"index": self.index, "offset": self.offset, "n_envs": self.n_envs, "incarnation": self.incarnation,
                "reseed": self.reseed, "acting": acting, "env": env}

    def restore(self, state: dict) -> Step:
        """Continue from state(); returns the Step the battles stand at (new episodes if they could not be saved)."""
        if (state["index"], state["offset"], state["n_envs"]) != (self.index, self.offset, self.n_envs):
            raise ValueError(f"shard state of battles {state['offset']}+{state['n_envs']} does not fit shard "
                             f"{self.index} (battles {self.offset}+{self.n_envs})")
        if state["acting"] is not None and isinstance(self.learner, ActingState):
            self.learner.load_acting_state({"shard": state["acting"]})
        if state["env"] is not None and isinstance(self.env, Resumable):
            self.step = self.env.set_state(state["env"])
        return self.step

    def close(self) -> None:
        """Close the shard's battles."""
        self.env.close()


class ShardedCollector:
    """`train.act_chunks N`: the battles in N shards acting one after another here, each with its own streams.

    The in-process twin of marl.ray_collector.RayCollector (which overrides how shards are made and called):
    the same shards on the same seeds give the same rollouts, bit for bit.
    """

    sharded = True

    def __init__(self, config: dict, n_shards: int, spec):
        E = config["train"]["envs"]
        if n_shards > E:
            raise ValueError(f"{n_shards} shards for train.envs {E}: each shard needs a battle; use at most {E}")
        self.config, self.spec, self.n_shards = config, spec, n_shards
        self.bounds = shard_bounds(E, n_shards)
        self.total = E
        self.incarnations = [0] * n_shards
        self.reseed = 0
        self.losses = {"episodes": 0, "steps": 0, "replaced": 0}  # a Ray worker's failures (none here)
        self.shards: list = []
        self.step: Step | None = None
        self.events: list[str] = []  # what the trainer should say under its progress bar (replaced workers)

    # -------------------------------------------------------------- shards (overridden by RayCollector)
    def _make(self, index: int) -> Shard:
        offset, size = self.bounds[index]
        return Shard(self.config, index, offset, size, self.total, self.incarnations[index], self.reseed)

    def _start_shards(self) -> list[Step]:
        self.shards = [self._make(k) for k in range(self.n_shards)]
        self._check_specs([s.spec for s in self.shards])
        return [s.step for s in self.shards]

    def _check_specs(self, specs) -> None:
        for k, spec in enumerate(specs):
            if spec != self.spec:
                offset, size = self.bounds[k]
                raise ValueError(f"shard {k} (battles {offset}..{offset + size - 1}) plays battles of other shapes "
                                 f"than the run's ({spec.name}: {spec.n_agents} agents, obs_dim {spec.obs_dim}); give "
                                 f"each shard the battles of every scenario (fewer shards or more train.envs)")

    def _collect_all(self, policy, whole: bool, steps: int) -> list[tuple]:
        return [s.collect(policy, whole, steps) for s in self.shards]

    def _states(self) -> list[dict | None]:
        return [s.state() for s in self.shards]

    def _restore_all(self, states: list[dict | None]) -> list[Step]:
        return [s.step if st is None else s.restore(st) for s, st in zip(self.shards, states)]

    def close(self) -> None:
        """Close every shard."""
        for s in self.shards:
            s.close()
        self.shards = []

    # -------------------------------------------------------------- the seam
    def start(self, seed: int, reseed: int = 0) -> Step:
        """Build the shards (their battles on their own seeds, from train.seed + reseed); the Step of all battles."""
        del seed  # each shard's battles have a seed of their own, from train.seed, the shard and its incarnation
        self.reseed = reseed
        self.step = join_steps(self._start_shards())
        return self.step

    def collect(self, learner: Learner, step: Step, steps: int, timing: dict) -> tuple[Rollout, Step, list[dict]]:
        """Send the learner's acting state to every shard, collect `steps` steps of each, join them in shard order."""
        whole = not isinstance(learner, ActingState)
        if not whole:
            learner.prepare_acting(step)
        policy = learner.state_dict() if whole else learner.acting_state()["policy"]
        results = self._collect_all(policy, whole, steps)
        start = time.perf_counter()
        rollout = join_rollouts([r[0] for r in results], [self.bounds[k][0] for k in range(self.n_shards)])
        self.step = join_steps([r[1] for r in results])
        episodes = [e for r in results for e in r[2]]
        timing["join"] = timing.get("join", 0.0) + time.perf_counter() - start
        for key in ("act", "env"):  # seconds summed over the shards
            timing[key] = timing.get(key, 0.0) + sum(r[3].get(key, 0.0) for r in results)
        timing["shard_collect"] = max(r[3]["collect"] for r in results)  # the slowest shard
        return rollout, self.step, episodes

    def state(self) -> dict:
        """Every shard's state, for the checkpoint (None for a shard that could not say)."""
        return {"shards": self._states(), "incarnations": list(self.incarnations), "reseed": self.reseed,
                "losses": dict(self.losses)}

    def restore(self, state: dict | None, seed: int, reseed: int) -> tuple[Step, bool]:
        """Continue from state() when it was written with the same shards; else fresh shards on train.seed + reseed.

        Returns the Step of all battles and whether the shards continued exactly.
        """
        shards = [] if state is None else state["shards"]
        same = len(shards) == self.n_shards and all(s is None or (s["offset"], s["n_envs"]) == self.bounds[k]
                                                    for k, s in enumerate(shards))
        if not same:
            self.events.append(f"the checkpoint's shards ({len(shards)}) do not fit {self.n_shards} shards of "
                               f"{self.total} battles: the battles start afresh")
            return self.start(seed, reseed), False
        # a shard whose worker was lost when the checkpoint was written starts afresh, on its next incarnation
        self.incarnations = [int(inc) + (s is None) for inc, s in zip(state["incarnations"], shards)]
        self.reseed = int(state["reseed"])
        self.losses = {k: int(v) for k, v in state["losses"].items()}
        self._start_shards()
        self.step = join_steps(self._restore_all(shards))
        return self.step, all(s is not None for s in shards)
