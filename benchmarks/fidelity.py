"""How close the simulator is to SMAC: MAPPO's eval curves here against the MAPPO authors' curves on the real game.

Trains MAPPO with its authors' SMAC settings (8 envs x 400 steps per update, the per-map PPO epochs, clip and
minibatches of their scripts, 32-episode deterministic evaluation) on each map and seed, one run at a time, then
compares the median eval win rate over seeds with the real game's median (benchmarks/data/mappo_real_curves.csv,
SC2.4.10) at 0.5M, 1M, 1.5M, 2M and 3M env steps:

    python benchmarks/fidelity.py --maps 3m 2s3z 3s5z 5m_vs_6m MMM2 --seeds 1 --resume
    python benchmarks/fidelity.py --maps 3s5z --seeds 1 2 3 --tag projectile --resume env.projectile_delay=true
    python benchmarks/fidelity.py --table runs/fidelity/default/3s5z-s1 runs/fidelity/default/3s5z-s2 --plots docs

Runs live in RUN_ROOT/TAG/MAP-sSEED (runs/fidelity/default/3s5z-s1). With --resume, a finished run is skipped
and an unfinished one continues from its last checkpoint, so the list can be worked through across sessions;
without it an existing run directory is an error. --table reads run directories (their TensorBoard events) and
trains nothing; runs of one map (the directory name before -sSEED) are pooled as seeds.

The band (issue 19): at each of 1M, 2M and 3M, our median within +-0.15 of the real median; where the real game
reaches 90%, our first 90% within a factor of 1.5 of the real step. Our curve is read between evaluations by
linear interpolation; the real curve's first 90% is the linear crossing between its tabulated points (an upper
bound when its first point is already at 90%).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

# a copy of shared/reference/smac/mappo_real_curves.csv (MAPPO authors' runs on SC2.4.10, median over seeds)
REAL_CSV = Path(__file__).resolve().parent / "data" / "mappo_real_curves.csv"
CHECKPOINTS = (500_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000)
BAND_CHECKPOINTS = (1_000_000, 2_000_000, 3_000_000)  # where the target applies
BAND = 0.15
FIRST_WIN = 0.9
FACTOR = 1.5
# MAPPO authors' per-map settings (marlbenchmark/on-policy, onpolicy/scripts/train_smac_scripts/*.sh; 2s3z from
# the MAPPO paper's SMAC hyperparameter table); every map: 8 envs x 400 steps, 32 eval episodes. MMM2's script
# alone passes --gain 1, the init gain of the actor's output layer (0.01 by default): algo.actor_gain
MAP_SETTINGS = {
    "3m": {"ppo_epochs": 15, "clip": 0.2, "minibatches": 1},
    "2s3z": {"ppo_epochs": 15, "clip": 0.2, "minibatches": 1},
    "3s5z": {"ppo_epochs": 5, "clip": 0.2, "minibatches": 1},
    "5m_vs_6m": {"ppo_epochs": 10, "clip": 0.05, "minibatches": 1},
    "MMM2": {"ppo_epochs": 5, "clip": 0.2, "minibatches": 2, "actor_gain": 1.0},
}
DEFAULT_MAPS = list(MAP_SETTINGS)


class FidelityError(Exception):
    """A wrong argument or a run directory that cannot be read (one line for the user)."""


# ---------------------------------------------------------------------------------------------- curve logic
def read_real(path: Path = REAL_CSV, algo: str = "MAPPO") -> dict[str, list[tuple[int, float]]]:
    """The real game's median curves, {map: [(env steps, win rate)]} in step order."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["algo"] == algo:
                curves.setdefault(row["map"], []).append((int(row["env_steps"]), float(row["win_rate_median"])))
    return {m: sorted(c) for m, c in curves.items()}


END_TOLERANCE = 0.01  # the last evaluation stands for a step at most 1% past it (the budget's end)


