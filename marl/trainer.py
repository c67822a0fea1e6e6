"""The training loop: collect -> update -> log -> evaluate -> checkpoint -> progress, resumable exactly.

`build` makes a run's environments and learner from its config, for training and for `marl eval`
alike. Ctrl-C (or SIGTERM) finishes the update in progress, writes a checkpoint and returns (a second
Ctrl-C aborts at once). A checkpoint holds the learner (networks, optimisers, statistics, its random
generator), the environments' full state, torch's RNG state, the counters and the config, so that
`--resume` continues exactly where the run stopped: on the CPU, N updates + resume + N updates give
the same parameters as 2N updates in one go.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from marl import checkpoint
from marl import config as config_mod
from marl import replay as replay_mod
from marl.collectors import CollectorError, InProcessCollector, ShardedCollector, WorkersFailed
from marl.logging import RunLogger
from marl.padding import pad_env, padded_spec
from marl.registry import error_line, make_env, make_learner
from marl.rollout import play_episodes
from marl.spec import (
    BudgetAware,
    EnvSpec,
    EvalCounters,
    EvaluatesPolicies,
    FrameSource,
    GraphReporter,
    Learner,
    PlantedGraph,
    Resumable,
    Rollout,
    Step,
    VecEnv,
)

LAST = "last.pt"
EPISODES = "episodes.csv"  # train.log_episodes: one row per finished training episode


def kept_checkpoint_name(env_steps: int) -> str:
    """train.keep_checkpoints: the file name of the copy of the checkpoint written at env_steps."""
    return f"step-{env_steps}.pt"


def kept_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """A run's kept checkpoints (kept_checkpoint_name's files) as (env steps, path), by env steps."""
    out = []
    for path in (Path(run_dir) / "checkpoints").glob("step-*.pt"):
        steps = path.stem.removeprefix("step-")
        if steps.isascii() and steps.isdigit() and path.name == kept_checkpoint_name(int(steps)):
            out.append((int(steps), path))
    return sorted(out)


def episode_rows(episodes: list[dict], update: int, env_steps: int) -> str:
    """episodes.csv lines of one update's finished episodes: update, env_steps (both at the update's end), the
    return (one column per objective for a vector reward), length and won (0/1)."""
    lines = []
    for ep in episodes:
        ret = ep["return"]
        ret = ",".join(repr(float(r)) for r in ret) if isinstance(ret, (list, tuple)) else repr(float(ret))
        lines.append(f"{update},{env_steps},{ret},{int(ep['length'])},{int(bool(ep['won']))}\n")
    return "".join(lines)


def episodes_header(reward_names: tuple[str, ...]) -> str:
    """episodes.csv's first line: return, or return_<objective> for each objective of a vector reward."""
    returns = ",".join(f"return_{n}" for n in reward_names) if len(reward_names) > 1 else "return"
    return f"update,env_steps,{returns},length,won\n"


def trim_episodes(path: Path, update: int) -> None:
    """On resume: drop the rows of updates after the checkpoint's (appended before a crash) and a torn last line,
    so the log holds each episode of the resumed run once."""
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    keep = [lines[0]] if lines and lines[0] else []
    for line in lines[1:]:
        cells = line.split(b",")
        if len(cells) >= 5 and cells[0].isdigit() and int(cells[0]) <= update:
            keep.append(line)
    text = b"".join(line + b"\n" for line in keep)
    if text != data:
        checkpoint.atomic_write_bytes(path, text)


def run_dir_name(config: dict) -> str:
    """runs/<env>-<scenario>-<algo>-<timestamp>-s<seed>; several scenarios read 3m+5m+8m (more than four:
    the first two and how many more, 3m+4m+5more)."""
    r = config["run"]
    scenario = r["scenario"]
    names = config_mod.scenario_list(config)
    if len(names) > 1:
        scenario = "+".join(names) if len(names) <= 4 else f"{names[0]}+{names[1]}+{len(names) - 2}more"
    parts = [r["env"], scenario, r["algo"]] if scenario else [r["env"], r["algo"]]
    name = "-".join(str(p).replace(":", "_").replace("/", "_") for p in parts)
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-s{config['train']['seed']}"


def build_env(config: dict, n_envs: int) -> VecEnv:
    """n_envs environments of the kind and scenario a run's config names."""
    r = config["run"]
    return make_env(r["env"], r["scenario"], n_envs, dict(config["env"]))


