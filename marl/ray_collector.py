"""Rollout workers on Ray: `marl train ... --ray-workers N [--address HOST:PORT]` (train.ray_workers, ray_address).

Ray core only (no RLlib): each worker is an actor that owns one `marl.collectors.Shard`, a contiguous shard
of the E battles built inside the actor (never pickled from the driver) with a CPU copy of the learner.
Once per update the driver puts the learner's acting state in the object store with one `ray.put`; every
worker loads it and collects T steps; the results are joined in shard order (marl.collectors), so a run
with N workers is bit-identical to an in-process run with `train.act_chunks N`.

Faults. Workers are made with max_restarts=0 and max_task_retries=0: Ray's own retry would re-run a
rollout on a restarted actor and hide the loss. The driver waits for each shard until
`train.ray_worker_timeout` seconds after the update's start; a worker that died (RayActorError) or did
not answer (GetTimeoutError: hung) is killed and replaced by a fresh one on a new seed stream
(seed, shard, incarnation), which collects that shard again. The episodes under way on the lost shard
and their steps are counted (train/ray_lost_episodes, train/ray_lost_steps, train/ray_replaced_workers).
More than `train.ray_max_failures` failures in a run: the trainer checkpoints and stops with a one-line
error naming the failing worker's node.

Connecting. Without an address a local Ray is started (no dashboard, object store sized from the
rollout's bytes) and shut down at the end. With `--address HOST:PORT` (or RAY_ADDRESS) the driver joins
that cluster; when a token is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and
RAY_AUTH_MODE is unset, it is set to `token`, without which a driver loops on InvalidAuthToken against a
cluster that requires it (Ray 2.59+ turns token auth on for clusters it starts).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np

from marl.collectors import CollectorError, Shard, ShardedCollector, WorkersFailed

RAY_EXTRA = 'pip install -e ".[ray]" (ray==2.60.0)'
MIN_OBJECT_STORE = 80 * 2**20  # Ray refuses less than 75 MiB


def import_ray():
    """The ray module, or a one-line CollectorError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise CollectorError(f"train.ray_workers needs Ray, which is not installed; install the extra: {RAY_EXTRA}"
                             ) from None
    return ray


def rollout_bytes(spec, n_envs: int, steps: int) -> int:
    """Bytes of one update's Rollout of n_envs battles (observations, states, masks, actions, rewards; extras
    and events guessed as as much again as the log-probs and values)."""
    A = spec.n_agents
    per_step = (A * spec.obs_dim * 4 + spec.state_dim * 4 + A * spec.n_actions + A + A * 8 + 4 * spec.reward_dim + 2
                + A * 4 * 2)
    return int(steps * n_envs * per_step)


def object_store_bytes(spec, n_envs: int, steps: int) -> int:
    """The object store a local Ray gets: room for three updates' rollouts (the workers' results, the copies being
    joined, one spare), at least Ray's minimum."""
    return max(MIN_OBJECT_STORE, 3 * rollout_bytes(spec, n_envs, steps))


def _token_at_hand() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def _answers(address: str, timeout: float) -> bool:
    """Whether a TCP connection to HOST:PORT opens within `timeout` seconds."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise CollectorError(f"--address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379, the head's "
                             f"`ray start --head --port 6379`)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def token_auth(address: str | None) -> None:
    """Before Ray is imported (it reads RAY_AUTH_MODE then): to join a cluster with a token at hand and
    RAY_AUTH_MODE unset, set it to `token`, without which the driver is refused (InvalidAuthToken)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address not in ("local", "auto") and "RAY_AUTH_MODE" not in os.environ and _token_at_hand():
        os.environ["RAY_AUTH_MODE"] = "token"


