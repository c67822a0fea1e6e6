"""The `marl` command line: `marl train`, `marl eval`, `marl front`, `marl adapt`, `marl replay`, `marl envs` and
`marl config`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


class CLIError(Exception):
    """A user mistake reported as one line on stderr with exit status 2."""


def _envs(args: argparse.Namespace) -> int:
    import textwrap

    from marl.registry import _suggest, env_plugins

    plugins = env_plugins()
    if args.env is not None and args.env not in plugins:
        raise CLIError(f"unknown environment {args.env!r}{_suggest(args.env, list(plugins))}; known environments: "
                       f"{', '.join(sorted(plugins))}")
    names = [args.env] if args.env else list(plugins)
    width = max(len(n) for n in names) + 2
    print("Environments")
    for name in names:
        print(f"  {name:<{width}}{plugins[name].description or '(no description)'}")
    for name in names:
        if name == "smac":
            _smac_table()
            continue
        try:
            scenarios = plugins[name].scenario_names()
        except Exception as err:  # noqa: BLE001 - a plug-in's listing must not break the others
            print(f"\n{name} scenarios: cannot be listed ({type(err).__name__}: {str(err).strip()[:120]})")
            continue
        if scenarios:
            print(f"\n{name} scenarios")
            print(textwrap.fill(", ".join(scenarios), width=100, initial_indent="  ", subsequent_indent="  "))
    return 0


def _smac_table() -> None:
    from marl.envs.smac import SMACBatch, scenario_names

    print()
    print("SMAC maps (smac)")
    header = f"  {'map':<18}{'agents':>7}{'enemies':>8}{'limit':>7}{'obs':>6}{'state':>7}{'actions':>8}  units"
    print(header)
    for name in scenario_names():
        b = SMACBatch(name, 1)
        m = b.map
        if m.generator:  # SMACv2: the teams are drawn every episode from the race's pool
            units = "drawn per episode: " + " ".join(f"{u} {w:.2f}" for u, w in zip(m.pool, m.pool_weights))
        else:
            units = f"{_count(m.unit_names('ally'))} vs {_count(m.unit_names('enemy'))}"
        print(f"  {name:<18}{m.n_agents:>7}{m.n_enemies:>8}{m.limit:>7}{b.obs_dim:>6}{b.state_dim:>7}"
              f"{b.n_actions:>8}  {units}")
    import textwrap

    from marl.envs.smac.maps import MARINE_PATTERN, ODIS_MARINE_LIMITS

    odis = ", ".join(f"{n}m {limit}" for n, limit in ODIS_MARINE_LIMITS.items())
    notes = [f"{MARINE_PATTERN}: generated marine battles on the marine maps' layout (the SMAC names above keep "
             f"SMAC's own); episode limit: ODIS's {odis}; 60 below 4 marines, 150 above 12; Nm_vs_Mm takes that "
             f"of the larger team (docs/smac_rules.md section 19).",
             "Several maps in one run: marl train smac 3m,5m,8m (train.envs >= the number of maps; battles split "
             "evenly in the order named, padded to the largest team; docs/smac_rules.md section 20)."]
    print()
    for note in notes:
        print(textwrap.fill(note, width=110, initial_indent="  ", subsequent_indent="    "))


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marl import config as config_mod
    from marl.trainer import Trainer, run_dir_name

    if args.resume:
        # a run's settings are its config.yaml: a flag that would change one is refused, not silently dropped
        flags = [f"--{flag}" for flag in ("algo", "steps", "seed", "envs") if getattr(args, flag) is not None]
        if args.env or args.overrides or flags:
            given = f" (not {', '.join(flags)})" if flags else ""
            raise CLIError(f"--resume continues a run as it was configured; give only the run directory{given}, "
                           "with --ray-workers/--address at most")
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise CLIError(f"no run directory at {run_dir}")
        config = config_mod.load_file(run_dir / "config.yaml")
        _ray_flags(args, config)  # where the workers run may change between sessions (a new cluster)
        trainer = Trainer(config, run_dir, resume=True)
        print(f"resuming {run_dir} at {trainer.env_steps:,} env steps", file=sys.stderr)
    else:
        if not args.env:
            raise CLIError("marl train needs an environment, e.g. `marl train smac 3m` (or --resume RUN_DIR)")
        scenario, overrides = args.scenario, list(args.overrides)
        if scenario is not None and "=" in scenario:
            overrides.insert(0, scenario)
            scenario = None
        for flag, key in [("steps", "train.steps"), ("seed", "train.seed"), ("envs", "train.envs")]:
            if getattr(args, flag) is not None:
                overrides.append(f"{key}={getattr(args, flag)}")
        args.algo = args.algo or DEFAULT_ALGO
        config = config_mod.load(args.env, scenario, args.algo, overrides)
        _ray_flags(args, config)
        run_dir = Path(config["train"]["runs_dir"]) / run_dir_name(config)
        trainer = Trainer(config, run_dir)
        print(f"training {args.algo} on {args.env} {scenario or ''} -> {run_dir} (TensorBoard: tensorboard "
              f"--logdir {run_dir.parent})", file=sys.stderr)
    try:
        result = trainer.run()
    finally:
        trainer.close()  # Ray workers, and a local Ray this run started
    ev = result["eval"]
    if ev:
        win = f"win rate {ev['win_rate']:.1%} over {ev['episodes']} episodes, " if "win_rate" in ev else \
            f"{ev['episodes']} episodes, "
        print(f"last evaluation: {win}{returns_text(ev['episode_return'], trainer.spec.reward_names)}")
        if ev.get("scenarios"):
            print(", ".join(f"{label} {part['win_rate']:.1%}" if "win_rate" in part else
                            f"{label} {returns_text(part['episode_return'], trainer.spec.reward_names)}"
                            for label, part in ev["scenarios"].items()))
    print(f"run directory: {run_dir}")
    return 130 if result["interrupted"] else 0


def _ray_flags(args: argparse.Namespace, config: dict) -> None:
    """--ray-workers and --address into a run's config (a resumed one's too: a new session may have a new cluster),
    validated like any override; the address is taken as written, never read as YAML."""
    from marl import config as config_mod

    flags = [("train.ray_workers", args.ray_workers), ("train.ray_address", args.address)]
    for key, value in flags:
        if value is not None:
            config_mod.apply(config, key, value)
    if any(value is not None for _, value in flags):
        config_mod.validate(config, where="--ray-workers/--address")


def returns_text(mean_return, names) -> str:
    """An evaluation's mean return in words: "mean return 1.50", or each objective's: "mean return combat 12.30,
    safety -3.20"."""
    if isinstance(mean_return, (int, float)):
        return f"mean return {mean_return:.2f}"
    names = names if len(names) == len(mean_return) else [f"objective_{k}" for k in range(len(mean_return))]
    return "mean return " + ", ".join(f"{n} {r:.2f}" for n, r in zip(names, mean_return, strict=True))