def scenario_label(spec: EnvSpec) -> str:
    """A member scenario's name as tags and rows show it: its EnvSpec name without the env kind (smac:3m -> 3m)."""
    return spec.name.partition(":")[2] or spec.name


def with_scenario(config: dict, scenario: str) -> dict:
    """A copy of a run's config that plays `scenario` (one name, or several joined with commas)."""
    out = copy.deepcopy(config)
    out["run"]["scenario"] = scenario
    return out


def scenario_record_env(config: dict, like: EnvSpec, index: int, n_envs: int = 1) -> VecEnv:
    """n_envs battles of scenario like.scenarios[index] alone, padded to `like` (its Steps' scenario: index),
    for recording replays of one scenario of a mixture with the learner that trained on it."""
    env = build_env(with_scenario(config, scenario_label(like.scenarios[index])), n_envs)
    return pad_env(env, like, scenario=index)


class LearnerMismatch(ValueError):
    """A trained learner cannot play battles of other shapes; the message is one line."""


_SHAPE_FIELDS = ("n_agents", "obs_dim", "state_dim", "n_actions")


def _first_shape_difference(saved, fresh, path: str = "") -> tuple[str, tuple, tuple] | None:
    """(where, saved shape, fresh shape) of the first array whose shape differs between two learner states."""
    if isinstance(saved, dict) and isinstance(fresh, dict):
        for key in saved:
            if key in fresh:
                found = _first_shape_difference(saved[key], fresh[key], f"{path}.{key}" if path else str(key))
                if found:
                    return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(fresh, (list, tuple)):
        for k, (a, b) in enumerate(zip(saved, fresh)):
            found = _first_shape_difference(a, b, f"{path}[{k}]")
            if found:
                return found
        return None
    a, b = getattr(saved, "shape", None), getattr(fresh, "shape", None)
    if a is not None and b is not None and tuple(a) != tuple(b):
        return path, tuple(a), tuple(b)
    return None


def build_scenario_eval(config: dict, scenarios: list[str], n_envs: int, learner_state: dict
                        ) -> tuple[VecEnv, Learner]:
    """Battles of `scenarios` (which the run may never have trained on) and the run's learner restored for them.

    The env is built for those scenarios and padded to at least the shapes the run trained on (marl.padding),
    so a smaller team fits a learner of fixed shapes. The learner is built for that env's EnvSpec; when its
    state's shapes differ from the trained ones (a model that depends on the team size, as MAPPO's input and
    output layers do) LearnerMismatch names the EnvSpec shapes and the first parameter that differ.
    """
    r = config["run"]
    trained_env = build_env(config, max(len(config_mod.scenario_list(config)), 1))
    trained = trained_env.spec
    trained_env.close()
    inner = build_env(with_scenario(config, ",".join(scenarios)), n_envs)
    members = inner.spec.scenarios or (inner.spec,)
    target = padded_spec([inner.spec], like=trained, name=inner.spec.name, scenarios=members)
    env = pad_env(inner, target, scenario=None if inner.spec.scenarios else 0)
    config_mod.check_built(config, env.spec)
    learner = make_learner(r["algo"], env.spec, config["algo"], seed=config["train"]["seed"],
                           device=config["train"]["device"])
    found = _first_shape_difference(learner_state, learner.state_dict())
    if found:
        where, was, now = found
        differ = [f for f in _SHAPE_FIELDS if getattr(trained, f) != getattr(target, f)]
        fields = differ or list(_SHAPE_FIELDS)
        env.close()
        raise LearnerMismatch(
            f"{r['algo']}'s model depends on the team size: it was trained for "
            f"{', '.join(f'{f} {getattr(trained, f)}' for f in fields)} and {','.join(scenarios)} needs "
            f"{', '.join(f'{f} {getattr(target, f)}' for f in fields)} ({where} is {list(was)} in the checkpoint, "
            f"{list(now)} here); evaluate it on scenarios no larger than those it trained on, or train a learner "
            f"whose parameters do not depend on the team size")
    checkpoint.restore(learner, learner_state, "the checkpoint")
    return env, learner


