"""MRA's main experiment (issue 16): train on {3m, 5m, 8m}, zero-shot on 4m, 6m, 7m, 10m, 12m, adapt on 10m and 12m.

What it runs, each stage skipping what is already done (so it can be stopped and rerun across sessions):

1. **train**: MRA and the entity-PPO ablation (`algo.latent_modes=1 algo.mi_coef=0 algo.game_id_coef=0`) on
   the mixture 3m,5m,8m for --steps env steps, one run per seed, in ROOT/train/<variant>-s<seed>. A finished
   run (its checkpoint at the budget) is skipped, an unfinished one resumed exactly from its checkpoint, a
   directory without a checkpoint started again.
2. **mappo**: the reference, MAPPO trained on each test map alone for --mappo-steps, one seed, in
   ROOT/mappo/<map>-s<seed>, resumed and skipped alike.
3. **eval**: every finished run evaluated with --episodes deterministic episodes per test map (the trained
   runs zero-shot through `marl eval --scenario`'s code: battles padded to the run's shapes; the MAPPO runs
   on their own map), written to ROOT/results/eval-<run>.json.
4. **adapt**: `marl adapt` of every finished MRA run to 10m and to 12m (--adapt-episodes episodes, --adapt-steps
   steps; win rate before and after on --episodes fresh episodes), ROOT/results/adapt-<run>-<map>.json.

`--table` reads ROOT/results and prints the issue's comparison: each test map's win rate (mean over seeds,
with the lowest and highest seed), the mean over the unseen maps, whether MRA's lowest seed is above
entity-PPO's highest (the goal: above beyond the seeds' range), MRA on 4m, 6m and 7m as a fraction of the
per-map MAPPO (the goal: at least 0.8), and adaptation before and after.

    python benchmarks/mra_transfer.py --root runs/mra_transfer --steps 2000000 --seeds 1 2 3   # everything
    python benchmarks/mra_transfer.py --root runs/mra_transfer --stages train --variants mra --seeds 2 \
        --minutes 170     # one piece; stops with a checkpoint after 170 minutes, rerun to continue
    python benchmarks/mra_transfer.py --root runs/mra_transfer --table

KEY=VALUE arguments are config overrides for every training (default: one thread, no replays).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TRAIN_SCENARIOS = "3m,5m,8m"
TEST_MAPS = ("4m", "6m", "7m", "10m", "12m")
FRACTION_MAPS = ("4m", "6m", "7m")  # the goal: MRA at least 80% of the per-map MAPPO on these
ADAPT_MAPS = ("10m", "12m")
VARIANTS = {
    "mra": [],
    "entity-ppo": ["algo.latent_modes=1", "algo.mi_coef=0", "algo.game_id_coef=0"],
}
DEFAULTS = ["train.torch_threads=1", "train.update_threads=1", "train.record_replays=false"]
EVAL_SEED = 20261130  # the evaluation battles' seed, the same for every run


# ------------------------------------------------------------------------------------ runs
def run_name(variant: str, seed: int) -> str:
    """The directory name of a run: mra-s1, entity-ppo-s2, mappo-4m-s1."""
    return f"{variant}-s{seed}"


def env_steps_done(run_dir: Path) -> int | None:
    """Env steps in a run's last checkpoint (None: no checkpoint yet)."""
    from marl import checkpoint
    from marl.trainer import LAST

    path = run_dir / "checkpoints" / LAST
    return int(checkpoint.load(path)["counters"]["env_steps"]) if path.exists() else None


def finished(run_dir: Path, steps: int) -> bool:
    """Whether a run's checkpoint holds at least `steps` env steps."""
    done = env_steps_done(run_dir)
    return done is not None and done >= steps