DEFAULT_ALGO = "commformer"  # the learner of `marl train` and `marl config` when none is named
EVAL_SEED = 12345  # `marl eval`'s battles unless --seed says otherwise; benchmarks use them too, so numbers repeat


def checkpoint_file(run_dir, name: str | None):
    """The checkpoint `marl eval --checkpoint NAME` plays: RUN_DIR/checkpoints/last.pt without a name; else a file
    of RUN_DIR/checkpoints (step-1360000.pt, or its env steps alone: 1360000), or a path. CLIError names the
    checkpoints there when none matches."""
    from pathlib import Path

    from marl.trainer import LAST, kept_checkpoint_name

    folder = Path(run_dir) / "checkpoints"
    if name is None:
        return folder / LAST
    steps = name.isascii() and name.isdigit()
    candidates = [folder / kept_checkpoint_name(int(name))] if steps else [folder / name, Path(name)]
    for path in candidates:
        if path.is_file():
            return path
    kept = sorted((p.name for p in folder.glob("*.pt")), key=lambda n: (len(n), n)) if folder.is_dir() else []
    shown = ", ".join(kept if len(kept) <= 8 else [*kept[:4], "...", *kept[-3:]]) + (
        f" ({len(kept)} in all)" if len(kept) > 8 else "")
    raise CLIError(f"no checkpoint {name!r} in {folder}; there: {shown or 'none'} (keep one per "
                   "checkpoint interval with train.keep_checkpoints=true)")