def build(config: dict, n_envs: int | None = None) -> tuple[VecEnv, Learner]:
    """A run's environments (train.envs of them unless n_envs is given) and its freshly seeded learner."""
    t, r = config["train"], config["run"]
    env = build_env(config, t["envs"] if n_envs is None else n_envs)
    # settings judged against the built environment (a preference's length against env.spec.reward_dim,
    # a team size a learner needs), before the learner is made and before Trainer creates the run
    # directory, so a bad value leaves no run directory behind
    config_mod.check_built(config, env.spec)
    learner = make_learner(r["algo"], env.spec, config["algo"], seed=t["seed"], device=t["device"])
    return env, learner


def warm_env(config: dict) -> None:
    """Build one battle and take one step, so compiled kernels (numba's cache) exist before shards start."""
    env = build_env(config, 1)
    try:
        step = env.reset(seed=config["train"]["seed"])
        env.step(step.avail.argmax(-1).astype(np.int64))  # the first available action of each agent
    finally:
        env.close()


def make_collector(config: dict, env: VecEnv):
    """The collector train.ray_workers and train.act_chunks ask for: Ray workers, in-process shards, or the default."""
    t = config["train"]
    if t["ray_workers"] and t["act_chunks"] and t["ray_workers"] != t["act_chunks"]:
        raise CollectorError(f"train.ray_workers {t['ray_workers']} and train.act_chunks {t['act_chunks']} disagree; "
                             f"give one (Ray workers act in as many chunks as there are workers)")
    if t["ray_workers"]:
        from marl.ray_collector import RayCollector

        return RayCollector(config, t["ray_workers"], env.spec, warm=lambda: warm_env(config))
    if t["act_chunks"]:
        return ShardedCollector(config, t["act_chunks"], env.spec)
    return InProcessCollector(env)