def connect(address: str | None, *, object_store: int, timeout: float) -> bool:
    """Join the Ray cluster at `address` (or RAY_ADDRESS), or start a local one; True when this call started Ray
    (and so shuts it down). A Ray already initialised in this process is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address not in ("local", "auto"):
        if not _answers(address, timeout):
            raise CollectorError(f"no Ray cluster answers at {address} within {timeout:g} s (train.ray_connect_timeout)"
                                 f"; start one with `ray start --head --port {address.rpartition(':')[2]}` on that "
                                 f"machine, or train without --address for a local Ray")
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ray.exceptions.RayError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CollectorError(f"could not join the Ray cluster at {address}: {first}; a cluster that requires a "
                                 f"token needs it here too (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
                                 ) from None
    else:
        ray.init(address="local", include_dashboard=False, object_store_memory=object_store, log_to_driver=False,
                 configure_logging=False)
    return True


def _on_cpu(obj):
    """A state with every tensor on the CPU: a GPU learner's weights unpickle on workers without a GPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def _cause(err) -> BaseException:
    """The exception a worker's own code raised (a one-line ValueError stays one line), not Ray's wrapper."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


class RolloutWorker:
    """The actor: one Shard of the battles, built here, with torch's and numba's threads set from its CPUs."""

    def __init__(self, config: dict, index: int, offset: int, n_envs: int, total: int, incarnation: int,
                 reseed: int, threads: int):
        import numba
        import torch

        torch.set_num_threads(threads)  # numba ignores OMP_NUM_THREADS: it is told here too
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        self.shard = Shard(config, index, offset, n_envs, total, incarnation, reseed)
        self._fault: tuple[str, int] | None = None

    def hello(self) -> tuple:
        """(its node's address, its pid, its shard's Step, its env spec): asked once, when it starts."""
        import ray

        return ray.util.get_node_ip_address(), os.getpid(), self.shard.step, self.shard.spec

    def collect(self, policy, whole: bool, steps: int):
        """Shard.collect with the policy the driver put in the object store."""
        return self.shard.collect(policy, whole, steps)

    def state(self) -> dict:
        """Shard.state: its acting generators and per-battle state, its battles."""
        return self.shard.state()

    def restore(self, state: dict):
        """Shard.restore."""
        return self.shard.restore(state)

    def inject_fault(self, kind: str, at_step: int) -> None:
        """For tests and drills: at its at_step-th env step from now, die (`exit`: os._exit) or hang (`hang`)."""
        env_step, count = self.shard.env.step, [0]

        def faulty(actions):
            count[0] += 1
            if count[0] == at_step:
                if kind == "exit":
                    os._exit(1)
                time.sleep(3600)
            return env_step(actions)

        self.shard.env.step = faulty


class RayCollector(ShardedCollector):
    """ShardedCollector whose shards are Ray actors collecting at once, replaced when they die or hang."""

    def __init__(self, config: dict, n_shards: int, spec, warm=None):
        super().__init__(config, n_shards, spec)
        t = config["train"]
        self.cpus = float(t["ray_worker_cpus"])
        self.timeout = float(t["ray_worker_timeout"])
        self.start_timeout = float(t["ray_start_timeout"])
        self.max_failures = int(t["ray_max_failures"])
        self.failures = 0
        self.nodes: list[str] = [""] * n_shards
        self.pids: list[int] = [0] * n_shards
        token_auth(t["ray_address"] or None)
        self.ray = import_ray()
        if warm is not None:
            warm()  # compile (or load) numba's kernels once here, so the workers find them in the cache
        self._started = connect(t["ray_address"] or None, object_store=object_store_bytes(
            spec, t["envs"], t["rollout"]), timeout=float(t["ray_connect_timeout"]))
        try:
            self._check_cpus()
        except CollectorError:
            self.close()
            raise
        self._actor = self.ray.remote(num_cpus=self.cpus, max_restarts=0, max_task_retries=0,
                                      scheduling_strategy="SPREAD")(RolloutWorker)

    def _check_cpus(self) -> None:
        free = float(self.ray.available_resources().get("CPU", 0.0))
        need = self.n_shards * self.cpus
        if need > free + 1e-9:
            raise CollectorError(f"{self.n_shards} Ray workers need {need:g} CPUs (train.ray_worker_cpus "
                                 f"{self.cpus:g} each) but the cluster has {free:g} free; use at most "
                                 f"{int(free // self.cpus)} workers, a smaller train.ray_worker_cpus, or more machines")

    # -------------------------------------------------------------- shards as actors
    def _make(self, index: int):
        offset, size = self.bounds[index]
        threads = max(1, int(self.cpus))
        return self._actor.remote(self.config, index, offset, size, self.total, self.incarnations[index],
                                  self.reseed, threads)

    def _hello(self, index: int, worker) -> tuple:
        node, pid, step, spec = self.ray.get(worker.hello.remote(), timeout=self.start_timeout)
        self.nodes[index], self.pids[index] = node, pid
        return step, spec

    def _start_shards(self):
        self.shards = [self._make(k) for k in range(self.n_shards)]
        steps, specs = [], []
        for k in range(self.n_shards):
            step, spec = self._get_or_replace(k, lambda k=k: self._hello(k, self.shards[k]))
            steps.append(step)
            specs.append(spec)
        self._check_specs(specs)
        self.events.append(f"ray: {self.n_shards} workers: " + ", ".join(
            f"shard {k} on {node} (pid {pid})" for k, (node, pid) in enumerate(zip(self.nodes, self.pids))))
        return steps

    def _get_or_replace(self, k: int, fetch):
        """fetch() for shard k; while its worker dies or hangs, replace it (counting the failure) and fetch again."""
        ray = self.ray
        while True:
            try:
                return fetch()
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                self._replace(k, "did not answer in time (train.ray_start_timeout, ray_worker_timeout)"
                              if isinstance(err, ray.exceptions.GetTimeoutError) else "died")
            except ray.exceptions.RayTaskError as err:  # an error of marl's own inside the worker: say it as it is
                raise _cause(err) from None

    def _replace(self, k: int, why: str) -> None:
        """Count shard k's failure, kill its worker, start a fresh one on the next seed stream of that shard."""
        self.failures += 1
        node = self.nodes[k] or "an unknown node"
        offset, size = self.bounds[k]
        if self.step is not None:  # the episodes under way on the shard never finish
            t = np.asarray(self.step.t[offset: offset + size])
            self.losses["episodes"] += int((t > 0).sum())
            self.losses["steps"] += int(t.sum())
        self.losses["replaced"] += 1
        try:
            self.ray.kill(self.shards[k], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone with its node; nothing more to stop
            pass
        if self.failures > self.max_failures:
            raise WorkersFailed(f"Ray worker {k} (battles {offset}..{offset + size - 1}) on node {node} {why}; "
                                f"{self.failures} worker failures in this run exceed train.ray_max_failures "
                                f"{self.max_failures}")
        self.incarnations[k] += 1
        self.events.append(f"ray: worker {k} on {node} {why}; replaced (incarnation {self.incarnations[k]}), its "
                           f"shard collected again")
        self.shards[k] = self._make(k)

    def _collect_all(self, policy, whole: bool, steps: int) -> list[tuple]:
        ray = self.ray
        start = time.perf_counter()
        ref = ray.put(_on_cpu(policy))  # one copy in the object store, read by every worker (CPU-only ones too)
        self.broadcast_seconds = time.perf_counter() - start
        refs = [w.collect.remote(ref, whole, steps) for w in self.shards]
        deadline = time.perf_counter() + self.timeout
        results: list = [None] * self.n_shards
        for k in range(self.n_shards):  # in shard order; one deadline for all
            def again(k=k):  # after a replacement the new worker starts, then collects the shard again
                self._hello(k, self.shards[k])
                return ray.get(self.shards[k].collect.remote(ref, whole, steps), timeout=self.timeout)

            try:
                results[k] = ray.get(refs[k], timeout=max(0.0, deadline - time.perf_counter()))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                self._replace(k, "did not answer within train.ray_worker_timeout"
                              if isinstance(err, ray.exceptions.GetTimeoutError) else "died")
                results[k] = self._get_or_replace(k, again)
            except ray.exceptions.RayTaskError as err:
                raise _cause(err) from None
        self.wait_seconds = time.perf_counter() - start - self.broadcast_seconds
        return results

    def collect(self, learner, step, steps, timing):
        """ShardedCollector.collect on the workers; the broadcast's and the wait's seconds into timing too."""
        out = super().collect(learner, step, steps, timing)
        timing["broadcast"] = self.broadcast_seconds
        timing["wait"] = self.wait_seconds
        return out

    def _states(self) -> list[dict | None]:
        out = []
        for w in self.shards:
            try:
                out.append(self.ray.get(w.state.remote(), timeout=self.timeout))
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError):
                out.append(None)  # lost: a resumed run starts this shard afresh
        return out

    def _restore_all(self, states):
        steps = []
        for k, (w, st) in enumerate(zip(self.shards, states)):
            if st is None:
                steps.append(self._get_or_replace(k, lambda k=k: self._hello(k, self.shards[k])[0]))
            else:
                steps.append(self._get_or_replace(k, lambda w=w, st=st: self.ray.get(w.restore.remote(st),
                                                                                     timeout=self.timeout)))
        return steps

    def close(self) -> None:
        """Stop the workers, and the local Ray this run started (never a cluster it joined)."""
        for w in self.shards:
            try:
                self.ray.kill(w, no_restart=True)
            except Exception:  # noqa: BLE001 - a worker lost with its node is gone already
                pass
        self.shards = []
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False