def load_for_eval(run_dir, episodes: int, scenario: str | None = None, env_options: list[str] | tuple = (),
                  checkpoint_name: str | None = None) -> tuple[dict, dict, object, object, str]:
    """What `marl eval` plays: the run's config, its last checkpoint (or `checkpoint_name`, see checkpoint_file),
    an env of min(episodes, 32) battles per scenario, the learner restored from the checkpoint, and the scenarios'
    label (`scenario`: --scenario's text)."""
    from pathlib import Path

    from marl import checkpoint
    from marl import config as config_mod
    from marl.trainer import build, build_scenario_eval

    run_dir = Path(run_dir)
    config = config_mod.load_file(run_dir / "config.yaml")
    path = checkpoint_file(run_dir, checkpoint_name)
    data = checkpoint.load(path)
    batch = min(episodes, 32)
    if env_options:
        config = _with_env_options(config, env_options)
    if scenario is not None:  # battles the run may never have trained on, padded to its shapes
        scenarios = [s.strip() for s in scenario.split(",")]
        if not all(scenarios):
            raise CLIError(f"--scenario takes one scenario or a comma list (10m or 4m,6m,7m), got {scenario!r}")
        env, learner = build_scenario_eval(config, scenarios, batch * len(scenarios), data["learner"])
        return config, data, env, learner, ",".join(scenarios)
    n_scenarios = max(len(config_mod.scenario_list(config)), 1)
    env, learner = build(config, n_envs=batch * n_scenarios)
    checkpoint.restore(learner, data["learner"], path)
    return config, data, env, learner, config["run"]["scenario"] or ""


def _with_env_options(config: dict, items) -> dict:
    """The run's config with --env-option KEY=VALUE applied to its env section; refused (one line) where an option
    is unknown, out of its domain, or changes the shapes the learner was built for."""
    import copy

    from marl import config as config_mod
    from marl.trainer import build_env

    changed = copy.deepcopy(config)
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--env-option takes KEY=VALUE (for example turning=true), got {item!r}")
        config_mod.apply(changed, f"env.{key.strip()}", config_mod.parse_value(text.strip()))
    config_mod.validate(changed)
    specs = []
    for c in (config, changed):
        env = build_env(c, 1)
        specs.append(env.spec)
        env.close()
    shapes = [(s.obs_dim, s.state_dim, s.n_actions, s.n_agents) for s in specs]
    if shapes[0] != shapes[1]:
        raise CLIError(f"--env-option {' '.join(items)} changes what the learner sees (obs, state, actions, agents "
                       f"{shapes[0]} -> {shapes[1]}); only options that keep the shapes can be evaluated")
    return changed


def evaluate_run(run_dir, episodes: int, seed: int = EVAL_SEED, checkpoint_name: str | None = None,
                 sampled: bool = False) -> dict:
    """`marl eval RUN_DIR --episodes N --seed S [--checkpoint NAME] [--sampled]` as a dict: evaluate()'s figures (win
    rate with its 95% interval, mean return and length) and "env_steps", those of the checkpoint it played."""
    from marl.trainer import evaluate

    _, data, env, learner, _ = load_for_eval(run_dir, episodes, checkpoint_name=checkpoint_name)
    try:
        if sampled:
            seed_acting(learner, env.n_envs, seed)
        res = evaluate(env, learner, episodes, seed=seed, deterministic=not sampled)
    finally:
        env.close()
    return {**res, "env_steps": data["counters"]["env_steps"]}


