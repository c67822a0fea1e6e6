"""Learning curves of marl runs: deterministic eval win rate against env steps and wall time.

Train first (each command writes a run directory under runs/), then read the curve back:

    marl train smac 3m --seed 1 train.eval_interval=10
    python benchmarks/learning.py curve runs/smac-3m-mappo-<stamp>-s1
    python benchmarks/learning.py compare RUN_A RUN_B        # same seed -> identical curves?
    python benchmarks/learning.py breakdown RUN               # where the time went (env, acting, update)
    python benchmarks/learning.py returns RUN --last 10       # games without wins (MPE): mean returns
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float, float]]:
    """(env step, wall time, value) of one TensorBoard scalar tag of a run, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir) / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]


def curve(run_dir: str | Path) -> list[dict]:
    """Eval win rate (with its 95% interval) and return per evaluation, with minutes since the start."""
    win = scalars(run_dir, "eval/win_rate")
    low = {s: v for s, _, v in scalars(run_dir, "eval/win_rate_low")}
    high = {s: v for s, _, v in scalars(run_dir, "eval/win_rate_high")}
    ret = {s: v for s, _, v in scalars(run_dir, "eval/episode_return")}
    first = scalars(run_dir, "perf/env_steps_per_s")
    t0 = first[0][1] if first else (win[0][1] if win else 0.0)
    return [{"env_steps": s, "minutes": round((w - t0) / 60, 2), "win_rate": v, "low": low.get(s),
             "high": high.get(s), "return": ret.get(s)} for s, w, v in win]


def first_reaching(rows: list[dict], target: float) -> dict | None:
    """The first evaluation at or above a win rate."""
    return next((r for r in rows if r["win_rate"] >= target), None)


def returns(run_dir: str | Path, last: int) -> dict:
    """Games without wins: the eval return per evaluation, and the final and best of them and of training."""
    ev = scalars(run_dir, "eval/episode_return")
    train = scalars(run_dir, "train/episode_return")
    tail = [v for _, _, v in ev[-last:]]
    return {"evals": [(s, round(v, 3)) for s, _, v in ev],
            "final_eval_return": ev[-1][2] if ev else None,
            f"mean_of_last_{last}_evals": sum(tail) / len(tail) if tail else None,
            "best_eval_return": max((v for _, _, v in ev), default=None),
            f"mean_train_return_last_{last}_logs": (sum(v for _, _, v in train[-last:]) / len(train[-last:])
                                                     if train else None),
            "env_steps": ev[-1][0] if ev else None,
            "minutes": round((ev[-1][1] - ev[0][1]) / 60, 1) if ev else None}


def main(argv=None) -> None:
    """Print curves, comparisons or time breakdowns as JSON lines."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curve")
    c.add_argument("run_dir")
    c.add_argument("--target", type=float, default=0.95)
    cmp = sub.add_parser("compare")
    cmp.add_argument("run_a")
    cmp.add_argument("run_b")
    b = sub.add_parser("breakdown")
    b.add_argument("run_dir")
    r = sub.add_parser("returns")
    r.add_argument("run_dir")
    r.add_argument("--last", type=int, default=10, help="evaluations (and train logs) averaged at the end")
    args = p.parse_args(argv)
    if args.cmd == "returns":
        print(json.dumps(returns(args.run_dir, args.last)))
        return
    if args.cmd == "curve":
        rows = curve(args.run_dir)
        for r in rows:
            print(json.dumps(r))
        print(json.dumps({"first_at_or_above": args.target, "row": first_reaching(rows, args.target)}))
    elif args.cmd == "compare":
        a, b_ = curve(args.run_a), curve(args.run_b)
        same = [(x["env_steps"], x["win_rate"]) for x in a] == [(x["env_steps"], x["win_rate"]) for x in b_]
        ra = [v for _, _, v in scalars(args.run_a, "train/episode_return")]
        rb = [v for _, _, v in scalars(args.run_b, "train/episode_return")]
        print(json.dumps({"evals": len(a), "identical_eval_curves": same,
                          "identical_train_returns": ra == rb, "train_points": len(ra)}))
    else:
        parts = {k: sum(v for _, _, v in scalars(args.run_dir, f"perf/seconds_{k}")) for k in ("env", "act", "update")}
        total = sum(parts.values()) or 1.0
        sps = [v for _, _, v in scalars(args.run_dir, "perf/env_steps_per_s")]
        print(json.dumps({**{f"share_{k}": round(v / total, 3) for k, v in parts.items()},
                          "mean_env_steps_per_s": sum(sps) / max(len(sps), 1),
                          "note": "sums over the logged updates (every log_interval)"}))


if __name__ == "__main__":
    main()
