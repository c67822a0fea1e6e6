"""Any PettingZoo ParallelEnv as a marl VecEnv: E copies, in this process or in worker processes.

`PettingZooVecEnv(make, n_envs)` calls `make()` (a picklable zero-argument callable, such as
`EnvMaker("mpe2.simple_spread_v3", {"N": 3})`) once per copy and speaks marl's Step/EnvSpec:

- agents are `possible_agents` in order; an agent that leaves `env.agents` is dead: `alive` is
  False, its observation is zeros, only action 0 is available and its actions are not passed on;
- observations are flattened (a dict observation's "observation" entry); shorter ones are padded
  with zeros to the longest;
- action masks come from a dict observation's "action_mask" entry, else from
  `infos[agent]["action_mask"]`, else every action of the agent's Discrete space is available
  (agents with fewer actions than the largest space have the rest masked off);
- the state is `env.state()` when the environment has one, else the agents' observations joined;
- the team reward is the mean (option team_reward="sum": the sum) of the rewards the agents got
  that step; vector rewards (an environment with `reward_space(agent)`, as MO-Gymnasium and
  MOMAland declare) keep their K objectives as reward_dim = K;
- an episode ends when `env.agents` is empty; it was truncated when an agent's truncation flag was
  set on its last step, and won when `infos[agent][win_info]` was true for an agent (win_info="":
  the game has no win, and EnvSpec.can_win is False);
- copy e is seeded with seed + e on the first reset and resets itself without a seed afterwards.

With workers=W > 0 the copies run in W subprocesses (spawned, so nothing of torch or numba is
forked). A worker that dies (a crash in the environment's native code, os._exit, the OOM killer),
or hangs (does not answer a reset or step within `worker_timeout` seconds; it is then killed), is
started again: its copies begin new episodes, the episodes they were playing are lost and
counted (`lost_episodes`, `Step.info["lost_episodes"]`, and `Step.info["lost"]` marks them; they
end as truncated so a learner does not bootstrap across them), and a RuntimeWarning says so.
Building the environments in a worker is not timed, as a first build may compile kernels.
A Python exception inside the environment is not a crash: it stops training with its message.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing as mp
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import yaml
from gymnasium import spaces

from marl.spec import EnvSpec, Step, check_actions, first_step

# the adapter's own options and their defaults; any other env.KEY=VALUE goes to the environment's factory
DEFAULTS: dict[str, Any] = yaml.safe_load(resources.files("marl.configs").joinpath("envs/pettingzoo.yaml").read_text())
ADAPTER_OPTIONS = ("workers", "worker_timeout", "team_reward", "win_info", "seed")


class PettingZooError(ValueError):
    """A PettingZoo environment marl cannot use, or a bad option; the message is one line."""


class _Hung(Exception):
    """A worker gave no answer within the timeout."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_factory(target: str) -> Callable:
    """The ParallelEnv factory a `module:attr` or `module` path names (a module offers its parallel_env)."""
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise PettingZooError(f"{target!r} is not a factory path; give module:factory (mpe2:simple_spread_v3) "
                              f"or a module with a parallel_env function (mpe2.simple_spread_v3)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PettingZooError(f"cannot import {module_name!r} for {target!r}: {_first_line(err)}") from None
    obj: Any = module
    if attr:
        obj = getattr(module, attr, None)
        if obj is None:  # a submodule the package does not import itself (mpe2:simple_spread_v3)
            try:
                obj = importlib.import_module(f"{module_name}.{attr}")
            except ImportError:
                raise PettingZooError(f"{module_name!r} has no {attr!r}") from None
    if isinstance(obj, type(module)):
        if not callable(getattr(obj, "parallel_env", None)):
            raise PettingZooError(f"module {obj.__name__!r} has no parallel_env function; give module:factory")
        return obj.parallel_env
    if not callable(obj):
        raise PettingZooError(f"{target!r} is not callable; give a function or class that returns a ParallelEnv")
    return obj


@dataclass(frozen=True)
class EnvMaker:
    """A picklable recipe for one environment: a factory (or its `module:attr` path) and its kwargs."""

    target: str | Callable
    kwargs: dict = field(default_factory=dict)

    def __call__(self):
        """Build one environment."""
        factory = resolve_factory(self.target) if isinstance(self.target, str) else self.target
        try:
            return factory(**self.kwargs)
        except PettingZooError:
            raise
        except Exception as err:  # noqa: BLE001 - options the factory rejects (env.KEY=VALUE) are user input
            args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
            raise PettingZooError(f"{self.name}({args}) failed: {type(err).__name__}: {_first_line(err)}") from None

    @property
    def name(self) -> str:
        """The factory's path or name, for messages and EnvSpec.name."""
        return self.target if isinstance(self.target, str) else getattr(self.target, "__name__", repr(self.target))


@dataclass(frozen=True)
class _Layout:
    """How one environment's agents map onto marl's fixed arrays."""

    agents: tuple[str, ...]
    obs_spaces: tuple[spaces.Space, ...]  # the flattened part of each agent's observation
    dict_obs: tuple[bool, ...]  # observation is a dict with "observation" (and maybe "action_mask")
    obs_dim: int
    n_actions: int
    agent_actions: tuple[int, ...]
    has_state: bool
    state_dim: int
    reward_dim: int
    episode_limit: int

    @staticmethod
    def of(env) -> _Layout:
        """Read the layout from an environment's spaces (reset once, to learn the state's size)."""
        agents = tuple(env.possible_agents)
        if not agents:
            raise PettingZooError("the environment has no possible_agents")
        obs_spaces, dict_obs, n_acts = [], [], []
        for a in agents:
            space = env.observation_space(a)
            is_dict = isinstance(space, spaces.Dict) and "observation" in space.spaces
            obs_spaces.append(space["observation"] if is_dict else space)
            dict_obs.append(is_dict)
            act = env.action_space(a)
            if not isinstance(act, spaces.Discrete):
                raise PettingZooError(f"agent {a!r} has a {type(act).__name__} action space; marl's learners take "
                                      f"discrete actions only (spaces.Discrete)")
            n_acts.append(int(act.n))
        obs_dim = max(spaces.flatdim(s) for s in obs_spaces)
        has_state = _has_state(env)
        if has_state:
            state_space = getattr(env, "state_space", None)
            state_dim = spaces.flatdim(state_space) if state_space is not None else None
            if state_dim is None:
                env.reset(seed=0)
                state_dim = int(np.asarray(env.state()).size)
        else:
            state_dim = obs_dim * len(agents)
        reward_dim = 1
        if callable(getattr(env, "reward_space", None)):
            reward_dim = int(np.prod(env.reward_space(agents[0]).shape or (1,)))
        limit = getattr(env, "max_cycles", None) or getattr(getattr(env, "unwrapped", None), "max_cycles", None) or 0
        return _Layout(agents, tuple(obs_spaces), tuple(dict_obs), obs_dim, max(n_acts), tuple(n_acts), has_state,
                       state_dim, reward_dim, int(limit))


def _has_state(env) -> bool:
    """Whether env.state() works (the ParallelEnv base class raises NotImplementedError)."""
    try:
        env.state()
        return True
    except NotImplementedError:
        return False
    except Exception:  # noqa: BLE001 - many environments can only give a state after reset
        pass
    try:
        env.reset(seed=0)
        env.state()
        return True
    except Exception:  # noqa: BLE001 - still failing after a reset: the game gives no state
        return False


class _Copies:
    """Some copies of one environment stepped one after another into shared arrays (what a worker runs)."""

    def __init__(self, make: Callable, n: int, team_reward: str, win_info: str, layout: _Layout | None = None):
        self.envs = [make() for _ in range(n)]
        self.layout = layout or _Layout.of(self.envs[0])
        self.team_reward, self.win_info = team_reward, win_info
        L = self.layout
        self.index = {a: i for i, a in enumerate(L.agents)}
        self.dead_avail = np.zeros(L.n_actions, bool)
        self.dead_avail[0] = True  # as in SMAC: the dead can only take the no-op
        self.returns = np.zeros((n, L.reward_dim) if L.reward_dim > 1 else n)  # float64 sums, as SMAC keeps them
        self.t = np.zeros(n, np.int64)

    def reset(self, seeds: list[int | None]) -> dict[str, np.ndarray]:
        """Reset every copy with its seed; the first observations as arrays."""
        out = self._blank(len(self.envs))
        for i, env in enumerate(self.envs):
            obs, infos = env.reset(seed=seeds[i])
            self._observe(env, obs, infos, set(env.agents), out, i, "obs", "state", "avail", "alive")
        self.returns[:] = 0
        self.t[:] = 0
        out["t"] = self.t.copy()
        return out

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step every copy with int actions[n, A]; finished copies reset themselves."""
        n, L = len(self.envs), self.layout
        out = self._blank(n)
        out.update(reward=np.zeros(self.returns.shape, np.float32), done=np.zeros(n, bool),
                   truncated=np.zeros(n, bool), won=np.zeros(n, bool),
                   episode_return=np.zeros(self.returns.shape, np.float32), episode_length=np.zeros(n, np.int64),
                   final_obs=np.zeros_like(out["obs"]), final_state=np.zeros_like(out["state"]))
        for i, env in enumerate(self.envs):
            acts = {a: int(actions[i, self.index[a]]) for a in env.agents}
            obs, rewards, terminations, truncations, infos = env.step(acts)
            values = [np.asarray(r, np.float32) for r in rewards.values()]
            if values:
                stacked = np.stack(values).reshape(len(values), -1)
                r = stacked.sum(0) if self.team_reward == "sum" else stacked.mean(0)
                out["reward"][i] = r if L.reward_dim > 1 else r[0]
            self.returns[i] += out["reward"][i]
            self.t[i] += 1
            if env.agents:
                self._observe(env, obs, infos, set(env.agents), out, i, "obs", "state", "avail", "alive")
                continue
            # the episode is over: what it ended on, then a new one
            self._observe(env, obs, infos, set(obs), out, i, "final_obs", "final_state", None, None)
            out["done"][i] = True
            out["truncated"][i] = any(bool(v) for v in truncations.values())
            if self.win_info:
                out["won"][i] = any(bool(info.get(self.win_info, False)) for info in infos.values())
            out["episode_return"][i], out["episode_length"][i] = self.returns[i], self.t[i]
            self.returns[i] = 0
            self.t[i] = 0
            obs, infos = env.reset()
            self._observe(env, obs, infos, set(env.agents), out, i, "obs", "state", "avail", "alive")
        out["t"] = self.t.copy()
        return out

    def close(self) -> None:
        """Close every copy."""
        for env in self.envs:
            env.close()

    def _blank(self, n: int) -> dict[str, np.ndarray]:
        L = self.layout
        A = len(L.agents)
        return {"obs": np.zeros((n, A, L.obs_dim), np.float32), "state": np.zeros((n, L.state_dim), np.float32),
                "avail": np.zeros((n, A, L.n_actions), bool), "alive": np.zeros((n, A), bool)}

    def _observe(self, env, obs: dict, infos: dict, present: set, out: dict, i: int, obs_key: str,
                 state_key: str, avail_key: str | None, alive_key: str | None) -> None:
        """Write copy i's observations (agents in `present`), state, masks and alive flags into out."""
        L = self.layout
        for j, agent in enumerate(L.agents):
            here = agent in present and agent in obs
            if here:
                raw = obs[agent]
                mask = None
                if L.dict_obs[j]:
                    mask = raw.get("action_mask")
                    raw = raw["observation"]
                flat = np.asarray(raw, np.float32).ravel() if isinstance(L.obs_spaces[j], spaces.Box) else \
                    np.asarray(spaces.flatten(L.obs_spaces[j], raw), np.float32)
                out[obs_key][i, j, :flat.size] = flat
                if mask is None:
                    mask = (infos.get(agent) or {}).get("action_mask")
            if avail_key is None:
                continue
            if not here:
                out[avail_key][i, j] = self.dead_avail
            elif mask is None:
                out[avail_key][i, j, :L.agent_actions[j]] = True
            else:
                out[avail_key][i, j, :L.agent_actions[j]] = np.asarray(mask, bool).ravel()[:L.agent_actions[j]]
            out[alive_key][i, j] = here
        if L.has_state:
            state = np.asarray(env.state(), np.float32).ravel()
            if state.size or alive_key is not None:
                out[state_key][i] = state
            # else: a game whose state() is empty once its agents have left (momaland's beach) ends with a zero
            # final state; only a time-limit cut's final state is learned from, and such a game ends terminated
        else:
            out[state_key][i] = out[obs_key][i].ravel()


def _worker(conn, make: Callable, n: int, team_reward: str, win_info: str, layout: _Layout) -> None:
    """A worker process: build n copies, then answer reset/step/close requests until told to stop."""
    try:
        copies = _Copies(make, n, team_reward, win_info, layout)
        conn.send(("ok", None))
    except Exception as err:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(err).__name__}: {_first_line(err)}"))
        return
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the parent is gone
            return
        if command == "close":
            copies.close()
            conn.send(("ok", None))
            return
        try:
            result = copies.reset(payload) if command == "reset" else copies.step(payload)
        except Exception as err:  # noqa: BLE001
            conn.send(("error", f"{type(err).__name__}: {_first_line(err)}"))
            continue
        conn.send(("ok", result))