def seed_acting(learner, n_envs: int, seed: int) -> None:
    """Seed a learner's acting randomness (its sampled actions, gates, latents) from `seed`, where it can say how
    (ActingState.set_shard); another learner samples from its own stream, restored from the checkpoint."""
    from marl.spec import ActingState

    if isinstance(learner, ActingState):
        learner.set_shard(0, n_envs, seed)


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marl.spec import EvalCounters
    from marl.trainer import build_env, evaluate, scenario_record_env

    run_dir = Path(args.run_dir)
    if args.out and not args.record:
        raise CLIError("--out DIR goes with --record N (the number of battles to record)")
    config, data, env, learner, what = load_for_eval(run_dir, args.episodes, args.scenario, args.env_option,
                                                     args.checkpoint)
    r = config["run"]
    if args.env_option:
        what = f"{what} ({', '.join(args.env_option)})".lstrip()
    if args.preference is not None:
        _choose(learner, args.preference, r["algo"], env.spec)
    if args.sampled:
        seed_acting(learner, env.n_envs, args.seed)
    res = evaluate(env, learner, args.episodes, seed=args.seed, deterministic=not args.sampled)
    head = f"{r['env']} {what} {r['algo']} after {data['counters']['env_steps']:,} env steps"
    if args.sampled:
        head += " (sampled actions)"
    if res.get("scenarios"):
        _scenario_rows(head, res, env.spec.reward_names)
    else:
        win = (f"win rate {res['win_rate']:.1%} (95% CI {res['win_rate_low']:.1%}-{res['win_rate_high']:.1%}) "
               f"over " if "win_rate" in res else "")
        counters = learner.eval_counters.values() if isinstance(learner, EvalCounters) else ()  # CommFormer's
        counted = "".join(f", {key.replace('_', ' ')} {res[key]:.3f}" for key in counters if key in res)
        print(f"{head}: {win}{res['episodes']} episodes, {returns_text(res['episode_return'], env.spec.reward_names)}"
              f", mean episode length {res['episode_length']:.1f}{counted}")
    if args.record:
        from marl import replay

        meta = {"env": r["env"], "learner": r["algo"], "env_steps": data["counters"]["env_steps"]}
        if env.spec.scenarios:  # each scenario on battles of its own, padded to the shapes the learner plays
            rec_envs = [scenario_record_env(config, env.spec, k, min(args.record, 16))
                        for k in range(len(env.spec.scenarios))]
        else:  # a separate set of battles, so recording does not change the evaluation above
            rec_envs = [build_env(config, min(args.record, 16))]
        for rec_env in rec_envs:
            replays = replay.record(rec_env, learner, args.record, seed=args.seed, meta=meta)
            for path in replay.save_all(replays, Path(args.out) if args.out else run_dir / "replays"):
                print(path)
    return 0


def _scenario_rows(head: str, res: dict, reward_names) -> None:
    """One row per scenario of an evaluation of several, then their whole."""
    per = next(iter(res["scenarios"].values()))["episodes"]
    print(f"{head}, {per} episodes per scenario:")
    rows = [*res["scenarios"].items(), ("all", res)]
    width = max(len(label) for label, _ in [*rows, ("scenario", None)]) + 2
    win = "win_rate" in res
    print(f"  {'scenario':<{width}}{'episodes':>9}" + (f"{'win rate':>10}{'95% CI':>15}" if win else "")
          + f"{'mean length':>13}  mean return")
    for label, part in rows:
        ci = f"{part['win_rate_low']:.1%}-{part['win_rate_high']:.1%}" if win else ""
        mean_return = returns_text(part["episode_return"], reward_names).removeprefix("mean return ")
        print(f"  {label:<{width}}{part['episodes']:>9}" + (f"{part['win_rate']:>10.1%}{ci:>15}" if win else "")
              + f"{part['episode_length']:>13.1f}  {mean_return}")


