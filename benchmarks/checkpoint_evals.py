"""A run's kept checkpoints, each evaluated twice: deterministic actions (what `marl eval` and the training curve
show) and sampled ones (what training plays), on the same battles.

A run trained with `train.keep_checkpoints=true` keeps checkpoints/step-<env steps>.pt at every checkpoint
interval. Where the deterministic evaluation dips and the sampled one does not, the dip is the argmax's: the
policy barely changed, but near-tied actions flipped. Where both dip, the policy itself got worse.

    python benchmarks/checkpoint_evals.py RUN_DIR --from 1000000 --to 1600000 --episodes 128

One row per checkpoint: env steps, then each mode's win rate with its 95% interval and mean return. Results are
kept in RUN_DIR/checkpoint_evals.jsonl (one line per checkpoint, mode, episodes and seed), so a second call reads
them back instead of playing again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODES = ("deterministic", "sampled")


def evaluate_checkpoint(run_dir: Path, path: Path, episodes: int, seed: int) -> dict[str, dict]:
    """Both modes' evaluate() figures of one checkpoint, each on the battles of `seed`: the learner's state is
    restored from the checkpoint before each mode, and the sampled mode's acting randomness is seeded by `seed`, as
    `marl eval --sampled --seed` does, so a row is `marl eval`'s figure for that checkpoint."""
    from marl import checkpoint
    from marl.cli import load_for_eval, seed_acting
    from marl.trainer import evaluate

    _, data, env, learner, _ = load_for_eval(run_dir, episodes, checkpoint_name=str(path))
    out = {}
    try:
        for mode in MODES:
            checkpoint.restore(learner, data["learner"], path)
            if mode == "sampled":
                seed_acting(learner, env.n_envs, seed)
            out[mode] = evaluate(env, learner, episodes, seed=seed, deterministic=mode == "deterministic")
    finally:
        env.close()
    return out


def cached(run_dir: Path) -> dict[tuple, dict]:
    """RUN_DIR/checkpoint_evals.jsonl by (env steps, mode, episodes, seed); a line torn by a kill is skipped, and so
    is a sampled line written before the sampled mode was seeded by --seed (it has no "acting_seeded")."""
    path = run_dir / "checkpoint_evals.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["mode"] == "deterministic" or row.get("acting_seeded"):
            rows.append(row)
    return {(r["env_steps"], r["mode"], r["episodes"], r["seed"]): r for r in rows}


def cell(row: dict) -> str:
    """One mode's win rate with its interval ("-" for an environment without wins) and mean return (a list of
    numbers for a vector reward)."""
    win = ("-" if row.get("win_rate") is None else
           f"{row['win_rate']:.0%} ({row['win_rate_low']:.0%}-{row['win_rate_high']:.0%})")
    ret = row["episode_return"]
    ret = f"{ret:.2f}" if isinstance(ret, float | int) else "[" + ", ".join(f"{r:.2f}" for r in ret) + "]"
    return f"{win:>30}  {ret:>6}"


def main(argv: list[str] | None = None) -> int:
    from marl.cli import EVAL_SEED, CLIError
    from marl.trainer import kept_checkpoints

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--episodes", type=int, default=128)
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the evaluation battles (marl eval's)")
    p.add_argument("--from", dest="lo", type=int, default=0, help="first env steps to evaluate")
    p.add_argument("--to", dest="hi", type=int, default=10**12, help="last env steps to evaluate")
    args = p.parse_args(argv)
    checkpoints = [(steps, path) for steps, path in kept_checkpoints(args.run_dir) if args.lo <= steps <= args.hi]
    if not checkpoints:
        print(f"checkpoint_evals: no kept checkpoints (checkpoints/step-*.pt) between {args.lo} and {args.hi} env "
              f"steps in {args.run_dir}; train with train.keep_checkpoints=true", file=sys.stderr)
        return 2
    done = cached(args.run_dir)
    print(f"{'env steps':>10}  " + "  ".join(f"{m + ' win (95% CI)':>30}  {'return':>6}" for m in MODES))
    for steps, path in checkpoints:
        keys = {m: (steps, m, args.episodes, args.seed) for m in MODES}
        if not all(k in done for k in keys.values()):
            try:
                res = evaluate_checkpoint(args.run_dir, path, args.episodes, args.seed)
            except (ValueError, CLIError) as err:  # a damaged checkpoint or config: one line, what is done is kept
                print(f"checkpoint_evals: {err}", file=sys.stderr)
                return 2
            with open(args.run_dir / "checkpoint_evals.jsonl", "a") as f:
                for m, k in keys.items():
                    done[k] = {"env_steps": steps, "mode": m, "episodes": args.episodes, "seed": args.seed,
                               **({"acting_seeded": True} if m == "sampled" else {}),
                               **{key: res[m].get(key) for key in ("win_rate", "win_rate_low", "win_rate_high",
                                                                   "episode_return", "episode_length")}}
                    f.write(json.dumps(done[k]) + "\n")
        print(f"{steps:>10}  " + "  ".join(cell(done[keys[m]]) for m in MODES), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
