"""The issue-17 SMAC experiment: StepMix and EpsMix against a MAPPO baseline that wins about half its battles.

Three stages under one root directory, each resumable (a later session runs the same command with --resume):

1. The baseline: MAPPO on the scenario with train.keep_checkpoints=true (a copy of the checkpoint every
   --keep-every env steps, 64k by default); then each kept checkpoint's sampled win rate (the policy played
   as in training, --pick-episodes episodes) is measured and the one closest to 50% within 40-60% is
   copied to ROOT/baseline/ (config.yaml + checkpoints/last.pt, what algo.baseline=RUN_DIR reads), with
   ROOT/baseline.json: its env steps, sampled win rate and mean return (V_b), and deterministic win rate. V_b is
   then measured again on --vb-episodes (4096) sampled episodes of the chosen baseline (the pick's 256-episode
   figure is kept as v_b_pick): the table's threshold (1 - alpha) V_b should not carry the pick's noise.
2. The runs: EpsMix and StepMix at --alpha for --seeds seeds, and MAPPO from scratch, each with
   train.log_episodes=true (RUN_DIR/episodes.csv holds every training episode's return) under ROOT/runs/.
3. --table: per run, in windows of --window training episodes (in the order they finished), the fraction of
   windows whose mean return is below (1 - alpha) V_b and the number whose upper 95% bound (mean + 1.96
   sd / sqrt(window)) is (with the count a run exactly at the threshold gives by chance, and the count at
   the family-wise 95% level over all its windows), and the env steps at which its deterministic eval win
   rate first reaches the baseline's.

    python benchmarks/stepmix_smac.py --root runs/stepmix-3s5z                 # stages 1 and 2
    python benchmarks/stepmix_smac.py --root runs/stepmix-3s5z --resume        # a later session
    python benchmarks/stepmix_smac.py --root runs/stepmix-3s5z --table
    # a variant next to them: its runs are MODE-TAG-sSEED, the same baseline
    python benchmarks/stepmix_smac.py --root runs/stepmix-3s5z --modes stepmix,epsmix --tag init-baseline \
        -o algo.init=baseline --resume
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

MODES = ("epsmix", "stepmix", "mappo")


# ------------------------------------------------------------------------------------------- the table
def windows(returns, size: int = 256, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the upper 95% bound (mean + z sample sd / sqrt(size)) of each whole window of `size`
    consecutive returns; a last partial window is left out."""
    r = np.asarray(returns, np.float64)
    n = len(r) // size
    w = r[: n * size].reshape(n, size)
    mean = w.mean(1)
    sd = w.std(1, ddof=1) if size > 1 else np.zeros(n)
    return mean, mean + z * sd / math.sqrt(size)


def window_row(returns, threshold: float, size: int = 256) -> dict:
    """windows(): how many, the fraction whose mean is below the threshold, the number whose upper bound is.

    Each window's test has a 2.5% false alarm where its true mean is exactly the threshold, and a mixing
    learner keeps its behaviour just above the threshold by design, so over n windows about 0.025 n alarms
    are expected of a run that never violates (`expected_at_threshold`). `upper_below_familywise` counts the
    windows whose upper bound at the family-wise 95% level (z for 1 - 0.025 / n, Bonferroni) is below: a
    run that never violates has no such window with probability at least 95%."""
    mean, upper = windows(returns, size)
    n = len(mean)
    row = {"windows": n, "below_fraction": float(np.mean(mean < threshold)) if n else None,
           "upper_below": int(np.sum(upper < threshold)), "expected_at_threshold": n / 40,
           "upper_below_familywise": 0}
    if n:
        z = NormalDist().inv_cdf(1 - 0.025 / n)
        row["upper_below_familywise"] = int(np.sum(windows(returns, size, z)[1] < threshold))
    return row


def steps_to_reach(evals: list[tuple[int, float]], target: float) -> int | None:
    """The env steps of the first evaluation whose win rate is at or above target (None: never)."""
    return next((s for s, w in sorted(evals) if w >= target), None)


def read_returns(run_dir: Path) -> np.ndarray:
    """Training episodes' returns from RUN_DIR/episodes.csv, in the order they finished."""
    with open(run_dir / "episodes.csv", newline="") as f:
        return np.array([float(r["return"]) for r in csv.DictReader(f)])


def read_evals(run_dir: Path) -> list[tuple[int, float]]:
    """(env steps, deterministic eval win rate) from the run's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if "eval/win_rate" not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars("eval/win_rate")]


def table(root: Path, window: int) -> list[dict]:
    """One row per run under ROOT/runs/ (with its episodes.csv), against ROOT/baseline.json's V_b."""
    base = json.loads((root / "baseline.json").read_text())
    rows = []
    for run in sorted(p for p in (root / "runs").iterdir() if (p / "episodes.csv").exists()):
        cfg = json.loads((run / "bench.json").read_text())
        threshold = (1 - cfg["alpha"]) * base["v_b"]
        row = {"run": run.name, "mode": cfg["mode"], "tag": cfg.get("tag", ""), "seed": cfg["seed"],
               "threshold": threshold, "v_b_episodes": base.get("v_b_episodes"),
               **window_row(read_returns(run), threshold, window),
               "steps_to_baseline_win_rate": steps_to_reach(read_evals(run), base["deterministic_win_rate"])}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- the runs