def _choose(learner, text: str, algo: str, spec) -> None:
    """Make a ParetoFront learner act with its archived policy of the best w . G for the preference `text`."""
    from marl.config import parse_list
    from marl.spec import ParetoFront

    if not isinstance(learner, ParetoFront):
        raise CLIError(f"--preference picks a policy from a Pareto front; this run's learner {algo} keeps one "
                       "policy (train with --algo cmorl)")
    w = parse_list(text)
    if not isinstance(w, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in w):
        raise CLIError(f"--preference takes one number per objective ({', '.join(spec.reward_names)}), such as "
                       f"0.3,0.7 or [0.3,0.7]; got {text!r}")
    entry = learner.use_preference(w)  # a bad length, a negative or an all-zero preference: one-line ValueError
    values = ", ".join(f"{n} {g:.4g}" for n, g in zip(spec.reward_names, entry.returns))
    print(f"policy {entry.id} of the Pareto archive (best w . G for w = {w}): evaluated returns {values}")


def front_rows(archive, names) -> list[dict]:
    """One row per archived policy: id, evaluated returns per objective, its preference, stage and parent."""
    rows = []
    for e in sorted(archive, key=lambda e: tuple(-e.returns)):
        row = {"id": e.id, **{n: float(g) for n, g in zip(names, e.returns)}}
        w = e.meta.get("weight")
        row["weight"] = "/".join(f"{float(x):g}" for x in w) if w is not None else ""
        row.update(stage=e.meta.get("stage", ""), parent=e.meta.get("parent", ""), update=e.meta.get("update", ""))
        rows.append(row)
    return rows