class _Worker:
    """The parent's handle on one worker process and the slice of copies it holds."""

    def __init__(self, ctx, make: Callable, lo: int, hi: int, team_reward: str, win_info: str, layout: _Layout):
        self.lo, self.hi = lo, hi
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, make, hi - lo, team_reward, win_info, layout),
                                   daemon=True)
        self.process.start()
        child.close()

    def request(self, command: str, payload: Any) -> None:
        """Send a request (a dead worker is noticed when the answer is read)."""
        try:
            self.conn.send((command, payload))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass

    def answer(self, timeout: float | None = None) -> Any:
        """The answer to the last request; raises EOFError when the worker died, _Hung after `timeout` seconds."""
        try:
            if timeout is not None and not self.conn.poll(timeout):
                raise _Hung
            status, result = self.conn.recv()
        except (ConnectionResetError, BrokenPipeError, OSError) as err:
            raise EOFError(str(err)) from None
        if status == "error":
            raise RuntimeError(result)
        return result

    def stop(self) -> None:
        """End the worker (politely if it still answers)."""
        self.request("close", None)
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class PettingZooVecEnv:
    """E copies of a PettingZoo ParallelEnv as a marl VecEnv (arrays in and out, auto-reset)."""

    def __init__(self, make: Callable, n_envs: int = 1, workers: int = 0, team_reward: str = "mean",
                 win_info: str = "", seed: int | None = None, name: str = "",
                 worker_timeout: float = DEFAULTS["worker_timeout"]):
        if not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise PettingZooError(f"n_envs must be a positive integer, got {n_envs!r}")
        if not isinstance(workers, (int, np.integer)) or workers < 0:
            raise PettingZooError(f"workers must be 0 (in this process) or a positive number, got {workers!r}")
        if (isinstance(worker_timeout, bool) or not isinstance(worker_timeout, (int, float, np.integer, np.floating))
                or not math.isfinite(worker_timeout) or worker_timeout <= 0):
            raise PettingZooError(f"worker_timeout must be a positive number of seconds, got {worker_timeout!r}")
        self.worker_timeout = float(worker_timeout)
        if team_reward not in ("mean", "sum"):
            raise PettingZooError(f"team_reward must be 'mean' or 'sum', got {team_reward!r}")
        self.make, self.n_envs, self._seed = make, int(n_envs), seed
        self.team_reward, self.win_info = team_reward, str(win_info or "")
        self.worker_timeout = float(worker_timeout)  # env.worker_timeout: the hung-worker detection reads it
        self.lost_episodes = 0
        self._restarts = 0
        self._local: _Copies | None = None
        self._workers: list[_Worker] = []
        if workers == 0:
            self._local = _Copies(make, self.n_envs, team_reward, self.win_info)
            layout = self._local.layout
        else:
            probe = make()
            try:
                layout = _Layout.of(probe)
            finally:
                probe.close()
            self._ctx = mp.get_context("spawn")
            bounds = np.linspace(0, self.n_envs, min(int(workers), self.n_envs) + 1).astype(int)
            self._workers = [_Worker(self._ctx, make, lo, hi, team_reward, self.win_info, layout)
                             for lo, hi in zip(bounds[:-1], bounds[1:])]
            for w in self._workers:
                try:
                    w.answer()
                except (EOFError, RuntimeError) as err:
                    self.close()
                    raise PettingZooError(f"a worker could not build the environment: {_first_line(err)}") from None
        self.layout = layout
        names = getattr(make, "name", "") if not name else name
        self.spec = EnvSpec(n_agents=len(layout.agents), obs_dim=layout.obs_dim, state_dim=layout.state_dim,
                            n_actions=layout.n_actions, episode_limit=layout.episode_limit, agent_names=layout.agents,
                            reward_dim=layout.reward_dim,
                            reward_names=("reward",) if layout.reward_dim == 1 else
                            tuple(f"objective_{k}" for k in range(layout.reward_dim)),
                            can_win=bool(self.win_info), name=names or "pettingzoo")
        self._last: dict[str, np.ndarray] | None = None

    def _seeds(self, lo: int, hi: int, seed: int | None) -> list[int | None]:
        return [None if seed is None else int(seed) + e for e in range(lo, hi)]

    def reset(self, seed: int | None = None) -> Step:
        """Reset every copy; copy e is seeded with seed + e (None: fresh entropy)."""
        seed = self._seed if seed is None else seed
        self._base_seed = seed
        if self._local is not None:
            parts = [self._local.reset(self._seeds(0, self.n_envs, seed))]
        else:
            for w in self._workers:
                w.request("reset", self._seeds(w.lo, w.hi, seed))
            parts = [self._answer(w, lost=None) for w in self._workers]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        step = first_step(out["obs"], out["state"], out["avail"], out["alive"], out["t"], self.spec.reward_dim,
                          info={"lost": np.zeros(self.n_envs, bool), "lost_episodes": self.lost_episodes})
        self._last = {"obs": step.obs, "state": step.state}
        return step

    def step(self, actions: np.ndarray) -> Step:
        """Step every copy with int actions[E, A]; finished copies restart at once."""
        if self._last is None:
            raise PettingZooError("step() called before reset()")
        actions = check_actions(actions, self.n_envs, self.spec.n_agents, PettingZooError)
        lost = np.zeros(self.n_envs, bool)
        if self._local is not None:
            parts = [self._local.step(actions)]
        else:
            for w in self._workers:
                w.request("step", actions[w.lo:w.hi])
            parts = [self._answer(w, lost) for w in self._workers]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        step = Step(**out, info={"lost": lost, "lost_episodes": self.lost_episodes})
        self._last = {"obs": step.obs, "state": step.state}
        return step

    def _answer(self, w: _Worker, lost: np.ndarray | None) -> dict[str, np.ndarray]:
        """A worker's answer; a dead or hung worker is restarted and its copies' episodes are counted as lost."""
        try:
            return w.answer(self.worker_timeout)
        except RuntimeError as err:
            raise PettingZooError(f"the environment failed in a worker: {err}") from None
        except EOFError:
            # the pipe closes a moment before the process can be reaped: wait for its exit code
            w.process.join(timeout=5)
            what = f"died (exit code {w.process.exitcode})"
        except _Hung:
            w.process.kill()  # it may be stuck in native code, where nothing else reaches it
            w.process.join()
            what = f"hung (no answer within {self.worker_timeout:g} s) and was killed"
        w.stop()
        self._restarts += 1
        n = w.hi - w.lo
        fresh = _Worker(self._ctx, self.make, w.lo, w.hi, self.team_reward, self.win_info, self.layout)
        self._workers[self._workers.index(w)] = fresh
        try:
            fresh.answer()
        except (EOFError, RuntimeError) as err:
            raise PettingZooError(f"a restarted worker could not build the environment: {_first_line(err)}") from None
        base = getattr(self, "_base_seed", None)
        # new seeds, so a crash caused by one episode's randomness is not replayed at once
        fresh.request("reset", [None if base is None else base + e + 1_000_003 * self._restarts
                                for e in range(w.lo, w.hi)])
        try:
            out = fresh.answer(self.worker_timeout)
        except (EOFError, RuntimeError) as err:
            raise PettingZooError(f"a restarted worker could not reset the environment: {_first_line(err)}") from None
        except _Hung:
            fresh.process.kill()
            raise PettingZooError(f"a restarted worker did not reset the environment within worker_timeout="
                                  f"{self.worker_timeout:g} s") from None
        if lost is None:  # died during reset: nothing was under way
            return out
        self.lost_episodes += n
        lost[w.lo:w.hi] = True
        warnings.warn(f"pettingzoo worker for envs {w.lo}-{w.hi - 1} {what}; restarted it, "
                      f"{n} episode(s) in progress lost ({self.lost_episodes} so far)", RuntimeWarning, stacklevel=3)
        shape = (n, self.spec.reward_dim) if self.spec.reward_dim > 1 else (n,)
        # the lost episodes end as truncated on the last observation seen, so nothing is learnt across them
        out.update(reward=np.zeros(shape, np.float32), done=np.ones(n, bool), truncated=np.ones(n, bool),
                   won=np.zeros(n, bool), episode_return=np.zeros(shape, np.float32),
                   episode_length=np.zeros(n, np.int64), final_obs=self._last["obs"][w.lo:w.hi].copy(),
                   final_state=self._last["state"][w.lo:w.hi].copy())
        return out

    def close(self) -> None:
        """Close the copies and stop the workers."""
        if self._local is not None:
            self._local.close()
            self._local = None
        for w in self._workers:
            w.stop()
        self._workers = []


