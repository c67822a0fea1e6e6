"""Battles of any team size: generated marine maps, several scenarios in one VecEnv (padding, resume, per-scenario
evaluation, replays) and evaluation on scenarios a run never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same
from hypothesis import given, settings
from hypothesis import strategies as st

from marl import checkpoint
from marl import config as config_mod
from marl.cli import main
from marl.envs.smac import SMACEnv, SMACError, SMACMixture, SMACVecEnv, get_map
from marl.envs.smac.maps import ODIS_MARINE_LIMITS, marine_limit
from marl.envs.smac.mixture import split_battles
from marl.trainer import Trainer, run_dir_name, scenario_label

DATA = Path(__file__).parent / "data"
V1_MARINES = ["3m", "8m", "25m", "5m_vs_6m", "8m_vs_9m", "10m_vs_11m", "27m_vs_30m"]
ONE_THREAD = ["train.torch_threads=1", "train.update_threads=1"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def marine_name(n: int, m: int) -> str:
    """Nm for equal teams, Nm_vs_Mm otherwise."""
    return f"{n}m" if n == m else f"{n}m_vs_{m}m"


# ------------------------------------------------------------------------------------ generated marine maps
@pytest.mark.parametrize("n,m", [(1, 1), (2, 2), (4, 4), (5, 5), (6, 6), (7, 7), (9, 9), (10, 10), (11, 11),
                                 (12, 12), (13, 13), (30, 30), (4, 5), (9, 10), (30, 1), (1, 30)])
def test_generated_marine_maps_have_smac_marine_shapes_and_the_documented_limits(n, m):
    env = SMACEnv(marine_name(n, m))
    info = env.get_env_info()
    # SMAC's sizes with default options: move 4, 5 per enemy, 5 per other ally, own health 1; state 4 per ally,
    # 3 per enemy, then every agent's last action
    assert (info["n_agents"], info["n_actions"]) == (n, 6 + m)
    assert info["obs_shape"] == 4 + 5 * m + 5 * (n - 1) + 1
    assert info["state_shape"] == 4 * n + 3 * m + n * (6 + m)
    k = max(n, m)
    expected = ODIS_MARINE_LIMITS.get(k, 60 if k < 4 else 150)
    assert info["episode_limit"] == expected == marine_limit(n, m)
    # the marine maps' layout: 3m's grid, allies around (9, 16), enemies around (23, 16) attack-moving there
    gm, three = get_map(marine_name(n, m)), get_map("3m")
    assert np.array_equal(gm.pathing, three.pathing) and np.array_equal(gm.enemy_order, three.enemy_order)
    assert (gm.map_type, gm.unit_type_bits, gm.a_race, gm.b_race) == ("marines", 0, "T", "T")
    assert np.all(np.abs(gm.spawn[:n, 0] - 9) < 4) and np.all(np.abs(gm.spawn[n:, 0] - 23) < 4)


def test_odis_limits_are_the_issues_and_8m_keeps_smacs():
    assert ODIS_MARINE_LIMITS == {4: 75, 5: 90, 6: 100, 7: 110, 9: 120, 10: 120, 11: 150, 12: 150}
    assert get_map("8m").limit == 120 and marine_limit(8, 8) == 120


def _v1_record(name: str) -> dict:
    """What tests/data/smac_marines_v1.json recorded of a v1 marine map before generated maps existed."""
    spec, m = SMACVecEnv(name, 1).spec, get_map(name)
    return {"env_info": SMACEnv(name).get_env_info(),
            "spec": {"n_agents": spec.n_agents, "obs_dim": spec.obs_dim, "state_dim": spec.state_dim,
                     "n_actions": spec.n_actions, "episode_limit": spec.episode_limit,
                     "agent_names": list(spec.agent_names), "unit_types": list(spec.unit_types),
                     "reward_dim": spec.reward_dim, "reward_names": list(spec.reward_names), "name": spec.name,
                     "can_win": spec.can_win},
            "obs_layout": [[b.name, b.count, b.width] for b in spec.obs_layout],
            "state_layout": [[b.name, b.count, b.width] for b in spec.state_layout],
            "map": {"limit": m.limit, "a_race": m.a_race, "b_race": m.b_race, "unit_type_bits": m.unit_type_bits,
                    "map_type": m.map_type, "map_x": m.map_x, "map_y": m.map_y, "unit_type": m.unit_type.tolist(),
                    "type_id": m.type_id.tolist(), "spawn": m.spawn.tolist(), "enemy_order": m.enemy_order.tolist(),
                    "pathing_sum": int(m.pathing.sum()), "cliff_sum": int(m.cliff_pathing.sum()),
                    "height_sum": float(m.height.sum())}}


def test_v1_marine_maps_keep_their_exact_definitions():
    saved = json.loads((DATA / "smac_marines_v1.json").read_text())
    assert sorted(saved) == sorted(V1_MARINES)
    for name in V1_MARINES:
        assert _v1_record(name) == saved[name], name


@pytest.mark.parametrize("name,text", [
    ("31m", "marine battle '31m' is out of range; accepted: Nm, Nm_vs_Mm (1 <= N, M <= 30, N != M)"),
    ("0m", "marine battle '0m' is out of range"),
    ("5m_vs_31m", "marine battle '5m_vs_31m' is out of range"),
    ("5m_vs_5m", "marine battle '5m_vs_5m' has equal teams; write 5m"),
    ("05m", "marine battle '05m' has a leading zero"),
])
def test_bad_marine_sizes_are_one_line_errors(tmp_path, capsys, name, text):
    rc = main(["train", "smac", name, "--algo", "mappo", f"train.runs_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"marl: error: {text}") and "\n" not in err
    assert not any(tmp_path.iterdir())  # no run directory left behind


# ------------------------------------------------------------------------------------ mixtures: padding
def _pad_rows(arr: np.ndarray, src, tgt) -> np.ndarray:
    """arr[..., size of layout src] laid out by layout tgt, block by block and row by row (zeros elsewhere)."""
    out = np.zeros((*arr.shape[:-1], sum(b.size for b in tgt)), arr.dtype)
    s0 = t0 = 0
    for bs, bt in zip(src, tgt):
        assert bs.name == bt.name
        for r in range(bs.count):
            dst = t0 + r * bt.width
            out[..., dst:dst + bs.width] = arr[..., s0 + r * bs.width:s0 + (r + 1) * bs.width]
        s0, t0 = s0 + bs.size, t0 + bt.size
    return out


def _check_battles(step, refs, mix, scenario_sizes) -> None:
    """Every battle of a mixture Step against battle e of its scenario's own SMACVecEnv Step."""
    spec = mix.spec
    for k, (rows, ref) in enumerate(zip(mix.rows, refs)):
        member = spec.scenarios[k]
        A, K = member.n_agents, member.n_actions
        assert (A, K - 6) == scenario_sizes[k]
        assert np.array_equal(step.scenario[rows], np.full(rows.stop - rows.start, k))
        for obs_key, state_key in (("obs", "state"), ("final_obs", "final_state")):
            want_obs = np.zeros_like(getattr(step, obs_key)[rows])
            want_obs[:, :A] = _pad_rows(getattr(ref, obs_key)[rows], member.obs_layout, spec.obs_layout)
            assert np.array_equal(getattr(step, obs_key)[rows], want_obs), obs_key  # padding: zeros
            want_state = _pad_rows(getattr(ref, state_key)[rows], member.state_layout, spec.state_layout)
            assert np.array_equal(getattr(step, state_key)[rows], want_state), state_key
        assert np.array_equal(step.avail[rows, :A, :K], ref.avail[rows])
        assert not step.avail[rows, :, K:].any()  # padded attacks: never available
        assert np.array_equal(step.avail[rows, A:], np.eye(1, spec.n_actions, 0, bool)[None].repeat(
            rows.stop - rows.start, 0).repeat(spec.n_agents - A, 1))  # a padded agent: only the no-op, as the dead
        assert np.array_equal(step.alive[rows, :A], ref.alive[rows]) and not step.alive[rows, A:].any()
        for key in ("reward", "done", "truncated", "t", "episode_return", "episode_length", "won"):
            assert np.array_equal(getattr(step, key)[rows], getattr(ref, key)[rows]), key