def value_at(curve: list[tuple[int, float]], step: int) -> float | None:
    """The win rate at `step`, linear between the two evaluations around it; None outside the evaluated span.

    An evaluation within END_TOLERANCE of `step` below it stands for it when none comes later: a run's budget
    (3M) ends a few updates after its last periodic evaluation (2.976M at 10 updates of 3,200 steps), and
    the next evaluation would have come after the budget."""
    if curve and curve[-1][0] < step <= curve[-1][0] + END_TOLERANCE * step:
        return curve[-1][1]
    if not curve or step < curve[0][0] or step > curve[-1][0]:
        return None
    for (s0, v0), (s1, v1) in zip(curve, curve[1:]):
        if s0 <= step <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return curve[0][1]  # a one-point curve evaluated at its own step


def median_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The median over seeds at every step all seeds evaluated (the runs share their eval interval)."""
    if not curves:
        return []
    common = set.intersection(*(set(s for s, _ in c) for c in curves))
    maps = [dict(c) for c in curves]
    return [(s, statistics.median(m[s] for m in maps)) for s in sorted(common)]


def first_reaching(curve: list[tuple[int, float]], target: float = FIRST_WIN) -> int | None:
    """Our first evaluation at or above `target` (evaluations are dense: no interpolation)."""
    return next((s for s, v in curve if v >= target - 1e-12), None)


def real_first_reaching(curve: list[tuple[int, float]], target: float = FIRST_WIN) -> tuple[float, bool] | None:
    """The real curve's first crossing of `target`, linear between its points: (step, is an upper bound).

    An upper bound when the first tabulated point is already at the target (3m: 100% at 250k, the crossing
    is somewhere before). None when the curve never reaches it."""
    for i, (s, v) in enumerate(curve):
        if v >= target - 1e-12:
            if i == 0:
                return float(s), True
            s0, v0 = curve[i - 1]
            return s0 + (s - s0) * (target - v0) / (v - v0), False
    return None


def first_within(ours: int | None, real: tuple[float, bool] | None, factor: float = FACTOR) -> bool | None:
    """Whether our first-90% step is within `factor` of the real one (None: the real game never gets there)."""
    if real is None:
        return None
    if ours is None:
        return False
    step, upper = real
    if upper:
        return ours <= factor * step
    return step / factor <= ours <= factor * step


def compare(ours: list[list[tuple[int, float]]], real: list[tuple[int, float]],
            checkpoints=CHECKPOINTS) -> dict:
    """One map's comparison: per checkpoint our median, the real median and whether we are in the band; first 90%."""
    med = median_curve(ours)
    per_seed = [[value_at(c, step) for c in ours] for step in checkpoints]
    points = []
    for step, vals in zip(checkpoints, per_seed):
        r = value_at(real, step)
        o = statistics.median(vals) if vals and all(v is not None for v in vals) else None
        inside = None if o is None or r is None else abs(o - r) <= BAND + 1e-9
        points.append({"step": step, "ours": o, "real": r, "in_band": inside})
    f_ours, f_real = first_reaching(med), real_first_reaching(real)
    band_ok = [p["in_band"] for p in points if p["step"] in BAND_CHECKPOINTS]
    return {"seeds": len(ours), "points": points, "first_90_ours": f_ours, "first_90_real": f_real,
            "first_90_within": first_within(f_ours, f_real), "band_met": all(band_ok) if band_ok else None}


# ---------------------------------------------------------------------------------------------- tables
def _cell(p: dict) -> str:
    if p["ours"] is None:
        return f"- / {p['real']:.2f}" if p["real"] is not None else "-"
    mark = "in" if p["in_band"] else "out"
    return f"{p['ours']:.2f} / {p['real']:.2f} {mark}"


def _steps(s: float | None) -> str:
    return "-" if s is None else f"{s / 1e6:.2f}M"