def train(run_dir: Path, scenario: str, algo: str, seed: int, steps: int, overrides: list[str],
          deadline: float | None) -> str:
    """Train (or resume) one run up to `steps` env steps, stopping with a checkpoint at the deadline (a
    time.monotonic() value); returns what happened: "done", "skipped" or "stopped"."""
    import shutil

    from marl import config as config_mod
    from marl.trainer import Trainer

    if finished(run_dir, steps):
        return "skipped"
    resume = env_steps_done(run_dir) is not None
    if resume:  # the run as it was configured, with this budget (a longer one continues it)
        config = config_mod.load_file(run_dir / "config.yaml")
        config["train"]["steps"] = steps
    else:
        if run_dir.exists():  # started, but stopped before its first checkpoint
            shutil.rmtree(run_dir)
        config = config_mod.load("smac", scenario, algo, [*DEFAULTS, *overrides, f"train.seed={seed}",
                                                         f"train.steps={steps}"])
    print(f"{'resuming' if resume else 'training'} {algo} on {scenario} seed {seed} -> {run_dir} "
          f"({env_steps_done(run_dir) or 0:,} of {steps:,} env steps)", flush=True)
    trainer = Trainer(config, run_dir, resume=resume, show_progress=sys.stderr.isatty())
    out = trainer.run(deadline=deadline)  # past the deadline it stops after the update, with a checkpoint
    if out["interrupted"]:
        raise KeyboardInterrupt
    return "done" if trainer.env_steps >= steps else "stopped"


def evaluate_run(run_dir: Path, scenarios: list[str], episodes: int, seed: int = EVAL_SEED) -> dict:
    """Win rate and return per scenario of a run's last checkpoint, zero-shot where it never trained on them."""
    import torch

    from marl import checkpoint
    from marl import config as config_mod
    from marl.trainer import LAST, build_scenario_eval, evaluate

    torch.set_num_threads(1)
    config = config_mod.load_file(run_dir / "config.yaml")
    data = checkpoint.load(run_dir / "checkpoints" / LAST)
    env, learner = build_scenario_eval(config, scenarios, min(episodes, 32) * len(scenarios), data["learner"])
    try:
        res = evaluate(env, learner, episodes, seed=seed)
    finally:
        env.close()
    per = res["scenarios"] if res.get("scenarios") else {scenarios[0]: res}
    return {"run": str(run_dir), "env_steps": int(data["counters"]["env_steps"]), "episodes": episodes, "seed": seed,
            "scenarios": {k: {m: float(v[m]) for m in ("win_rate", "win_rate_low", "win_rate_high", "episode_return")}
                          for k, v in per.items()}}


def write_json(path: Path, value: dict) -> None:
    """Write a result atomically (a stopped run never leaves half a file)."""
    from marl import checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_text(path, json.dumps(value, indent=2))


def run_all(args, overrides: list[str]) -> None:
    """The stages asked for, in order, each skipping what is done."""
    root = Path(args.root)
    results = root / "results"
    deadline = time.monotonic() + 60 * args.minutes if args.minutes else None
    trained = [(v, s, root / "train" / run_name(v, s)) for v in args.variants for s in args.seeds]
    references = [(m, root / "mappo" / run_name(f"mappo-{m}", args.mappo_seed)) for m in args.maps]

    def out_of_time() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if "train" in args.stages:
        for variant, seed, run_dir in trained:
            if out_of_time() or train(run_dir, TRAIN_SCENARIOS, "mra", seed, args.steps,
                                      [*VARIANTS[variant], *overrides], deadline) == "stopped":
                print(f"stopped at the time limit; rerun to continue ({run_dir})")
                return
    if "mappo" in args.stages:
        for m, run_dir in references:
            if out_of_time() or train(run_dir, m, "mappo", args.mappo_seed, args.mappo_steps, overrides,
                                      deadline) == "stopped":
                print(f"stopped at the time limit; rerun to continue ({run_dir})")
                return
    if "eval" in args.stages:
        jobs = [(d, list(args.maps), args.steps) for _, _, d in trained]
        jobs += [(d, [m], args.mappo_steps) for m, d in references]
        for run_dir, maps, steps in jobs:
            path = results / f"eval-{run_dir.name}.json"
            if not finished(run_dir, steps):
                print(f"not evaluated yet: {run_dir} has not finished its {steps:,} env steps")
                continue
            if path.exists() and json.loads(path.read_text())["env_steps"] == env_steps_done(run_dir):
                continue
            res = evaluate_run(run_dir, maps, args.episodes)
            write_json(path, res)
            print(f"{run_dir.name}: " + ", ".join(f"{k} {v['win_rate']:.1%}" for k, v in res["scenarios"].items()))
    if "adapt" in args.stages:
        from marl.adapt import LR, START_MAX_PROB, adapt

        for variant, seed, run_dir in trained:
            if variant != "mra" or not finished(run_dir, args.steps):
                continue
            for m in args.adapt_maps:
                path = results / f"adapt-{run_dir.name}-{m}.json"
                done = json.loads(path.read_text()) if path.exists() else {}
                if (done.get("env_steps"), done.get("lr"), done.get("start_max_prob")) == (
                        env_steps_done(run_dir), LR, START_MAX_PROB):
                    continue  # adapted from this checkpoint already (a longer run, or other settings, adapt again)
                out = root / "adapted" / f"{run_dir.name}-{m}"
                if out.exists():  # a previous attempt stopped before writing its result
                    import shutil

                    shutil.rmtree(out)
                res = adapt(run_dir, m, episodes=args.adapt_episodes, steps=args.adapt_steps, seed=12345 + seed,
                            eval_episodes=args.episodes, out=out)
                write_json(path, {"run": res["run"], "scenario": m, "seed": seed, "before": res["before"]["win_rate"],
                                  "after": res["after"]["win_rate"], "episodes": res["episodes"],
                                  "steps": res["steps"], "lr": res["lr"], "start_max_prob": res["start_max_prob"],
                                  "eval_episodes": args.episodes,
                                  "env_steps": env_steps_done(run_dir)})
                print(f"{run_dir.name} adapted to {m}: {res['before']['win_rate']:.1%} -> "
                      f"{res['after']['win_rate']:.1%}")