def _random_actions(avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One available action per agent, uniformly."""
    scores = rng.random(avail.shape) * avail
    return scores.argmax(-1).astype(np.int64)


@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3, unique=True),
       extra=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_a_padded_battle_plays_as_its_own_scenario_and_padding_is_absent(sizes, extra, seed):
    names = [marine_name(n, m) for n, m in sizes]
    E = len(names) + extra
    mix = SMACMixture(names, E)
    assert mix.counts == split_battles(E, len(names)) and sum(mix.counts) == E
    # battle e of the mixture draws the stream of battle e of a one-scenario VecEnv of E battles
    refs = [SMACVecEnv(name, E) for name in names]
    rng = np.random.default_rng(seed)
    step, ref_steps = mix.reset(seed=seed), [r.reset(seed=seed) for r in refs]
    _check_battles(step, ref_steps, mix, sizes)
    for _ in range(30):
        acts = _random_actions(step.avail, rng)
        ref_acts = [_random_actions(r.avail, rng) for r in ref_steps]
        for k, rows in enumerate(mix.rows):
            ref_acts[k][rows] = acts[rows, :refs[k].spec.n_agents]
        step, ref_steps = mix.step(acts), [r.step(a) for r, a in zip(refs, ref_acts)]
        _check_battles(step, ref_steps, mix, sizes)


def test_the_mixtures_spec_has_padded_shapes_layouts_and_its_members():
    mix = SMACMixture(["3m", "5m_vs_6m", "8m"], 5)
    s = mix.spec
    assert [m.name for m in s.scenarios] == ["smac:3m", "smac:5m_vs_6m", "smac:8m"]
    assert s.scenarios[1] == SMACVecEnv("5m_vs_6m", 1).spec
    assert (s.n_agents, s.n_actions, s.episode_limit, s.name) == (8, 14, 120, "smac:3m,5m_vs_6m,8m")
    assert [(b.name, b.count, b.width) for b in s.obs_layout] == [("move", 1, 4), ("enemy", 8, 5), ("ally", 7, 5),
                                                                  ("own", 1, 1)]
    assert [(b.name, b.count, b.width) for b in s.state_layout] == [("ally", 8, 4), ("enemy", 8, 3),
                                                                    ("last_action", 8, 14)]
    assert s.agent_names == tuple(f"marine_{a}" for a in range(8)) and s.obs_dim == 80 and s.state_dim == 168
    assert mix.counts == [2, 2, 1] and mix.reset(seed=0).scenario.tolist() == [0, 0, 1, 1, 2]


def test_last_action_one_hots_pad_their_attack_part():
    """With obs_last_action an ally row ends with a one-hot of 6 + enemies actions: it is padded at its end."""
    mix = SMACMixture(["3m", "5m"], 2, obs_last_action=True)
    ally = {b.name: b for b in mix.spec.obs_layout}["ally"]
    assert (ally.count, ally.width) == (4, 5 + 11)
    step = mix.reset(seed=1)
    acts = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    step = mix.step(acts)
    ref = SMACVecEnv("3m", 2, obs_last_action=True)
    ref.reset(seed=1)
    r = ref.step(np.ones((2, 3), np.int64))
    member = mix.spec.scenarios[0]
    assert np.array_equal(step.obs[0, :3], _pad_rows(r.obs[0], member.obs_layout, mix.spec.obs_layout))


def test_mixture_errors_are_one_line():
    with pytest.raises(SMACError, match=r"^2 battles cannot cover the 3 scenarios 3m,5m,8m: each needs at least one; "
                                        r"accepted: 3 or more \(train.envs\)$"):
        SMACMixture(["3m", "5m", "8m"], 2)
    with pytest.raises(SMACError, match="^scenario 3m is named twice in 3m,5m,3m"):
        SMACMixture(["3m", "5m", "3m"], 3)
    with pytest.raises(SMACError, match=r"^smac scenarios 3m,2s3z cannot share one batch: .*enemy has rows of"):
        SMACMixture(["3m", "2s3z"], 2)
    mix = SMACMixture(["3m", "5m"], 2)
    mix.reset(seed=0)
    acts = np.ones((2, 5), np.int64)
    with pytest.raises(SMACError, match=r"^env 0 \(3m\), agent 3 \(padding: 3m has 3 agents\) cannot take action 1; "
                                        r"available actions: \[0\]$"):
        mix.step(acts)
    acts[0, 3:] = 0
    acts[0, 0] = 9  # attack enemy 3 of a 3m battle: padding, never available
    with pytest.raises(SMACError, match=r"^env 0 \(3m\), agent 0 cannot take action 9"):
        mix.step(acts)
    other = SMACMixture(["3m", "5m"], 3)
    with pytest.raises(SMACError, match=r"^saved battles are scenarios 3m,5m with \[2, 1\] battles, not 3m,5m with "
                                        r"\[1, 1\]$"):
        mix.set_state(other.get_state())


def test_several_scenarios_need_as_many_envs_and_name_their_run_readably(tmp_path, capsys):
    rc = main(["train", "smac", "3m,5m,8m", "--algo", "mappo", "--envs", "2", f"train.runs_dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err == ("marl: error: train.envs=2 is fewer than the 3 scenarios 3m,5m,8m: each scenario needs a battle of "
                   "its own; accepted: train.envs >= 3")
    assert not any(tmp_path.iterdir())
    config = config_mod.load("smac", "3m,5m,8m", "mappo", ["train.envs=3"])
    assert run_dir_name(config).startswith("smac-3m+5m+8m-mappo-")
    many = config_mod.load("smac", "3m,4m,5m,6m,7m", "mappo", ["train.envs=5"])
    assert run_dir_name(many).startswith("smac-3m+4m+3more-mappo-")


# ------------------------------------------------------------------------------------ runs of several scenarios
def mixture_config(tmp_path, *extra: str) -> dict:
    """A MAPPO run on 3m and 5m whose updates take a fraction of a second."""
    return config_mod.load("smac", "3m,5m", "mappo", [
        "train.envs=3", "train.rollout=32", "algo.ppo_epochs=1", "train.eval_interval=2", "train.eval_episodes=2",
        "train.checkpoint_interval=1", "train.log_interval=1", f"train.runs_dir={tmp_path}", "train.steps=100000",
        *ONE_THREAD, *extra])


def test_a_mixture_run_resumes_exactly_and_logs_and_records_each_scenario(tmp_path):
    cfg = mixture_config(tmp_path)
    whole = Trainer(cfg, tmp_path / "whole", show_progress=False)
    whole.run(max_updates=2)
    first = Trainer(cfg, tmp_path / "split", show_progress=False)
    first.run(max_updates=1)
    del first
    second = Trainer(cfg, tmp_path / "split", resume=True, show_progress=False)
    second.run(max_updates=1)
    assert_same(whole.learner.state_dict(), second.learner.state_dict(), "learner")
    assert_same(whole.env.get_state(), second.env.get_state(), "env")
    assert whole.env.get_state()["scenarios"] == ["3m", "5m"] and whole.env.get_state()["battles"] == [2, 1]
    for k in ("obs", "state", "avail", "alive", "t", "scenario"):
        assert np.array_equal(getattr(whole.step, k), getattr(second.step, k)), k
    assert whole.episodes == second.episodes > 0
    a = checkpoint.load(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = checkpoint.load(tmp_path / "split" / "checkpoints" / "last.pt")
    for key in ("learner", "env", "counters", "last_eval"):
        assert_same(a[key], b[key], key)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "whole" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for label in ("3m", "5m"):
        assert {f"eval/{label}/{m}" for m in ("win_rate", "win_rate_low", "win_rate_high", "episode_return",
                                              "episode_length")} <= tags
    assert {"eval/win_rate", "eval/episode_return"} <= tags
    ev = whole.last_eval
    assert ev["episodes"] == 4 and [p["episodes"] for p in ev["scenarios"].values()] == [2, 2]
    per = [acc.Scalars(f"eval/{label}/episode_length")[-1].value for label in ("3m", "5m")]
    assert acc.Scalars("eval/episode_length")[-1].value == pytest.approx(np.mean(per))
    replays = sorted(p.name.split("_mappo")[0] for p in (tmp_path / "whole" / "replays").iterdir())
    assert replays == ["3m", "5m"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A one-update MAPPO run on 3m,5m."""
    tmp = tmp_path_factory.mktemp("mix")
    config = mixture_config(tmp, "train.eval_interval=0", "train.checkpoint_interval=0")
    torch.set_num_threads(1)
    Trainer(config, tmp / "run", show_progress=False).run(max_updates=1)
    return tmp / "run"


def test_marl_eval_prints_one_row_per_scenario(trained_run, capsys):
    assert main(["eval", str(trained_run), "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "smac 3m,5m mappo after 96 env steps, 2 episodes per scenario:"
    assert lines[1].split() == ["scenario", "episodes", "win", "rate", "95%", "CI", "mean", "length", "mean", "return"]
    assert [row.split()[:2] for row in lines[2:]] == [["3m", "2"], ["5m", "2"], ["all", "4"]]


def test_eval_on_a_smaller_unseen_scenario_fits_a_fixed_shape_learner(trained_run, capsys):
    """4m is padded to the run's 5 agents and 5 enemies, which MAPPO's layers take."""
    assert main(["eval", str(trained_run), "--episodes", "2", "--scenario", "4m,1m_vs_2m"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "smac 4m,1m_vs_2m mappo after 96 env steps, 2 episodes per scenario:"
    assert [row.split()[:2] for row in lines[2:]] == [["4m", "2"], ["1m_vs_2m", "2"], ["all", "4"]]


def test_eval_on_a_larger_scenario_names_the_shape_a_size_dependent_learner_cannot_take(trained_run, capsys):
    assert main(["eval", str(trained_run), "--episodes", "2", "--scenario", "8m"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("marl: error: mappo's model depends on the team size: it was trained for n_agents 5, "
                          "obs_dim 50, state_dim 90, n_actions 11 and 8m needs n_agents 8, obs_dim 80, state_dim 168, "
                          "n_actions 14 (")
    assert "is [" in err and "in the checkpoint" in err


def test_commformer_trains_on_a_mixture_under_the_padded_team(tmp_path):
    """CommFormer sees the mixture's padded arrays: its graph spans the largest team's 5 slots, and one update
    moves its networks and keeps k incoming edges per receiver."""
    config = config_mod.load("smac", "3m,5m", "commformer", [
        "train.envs=3", "train.rollout=32", "algo.ppo_epochs=1", "algo.warmup=0", "train.eval_interval=0",
        "train.checkpoint_interval=0", "train.log_interval=100", f"train.runs_dir={tmp_path}", "train.steps=100000",
        *ONE_THREAD])
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    assert trainer.spec.n_agents == 5 and [scenario_label(s) for s in trainer.spec.scenarios] == ["3m", "5m"]
    before = {k: v.clone() for k, v in trainer.learner.net.state_dict().items()}
    trainer.run(max_updates=1)
    assert trainer.env_steps == 96
    graph = trainer.learner.communication_graph()
    k = trainer.learner.graph.k
    assert graph.shape == (5, 5) and not graph.diagonal().any()
    assert (graph.sum(axis=1) == k).all()
    moved = [name for name, v in trainer.learner.net.state_dict().items() if not torch.equal(v, before[name])]
    assert moved, "one update changed no network weight"
    assert all(torch.isfinite(v).all() for v in trainer.learner.net.state_dict().values())


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_a_scenario_that_cannot_record_is_skipped_once_with_one_line_and_the_others_record(tmp_path, monkeypatch):
    import marl.trainer as trainer_mod

    calls = []
    real = trainer_mod.scenario_record_env

    def failing_for_5m(config, like, index, n_envs=1):
        calls.append(index)
        if scenario_label(like.scenarios[index]) == "5m":
            raise RuntimeError("no frames for this scenario\nsecond line of detail")
        return real(config, like, index, n_envs)

    monkeypatch.setattr(trainer_mod, "scenario_record_env", failing_for_5m)
    trainer = Trainer(mixture_config(tmp_path), tmp_path / "run", show_progress=False)
    log = _Lines()
    first = trainer.record_scenario_replays(log)
    assert [p.name.split("_mappo")[0] for p in first] == ["3m"] and first[0].is_file()
    assert log.lines == ["replays of 5m skipped: RuntimeError: no frames for this scenario"]
    second = trainer.record_scenario_replays(log)
    assert [p.name.split("_mappo")[0] for p in second] == ["3m"]
    assert calls == [0, 1] and len(log.lines) == 1  # built once each; the skipped one is neither retried nor re-said
