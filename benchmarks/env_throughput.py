"""Env-steps per second of the embedded SMAC simulator (and JaxMARL's SMAX beside it, if installed).

Random valid actions; every step builds obs, state and avail. One process, E battles per call.

    python benchmarks/env_throughput.py --maps 3s5z 27m_vs_30m --envs 1 64 256 1024 [--smax]
    python benchmarks/env_throughput.py --maps 3s5z --envs 1 64 --cpu-time   # one thread, CPU time per step

On a shared, loaded machine the wall-clock rates swing by a third from run to run; `--cpu-time` reports
the process CPU time per env-step on one thread (best of 7 repetitions), which stays within a few percent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np
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


def cpu_time_per_step(map_name: str, n_envs: int, repeats: int = 7) -> dict:
    """Best-of-repeats process CPU microseconds per env-step of SMACBatch on one thread."""
    from marl.envs.smac import SMACBatch

    b = SMACBatch(map_name, n_envs, threads=1)
    b.seed(0)
    b.reset()
    acts = np.zeros((n_envs, b.n_agents), np.int64)
    state = np.array([12345], np.int64)
    random_valid_actions(b.avail, state, acts)
    b.step(acts)  # compile / warm up
    steps = max(200, 20000 // n_envs)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(steps):
            random_valid_actions(b.avail, state, acts)
            b.step(acts)
        best = min(best, (time.process_time() - t0) / (steps * n_envs))
    return {"map": map_name, "num_envs": n_envs, "cpu_us_per_env_step": best * 1e6}


def main(argv=None) -> None:
    """Print one JSON line per measurement."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", nargs="+", default=["3s5z", "27m_vs_30m"])
    p.add_argument("--envs", nargs="+", type=int, default=[1, 64, 256, 1024])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--smax", action="store_true", help="also measure JaxMARL SMAX (pip install -e '.[bench]')")
    p.add_argument("--cpu-time", action="store_true", help="only CPU time per env-step, one thread")
    args = p.parse_args(argv)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d")}))
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