# ------------------------------------------------------------------------------------ the table
def load_results(root: Path) -> dict:
    """ROOT/results as {"eval": {run name: {map: win rate}}, "adapt": {(run name, map): (before, after)}}."""
    out: dict = {"eval": {}, "adapt": {}}
    for path in sorted((root / "results").glob("eval-*.json")):
        res = json.loads(path.read_text())
        out["eval"][path.stem[len("eval-"):]] = {k: v["win_rate"] for k, v in res["scenarios"].items()}
    for path in sorted((root / "results").glob("adapt-*.json")):
        res = json.loads(path.read_text())
        out["adapt"][(Path(res["run"]).name, res["scenario"])] = (res["before"], res["after"])
    return out


def spread(values: list[float]) -> tuple[float, float, float] | None:
    """(mean, lowest, highest) of the seeds' values; None without any."""
    return (sum(values) / len(values), min(values), max(values)) if values else None


def seeds_of(evals: dict, variant: str) -> dict[str, dict[str, float]]:
    """The runs of a variant (its seeds), by run name."""
    return {name: wr for name, wr in evals.items() if name.rpartition("-s")[0] == variant}


def summarise(results: dict, maps=TEST_MAPS, variants=tuple(VARIANTS), fraction_maps=FRACTION_MAPS,
              adapt_maps=ADAPT_MAPS) -> dict:
    """The comparison of the issue from load_results(): per variant and map the seeds' (mean, low, high), the
    unseen-maps mean likewise, MRA-above-entity-PPO, MRA over per-map MAPPO, and adaptation before/after."""
    evals = results["eval"]
    summary: dict = {"maps": list(maps), "variants": {}, "mappo": {}, "fraction": {}, "adapt": {}}
    for variant in variants:
        runs = seeds_of(evals, variant)
        complete = [wr for wr in runs.values() if all(m in wr for m in maps)]  # runs evaluated on every map
        summary["variants"][variant] = {
            "seeds": len(runs),
            "maps": {m: spread([wr[m] for wr in runs.values() if m in wr]) for m in maps},
            "unseen_mean": spread([sum(wr[m] for m in maps) / len(maps) for wr in complete]),
        }
    for m in maps:
        ref = [wr[m] for name, wr in evals.items() if name.startswith(f"mappo-{m}-s") and m in wr]
        summary["mappo"][m] = spread(ref)
    mra, ppo = (summary["variants"].get(v, {}).get("unseen_mean") for v in ("mra", "entity-ppo"))
    summary["mra_above_entity_ppo"] = None if mra is None or ppo is None else mra[1] > ppo[2]
    for m in fraction_maps:
        ours = summary["variants"].get("mra", {}).get("maps", {}).get(m)
        ref = summary["mappo"].get(m)
        summary["fraction"][m] = (None if ours is None or ref is None or ref[0] == 0 else ours[0] / ref[0])
    for m in adapt_maps:
        pairs = [ba for (name, mm), ba in results["adapt"].items() if mm == m and name.rpartition("-s")[0] == "mra"]
        summary["adapt"][m] = {"seeds": len(pairs), "before": spread([b for b, _ in pairs]),
                               "after": spread([a for _, a in pairs])}
    return summary