def table(results: dict[str, dict]) -> str:
    """Markdown table: per map our median / the real median at each checkpoint (in or out of the band), first 90%."""
    head = " | ".join(f"{s / 1e6:g}M" for s in CHECKPOINTS)
    lines = [f"| map | seeds | {head} | first 90%, ours | real | within {FACTOR}x |",
             "| --- | --- |" + " --- |" * len(CHECKPOINTS) + " --- | --- | --- |"]
    for name, r in results.items():
        cells = " | ".join(_cell(p) for p in r["points"])
        fr = r["first_90_real"]
        real = "never" if fr is None else ("<= " if fr[1] else "") + _steps(fr[0])
        within = {None: "n/a", True: "yes", False: "no"}[r["first_90_within"]]
        lines.append(f"| {name} | {r['seeds']} | {cells} | {_steps(r['first_90_ours'])} | {real} | {within} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- runs
def run_curve(run_dir: Path) -> list[tuple[int, float]]:
    """A run's eval win rate per evaluation, (env steps, win rate), from its TensorBoard events."""
    sys.path.insert(0, str(Path(__file__).parent))
    from learning import scalars

    if not (run_dir / "tb").is_dir():
        raise FidelityError(f"{run_dir} is not a run directory (no tb/ folder of TensorBoard events)")
    return [(s, v) for s, _, v in scalars(run_dir, "eval/win_rate")]


def map_of(run_dir: Path) -> str:
    """The map a run directory belongs to: its config's scenario, else the name before -sSEED."""
    import yaml

    cfg = run_dir / "config.yaml"
    if cfg.exists():
        scenario = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("run", {}).get("scenario")
        if scenario:
            return scenario
    name = run_dir.name
    return name.rsplit("-s", 1)[0] if "-s" in name else name


def overrides_for(map_name: str, steps: int, seed: int, runs_dir: Path, eval_interval: int) -> list[str]:
    """The MAPPO authors' settings for a map, as marl overrides."""
    s = MAP_SETTINGS.get(map_name, {"ppo_epochs": 5, "clip": 0.2, "minibatches": 1})
    return [f"train.steps={steps}", f"train.seed={seed}", f"train.runs_dir={runs_dir}", "train.envs=8",
            "train.rollout=400", "train.eval_episodes=32", f"train.eval_interval={eval_interval}",
            "train.record_replays=false"] + [f"algo.{key}={value}" for key, value in s.items()]


def train_one(map_name: str, seed: int, steps: int, run_dir: Path, resume: bool, eval_interval: int,
              extra: list[str], show_progress: bool = True) -> str:
    """Train (or skip, or continue) one run; returns what happened: trained, resumed or skipped."""
    from marl import config as config_mod
    from marl.trainer import Trainer

    done_file = run_dir / "fidelity_done.json"
    if run_dir.exists():
        if not resume:
            raise FidelityError(f"{run_dir} exists; pass --resume to skip it when finished or continue it")
        if done_file.exists():
            return "skipped"
    has_ckpt = (run_dir / "checkpoints" / "last.pt").exists()
    if has_ckpt:
        cfg = config_mod.load_file(run_dir / "config.yaml")  # the run continues with the settings it began with
    else:
        cfg = config_mod.load("smac", map_name, "mappo",
                              overrides_for(map_name, steps, seed, run_dir.parent, eval_interval) + extra)
    trainer = Trainer(cfg, run_dir, resume=has_ckpt, show_progress=show_progress)
    result = trainer.run()
    if not result["interrupted"] and trainer.env_steps >= cfg["train"]["steps"]:
        done_file.write_text(json.dumps({"env_steps": trainer.env_steps, "eval": result["eval"]}), encoding="utf-8")
    return "resumed" if has_ckpt else "trained"


def plot(name: str, ours: list[list[tuple[int, float]]], real: list[tuple[int, float]], out: Path) -> Path:
    """One map's figure: our seeds (thin), our median (bold), the real median and its +-0.15 band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=120)
    if real:
        xs = [s / 1e6 for s, _ in real]
        ys = [v for _, v in real]
        ax.fill_between(xs, [max(v - BAND, 0) for v in ys], [min(v + BAND, 1) for v in ys], color="tab:orange",
                        alpha=0.15, label=f"real +-{BAND}")
        ax.plot(xs, ys, "o-", color="tab:orange", label="real game (MAPPO authors, median)")
    for c in ours:
        ax.plot([s / 1e6 for s, _ in c], [v for _, v in c], color="tab:blue", alpha=0.25, lw=0.8)
    med = median_curve(ours)
    if med:
        ax.plot([s / 1e6 for s, _ in med], [v for _, v in med], color="tab:blue", lw=2,
                label=f"marl simulator (median of {len(ours)})")
    last = max([c[-1][0] for c in ours if c] + [3_000_000]) / 1e6
    ax.set_xlim(0, last)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("env steps (millions)")
    ax.set_ylabel("eval win rate")
    ax.set_title(f"{name}: MAPPO, simulator against SC2")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"fidelity_{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def report(run_dirs: list[Path], plots: Path | None, real_path: Path = REAL_CSV) -> dict[str, dict]:
    """Compare run directories (pooled per map) with the real curves; print the table, write the plots."""
    real = read_real(real_path)
    by_map: dict[str, list[list[tuple[int, float]]]] = {}
    for d in run_dirs:
        c = run_curve(d)
        if c:
            by_map.setdefault(map_of(d), []).append(c)
    results = {}
    for name, curves in by_map.items():
        if name not in real:
            print(f"{name}: no real curve in {real_path.name}; skipped", flush=True)
            continue
        results[name] = compare(curves, real[name])
        print(json.dumps({"map": name, **results[name]}), flush=True)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            print(f"plot: {plot(name, curves, real[name], plots)}", flush=True)
    print()
    print(table(results))
    return results


def main(argv=None) -> None:
    """Train the listed maps and seeds (or read runs with --table) and print the comparison table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", nargs="+", default=DEFAULT_MAPS, metavar="MAP")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], metavar="SEED")
    p.add_argument("--steps", type=int, default=3_000_000, help="env-step budget of each run")
    p.add_argument("--eval-interval", type=int, default=10, help="updates (of 3200 env steps) between evaluations")
    p.add_argument("--runs-dir", default="runs/fidelity", help="root of the runs; each tag is a folder in it")
    p.add_argument("--tag", default="default", help="name of this set of runs (e.g. the env option under test)")
    p.add_argument("--resume", action="store_true", help="skip finished runs and continue unfinished ones")
    p.add_argument("--table", nargs="+", metavar="RUN_DIR", help="only compare these run directories")
    p.add_argument("--plots", help="write one figure per map into this folder (e.g. docs)")
    p.add_argument("--real", default=str(REAL_CSV), help="the real curves (CSV: map,algo,env_steps,win_rate_median)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. env.OPTION=VALUE)")
    args = p.parse_args(argv)
    args.overrides += [v for v in args.maps if "=" in v]  # key=value words after --maps are overrides
    args.maps = [v for v in args.maps if "=" not in v]
    plots = Path(args.plots) if args.plots else None
    try:
        if not Path(args.real).exists():
            raise FidelityError(f"no real-curve file at {args.real} (pass --real PATH)")
        if args.table:
            report([Path(d) for d in args.table], plots, Path(args.real))
            return
        from marl.config import ConfigError

        root = Path(args.runs_dir) / args.tag
        dirs = []
        for m in args.maps:
            for seed in args.seeds:
                run_dir = root / f"{m}-s{seed}"
                try:
                    what = train_one(m, seed, args.steps, run_dir, args.resume, args.eval_interval, args.overrides)
                except ConfigError as err:
                    raise FidelityError(str(err)) from None
                print(json.dumps({"run": str(run_dir), "map": m, "seed": seed, "status": what}), flush=True)
                dirs.append(run_dir)
        report(dirs, plots, Path(args.real))
    except FidelityError as err:
        print(f"marl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