def _config(args, algo: str, seed: int, *more: str) -> dict:
    from marl import config as config_mod

    return config_mod.load("smac", args.scenario, algo, [
        f"train.seed={seed}", "train.torch_threads=1", "train.update_threads=1", "train.record_replays=false",
        *more, *args.override])


def _train(config: dict, run_dir: Path, resume: bool) -> None:
    """Train a run to its budget: a new one, or (--resume) the rest of one begun in an earlier session."""
    from marl import checkpoint
    from marl.trainer import LAST, Trainer

    last = run_dir / "checkpoints" / LAST
    if last.exists():
        if checkpoint.load(last)["counters"]["env_steps"] >= config["train"]["steps"]:
            print(f"{run_dir.name}: done")
            return
        if not resume:
            sys.exit(f"stepmix_smac: error: {run_dir} is begun; add --resume to continue it")
    out = Trainer(config, run_dir, resume=last.exists(), show_progress=False).run()
    if out["interrupted"]:  # Ctrl-C stops the experiment, not just this run
        sys.exit(f"stepmix_smac: interrupted in {run_dir.name}; continue with --resume")
    print(f"{run_dir.name}: trained")


def _play(config: dict, state: dict, episodes: int, seed: int, with_eval: bool = True
          ) -> tuple[dict, dict | None]:
    """A checkpoint's learner: sampled episodes (as in training) and, with_eval, a deterministic evaluation."""
    from marl.registry import make_learner
    from marl.trainer import PolicyEvaluator, build_env, evaluate

    env = build_env(config, 1)
    learner = make_learner(config["run"]["algo"], env.spec, config["algo"], seed=0, device="cpu")
    learner.load_state_dict(state)
    env.close()
    play = PolicyEvaluator(config)
    envs = min(32, episodes)
    sampled = play(lambda s: learner.act(s, deterministic=False)[0], envs, -(-episodes // envs), seed)
    play.close()
    if not with_eval:
        return sampled, None
    det_env = build_env(config, envs)
    det = evaluate(det_env, learner, episodes, seed + 1)
    det_env.close()
    return sampled, det


def baseline(args) -> dict:
    """Stage 1: MAPPO with kept checkpoints, then the one whose sampled win rate is nearest 50% within 40-60%."""
    from marl import checkpoint
    from marl import config as config_mod
    from marl.trainer import LAST, kept_checkpoints

    root = Path(args.root)
    out = root / "baseline.json"
    if out.exists():
        return json.loads(out.read_text())
    probe = _config(args, "mappo", args.baseline_seed)
    per_update = probe["train"]["envs"] * probe["train"]["rollout"]
    every = max(1, round(args.keep_every / per_update))
    cfg = _config(args, "mappo", args.baseline_seed, f"train.steps={args.baseline_steps}",
                  "train.keep_checkpoints=true", f"train.checkpoint_interval={every}")
    run = root / "mappo-baseline"
    _train(cfg, run, args.resume)
    picks = []
    for _, path in kept_checkpoints(run):
        data = checkpoint.load(path)
        sampled, det = _play(cfg, data["learner"], args.pick_episodes, 4_000_037)
        row = {"checkpoint": path.name, "env_steps": data["counters"]["env_steps"],
               "sampled_win_rate": float(np.mean(sampled["won"])), "v_b": float(np.mean(sampled["return"])),
               "v_b_episodes": len(sampled["return"]), "deterministic_win_rate": det["win_rate"]}
        print(json.dumps(row))
        picks.append(row)
    inside = [p for p in picks if args.pick_low <= p["sampled_win_rate"] <= args.pick_high]
    if not inside:
        seen = ", ".join(f"{p['env_steps']}: {p['sampled_win_rate']:.2f}" for p in picks)
        sys.exit(f"stepmix_smac: error: no kept checkpoint of {run} wins {args.pick_low:.0%}-{args.pick_high:.0%} "
                 f"sampled ({seen}); keep checkpoints more often (--keep-every) or train longer (--baseline-steps)")
    middle = (args.pick_low + args.pick_high) / 2
    best = dict(min(inside, key=lambda p: abs(p["sampled_win_rate"] - middle)))
    dest = root / "baseline"
    (dest / "checkpoints").mkdir(parents=True, exist_ok=True)
    config_mod.dump(cfg, dest / "config.yaml")
    shutil.copyfile(run / "checkpoints" / best["checkpoint"], dest / "checkpoints" / LAST)
    best["candidates"] = picks
    out.write_text(json.dumps(best, indent=1))
    return best


def precise_vb(args, base: dict) -> dict:
    """V_b for the table's threshold from --vb-episodes sampled episodes of the chosen baseline (once; kept in
    ROOT/baseline.json). The pick's 256 episodes leave V_b's standard error near 0.25 on 3s5z, which moves
    (1 - alpha) V_b by about as much as the margin the learners keep above it; the 256-episode value stays as
    v_b_pick."""
    from marl import checkpoint
    from marl import config as config_mod
    from marl.trainer import LAST

    if "v_b_se" in base or args.vb_episodes <= 0:
        return base
    root = Path(args.root)
    cfg = config_mod.load_file(root / "baseline" / "config.yaml")
    data = checkpoint.load(root / "baseline" / "checkpoints" / LAST)
    sampled, _ = _play(cfg, data["learner"], args.vb_episodes, 5_000_011, with_eval=False)
    r = np.asarray(sampled["return"], np.float64)
    base = {**base, "v_b_pick": base["v_b"], "v_b_pick_episodes": base["v_b_episodes"], "v_b": float(r.mean()),
            "v_b_se": float(r.std(ddof=1) / math.sqrt(len(r))), "v_b_episodes": len(r),
            "v_b_win_rate": float(np.mean(sampled["won"]))}
    (root / "baseline.json").write_text(json.dumps(base, indent=1))
    return base


def runs(args) -> None:
    """Stage 2: EpsMix and StepMix at alpha on the baseline, and MAPPO from scratch, for each seed."""
    root = Path(args.root)
    for seed in range(args.first_seed, args.seeds + 1):
        for mode in args.modes:
            run = root / "runs" / (f"{mode}-{args.tag}-s{seed}" if args.tag else f"{mode}-s{seed}")
            more = [f"train.steps={args.steps}", "train.log_episodes=true", f"train.eval_interval={args.eval_interval}"]
            if mode == "mappo":
                cfg = _config(args, "mappo", seed, *more)
            else:
                cfg = _config(args, "stepmix", seed, *more, f"algo.mix={mode}", f"algo.alpha={args.alpha}",
                              f"algo.baseline={root / 'baseline'}")
            run.mkdir(parents=True, exist_ok=True)
            (run / "bench.json").write_text(json.dumps({"mode": mode, "seed": seed, "alpha": args.alpha,
                                                        "tag": args.tag, "override": args.override}))
            _train(cfg, run, args.resume)


def _modes(text: str) -> list[str]:
    """--modes: a comma list of MODES."""
    modes = [m for m in text.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"{','.join(bad) or text!r} is not a comma list of {', '.join(MODES)}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--scenario", default="3s5z")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=1,
                   help="train seeds first-seed..seeds (another process can train the others meanwhile)")
    p.add_argument("--modes", type=_modes, default=list(MODES),
                   help=f"comma list of the runs to train per seed, of {', '.join(MODES)} (default: all)")
    p.add_argument("--tag", default="", help="a name for a variant (with -o): its runs are MODE-TAG-sSEED")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=2_000_000, help="env steps of each StepMix, EpsMix and MAPPO run")
    p.add_argument("--baseline-steps", type=int, default=1_000_000)
    p.add_argument("--baseline-seed", type=int, default=1)
    p.add_argument("--keep-every", type=int, default=64_000, help="env steps between kept baseline checkpoints")
    p.add_argument("--pick-episodes", type=int, default=256, help="sampled episodes per kept checkpoint")
    p.add_argument("--vb-episodes", type=int, default=4096,
                   help="sampled episodes of the chosen baseline for the table's V_b (0: keep the pick's)")
    p.add_argument("--pick-low", type=float, default=0.4, help="lowest sampled win rate of the baseline")
    p.add_argument("--pick-high", type=float, default=0.6, help="highest sampled win rate of the baseline")
    p.add_argument("--eval-interval", type=int, default=10, help="updates between deterministic evaluations")
    p.add_argument("--window", type=int, default=256, help="training episodes per window of the table")
    p.add_argument("--resume", action="store_true", help="continue runs begun in an earlier session")
    p.add_argument("--table", action="store_true", help="print the table of the runs under ROOT")
    p.add_argument("-o", "--override", action="append", default=[], help="a config override for every run (key=value)")
    return p


def main(argv=None) -> None:
    """Run the stages (or print the table as JSON lines)."""
    args = build_parser().parse_args(argv)
    if args.table:
        for row in table(Path(args.root), args.window):
            print(json.dumps(row))
        return
    base = precise_vb(args, baseline(args))
    se = f" +- {base['v_b_se']:.3f} ({base['v_b_episodes']} episodes)" if "v_b_se" in base else ""
    print(f"baseline: {base['checkpoint']} at {base['env_steps']} steps, sampled win rate "
          f"{base['sampled_win_rate']:.2f}, V_b {base['v_b']:.2f}{se}, "
          f"deterministic {base['deterministic_win_rate']:.2f}")
    runs(args)


if __name__ == "__main__":
    main()