def _front(args: argparse.Namespace) -> int:
    import csv
    from pathlib import Path

    from PIL import Image

    from marl import checkpoint
    from marl import config as config_mod
    from marl.pareto import front_image
    from marl.spec import ParetoFront
    from marl.trainer import LAST, build

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CLIError(f"no run directory at {run_dir} (it needs config.yaml and checkpoints/{LAST})")
    config = config_mod.load_file(run_dir / "config.yaml")
    data = checkpoint.load(run_dir / "checkpoints" / LAST)
    env, learner = build(config, n_envs=1)
    env.close()
    if not isinstance(learner, ParetoFront):
        raise CLIError(f"{run_dir} was trained with {config['run']['algo']}, which keeps one policy, not a Pareto "
                       "front (train with --algo cmorl)")
    checkpoint.restore(learner, data["learner"], run_dir / "checkpoints" / LAST)
    archive, names = learner.pareto_archive(), list(env.spec.reward_names)
    rows = front_rows(archive, names)
    if not rows:
        raise CLIError(f"the Pareto archive of {run_dir} is empty: no evaluation has run yet")
    head = ["id", *names, "weight", "stage", "parent", "update"]
    with open(run_dir / "front.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=head)
        writer.writeheader()
        writer.writerows(rows)
    ref = learner.reference_point() if hasattr(learner, "reference_point") else None
    Image.fromarray(front_image(archive.returns(), names, ref)).save(run_dir / "front.png")
    meta = next(iter(archive)).meta
    cap = meta.get("episode_cap", "?")  # 0: the environment declares no limit (a PettingZoo game without max_cycles)
    cap = f"episodes capped at {cap} steps" if cap else "no episode cap declared"
    print(f"Pareto front of {run_dir} after {data['counters']['env_steps']:,} env steps: {len(rows)} policies "
          f"(discounted returns, gamma {meta.get('gamma', '?')}, {cap}, {meta.get('episodes', '?')} episodes each)")
    width = {h: max(len(h), *(len(f"{r[h]:.4f}" if isinstance(r[h], float) else str(r[h])) for r in rows))
             for h in head}
    print("  ".join(f"{h:>{width[h]}}" for h in head))
    for r in rows:
        print("  ".join(f"{(f'{r[h]:.4f}' if isinstance(r[h], float) else str(r[h])):>{width[h]}}" for h in head))
    metrics = learner.front_metrics() if hasattr(learner, "front_metrics") else {}
    print(", ".join(f"{k.partition('/')[2].upper()} {v:.4f}" for k, v in metrics.items() if k != "pareto/size"))
    print(f"wrote {run_dir / 'front.csv'} and {run_dir / 'front.png'}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from marl.adapt import adapt, probabilities

    res = adapt(args.run_dir, args.scenario, episodes=args.episodes, steps=args.steps, lr=args.lr, seed=args.seed,
                eval_episodes=args.eval_episodes, out=args.out, start_max_prob=args.start_max_prob)
    before, after = res["before"], res["after"]
    print(f"adapted {res['run']} to {res['scenario']} ({res['steps']} steps of {res['episodes']} episodes): "
          f"win rate before {before['win_rate']:.1%}, after {after['win_rate']:.1%} (each over "
          f"{after['episodes']} fresh episodes, seed {res['seed']})")
    print(f"prior over the modes: {probabilities(res['prior_before'])} -> {probabilities(res['prior_after'])} "
          f"(the steps started from {probabilities(res['prior_start'])})")
    print(f"adapted run: {res['out']}")
    return 0


def _config(args: argparse.Namespace) -> int:
    import yaml

    from marl import config as config_mod
    from marl import settings
    from marl.registry import _suggest, env_plugins

    # KEY=VALUE overrides may follow the learner or the scenario (--env takes every word after it)
    algo = args.algo
    overrides = [*([algo] if "=" in algo else []), *args.overrides, *(w for w in args.env if "=" in w)]
    algo = DEFAULT_ALGO if "=" in algo else algo
    env_words = [w for w in args.env if "=" not in w]
    if not env_words or len(env_words) > 2:
        raise CLIError(f"--env takes an environment and at most one scenario, got {' '.join(env_words) or 'none'}")
    env, scenario = env_words[0], (env_words[1] if len(env_words) > 1 else None)
    plugins = env_plugins()
    if env not in plugins:
        raise CLIError(f"unknown environment {env!r}{_suggest(env, list(plugins))}; known environments: "
                       f"{', '.join(sorted(plugins))}")
    if scenario is not None and plugins[env].check is not None:
        plugins[env].check(scenario)  # a mistyped map would otherwise show the settings without its preset
    config, sources = config_mod.resolve(env, scenario, algo, overrides)
    config_mod.validate(config, sources)
    rows = settings.describe(config)
    preset = config_mod.config_path(f"presets/{env}/{scenario}.yaml")
    given = {config_mod.override_key(o) for o in overrides}
    for row in rows:
        text = yaml.safe_dump(row["value"], default_flow_style=True, width=1000).removesuffix("\n...\n").strip()
        mark = " +" if row["key"] in given else " *" if sources.get(row["key"]) == preset else ""
        row["shown"] = text + mark
    head = {"key": "key", "type": "type", "shown": "value", "domain": "domain"}
    width = {c: max(len(str(r[c])) for r in [*rows, head]) for c in head}
    print(f"Settings of {algo} on {env}{' ' + scenario if scenario else ''} (set one with SECTION.KEY=VALUE on "
          f"marl train)")
    for section in config_mod.SECTIONS:
        print()
        print("  ".join(f"{head[c]:<{width[c]}}" for c in head) + "  description")
        for row in rows:
            if row["key"].startswith(section + "."):
                print("  ".join(f"{str(row[c]):<{width[c]}}" for c in head) + f"  {row['description']}".rstrip())
        schema = settings.schema_of(section, config)
        if section == "env" and config_mod.env_passes_through(env) and (
                schema is None or schema.model_config.get("extra") == "allow"):
            print(f"(other env.KEY=VALUE keys go to the {env} environment's factory as keyword arguments)")
    notes = [*([f"* set by the preset {preset}"] if any(r["shown"].endswith(" *") for r in rows) else []),
             *(["+ set on the command line"] if given else [])]
    if notes:
        print()
        print("\n".join(notes))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from marl import replay, viewer

    rep = replay.load(args.file)
    if args.export is None:
        if args.step is not None:
            raise CLIError("--step goes with --export FILE.png")
        viewer.show(rep)
        return 0
    written = viewer.export(rep, args.export, step=args.step)
    if len(written) == 1:
        print(written[0])
    else:
        print(f"{len(written)} frames in {written[0].parent}")
    return 0


def _checked(parse, ok, accepted: str):
    """An argparse type: `parse` the text and keep values where `ok` holds; otherwise a one-line error naming
    what is accepted."""

    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expects {accepted}, got {text!r}")
        return value

    return check


_positive = _checked(int, lambda v: v >= 1, "a positive integer")
_positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
_probability = _checked(float, lambda v: 0 < v <= 1, "a probability in (0, 1]")


def _count(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return " ".join(f"{c} {n}" for n, c in counts.items())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `marl` command."""
    p = argparse.ArgumentParser(prog="marl", description="Multi-agent RL with learned communication.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    tr = sub.add_parser("train", help="train a learner: marl train ENV [SCENARIO] [--algo NAME] [key=value ...]")
    tr.add_argument("env", nargs="?", help="environment, e.g. smac")
    tr.add_argument("scenario", nargs="?", help="scenario, e.g. a SMAC map such as 3m or 3s5z")
    tr.add_argument("overrides", nargs="*", help="config overrides such as algo.lr=0.0003 train.rollout=200")
    tr.add_argument("--algo", help="learner (default: commformer; mappo is the baseline)")
    tr.add_argument("--steps", type=int, help="env steps to train for (train.steps)")
    tr.add_argument("--seed", type=int, help="random seed (train.seed)")
    tr.add_argument("--envs", type=int, help="parallel environments (train.envs)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    tr.add_argument("--ray-workers", type=int, metavar="N", help="collect rollouts on N Ray workers "
                    "(train.ray_workers; needs pip install -e \".[ray]\")")
    tr.add_argument("--address", metavar="HOST:PORT", help="join the Ray cluster whose head is at HOST:PORT "
                    "(train.ray_address; default: RAY_ADDRESS, else a local Ray)")
    tr.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="evaluate a run's last checkpoint (or a kept one): its most likely actions, or "
                        "with --sampled its sampled ones")
    ev.add_argument("run_dir")
    ev.add_argument("--checkpoint", metavar="NAME", help="a kept checkpoint instead of the last: step-1360000.pt, its "
                    "env steps (1360000) or a path (runs with train.keep_checkpoints=true keep one per interval)")
    ev.add_argument("--episodes", type=int, default=32)
    ev.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the evaluation battles")
    ev.add_argument("--sampled", action="store_true",
                    help="play the policy's sampled actions, as in training, instead of its most likely ones (the "
                    "field's convention and the default); the sampling is seeded by --seed")
    ev.add_argument("--record", type=_positive, default=0, metavar="N",
                    help="also record N deterministic battles as replays (watch them with marl replay)")
    ev.add_argument("--out", metavar="DIR", help="folder for the replays (default: RUN_DIR/replays)")
    ev.add_argument("--scenario", metavar="NAME[,NAME...]",
                    help="evaluate on these scenarios instead of the run's own (e.g. 10m or 4m,6m,7m), which it may "
                    "never have trained on: battles padded to the run's shapes; --episodes per scenario")
    ev.add_argument("--preference", metavar="W", help="a Pareto-front run (cmorl): evaluate the archived policy "
                    "with the best w . G, w one weight per objective (0.3,0.7 or [0.3,0.7])")
    ev.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an env option for the evaluation battles only, e.g. turning=true (repeatable); options "
                    "that change what the learner sees are refused")
    ev.set_defaults(func=_eval)
    fr = sub.add_parser("front", help="a Pareto-front run's archive: one row per policy, front.csv and front.png")
    fr.add_argument("run_dir")
    fr.set_defaults(func=_front)
    ad = sub.add_parser("adapt", help="adapt a run's latent prior (mra) to another scenario, network frozen: "
                        "marl adapt RUN_DIR --scenario 12m")
    ad.add_argument("run_dir")
    ad.add_argument("--scenario", required=True, help="the scenario to adapt to, e.g. a SMAC map such as 12m")
    ad.add_argument("--episodes", type=_positive, default=8, help="fresh episodes per adaptation step")
    ad.add_argument("--steps", type=_positive, default=5, help="REINFORCE steps on the prior's logits")
    ad.add_argument("--lr", type=_positive_float, default=2.0,
                    help="the gradient step's rate on the prior's logits (SGD)")
    ad.add_argument("--start-max-prob", type=_probability, default=0.5, metavar="P",
                    help="the steps start from the prior tempered so that no mode holds more than P (1: the prior "
                         "as it is; a nearly one-hot prior gives REINFORCE a zero gradient)")
    ad.add_argument("--seed", type=int, default=12345, help="seed of the adaptation and evaluation battles")
    ad.add_argument("--eval-episodes", type=_positive, default=64,
                    help="fresh episodes of another seed for the win rate before and after")
    ad.add_argument("--out", metavar="DIR", help="the adapted run directory (default: RUN_DIR-adapt-SCENARIO)")
    ad.set_defaults(func=_adapt)
    rp = sub.add_parser("replay", help="watch a recorded battle in a window, or export it to PNG or GIF")
    rp.add_argument("file", help="a replay (.npz), e.g. replays/3s5z_mappo_win.npz")
    rp.add_argument("--export", metavar="OUT", help="render without a window: OUT.gif (every step), OUT.png "
                    "(one step, see --step) or DIR/ (a PNG per step)")
    rp.add_argument("--step", type=int, help="the step a .png export shows (default 0)")
    rp.set_defaults(func=_replay)
    e = sub.add_parser("envs", help="list environments (built-in and plug-ins), their scenarios and the SMAC maps")
    e.add_argument("env", nargs="?", help="only this environment (e.g. smac, mpe or a plug-in)")
    e.set_defaults(func=_envs)
    cf = sub.add_parser("config", help="every setting of a run with its type, domain, value and description: "
                        "marl config [ALGO] [--env ENV [SCENARIO]] [KEY=VALUE ...]")
    cf.add_argument("algo", nargs="?", default=DEFAULT_ALGO, help=f"learner (default: {DEFAULT_ALGO})")
    cf.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="settings as marl train takes them (algo.lr=0.0003), checked against their domains")
    cf.add_argument("--env", nargs="+", default=["smac"], metavar="ENV [SCENARIO]",
                    help="environment and scenario whose preset applies (default: smac, no scenario)")
    cf.set_defaults(func=_config)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `marl` console script."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        # A script's background job starts with SIGINT ignored. Training honours SIGINT (StopSignals), so start-up
        # honours it too: one rule at every moment, instead of a Ctrl-C lost before the first update.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before training started (parsing, imports, building the env)
        print("marl: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    # overrides may follow options (`marl train smac 3m --steps 1000 algo.lr=3e-4`): collect them too
    args, extra = parser.parse_known_args(argv)
    leftovers = [x for x in extra if x.startswith("-") or "=" not in x or getattr(args, "command", None) != "train"]
    if leftovers:
        parser.error(f"unrecognized arguments: {' '.join(leftovers)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except CLIError as err:
        print(f"marl: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad names and values from the libraries carry one-line messages
        print(f"marl: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `marl envs | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
