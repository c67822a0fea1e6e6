"""Env-steps per second of the embedded SMAC simulator (and JaxMARL's SMAX beside it, if installed).

Random valid actions; every step builds obs, state and avail. One process, E battles per call.

    python benchmarks/env_throughput.py --maps 3s5z 27m_vs_30m --envs 1 64 256 1024 [--smax]
    python benchmarks/env_throughput.py --maps 3s5z --envs 1 64 --cpu-time   # one thread, CPU time per step
    python benchmarks/env_throughput.py --maps 3s5z --envs 1 64 --cpu-time --against c3124af  # A/B vs a revision
    python benchmarks/env_throughput.py --maps 3s5z --envs 8 --cpu-time --against HEAD --option turning=true
        # an env option on (this checkout) against off (HEAD's simulator, its defaults)
    python benchmarks/env_throughput.py --maps 3s5z --envs 8 --cpu-time --against HEAD --option weapon_delay=true \
        --against-option weapon_delay=true   # a change to an option's rule: the option on, on both sides

On a shared, loaded machine the wall-clock rates swing by a third from run to run; `--cpu-time` reports
the process CPU time per env-step on one thread (best of 7 repetitions), which stays within a few percent.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import time

import numpy as np
import yaml
from numba import njit

from marl.envs.smac import SMACEnv, SMACVecEnv


@njit(cache=True)
def random_valid_actions(avail, seed_state, out):
    """Uniform random available action per agent (numba, so sampling does not dominate)."""
    E, A, K = avail.shape
    s = seed_state[0]
    for e in range(E):
        for a in range(A):
            n = 0
            for k in range(K):
                n += avail[e, a, k]
            s = (s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFF
            pick = (s >> 16) % n
            for k in range(K):
                if avail[e, a, k]:
                    if pick == 0:
                        out[e, a] = k
                        break
                    pick -= 1
    seed_state[0] = s


def vec_throughput(map_name: str, n_envs: int, seconds: float = 3.0) -> dict:
    """Env-steps/s of SMACVecEnv with E = n_envs and random valid actions."""
    env = SMACVecEnv(map_name, n_envs)
    step = env.reset(seed=0)
    acts = np.zeros((n_envs, env.spec.n_agents), np.int64)
    state = np.array([12345], np.int64)
    random_valid_actions(step.avail, state, acts)
    step = env.step(acts)  # compile / warm up
    n, episodes = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        random_valid_actions(step.avail, state, acts)
        step = env.step(acts)
        episodes += int(step.done.sum())
        n += 1
    dt = time.perf_counter() - t0
    return {"map": map_name, "num_envs": n_envs, "env_steps_per_s": n * n_envs / dt, "episodes": episodes}


def single_throughput(map_name: str, seconds: float = 3.0) -> dict:
    """Steps/s of the SMAC-API SMACEnv, one battle, Python calls as pymarl makes them."""
    env = SMACEnv(map_name, seed=0)
    env.reset()
    env.step([1] * env.n_agents)  # compile / warm up
    env.reset()
    rng = np.random.default_rng(0)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        avail = np.asarray(env.get_avail_actions(), bool)
        acts = (rng.random(avail.shape) * avail).argmax(-1)
        env.get_obs()
        env.get_state()
        _, done, _ = env.step(acts)
        n += 1
        if done:
            env.reset()
    return {"map": map_name, "smacenv_steps_per_s": n / (time.perf_counter() - t0)}


class _CpuTimer:
    """E battles of one map on one thread, stepped with random valid actions, timed in process CPU time."""

    def __init__(self, batch_cls, map_name: str, n_envs: int, **options):
        self.b = batch_cls(map_name, n_envs, threads=1, **options)
        self.b.seed(0)
        self.b.reset()
        self.acts = np.zeros((n_envs, self.b.n_agents), np.int64)
        self.state = np.array([12345], np.int64)
        random_valid_actions(self.b.avail, self.state, self.acts)
        self.b.step(self.acts)  # compile / warm up
        self.steps = max(200, 20000 // n_envs)

    def best_us(self, repeats: int) -> float:
        """Best of `repeats` runs of CPU microseconds per env-step."""
        best = float("inf")
        for _ in range(repeats):
            t0 = time.process_time()
            for _ in range(self.steps):
                random_valid_actions(self.b.avail, self.state, self.acts)
                self.b.step(self.acts)
            best = min(best, (time.process_time() - t0) / (self.steps * self.b.n_envs))
        return best * 1e6


def cpu_time_per_step(map_name: str, n_envs: int, repeats: int = 7) -> dict:
    """Best-of-repeats process CPU microseconds per env-step of SMACBatch on one thread."""
    from marl.envs.smac import SMACBatch

    return {"map": map_name, "num_envs": n_envs,
            "cpu_us_per_env_step": _CpuTimer(SMACBatch, map_name, n_envs).best_us(repeats)}


@functools.cache
def baseline_batch(rev: str):
    """SMACBatch of envs/smac as of git revision `rev`, imported beside this checkout's as `smac_baseline`."""
    import importlib
    import subprocess
    import tarfile
    import tempfile
    from io import BytesIO

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tar = subprocess.run(["git", "-C", root, "archive", rev, "envs/smac"], capture_output=True, check=True).stdout
    tmp = tempfile.mkdtemp(prefix="smac_baseline_")
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(tmp, filter="data")
    os.rename(os.path.join(tmp, "envs", "smac"), os.path.join(tmp, "smac_baseline"))
    sys.path.insert(0, tmp)
    return importlib.import_module("smac_baseline").SMACBatch


