"""What Ray rollout workers cost per update, and the memory of Ray's daemons and workers (BENCHMARKS.md).

    python benchmarks/ray_overhead.py --algos commformer mappo --envs 32 256 --workers 1 2 --rollout 20

For each (learner, E, W): a 3s5z run with W Ray workers (one torch thread each, train.ray_worker_cpus 1),
one warm-up update, then `--updates` measured updates, each phase's fastest kept (other jobs on a shared
machine only ever slow a phase down). Per update: the broadcast (ray.put of the acting
state), the wait (from submitting the collects to holding every result), the slowest shard's own
collection time (measured inside its worker), the transfer (wait minus that), the join, and the update.
Memory: resident set of each worker and of Ray's own processes (raylet, GCS, monitors, idle workers).
Prints one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def rss_mb(pid: int) -> float:
    """Resident set of a process in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every process below pid (local Ray's daemons are the driver's children)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def measure(algo: str, envs: int, workers: int, rollout: int, updates: int, tmp: Path) -> dict:
    """One configuration's per-update seconds and memory."""
    import numpy as np

    from marl import config as config_mod
    from marl.trainer import Trainer

    cfg = config_mod.load("smac", "3s5z", algo, [
        f"train.envs={envs}", f"train.rollout={rollout}", "train.eval_interval=0", "train.record_replays=false",
        "train.checkpoint_interval=0", "train.torch_threads=1", "train.update_threads=1",
        f"train.ray_workers={workers}", "train.ray_worker_cpus=1", f"train.runs_dir={tmp}", "train.steps=100000000"])
    tr = Trainer(cfg, tmp / f"{algo}-{envs}-{workers}", show_progress=False)
    rows = []
    try:
        for k in range(updates + 1):
            timing: dict = {}
            start = time.perf_counter()
            rollout_, tr.step, episodes = tr.collector.collect(tr.learner, tr.step, rollout, timing)
            collected = time.perf_counter() - start
            tr._update(rollout_, episodes, timing)
            if k:  # the first update warms torch and the workers' caches
                rows.append({"broadcast": timing["broadcast"], "wait": timing["wait"],
                             "shard_collect": timing["shard_collect"],
                             "transfer": timing["wait"] - timing["shard_collect"], "join": timing["join"],
                             "collect": collected, "update": timing["update"]})
        workers_mb = [rss_mb(p) for p in tr.collector.pids]
        daemons = [p for p in descendants(os.getpid()) if p not in tr.collector.pids]
        daemon_mb = sum(rss_mb(p) for p in daemons)
        driver_mb = rss_mb(os.getpid())
    finally:
        tr.close()
    best = {k: float(np.min([r[k] for r in rows])) for k in rows[0]}  # the fastest: least disturbed by other jobs
    steps = envs * rollout
    total = best["collect"] + best["update"]
    return {"algo": algo, "envs": envs, "workers": workers, "rollout": rollout, "updates": updates, **best,
            "overhead_fraction_of_update": (best["broadcast"] + best["transfer"] + best["join"]) / best["update"],
            "env_steps_per_s": steps / total, "worker_rss_mb": workers_mb, "ray_daemons_rss_mb": daemon_mb,
            "ray_daemon_processes": len(daemons), "driver_rss_mb": driver_mb,
            "load_average": os.getloadavg()}


def measure_shards(algo: str, sizes: list[int], rollout: int, repeats: int, tmp: Path) -> list[dict]:
    """A shard's own collection seconds (marl.collectors.Shard, in this process, one thread) for each size: the
    fastest of `repeats` rollouts, which is the least disturbed by other jobs on a shared machine."""
    from marl import config as config_mod
    from marl.collectors import Shard

    out = []
    for n in sizes:
        cfg = config_mod.load("smac", "3s5z", algo, [f"train.envs={n}", f"train.runs_dir={tmp}"])
        shard = Shard(cfg, 0, 0, n, n)
        shard.collect(None, False, rollout)  # warm-up
        best = min(shard.collect(None, False, rollout)[3]["collect"] for _ in range(repeats))
        shard.close()
        out.append({"kind": "shard", "algo": algo, "battles": n, "rollout": rollout, "shard_collect": best})
    return out


def predict(rows: list[dict], envs: int, machines=(1, 2, 4, 8, 32)) -> list[dict]:
    """Env-steps/s on W worker machines of this size, from measured rows of one learner: a shard's collection time
    as a + b * battles (fitted to the in-process shard rows, the fastest of several), the update (the fastest
    measured at `envs`) and the per-update overheads at `envs` (broadcast, transfer and join with the most
    workers), and the driver waiting for the slowest shard before it updates."""
    import numpy as np

    shards = [r for r in rows if r.get("kind") == "shard"]
    runs = [r for r in rows if r.get("kind") != "shard"]
    b, a = np.polyfit([r["battles"] for r in shards], [r["shard_collect"] for r in shards], 1)
    at = max((r for r in runs if r["envs"] == envs), key=lambda r: r["workers"])
    update = min(r["update"] for r in runs if r["envs"] == envs)
    fixed = update + at["broadcast"] + at["transfer"] + at["join"]
    out = []
    for w in machines:
        shard = a + b * envs / w
        out.append({"machines": w, "shard_collect": shard, "update_and_overheads": fixed,
                    "env_steps_per_s": envs * at["rollout"] / (shard + fixed),
                    "collect_share": shard / (shard + fixed)})
    return out


def main() -> None:
    """Run every configuration asked for; one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["commformer", "mappo"])
    parser.add_argument("--envs", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rollout", type=int, default=20)
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--out", default="/tmp/marl_ray_bench")
    parser.add_argument("--shards", nargs="+", type=int, metavar="N",
                        help="measure an in-process shard's collection at these sizes instead (for --predict)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predict", metavar="JSONL", help="print the scaling on paper from a file of this script's "
                        "lines instead of measuring")
    args = parser.parse_args()
    if args.predict:
        rows = [json.loads(line) for line in Path(args.predict).read_text().splitlines() if line.strip()]
        for algo in dict.fromkeys(r["algo"] for r in rows):
            for envs in args.envs:
                for p in predict([r for r in rows if r["algo"] == algo], envs):  # noqa: B007
                    print(json.dumps({"algo": algo, "envs": envs, **p}))
        return
    import torch

    torch.set_num_threads(1)
    if args.shards:
        for algo in args.algos:
            for row in measure_shards(algo, args.shards, args.rollout, args.repeats, Path(args.out)):
                print(json.dumps(row), flush=True)
        return
    for algo in args.algos:
        for envs in args.envs:
            for workers in args.workers:
                print(json.dumps(measure(algo, envs, workers, args.rollout, args.updates, Path(args.out))), flush=True)


if __name__ == "__main__":
    main()