class StopSignals:
    """Within the block, a first SIGINT (Ctrl-C) or SIGTERM sets `requested`; a second raises KeyboardInterrupt.

    The handlers in place before the block are put back when it ends, however it ends.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopSignals:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def wilson(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a win rate."""
    if n == 0:
        return 0.0, 0.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate(env, learner, episodes: int, seed: int, deterministic: bool = True) -> dict:
    """Deterministic episodes of the learner: win rate (with 95% interval), mean return and length
    (`deterministic=False`: its sampled actions, from its own generator).

    For an environment without wins (EnvSpec.can_win False) the win-rate entries are left out. With a
    vector reward (K objectives) "episode_return" is a list of K means, one per objective. A learner with
    EvalCounters adds, under each of its keys, that extra's mean per living agent-step of the counted episodes.
    """
    # each battle slot plays a fixed number of episodes, so short episodes are not over-counted
    E = env.n_envs
    members = getattr(getattr(env, "spec", None), "scenarios", ())
    if members:  # several scenarios: `episodes` on each, split over its own battles
        return _evaluate_scenarios(env, learner, episodes, seed, members, deterministic)
    quota = np.full(E, episodes // E)
    quota[: episodes % E] += 1
    tally = _Tally(learner, E, deterministic)
    played = play_episodes(env, tally.act, quota, seed, on_done=tally.done)
    can_win = getattr(getattr(env, "spec", None), "can_win", True)  # scripted test envs may carry no spec
    return _summary(played, np.ones(len(played["won"]), bool), can_win, tally)


class _Tally:
    """evaluate()'s acting: the learner's deterministic (or sampled) actions, and the extras it names as EvalCounters
    summed over the living agents of each episode, kept per counted episode (in the order play_episodes counts
    them)."""

    def __init__(self, learner, n_envs: int, deterministic: bool = True):
        self.learner = learner
        self.deterministic = deterministic
        self.keys = dict(learner.eval_counters) if isinstance(learner, EvalCounters) else {}
        self.running: dict[str, np.ndarray] = {}  # extra -> f64[E]: its sum over the episode under way
        self.agent_steps = np.zeros(n_envs, np.float64)
        self.episodes: list[tuple[float, dict]] = []  # per counted episode: living agent-steps, {extra: sum}

    def act(self, step: Step) -> np.ndarray:
        """The learner's actions; its counted extras added to each battle's running sums."""
        actions, extras = self.learner.act(step, deterministic=self.deterministic)
        if self.keys:
            alive = np.asarray(step.alive, bool)
            self.agent_steps += alive.sum(1)
            for name in self.keys.keys() & extras.keys():
                x = np.where(alive, np.asarray(extras[name], np.float64), 0.0).sum(1)
                self.running[name] = self.running.get(name, 0.0) + x
        return actions

    def done(self, e: int, counted: bool) -> None:
        """Battle e's episode ended: kept when counted, and its sums start again from 0."""
        if self.keys:
            if counted:
                self.episodes.append((float(self.agent_steps[e]), {n: float(r[e]) for n, r in self.running.items()}))
            self.agent_steps[e] = 0.0
            for r in self.running.values():
                r[e] = 0.0

    def means(self, keep: np.ndarray) -> dict:
        """Each counted extra's mean per living agent-step over the kept episodes, under its reported key."""
        if not self.keys:
            return {}
        kept = [ep for ep, k in zip(self.episodes, keep, strict=True) if k]
        n = sum(a for a, _ in kept)
        return {key: sum(s[name] for _, s in kept) / max(n, 1.0) for name, key in self.keys.items()
                if name in self.running}


def _summary(played: dict, keep: np.ndarray, can_win: bool, tally: _Tally | None = None) -> dict:
    """Episodes count, mean return and length, and the win rate with its 95% interval, of the kept episodes, and
    the learner's EvalCounters means over them."""
    episodes = int(keep.sum())
    mean_return = played["return"][keep].astype(np.float64).mean(axis=0)
    out = {"episodes": episodes,
           "episode_return": float(mean_return) if mean_return.ndim == 0 else [float(r) for r in mean_return],
           "episode_length": float(np.mean(played["length"][keep]))}
    if can_win:
        wins = int(played["won"][keep].sum())
        low, high = wilson(wins, episodes)
        out.update(win_rate=wins / episodes, win_rate_low=low, win_rate_high=high)
    if tally is not None:
        out.update(tally.means(keep))
    return out


def _evaluate_scenarios(env, learner, episodes: int, seed: int, members: tuple[EnvSpec, ...],
                        deterministic: bool = True) -> dict:
    """evaluate() on a VecEnv of several scenarios: `episodes` per scenario; the whole and, under "scenarios",
    each scenario's figures by its label (3m, ...). Every scenario needs a battle of its own."""
    assign = np.asarray(env.reset(seed=seed).scenario)  # which scenario each battle plays (fixed)
    quota = np.zeros(env.n_envs, np.int64)
    for k, member in enumerate(members):
        battles = np.flatnonzero(assign == k)
        if battles.size == 0:
            raise ValueError(f"evaluation battles play no {scenario_label(member)}: each scenario needs a battle")
        quota[battles] = episodes // battles.size
        quota[battles[: episodes % battles.size]] += 1
    tally = _Tally(learner, env.n_envs, deterministic)
    played = play_episodes(env, tally.act, quota, seed, on_done=tally.done)
    scenario_of = assign[played["env"]]
    out = _summary(played, np.ones(len(scenario_of), bool), env.spec.can_win, tally)
    out["scenarios"] = {scenario_label(m): _summary(played, scenario_of == k, env.spec.can_win, tally)
                        for k, m in enumerate(members)}
    return out


def planted_recall(graph: np.ndarray, planted: np.ndarray) -> float:
    """The fraction of the planted edges (bool[N, N]) that a communication graph (bool[N, N]) holds."""
    planted = np.asarray(planted, bool)
    return float((np.asarray(graph, bool) & planted).sum() / max(int(planted.sum()), 1))


class PolicyEvaluator:
    """The trainer's Evaluator: battles of the run's own kind, one VecEnv per size asked, apart from training's.

    Episodes it plays are counted in `env_steps` (logged as train/eval_env_steps), never in the budget.
    """

    def __init__(self, config: dict):
        self.config = config
        self.env_steps = 0
        self._envs: dict[int, VecEnv] = {}

    def __call__(self, act, n_envs: int, episodes_per_env: int, seed: int, gamma: float = 1.0) -> dict:
        """Evaluator.__call__: n_envs battles play episodes_per_env deterministic episodes each with `act`."""
        if n_envs not in self._envs:
            self._envs[n_envs] = build_env(self.config, n_envs)
        played = play_episodes(self._envs[n_envs], act, np.full(n_envs, episodes_per_env), seed, gamma)
        self.env_steps += played["env_steps"]
        return played

    def close(self) -> None:
        """Close the evaluation environments."""
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class Trainer:
    """One training run in its run directory."""

    def __init__(self, config: dict, run_dir: Path, resume: bool = False, *, show_progress: bool = True):
        self.config, self.run_dir, self.show_progress = config, Path(run_dir), show_progress
        t = config["train"]
        # acting runs many tiny ops (one thread is fastest); an update runs large ones while the env waits
        self._act_threads = int(t["torch_threads"]) or os.cpu_count() or 1
        self._update_threads = int(t["update_threads"]) or os.cpu_count() or 1
        torch.set_num_threads(self._act_threads)
        self.env, self.learner = build(config)
        self.spec = self.env.spec
        self.collector = make_collector(config, self.env)  # where rollouts come from (marl.collectors)
        self.per_update = t["rollout"] * self.env.n_envs  # env steps one update collects
        self.update_index, self.env_steps, self.episodes = 0, 0, 0
        self.last_eval: dict | None = None
        self._eval_env = None
        self._record_env = None
        self._scenario_record_envs: dict[str, VecEnv | None] = {}  # a mixture's replays; None: skipped
        self._policy_evaluator: PolicyEvaluator | None = None
        if isinstance(self.learner, EvaluatesPolicies):  # a population's members, a baseline (capability)
            self._policy_evaluator = PolicyEvaluator(config)
            self.learner.attach_evaluator(self._policy_evaluator)
        if resume:
            self._load()
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_mod.dump(config, self.run_dir / "config.yaml")
            torch.manual_seed(t["seed"])
            self.step = self.collector.start(seed=t["seed"])

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict:
        # environments that cannot save their episodes (PettingZoo, Gymnasium) start new ones on resume
        env_state = self.env.get_state() if isinstance(self.env, Resumable) and not self.collector.sharded else None
        shards = checkpoint.to_tensors(self.collector.state()) if self.collector.sharded else None
        return {"learner": self.learner.state_dict(), "env": checkpoint.to_tensors(env_state), "collector": shards,
                "torch_rng": torch.get_rng_state(),
                "counters": {"update": self.update_index, "env_steps": self.env_steps, "episodes": self.episodes,
                             "eval_env_steps": self.eval_env_steps},
                "last_eval": self.last_eval, "config": self.config}

    def save(self) -> Path:
        """Write checkpoints/last.pt atomically (and with train.keep_checkpoints a copy, step-<env steps>.pt);
        returns its path."""
        path = self.run_dir / "checkpoints" / LAST
        checkpoint.save(path, self._payload())
        if self.config["train"].get("keep_checkpoints"):
            checkpoint.atomic_write_bytes(path.parent / kept_checkpoint_name(self.env_steps), path.read_bytes())
        return path

    def log_episodes(self, episodes: list[dict]) -> None:
        """train.log_episodes: append the update's finished episodes to RUN_DIR/episodes.csv in one flushed write."""
        path = self.run_dir / EPISODES
        text = "" if path.exists() else episodes_header(self.spec.reward_names)
        text += episode_rows(episodes, self.update_index, self.env_steps)
        if not text:
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:  # one write of whole lines: a crash leaves at most a torn last line, which a resume drops
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _load(self) -> None:
        path = self.run_dir / "checkpoints" / LAST
        data = checkpoint.load(path)
        checkpoint.restore(self.learner, data["learner"], path)
        c = data["counters"]
        if self.collector.sharded:  # each shard's acting generators and battles; fresh shards if they do not fit
            saved = data.get("collector")
            if saved is not None:  # the battles' arrays as numpy; generator states stay tensors
                saved["shards"] = [None if sh is None else {**sh, "env": checkpoint.to_numpy(sh["env"])}
                                   for sh in saved["shards"]]
            self.step, _ = self.collector.restore(saved, self.config["train"]["seed"], 7919 * c["update"])
        elif data.get("env") is None or not isinstance(self.env, Resumable):
            # new episodes on a seed of their own, so a resumed run does not replay its first ones
            self.step = self.env.reset(seed=self.config["train"]["seed"] + 7919 * c["update"])
        else:
            try:
                self.step = self.env.set_state(checkpoint.to_numpy(data["env"]))
            except ValueError as err:
                raise checkpoint.CheckpointError(f"{path} does not fit this run's environments: {err}") from None
        torch.set_rng_state(data["torch_rng"])
        self.update_index, self.env_steps, self.episodes = c["update"], c["env_steps"], c["episodes"]
        if self._policy_evaluator is not None:
            self._policy_evaluator.env_steps = c.get("eval_env_steps", 0)
        self.last_eval = data.get("last_eval")
        if self.config["train"].get("log_episodes"):
            trim_episodes(self.run_dir / EPISODES, self.update_index)

    @property
    def eval_env_steps(self) -> int:
        """Transitions the learner's own evaluations took (EvaluatesPolicies), outside the budget."""
        return 0 if self._policy_evaluator is None else self._policy_evaluator.env_steps

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """Deterministic evaluation on a separate set of battles (training state is untouched)."""
        t = self.config["train"]
        if self._eval_env is None:  # several scenarios: as many battles for each as one scenario gets
            self._eval_env = build_env(self.config, min(t["eval_episodes"], 32) * max(len(self.spec.scenarios), 1))
        return evaluate(self._eval_env, self.learner, t["eval_episodes"], seed=t["seed"] + 1_000_003)

    def record_replay(self) -> Path | None:
        """Record one deterministic battle into RUN_DIR/replays/; None when the env cannot record."""
        t, r = self.config["train"], self.config["run"]
        if self._record_env is None:
            # one battle of its own, so the batched evaluation is not slowed by frame copies
            self._record_env = build_env(self.config, 1)
        if not isinstance(self._record_env, FrameSource):
            return None
        meta = {"env": r["env"], "learner": r["algo"], "env_steps": self.env_steps}
        # a new battle at each evaluation, the same one on a resumed run
        (rep,) = replay_mod.record(self._record_env, self.learner, 1, t["seed"] + 2_000_003 + self.update_index, meta)
        return replay_mod.save(rep, self.run_dir / "replays" / replay_mod.file_name(rep))

    def record_scenario_replays(self, logger: RunLogger | None = None) -> list[Path]:
        """A run of several scenarios: one deterministic battle of each, on a one-battle env of that scenario
        padded to the run's shapes; a scenario that cannot be recorded is skipped with a one-line message."""
        t, r = self.config["train"], self.config["run"]
        paths = []
        for k, member in enumerate(self.spec.scenarios):
            label = scenario_label(member)
            if label in self._scenario_record_envs and self._scenario_record_envs[label] is None:
                continue  # skipped before, and said so then
            try:
                if label not in self._scenario_record_envs:
                    self._scenario_record_envs[label] = scenario_record_env(self.config, self.spec, k)
                env = self._scenario_record_envs[label]
                meta = {"env": r["env"], "learner": r["algo"], "env_steps": self.env_steps}
                # replay_mod.record raises its one-line ReplayError for an env without frames
                (rep,) = replay_mod.record(env, self.learner, 1, t["seed"] + 2_000_003 + self.update_index, meta)
                paths.append(replay_mod.save(rep, self.run_dir / "replays" / replay_mod.file_name(rep)))
            except Exception as err:  # never a crash for a replay: say why once, and stop trying this scenario
                self._scenario_record_envs[label] = None
                if logger is not None:
                    logger.message(f"replays of {label} skipped: {error_line(err)}")
        return paths

    # ------------------------------------------------------------------ loop
    def run(self, max_updates: int | None = None, deadline: float | None = None) -> dict:
        """Train until the step budget (or max_updates more updates, or the first update that ends past `deadline`,
        a time.monotonic() value, or Ctrl-C); each way ends with a checkpoint. Returns the last eval."""
        t = self.config["train"]
        total = math.ceil(t["steps"] / self.per_update) * self.per_update  # the budget rounded up to whole updates
        with RunLogger(self.run_dir, total, self.env_steps, show_progress=self.show_progress,
                       can_win=self.spec.can_win, reward_names=self.spec.reward_names) as logger, StopSignals() as stop:
            for _ in itertools.count() if max_updates is None else range(max_updates):
                if self.env_steps >= t["steps"] or stop.requested:
                    break
                start = time.perf_counter()
                try:
                    rollout, episodes, timing = self._collect()
                except WorkersFailed as err:  # the last update's state is whole: keep it, then stop in one line
                    path = self.save()
                    raise WorkersFailed(f"{err}; checkpoint saved at {path}; continue with: marl train --resume "
                                        f"{self.run_dir}") from None
                metrics = self._update(rollout, episodes, timing)
                if t.get("log_episodes"):
                    self.log_episodes(episodes)
                sps = self.per_update / (time.perf_counter() - start)
                self._log(logger, metrics, episodes, timing, sps)
                self._evaluate(logger)
                self._checkpoint()
                for event in getattr(self.collector, "events", ()):  # a Ray worker replaced: say so under the bar
                    logger.message(event)
                getattr(self.collector, "events", []).clear()
                logger.progress(self.per_update, sps, self.last_eval)
                if deadline is not None and time.monotonic() >= deadline:
                    break
            path = self.save()
            if stop.requested:
                logger.message(f"interrupted: checkpoint saved at {path}; continue with: marl train --resume "
                               f"{self.run_dir}")
        return {"update": self.update_index, "env_steps": self.env_steps, "eval": self.last_eval,
                "interrupted": stop.requested}

    def _collect(self) -> tuple[Rollout, list[dict], dict[str, float]]:
        """One rollout from where the environments stand: (rollout, finished episodes, seconds by phase)."""
        timing: dict[str, float] = {}
        rollout, self.step, episodes = self.collector.collect(self.learner, self.step,
                                                              self.config["train"]["rollout"], timing)
        return rollout, episodes, timing

    def close(self) -> None:
        """Release what the run holds outside this process: Ray workers (and a local Ray it started), shards."""
        self.collector.close()

    def _update(self, rollout: Rollout, episodes: list[dict], timing: dict[str, float]) -> dict:
        """The learner's update on the rollout (its time into timing["update"]), then the counters advance."""
        start = time.perf_counter()
        if isinstance(self.learner, BudgetAware):  # for schedules such as CommFormer's post-stable freeze
            self.learner.set_budget_fraction(self.env_steps / self.config["train"]["steps"])
        torch.set_num_threads(self._update_threads)
        metrics = self.learner.update(rollout)
        torch.set_num_threads(self._act_threads)
        timing["update"] = time.perf_counter() - start
        self.update_index += 1
        self.env_steps += self.per_update
        self.episodes += len(episodes)
        return metrics

    def _log(self, logger: RunLogger, metrics: dict, episodes: list[dict], timing: dict[str, float],
             sps: float) -> None:
        """Every log_interval updates (and after the first): the update's scalars and the learner's diagnostics."""
        if self.update_index % self.config["train"]["log_interval"] == 0 or self.update_index == 1:
            logger.update(self.env_steps, metrics, timing, sps, episodes, self.step.info.get("lost_episodes"),
                          self.eval_env_steps if self._policy_evaluator is not None else None)
            logger.diagnostics(self.learner.diagnostics(), self.env_steps)
            if self.config["train"]["ray_workers"]:  # what worker failures cost (marl.ray_collector)
                lost = self.collector.losses
                logger.scalars({"train/ray_lost_episodes": lost["episodes"], "train/ray_lost_steps": lost["steps"],
                                "train/ray_replaced_workers": lost["replaced"],
                                **{f"perf/seconds_{k}": timing[k] for k in ("broadcast", "wait", "join")
                                   if k in timing}},
                               self.env_steps)

    def _evaluate(self, logger: RunLogger) -> None:
        """Every eval_interval updates: a deterministic evaluation, logged, and a recorded battle when asked."""
        t = self.config["train"]
        if t["eval_interval"] and self.update_index % t["eval_interval"] == 0:
            self.last_eval = self.evaluate()
            logger.evaluation(self.last_eval, self.env_steps)
            if isinstance(self.learner, GraphReporter) and isinstance(self._eval_env, PlantedGraph):
                # the graph the learner deploys against the one the game rewards (capabilities, never names)
                recall = planted_recall(self.learner.communication_graph(), self._eval_env.planted_graph())
                logger.scalars({"graph/planted_recall": recall}, self.env_steps)
            if t["record_replays"] and self.spec.scenarios:  # several scenarios: one replay of each
                for path in self.record_scenario_replays(logger):
                    logger.message(f"replay: {path} (watch it: marl replay {path})")
            elif t["record_replays"]:
                path = self.record_replay()
                if path is not None:
                    logger.message(f"replay: {path} (watch it: marl replay {path})")

    def _checkpoint(self) -> None:
        """Every checkpoint_interval updates: checkpoints/last.pt."""
        interval = self.config["train"]["checkpoint_interval"]
        if interval and self.update_index % interval == 0:
            self.save()
