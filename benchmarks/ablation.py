"""CommFormer ablations at equal budget: learned graph, full graph, random graph, gates off, MAPPO.

Each variant trains one run with the same seed and env-step budget (sequentially, one process),
then the table gives the final and best deterministic eval win rate, the mean eval return of the
last three evaluations (which still tells variants apart on a map where none wins yet) and the
messages each living agent received per step in the last tenth of training (0 for MAPPO, which has
no messages).

    python benchmarks/ablation.py --map 3s5z --steps 3000000 --seed 1
    python benchmarks/ablation.py --map 5m_vs_6m --steps 3000000 --variants learned full random

A shorter comparison keeps the full budget's schedules (post-stable freezing at half of --steps) but
stops every variant at --stop-at env steps; variants can run as separate processes, then the table is
read back from their run directories (any run directory can join, e.g. the default run of the map):

    python benchmarks/ablation.py --map 3s5z --stop-at 1000000 --variants full &
    python benchmarks/ablation.py --map 3s5z --stop-at 1000000 --variants random &
    python benchmarks/ablation.py --table runs/ablation/3s5z-full-s1 runs/ablation/3s5z-random-s1 --at 1000000

With several seeds of a variant (--seed; run directories ...-s1, -s2, ...), --table adds their mean,
lowest and highest per variant.

At the end, each run's last checkpoint also plays `marl eval RUN_DIR --episodes N` (N = --final-episodes,
128 by default; 0 leaves it out): deterministic, on the battles of `marl eval`'s default seed 12345
(marl.cli.EVAL_SEED, through the same code, marl.cli.evaluate_run), so the number can be re-run by hand.
The table gets its win rate with the 95% (Wilson) interval, its mean return and the messages each living
agent received per step in it (CommFormer's EvalCounters; "-" for a learner without messages), per run and
per variant (mean, lowest and highest over seeds), and per run its gate open rate; the JSON rows get
final_eval_steps, final_eval_win_rate, final_eval_win_rate_low, final_eval_win_rate_high, final_eval_return,
final_eval_messages_per_agent_step and final_eval_gate_open_rate. The result is kept in
RUN_DIR/final_eval.json with the checkpoint's env steps, N and the seed, so a second --table reads it;
a checkpoint that moved on, or another N, plays it again.

--sampled-episodes M (0, none, by default) adds `marl eval RUN_DIR --episodes M --sampled` of the same checkpoint:
the policy's sampled actions, as in training, on the same seed, kept in RUN_DIR/final_eval_sampled.json; the
table gets its win rate with the interval and its mean return, per run and per variant. On 5m_vs_6m at 1M the
argmax's win rate moved from 0% to 61% when only the graph changed, while the sampled one stayed within 2-4 points
per variant (BENCHMARKS.md, issue 14): where the argmax swings, compare variants on the sampled columns.

Only a run's last checkpoint is kept, so with --at a run gets the final evaluation only when its last
checkpoint is less than one update (train.rollout x train.envs env steps) past --at, as a run stopped
there with --stop-at is; a run that trained on (e.g. a longer default run read at --at) gets "-" rather
than a number from a later point of training than its other columns.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

VARIANTS = {
    "learned": ("commformer", []),
    "full": ("commformer", ["algo.graph=full", "algo.gates=false"]),
    "random": ("commformer", ["algo.graph=random"]),
    "gates_off": ("commformer", ["algo.gates=false"]),
    "mappo": ("mappo", []),
}


def run_variant(name: str, map_name: str, steps: int, seed: int, runs_dir: Path, extra: list[str],
                stop_at: int | None = None, *, env: str = "smac", variants: dict | None = None,
                show_progress: bool = True) -> Path:
    """Train one variant to the budget (or to stop_at env steps of it); returns its run directory.

    `map_name` is the scenario of environment `env` (a SMAC map by default); `variants` maps names to
    (learner, overrides), VARIANTS by default (benchmarks/graph_recovery.py passes the probe game's)."""
    from marl import config as config_mod
    from marl.trainer import Trainer

    algo, overrides = (VARIANTS if variants is None else variants)[name]
    cfg = config_mod.load(env, map_name, algo, [f"train.steps={steps}", f"train.seed={seed}",
                                                f"train.runs_dir={runs_dir}", *overrides, *extra])
    run_dir = runs_dir / f"{map_name}-{name}-s{seed}"
    resume = (run_dir / "checkpoints" / "last.pt").exists()  # an interrupted variant continues
    trainer = Trainer(cfg, run_dir, resume=resume, show_progress=show_progress)
    per_update = cfg["train"]["rollout"] * cfg["train"]["envs"]
    left = None if stop_at is None else max(0, -(-(stop_at - trainer.env_steps) // per_update))
    trainer.run(max_updates=left)
    return run_dir


def summarise(run_dir: Path, at: int | None = None) -> dict:
    """Final and best eval win rate up to `at` env steps, the first eval at or above 90% and the lowest one after it
    (the stability the issue-14 criterion reads: none below 70% once 90% was reached), and messages per agent per
    step over the last tenth of training."""
    sys.path.insert(0, str(Path(__file__).parent))
    from learning import scalars

    limit = float("inf") if at is None else at
    wins = [(s, v) for s, _, v in scalars(run_dir, "eval/win_rate") if s <= limit]
    rets = [v for s, _, v in scalars(run_dir, "eval/episode_return") if s <= limit]
    msgs = [(s, v) for s, _, v in scalars(run_dir, "graph/messages_per_agent_step") if s <= limit]
    tail = [v for s, v in msgs if s >= 0.9 * msgs[-1][0]] if msgs else []
    last3 = [v for _, v in wins[-3:]]
    first = next((i for i, (_, v) in enumerate(wins) if v >= 0.9), None)
    after = [v for _, v in wins[first + 1:]] if first is not None else []
    return {"steps": wins[-1][0] if wins else None, "final_win_rate": wins[-1][1] if wins else None,
            "best_win_rate": max(v for _, v in wins) if wins else None,
            "mean_last_3": sum(last3) / len(last3) if last3 else None,
            "first_90": wins[first][0] if first is not None else None,
            "lowest_after_90": min(after) if after else None,
            "return_last_3": sum(rets[-3:]) / len(rets[-3:]) if rets else None,
            "messages_per_agent_step": sum(tail) / len(tail) if tail else 0.0}


FINAL_EVAL = "final_eval.json"
FINAL_SAMPLED = "final_eval_sampled.json"
FIELDS = ("steps", "win_rate", "win_rate_low", "win_rate_high", "return", "messages_per_agent_step", "gate_open_rate")


def final_eval(run_dir: Path, episodes: int, at: int | None = None, sampled: bool = False) -> dict | None:
    """`marl eval RUN_DIR --episodes N` (seed EVAL_SEED) of the last checkpoint as the row's final_eval_* fields,
    read from RUN_DIR/final_eval.json when it holds the same checkpoint's env steps, N and seed, else played and
    written there. None when `episodes` is 0; the fields None when the checkpoint lies an update or more past `at`.
    With `sampled`, `marl eval ... --sampled` (the policy's sampled actions, seeded by the same seed) as the
    final_sampled_* fields, kept in RUN_DIR/final_eval_sampled.json."""
    if episodes <= 0:
        return None
    from marl import checkpoint
    from marl import config as config_mod
    from marl.cli import EVAL_SEED, evaluate_run
    from marl.trainer import LAST

    prefix = "final_sampled" if sampled else "final_eval"
    steps = checkpoint.load(run_dir / "checkpoints" / LAST)["counters"]["env_steps"]
    t = config_mod.load_file(run_dir / "config.yaml")["train"]
    if at is not None and steps - at >= t["rollout"] * t["envs"]:
        return dict.fromkeys(f"{prefix}_{f}" for f in FIELDS)
    path = run_dir / (FINAL_SAMPLED if sampled else FINAL_EVAL)
    # "counters": results written since evaluation counts messages and gates (EvalCounters); older ones play again
    key = {"env_steps": steps, "episodes": episodes, "seed": EVAL_SEED, "counters": 1}
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or torn by a killed write of an older version
        cached = {}
    if not all(k in cached and cached[k] == v for k, v in key.items()) or "eval" not in cached:
        res = (evaluate_run(run_dir, episodes, EVAL_SEED, sampled=True) if sampled
               else evaluate_run(run_dir, episodes, EVAL_SEED))
        # the checkpoint played: a training that wrote a newer one meanwhile is caught on the next read
        cached = {**key, "env_steps": res.pop("env_steps"), "eval": res}
        checkpoint.atomic_write_text(path, json.dumps(cached, indent=1) + "\n")
    ev = cached["eval"]
    values = (cached["env_steps"], ev.get("win_rate"), ev.get("win_rate_low"), ev.get("win_rate_high"),
              ev["episode_return"], ev.get("messages_per_agent_step"), ev.get("gate_open_rate"))
    return {f"{prefix}_{f}": v for f, v in zip(FIELDS, values, strict=True)}


def by_variant(rows: list[dict]) -> list[dict]:
    """Rows of runs that differ only in their seed (run directories named ...-s<seed>) averaged per
    variant: mean, lowest and highest of each number, and how many seeds; in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"-s\d+$", "", r["variant"]), []).append(r)
    out = []
    for name, runs in groups.items():
        row = {"variant": name, "seeds": len(runs)}
        for k in ("final_win_rate", "mean_last_3", "best_win_rate", "return_last_3", "messages_per_agent_step",
                  "final_eval_win_rate", "final_eval_return", "final_eval_messages_per_agent_step",
                  "final_sampled_win_rate", "final_sampled_return"):
            # rows without the final evaluation lack its keys; a vector reward's return (a list) is not averaged
            vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
            row[k] = (sum(vals) / len(vals), min(vals), max(vals)) if vals else None
        out.append(row)
    return out


def _range(x, fmt) -> str:
    return "-" if x is None else f"{fmt(x[0])} ({fmt(x[1])}-{fmt(x[2])})"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x) -> str:
    if isinstance(x, list):  # a vector reward: one mean per objective
        return "/".join(f"{v:.2f}" for v in x)
    return "-" if x is None else f"{x:.2f}"


def _ci(r: dict, prefix: str = "final_eval") -> str:
    """The final evaluation's (prefix final_sampled: the sampled one's) win rate with its 95% interval: 41% (33-50%)."""
    if r.get(f"{prefix}_win_rate") is None:
        return "-"
    return f"{r[f'{prefix}_win_rate']:.0%} ({r[f'{prefix}_win_rate_low']:.0%}-{r[f'{prefix}_win_rate_high']:.0%})"


def main(argv=None) -> None:
    """Train the variants and print a markdown table (and JSON lines)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--map", default="3s5z")
    p.add_argument("--steps", type=int, default=3_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="VARIANT",
                   help=f"some of: {', '.join(VARIANTS)}")
    p.add_argument("--runs-dir", default="runs/ablation")
    p.add_argument("--stop-at", type=int, help="stop each variant at this many env steps of the --steps budget")
    p.add_argument("--table", nargs="+", metavar="RUN_DIR", help="only print the table of these run directories")
    p.add_argument("--at", type=int, help="with --table: read every run up to this many env steps")
    p.add_argument("--final-episodes", type=int, default=128, metavar="N",
                   help="episodes of `marl eval` on each run's last checkpoint at the end (0: none)")
    p.add_argument("--sampled-episodes", type=int, default=0, metavar="M",
                   help="also M episodes of `marl eval --sampled` (sampled actions) on each last checkpoint (0: none)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every variant")
    args = p.parse_args(argv)
    # key=value words after --variants are overrides, not variants (argparse hands them to --variants)
    args.overrides += [v for v in args.variants if "=" in v]
    args.variants = [v for v in args.variants if "=" not in v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if args.final_episodes < 0:
        p.error(f"--final-episodes takes 0 (no final evaluation) or a positive number of episodes, "
                f"got {args.final_episodes}")
    if args.sampled_episodes < 0:
        p.error(f"--sampled-episodes takes 0 (none) or a positive number of episodes, got {args.sampled_episodes}")
    n, m = args.final_episodes, args.sampled_episodes
    rows = []
    if args.table:
        for run_dir in args.table:
            rows.append({"variant": Path(run_dir).name, **summarise(Path(run_dir), args.at),
                         **(final_eval(Path(run_dir), n, args.at) or {}),
                         **((final_eval(Path(run_dir), m, args.at, sampled=True) or {}) if m else {})})
    else:
        for name in args.variants:
            run_dir = run_variant(name, args.map, args.steps, args.seed, Path(args.runs_dir), args.overrides,
                                  args.stop_at)
            row = {"variant": name, "map": args.map, **summarise(run_dir), **(final_eval(run_dir, n) or {}),
                   **((final_eval(run_dir, m, sampled=True) or {}) if m else {})}
            print(json.dumps(row), flush=True)
            rows.append(row)
    extra_head = (f" {n}-episode eval of the last checkpoint (95% CI) | its mean return | its messages / agent / "
                  "step | its gate open rate |" if n else "")
    extra_rule = " --- | --- | --- | --- |" if n else ""
    if m:
        extra_head += f" {m}-episode sampled eval (95% CI) | its mean return |"
        extra_rule += " --- | --- |"
    if n:
        from marl.cli import EVAL_SEED

        past = f"; - where that lies an update or more past {args.at:,} env steps" if args.at is not None else ""
        print(f"\nThe {n}-episode evaluation is `marl eval RUN_DIR --episodes {n}` (seed {EVAL_SEED}) of each run's "
              f"last checkpoint{past}.")
    print("\n| run | env steps | final eval win rate | mean of the last 3 evals | best | first eval >= 90% at | "
          "lowest eval after it | eval return, mean of the last 3 | messages / agent / step |" + extra_head)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + extra_rule)
    for r in rows:
        first = f"{r['first_90']:,}" if r["first_90"] is not None else "-"
        extra = (f" {_ci(r)} | {_num(r['final_eval_return'])} | {_num(r['final_eval_messages_per_agent_step'])} | "
                 f"{_num(r['final_eval_gate_open_rate'])} |" if n else "")
        if m:
            extra += f" {_ci(r, 'final_sampled')} | {_num(r['final_sampled_return'])} |"
        print(f"| {r['variant']} | {r['steps'] or 0:,} | {_pct(r['final_win_rate'])} | {_pct(r['mean_last_3'])} | "
              f"{_pct(r['best_win_rate'])} | {first} | {_pct(r.get('lowest_after_90'))} | {_num(r['return_last_3'])} | "
              f"{r['messages_per_agent_step']:.2f} |" + extra)
    seeds = by_variant(rows)
    if len(seeds) < len(rows):  # some variant ran with several seeds: their mean, lowest and highest
        print("\n| variant | seeds | final eval win rate | mean of the last 3 evals | best | "
              "eval return, mean of the last 3 | messages / agent / step |"
              + (f" {n}-episode eval win rate | its mean return | its messages / agent / step |" if n else "")
              + (f" {m}-episode sampled eval win rate | its mean return |" if m else ""))
        print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- | --- |" if n else "")
              + (" --- | --- |" if m else ""))
        for r in seeds:
            extra = (f" {_range(r['final_eval_win_rate'], _pct)} | {_range(r['final_eval_return'], _num)} | "
                     f"{_range(r['final_eval_messages_per_agent_step'], _num)} |" if n else "")
            if m:
                extra += f" {_range(r['final_sampled_win_rate'], _pct)} | {_range(r['final_sampled_return'], _num)} |"
            print(f"| {r['variant']} | {r['seeds']} | {_range(r['final_win_rate'], _pct)} | "
                  f"{_range(r['mean_last_3'], _pct)} | {_range(r['best_win_rate'], _pct)} | "
                  f"{_range(r['return_last_3'], _num)} | {_range(r['messages_per_agent_step'], _num)} |" + extra)


if __name__ == "__main__":
    main()
