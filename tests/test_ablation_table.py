"""benchmarks/ablation.py: runs of one variant with different seeds are averaged per variant."""

import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("ablation", Path(__file__).parents[1] / "benchmarks" / "ablation.py")
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def _row(name, final, last3, ret, msgs, best=None):
    return {"variant": name, "final_win_rate": final, "mean_last_3": last3, "best_win_rate": best,
            "return_last_3": ret, "messages_per_agent_step": msgs}


def test_seeds_of_a_variant_are_averaged_with_their_range():
    rows = [_row("5m_vs_6m-learned-s1", 0.4, 0.2, 11.0, 1.6, 0.5), _row("5m_vs_6m-random-s1", 0.0, 0.0, 8.0, 1.8),
            _row("5m_vs_6m-learned-s2", 0.1, 0.05, 10.0, 1.7, 0.2), _row("5m_vs_6m-learned-s13", 0.1, 0.05, 12.0, 1.8)]
    learned, random = ablation.by_variant(rows)
    assert learned["variant"] == "5m_vs_6m-learned" and learned["seeds"] == 3
    assert learned["final_win_rate"] == pytest.approx((0.2, 0.1, 0.4))
    assert learned["return_last_3"] == pytest.approx((11.0, 10.0, 12.0))
    assert learned["best_win_rate"] == pytest.approx((0.35, 0.2, 0.5))  # runs without a value are left out
    assert random["seeds"] == 1 and random["messages_per_agent_step"] == pytest.approx((1.8, 1.8, 1.8))
    assert random["best_win_rate"] is None


def test_a_table_of_several_seeds_prints_the_per_variant_means(tmp_path, monkeypatch, capsys):
    rows = {"m-learned-s1": _row("", 0.5, 0.25, 11.0, 1.5, 0.5), "m-learned-s2": _row("", 0.0, 0.0, 9.0, 1.7, 0.1)}
    monkeypatch.setattr(ablation, "summarise", lambda run_dir, at=None: {
        "steps": 960_000, "first_90": None, **{k: v for k, v in rows[Path(run_dir).name].items() if k != "variant"}})
    ablation.main(["--table", str(tmp_path / "m-learned-s1"), str(tmp_path / "m-learned-s2"), "--final-episodes", "0"])
    out = capsys.readouterr().out
    assert ("| m-learned | 2 | 25% (0%-50%) | 12% (0%-25%) | 30% (10%-50%) | 10.00 (9.00-11.00) | 1.60 (1.50-1.70) |\n"
            in out)  # without the final evaluation, the columns of before and nothing after


def test_the_final_evaluation_joins_both_tables_as_mean_and_range(tmp_path, monkeypatch, capsys):
    rows = {"m-learned-s1": _row("", 0.5, 0.25, 11.0, 1.5, 0.5), "m-learned-s2": _row("", 0.0, 0.0, 9.0, 1.7, 0.1)}
    finals = {"m-learned-s1": (0.5, 0.41, 0.59, 12.0), "m-learned-s2": (0.25, 0.18, 0.33, 8.5)}
    monkeypatch.setattr(ablation, "summarise", lambda run_dir, at=None: {
        "steps": 960_000, "first_90": None, **{k: v for k, v in rows[Path(run_dir).name].items() if k != "variant"}})
    calls = []

    def fake_final_eval(run_dir, episodes, at=None):
        calls.append((Path(run_dir).name, episodes, at))
        wr, low, high, ret = finals[Path(run_dir).name]
        return {"final_eval_steps": 960_000, "final_eval_win_rate": wr, "final_eval_win_rate_low": low,
                "final_eval_win_rate_high": high, "final_eval_return": ret,
                "final_eval_messages_per_agent_step": 2 * ret / 10, "final_eval_gate_open_rate": None}

    monkeypatch.setattr(ablation, "final_eval", fake_final_eval)
    ablation.main(["--table", str(tmp_path / "m-learned-s1"), str(tmp_path / "m-learned-s2"), "--at", "960000"])
    out = capsys.readouterr().out
    assert calls == [("m-learned-s1", 128, 960_000), ("m-learned-s2", 128, 960_000)]  # 128 episodes by default
    assert ("| 128-episode eval of the last checkpoint (95% CI) | its mean return | its messages / agent / step | "
            "its gate open rate |" in out)
    assert "- where that lies an update or more past 960,000 env steps." in out
    assert "| 1.50 | 50% (41%-59%) | 12.00 | 2.40 | - |" in out and "| 1.70 | 25% (18%-33%) | 8.50 | 1.70 | - |" in out
    assert ("| m-learned | 2 | 25% (0%-50%) | 12% (0%-25%) | 30% (10%-50%) | 10.00 (9.00-11.00) | 1.60 (1.50-1.70) | "
            "38% (25%-50%) | 10.25 (8.50-12.00) | 2.05 (1.70-2.40) |" in out)