def split_options(options: dict) -> tuple[dict, dict]:
    """(adapter options with defaults filled in, the rest: the factory's kwargs)."""
    adapter = {k: options.get(k, DEFAULTS.get(k)) for k in ADAPTER_OPTIONS}
    kwargs = {k: v for k, v in options.items() if k not in ADAPTER_OPTIONS}
    return adapter, kwargs


def make_vec_env(target: str | Callable, n_envs: int, options: dict, name: str = "") -> PettingZooVecEnv:
    """A PettingZooVecEnv of a factory (or its path) from marl's env options: adapter options, the rest kwargs."""
    adapter, kwargs = split_options(options)
    return PettingZooVecEnv(EnvMaker(target, kwargs), n_envs, name=name, **adapter)


def make_pettingzoo(scenario: str | None, n_envs: int, options: dict) -> PettingZooVecEnv:
    """`marl train pettingzoo module:factory` (or a module with parallel_env) with env.KEY=VALUE as kwargs."""
    if not scenario:
        raise PettingZooError("pettingzoo needs a factory path, e.g. `marl train pettingzoo mpe2:simple_spread_v3` "
                              "or `marl train pettingzoo mpe2.simple_spread_v3`")
    resolve_factory(scenario)  # a bad path fails here, in this process, with its one-line message
    return make_vec_env(scenario, n_envs, options, name=f"pettingzoo:{scenario}")