def _pct(s: tuple[float, float, float] | None) -> str:
    if s is None:
        return "-"
    mean, low, high = s
    return f"{mean:.1%}" if low == high else f"{mean:.1%} ({low:.0%}-{high:.0%})"


def table(summary: dict) -> str:
    """The summary as markdown: win rates per map, the goals, adaptation."""
    maps = summary["maps"]
    lines = ["| learner | seeds | " + " | ".join(maps) + " | mean unseen |",
             "| --- | --- |" + " --- |" * (len(maps) + 1)]
    for variant, v in summary["variants"].items():
        lines.append(f"| {variant} | {v['seeds']} | " + " | ".join(_pct(v["maps"][m]) for m in maps)
                     + f" | {_pct(v['unseen_mean'])} |")
    ref = summary["mappo"]
    lines.append("| mappo (per map) | 1 | " + " | ".join(_pct(ref[m]) for m in maps) + " | "
                 + (f"{sum(ref[m][0] for m in maps) / len(maps):.1%}" if all(ref[m] for m in maps) else "-") + " |")
    above = summary["mra_above_entity_ppo"]
    lines.append("")
    lines.append("MRA above entity-PPO beyond the seeds' range (MRA's lowest seed above entity-PPO's highest): "
                 + ("not measured" if above is None else "yes" if above else "no"))
    fractions = ", ".join(f"{m} {'-' if f is None else f'{f:.2f}'}" for m, f in summary["fraction"].items())
    met = [f is not None and f >= 0.8 for f in summary["fraction"].values()]
    lines.append(f"MRA as a fraction of the per-map MAPPO (goal >= 0.80): {fractions}"
                 + (" (met)" if met and all(met) else ""))
    if summary["adapt"]:
        lines += ["", "| adaptation (mra) | seeds | before | after |", "| --- | --- | --- | --- |"]
        for m, a in summary["adapt"].items():
            lines.append(f"| {m} | {a['seeds']} | {_pct(a['before'])} | {_pct(a['after'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the stages asked for, or print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs/mra_transfer", help="where the runs and results live")
    p.add_argument("--table", action="store_true", help="print the comparison from ROOT/results and stop")
    p.add_argument("--stages", nargs="+", choices=["train", "mappo", "eval", "adapt"],
                   default=["train", "mappo", "eval", "adapt"])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--steps", type=int, default=2_000_000, help="env steps of each MRA and entity-PPO run")
    p.add_argument("--maps", nargs="+", default=list(TEST_MAPS), help="the unseen test maps")
    p.add_argument("--mappo-steps", type=int, default=1_000_000, help="env steps of each per-map MAPPO run")
    p.add_argument("--mappo-seed", type=int, default=1)
    p.add_argument("--episodes", type=int, default=64, help="evaluation episodes per map (and before/after adapt)")
    p.add_argument("--adapt-maps", nargs="+", default=list(ADAPT_MAPS))
    p.add_argument("--adapt-episodes", type=int, default=8)
    p.add_argument("--adapt-steps", type=int, default=5)
    p.add_argument("--minutes", type=float, help="stop training (with a checkpoint) after this much wall time")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every training")
    args = p.parse_args(argv)
    if bad := [o for o in args.overrides if "=" not in o]:
        p.error(f"expected KEY=VALUE overrides, got {' '.join(bad)}")
    if args.table:
        summary = summarise(load_results(Path(args.root)), maps=args.maps, adapt_maps=args.adapt_maps)
        print(table(summary))
        return 0
    try:
        run_all(args, args.overrides)
    except KeyboardInterrupt:
        print("interrupted: checkpoints saved; rerun the same command to continue")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