@pytest.fixture(scope="module")
def run_3m(tmp_path_factory):
    """A SMAC 3m CommFormer run of two updates (40 env steps each), evaluated after each."""
    from marl import config as config_mod
    from marl.trainer import Trainer

    cfg = config_mod.load("smac", "3m", "commformer", [
        "train.envs=2", "train.rollout=20", "train.steps=80", "train.eval_interval=1", "train.eval_episodes=2",
        "train.torch_threads=1", "train.update_threads=1"])
    run_dir = tmp_path_factory.mktemp("ablation") / "3m-learned-s1"
    Trainer(cfg, run_dir, show_progress=False).run()
    return run_dir


def _final_fields(res: dict) -> dict:
    return {"final_eval_steps": res["env_steps"], "final_eval_win_rate": res["win_rate"],
            "final_eval_win_rate_low": res["win_rate_low"], "final_eval_win_rate_high": res["win_rate_high"],
            "final_eval_return": res["episode_return"],
            "final_eval_messages_per_agent_step": res["messages_per_agent_step"],
            "final_eval_gate_open_rate": res["gate_open_rate"]}


def test_final_evaluation_is_marl_eval_played_once_then_cached(run_3m, monkeypatch, capsys):
    from marl import cli

    (run_3m / ablation.FINAL_EVAL).unlink(missing_ok=True)
    direct = cli.evaluate_run(run_3m, 4, seed=12345)  # `marl eval RUN_DIR --episodes 4` with its default seed
    assert direct["env_steps"] == 80 and direct["episodes"] == 4
    # CommFormer's EvalCounters: on 3m an agent hears at most its 2 teammates, and a gate is open or shut
    assert 0 <= direct["messages_per_agent_step"] <= 2 and 0 <= direct["gate_open_rate"] <= 1
    played = []
    real = cli.evaluate_run
    monkeypatch.setattr(cli, "evaluate_run", lambda *a, **k: played.append(a) or real(*a, **k))
    ablation.main(["--table", str(run_3m), "--final-episodes", "4"])
    assert played == [(run_3m, 4, 12345)]
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 3m-learned-s1 | 80 |"))
    assert row.endswith(f"| {direct['win_rate']:.0%} ({direct['win_rate_low']:.0%}-{direct['win_rate_high']:.0%}) | "
                        f"{direct['episode_return']:.2f} | {direct['messages_per_agent_step']:.2f} | "
                        f"{direct['gate_open_rate']:.2f} |")
    assert "| 4-episode eval of the last checkpoint (95% CI) | its mean return | its messages / agent / step |" in out

    def fail(*a, **k):
        raise AssertionError("the cached final evaluation was played again")

    monkeypatch.setattr(cli, "evaluate_run", fail)
    assert ablation.final_eval(run_3m, 4) == _final_fields(direct)  # the exact numbers, read back from the file
    ablation.main(["--table", str(run_3m), "--final-episodes", "4"])
    assert row in capsys.readouterr().out

    monkeypatch.setattr(cli, "evaluate_run", lambda *a, **k: played.append(a) or real(*a, **k))
    six = ablation.final_eval(run_3m, 6)  # another N: played again, and cached for that N
    assert played[1:] == [(run_3m, 6, 12345)] and six == _final_fields(real(run_3m, 6))
    cache = json.loads((run_3m / ablation.FINAL_EVAL).read_text())
    assert (cache["env_steps"], cache["episodes"], cache["seed"], cache["eval"]["episodes"]) == (80, 6, 12345, 6)
    cache["env_steps"] = 40  # as if the checkpoint had moved on since: played again
    (run_3m / ablation.FINAL_EVAL).write_text(json.dumps(cache))
    assert ablation.final_eval(run_3m, 6) == six and played[2:] == [(run_3m, 6, 12345)]
    cache = json.loads((run_3m / ablation.FINAL_EVAL).read_text())
    del cache["counters"], cache["eval"]["messages_per_agent_step"]  # written before evaluation counted messages
    (run_3m / ablation.FINAL_EVAL).write_text(json.dumps(cache))
    assert ablation.final_eval(run_3m, 6) == six and played[3:] == [(run_3m, 6, 12345)]