MPE_HINT = "marl train mpe needs the mpe2 package: pip install mpe2"


def mpe_games() -> dict[str, str]:
    """mpe2's games: short name (simple_spread) -> module (mpe2.simple_spread_v3); empty without mpe2."""
    import pkgutil

    try:
        import mpe2
    except ImportError:
        return {}
    games = {}
    for m in pkgutil.iter_modules(mpe2.__path__):
        base, sep, version = m.name.rpartition("_v")
        if sep and version.isdigit() and not m.name.startswith("_"):
            games[base] = f"mpe2.{m.name}"
    return dict(sorted(games.items()))


def make_mpe(scenario: str | None, n_envs: int, options: dict) -> PettingZooVecEnv:
    """`marl train mpe simple_spread`: an mpe2 game by its short (or versioned) name."""
    games = mpe_games()
    if not games:
        raise PettingZooError(MPE_HINT)
    if not scenario:
        raise PettingZooError(f"mpe needs a game, e.g. `marl train mpe simple_spread`; games: {', '.join(games)}")
    short = scenario.rpartition("_v")[0] if scenario.rpartition("_v")[2].isdigit() else scenario
    if short not in games:
        import difflib

        close = difflib.get_close_matches(short, list(games), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise PettingZooError(f"unknown mpe game {scenario!r}{hint}; games: {', '.join(games)}")
    return make_vec_env(games[short], n_envs, options, name=f"mpe:{games[short].split('.')[1]}")


def pettingzoo_plugin(factory: Callable, description: str = "", scenarios: dict[str, dict] | None = None):
    """An EnvPlugin (for a package's marl.envs entry point) that trains a ParallelEnv factory.

    `scenarios` names sets of factory kwargs (`marl train NAME SCENARIO`); no scenario means the
    factory's defaults. env.KEY=VALUE overrides add kwargs, and the adapter's options (workers,
    worker_timeout, team_reward, win_info, seed) apply as for `marl train pettingzoo`.
    """
    from marl.registry import EnvPlugin

    presets = dict(scenarios or {})

    def make(scenario: str | None, n_envs: int, options: dict) -> PettingZooVecEnv:
        """E copies of the game with the scenario's kwargs, then the run's env options."""
        if scenario is not None and scenario not in presets:
            import difflib

            close = difflib.get_close_matches(scenario, list(presets), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise PettingZooError(f"unknown scenario {scenario!r}{hint}; scenarios: {', '.join(presets) or 'none'}")
        kwargs = {**presets.get(scenario, {}), **options}
        label = getattr(factory, "__name__", "env")
        return make_vec_env(factory, n_envs, kwargs, name=f"{label}:{scenario}" if scenario else label)

    return EnvPlugin(make, description, tuple(presets))
