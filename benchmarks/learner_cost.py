"""CPU cost of training, per learner: CPU seconds per 1,000 env steps for acting, the env and the update.

Wall-clock env-steps/s swing with whatever else a shared machine runs; the CPU time a single-threaded
process spends does much less, so it tells how fast training runs on an idle core. Each learner runs
a few updates with the map's preset settings (the first is a warm-up and is not counted), in the
same process, and the table also gives the implied env-steps/s of one idle core.

CommFormer's first updates act under a soft warm-up mask (every agent hears every other, so the
decoder takes N passes); they are a few of a run's hundreds, so the measured updates come after the
warm-up (the learner's update counter is moved past it). Acting always runs on one thread.
`--update-threads 1 2` also measures the updates on 2 threads,
in the same process, and adds their wall seconds per 1,000 steps: on an idle machine this is what
more cores buy (CPU time grows with threads; wall time is what shrinks).

    python benchmarks/learner_cost.py --map 3s5z --algos mappo commformer --updates 4
    python benchmarks/learner_cost.py --map 3s5z --algos commformer --update-threads 1 2
    python benchmarks/learner_cost.py --map 3s5z --algos commformer algo.gates=false   # key=value overrides
    python benchmarks/learner_cost.py --map 3s5z --algos mappo cmorl env.objectives=combat,safety train.envs=10 \
        mappo:algo.preference=0.5,0.5    # ALGO:key=value applies to that learner only

A learner that evaluates its own policies (EvaluatesPolicies, such as C-MORL's population) gets the
trainer's evaluator; the CPU time of those evaluations is taken out of the update's and reported
apart ("eval", with the evaluation env steps), as training's budget does not count them.
"""

from __future__ import annotations

import argparse
import time


def cost(map_name: str, algo: str, updates: int, seed: int = 1, update_threads: int = 1,
         overrides: list[str] | None = None) -> dict:
    """CPU seconds per 1,000 env steps (act, env, update, total) over `updates` counted updates, and the
    update's wall seconds on `update_threads` threads."""
    import torch

    from marl import config as config_mod
    from marl.registry import make_env, make_learner
    from marl.rollout import collect
    from marl.spec import EvaluatesPolicies
    from marl.trainer import PolicyEvaluator

    torch.set_num_threads(1)
    mine = [o.partition(":")[2] if ":" in o.partition("=")[0] else o for o in overrides or []
            if ":" not in o.partition("=")[0] or o.partition(":")[0] == algo]
    cfg = config_mod.load("smac", map_name, algo, [f"train.seed={seed}", *mine])
    t = cfg["train"]
    env = make_env("smac", map_name, t["envs"], dict(cfg["env"]))
    learner = make_learner(algo, env.spec, cfg["algo"], seed=seed, device="cpu")
    if hasattr(learner, "updates"):
        learner.updates = int(cfg["algo"].get("warmup", 0))  # the steady state: past the soft warm-up mask
    eval_cpu = [0.0]
    evaluator = None
    if isinstance(learner, EvaluatesPolicies):
        evaluator = PolicyEvaluator(cfg)

        def timed(*args, **kwargs):
            start = time.process_time()
            out = evaluator(*args, **kwargs)
            eval_cpu[0] += time.process_time() - start
            return out

        learner.attach_evaluator(timed)
    step = env.reset(seed=seed)
    spent = {"act": 0.0, "env": 0.0, "update": 0.0}
    eval_steps = eval_spent = 0.0
    update_wall = 0.0
    for i in range(updates + 1):
        timing: dict[str, float] = {}
        eval_before, eval_steps_before = eval_cpu[0], evaluator.env_steps if evaluator else 0
        c0 = time.process_time()
        rollout, step, _ = collect(env, learner, step, t["rollout"], timing, clock=time.process_time)
        c1, w1 = time.process_time(), time.perf_counter()
        torch.set_num_threads(update_threads)
        learner.update(rollout)
        torch.set_num_threads(1)
        c2, w2 = time.process_time(), time.perf_counter()
        if i == 0:  # warm-up: first calls allocate and compile
            continue
        spent["act"] += timing["act"]
        spent["env"] += timing["env"]
        in_eval = eval_cpu[0] - eval_before  # the learner's own evaluations, outside the training budget
        spent["update"] += c2 - c1 - in_eval
        eval_spent += in_eval
        eval_steps += (evaluator.env_steps if evaluator else 0) - eval_steps_before
        update_wall += w2 - w1
        assert abs((c1 - c0) - timing["act"] - timing["env"]) < 0.5  # the rollout is acting plus the env
    steps = updates * t["rollout"] * t["envs"]
    per_k = {k: 1000 * v / steps for k, v in spent.items()}
    per_k["total"] = sum(per_k.values())
    return {"map": map_name, "algo": algo, "env_steps": steps, "cpu_s_per_1k_steps": per_k,
            "idle_core_env_steps_per_s": 1000 / per_k["total"], "update_threads": update_threads,
            "update_wall_s_per_1k_steps": 1000 * update_wall / steps,
            "eval_cpu_s_per_1k_steps": 1000 * eval_spent / steps, "eval_env_steps": int(eval_steps)}


def main(argv=None) -> None:
    """Print the CPU cost of each learner as JSON lines and a markdown table."""
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--map", default="3s5z")
    p.add_argument("--algos", nargs="+", default=["mappo", "commformer"])
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--update-threads", type=int, nargs="+", default=[1],
                   help="torch threads in the updates; several values are measured one after another")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. algo.gates=false; "
                   "ALGO:KEY=VALUE for one learner only")
    args, rest = p.parse_known_args(argv)
    overrides = [*args.overrides, *rest]
    if bad := [o for o in overrides if "=" not in o]:
        p.error(f"expected KEY=VALUE overrides, got {' '.join(bad)}")
    rows = [cost(args.map, algo, args.updates, update_threads=n, overrides=overrides)
            for algo in args.algos for n in args.update_threads]
    for r in rows:
        print(json.dumps(r), flush=True)
    print("\n| learner | update threads | act | env | update | total (CPU s / 1k steps) | env-steps/s on an idle core "
          "| update wall s / 1k steps | own evaluations (CPU s / 1k training steps; their env steps) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c = r["cpu_s_per_1k_steps"]
        print(f"| {r['algo']} | {r['update_threads']} | {c['act']:.3f} | {c['env']:.3f} | {c['update']:.3f} | "
              f"{c['total']:.3f} | {r['idle_core_env_steps_per_s']:,.0f} | {r['update_wall_s_per_1k_steps']:.3f} | "
              f"{r['eval_cpu_s_per_1k_steps']:.3f} ({r['eval_env_steps']:,}) |")


if __name__ == "__main__":
    main()