def test_final_evaluation_at_a_step_and_switched_off(run_3m, monkeypatch, capsys):
    from marl import cli

    ablation.final_eval(run_3m, 4)  # cached now: no test below needs to play

    def fail(*a, **k):
        raise AssertionError("no final evaluation should be played here")

    monkeypatch.setattr(cli, "evaluate_run", fail)
    # an update is 40 env steps: the checkpoint at 80 stands for --at 41..80 and after, not for --at 40
    assert ablation.final_eval(run_3m, 4, at=41)["final_eval_steps"] == 80
    assert ablation.final_eval(run_3m, 4, at=1000)["final_eval_steps"] == 80
    assert set(ablation.final_eval(run_3m, 4, at=40).values()) == {None}
    ablation.main(["--table", str(run_3m), "--final-episodes", "4", "--at", "40"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3m-learned-s1 |"))
    assert row.startswith("| 3m-learned-s1 | 40 |") and row.endswith("| - | - |")  # the other columns read at 40
    ablation.main(["--table", str(run_3m), "--final-episodes", "0"])
    out = capsys.readouterr().out
    assert "episode eval" not in out and "marl eval" not in out
    row = next(line for line in out.splitlines() if line.startswith("| 3m-learned-s1 |"))
    assert row.count("|") == 10  # the nine columns of the training curve
    assert ablation.final_eval(run_3m, 0) is None


def test_marl_eval_prints_commformers_messages_and_gate_rate(run_3m, capsys):
    from marl import cli

    res = cli.evaluate_run(run_3m, 2, seed=12345)
    assert cli.main(["eval", str(run_3m), "--episodes", "2"]) in (0, None)
    out = capsys.readouterr().out
    assert out.rstrip().endswith(f", messages per agent step {res['messages_per_agent_step']:.3f}, "
                                 f"gate open rate {res['gate_open_rate']:.3f}")


def test_marl_eval_sampled_plays_the_seeded_sampled_policy(run_3m, capsys):
    from marl import cli
    from marl.trainer import evaluate

    res = cli.evaluate_run(run_3m, 4, seed=7, sampled=True)
    assert cli.evaluate_run(run_3m, 4, seed=7, sampled=True) == res  # the action noise is seeded by --seed
    _, _, env, learner, _ = cli.load_for_eval(run_3m, 4)
    learner.set_shard(0, env.n_envs, 7)  # CommFormer's ActingState: its acting stream from the seed
    direct = evaluate(env, learner, 4, seed=7, deterministic=False)
    env.close()
    assert {**direct, "env_steps": 80} == res
    assert cli.main(["eval", str(run_3m), "--episodes", "4", "--seed", "7", "--sampled"]) in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"smac 3m commformer after 80 env steps (sampled actions): win rate {res['win_rate']:.1%} "
                          f"(95% CI {res['win_rate_low']:.1%}-{res['win_rate_high']:.1%}) over 4 episodes, mean return "
                          f"{res['episode_return']:.2f}, mean episode length {res['episode_length']:.1f}, ")


def test_the_sampled_final_evaluation_joins_the_table_and_is_cached_apart(run_3m, capsys):
    from marl import cli

    (run_3m / ablation.FINAL_SAMPLED).unlink(missing_ok=True)
    res = cli.evaluate_run(run_3m, 4, seed=12345, sampled=True)
    ablation.main(["--table", str(run_3m), "--final-episodes", "0", "--sampled-episodes", "4"])
    out = capsys.readouterr().out
    assert "| 4-episode sampled eval (95% CI) | its mean return |" in out
    row = next(line for line in out.splitlines() if line.startswith("| 3m-learned-s1 | 80 |"))
    assert row.endswith(f"| {res['win_rate']:.0%} ({res['win_rate_low']:.0%}-{res['win_rate_high']:.0%}) | "
                        f"{res['episode_return']:.2f} |")
    assert row.count("|") == 12  # the nine columns of the curve and the sampled two
    cache = json.loads((run_3m / ablation.FINAL_SAMPLED).read_text())
    assert (cache["env_steps"], cache["episodes"], cache["seed"]) == (80, 4, 12345)
    assert ablation.final_eval(run_3m, 4, sampled=True) == {
        "final_sampled_steps": 80, "final_sampled_win_rate": res["win_rate"],
        "final_sampled_win_rate_low": res["win_rate_low"], "final_sampled_win_rate_high": res["win_rate_high"],
        "final_sampled_return": res["episode_return"],
        "final_sampled_messages_per_agent_step": res["messages_per_agent_step"],
        "final_sampled_gate_open_rate": res["gate_open_rate"]}
    assert set(ablation.final_eval(run_3m, 4, at=40, sampled=True).values()) == {None}
    with pytest.raises(SystemExit):
        ablation.main(["--table", str(run_3m), "--sampled-episodes", "-1"])
    assert "--sampled-episodes takes 0 (none) or a positive number of episodes, got -1" in capsys.readouterr().err


def test_summarise_gives_the_first_eval_at_90_and_the_lowest_after_it(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path / "tb")) as w:
        for step, rate in [(100, 0.5), (200, 0.94), (300, 0.44), (400, 0.69), (500, 0.97)]:
            w.add_scalar("eval/win_rate", rate, step)
            w.add_scalar("eval/episode_return", 10 * rate, step)
    r = ablation.summarise(tmp_path)
    assert r["first_90"] == 200 and r["lowest_after_90"] == pytest.approx(0.44)  # the issue-14 swing: below 70%
    assert ablation.summarise(tmp_path, at=200)["lowest_after_90"] is None  # nothing after it yet
    assert ablation.summarise(tmp_path, at=150)["first_90"] is None