def cpu_time_against(rev: str, map_name: str, n_envs: int, rounds: int = 6, repeats: int = 3,
                     options: dict | None = None, against_options: dict | None = None) -> dict:
    """CPU time per env-step of this checkout's simulator (with the env `options`) and of revision `rev`'s (with
    `against_options`; by default its defaults), A/B/B/A in one process.

    The rounds alternate which goes first, so that a load that comes and goes on a shared machine hits both;
    the ratios (new / old) of the rounds give the spread.
    """
    from marl.envs.smac import SMACBatch

    timers = {"old": _CpuTimer(baseline_batch(rev), map_name, n_envs, **(against_options or {})),
              "new": _CpuTimer(SMACBatch, map_name, n_envs, **(options or {}))}
    for t in timers.values():
        t.best_us(1)  # warm caches and clocks before the first measured round
    us: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(rounds):
        for k in ("old", "new") if r % 2 == 0 else ("new", "old"):
            us[k].append(timers[k].best_us(repeats))
    ratio = np.array(us["new"]) / np.array(us["old"])
    return {"map": map_name, "num_envs": n_envs, "against": rev, "options": options or {},
            "against_options": against_options or {},
            "old_cpu_us": [round(x, 2) for x in us["old"]],
            "new_cpu_us": [round(x, 2) for x in us["new"]], "ratio_median": round(float(np.median(ratio)), 4),
            "ratio_min": round(float(ratio.min()), 4), "ratio_max": round(float(ratio.max()), 4),
            "ratio_of_bests": round(min(us["new"]) / min(us["old"]), 4)}


def main(argv=None) -> None:
    """Print one JSON line per measurement."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", nargs="+", default=["3s5z", "27m_vs_30m"])
    p.add_argument("--envs", nargs="+", type=int, default=[1, 64, 256, 1024])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--smax", action="store_true", help="also measure JaxMARL SMAX (pip install -e '.[bench]')")
    p.add_argument("--cpu-time", action="store_true", help="only CPU time per env-step, one thread")
    p.add_argument("--against", metavar="REV", help="with --cpu-time: A/B against envs/smac of this git revision")
    p.add_argument("--rounds", type=int, default=6, help="A/B rounds with --against")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="with --against: an env option of this checkout's side (repeatable; YAML values)")
    p.add_argument("--against-option", action="append", default=[], metavar="KEY=VALUE",
                   help="with --against: an env option of the revision's side (repeatable; YAML values)")
    args = p.parse_args(argv)
    options, against_options = {}, {}
    for flag, items, into in (("--option", args.option, options),
                              ("--against-option", args.against_option, against_options)):
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                p.error(f"{flag} takes KEY=VALUE, got {item!r}")
            into[key] = yaml.safe_load(value)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d")}))
    if args.cpu_time and args.against:
        for m in args.maps:
            for e in args.envs:
                print(json.dumps(cpu_time_against(args.against, m, e, args.rounds, options=options,
                                                  against_options=against_options)), flush=True)
        return
    if args.cpu_time:
        for m in args.maps:
            for e in args.envs:
                print(json.dumps(cpu_time_per_step(m, e)), flush=True)
        return
    for m in args.maps:
        print(json.dumps(single_throughput(m, args.seconds)))
        for e in args.envs:
            r = vec_throughput(m, e, args.seconds)
            r["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if args.smax:
                sys.path.insert(0, os.path.dirname(__file__))
                from smax import smax_throughput

                s = smax_throughput(m, e, steps=200 if e <= 256 else 50)
                r["smax_env_steps_per_s"] = s["env_steps_per_s"]
                r["ratio_vs_smax"] = r["env_steps_per_s"] / s["env_steps_per_s"]
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
