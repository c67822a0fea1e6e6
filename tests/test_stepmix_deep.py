"""The deep StepMix / EpsMix learner: GAE's cut, the masks, the team's one decision, V_b, the baseline's copy,
exact resume and the error texts. Runs on the probe game `comm` (numpy, fast)."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from marl import checkpoint
from marl import config as config_mod
from marl.agents.ppo import gae, ppo_targets
from marl.agents.stepmix.baseline import BaselineError, kind_of
from marl.agents.stepmix.learner import MIN_MEMBER_EPISODES, lower_bound, member_values
from marl.agents.stepmix.tabular import stepmix_kappa
from marl.cli import main
from marl.rollout import collect
from marl.trainer import LAST, PolicyEvaluator, Trainer, build

FAST = ["train.envs=2", "train.rollout=8", "train.eval_interval=0", "train.torch_threads=1", "train.update_threads=1",
        "train.checkpoint_interval=1", "train.record_replays=false", "algo.ppo_epochs=1",
        "env.n_agents=3", "env.symbols=3", "env.episode_limit=5", "algo.hidden=16"]


class LastSymbol:
    """A scripted baseline: every agent names the last symbol; it counts the steps it was shown."""

    def __init__(self, spec):
        self.n_actions, self.calls = spec.n_actions, 0

    def act(self, step, deterministic=False):
        """The last action for everyone."""
        self.calls += 1
        return np.full(step.alive.shape, self.n_actions - 1, np.int64)


def last_symbol(spec):
    """factory(spec) -> policy, as algo.baseline=module:factory names it."""
    return LastSymbol(spec)


def not_a_policy(spec):
    """A factory whose product has no act."""
    return object()


def stepmix_config(tmp_path, baseline, *more):
    """A small StepMix run's config with the paper's learner (from scratch, no imitation) unless `more` says else."""
    return config_mod.load("comm", "informants", "stepmix", [
        *FAST, f"train.runs_dir={tmp_path}", f"algo.baseline={baseline}", "algo.vb_episodes=8", "algo.bound_epochs=1",
        "algo.vb_envs=2", "algo.calibration_episodes=2", "algo.init=scratch", "algo.imitation_coef=0.0", *more])


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    """A MAPPO run on the same game, two updates long: an earlier run to use as the baseline."""
    root = tmp_path_factory.mktemp("baseline")
    cfg = config_mod.load("comm", "informants", "mappo", [*FAST, f"train.runs_dir={root}"])
    Trainer(cfg, root / "mappo", show_progress=False).run(max_updates=2)
    return root / "mappo"


def started(cfg, mixing=None):
    """A StepMix learner with its evaluator, V_b estimated on a fresh step, and optionally a forced mixing."""
    env, learner = build(cfg)
    learner.attach_evaluator(PolicyEvaluator(cfg))
    step = env.reset(seed=cfg["train"]["seed"])
    learner._start(step)
    if mixing is not None:
        learner.mixing = mixing
    return env, learner, step


# ------------------------------------------------------------------------------------------- GAE's cut
def test_gae_cut_stops_the_trace_and_bootstraps_from_the_critic_there():
    values = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(4, 1, 1)
    nxt = np.array([2.0, 3.0, 4.0, 5.0], np.float32).reshape(4, 1, 1)
    rewards = np.ones((4, 1, 1), np.float32)
    zeros = np.zeros((4, 1), np.float32)
    cut = np.array([0, 0, 1, 0], bool).reshape(4, 1)
    # gamma 0.5, lambda 0.5: deltas 1, 0.5, 0, -0.5; the cut at step 2 leaves step 1 its own delta
    adv, ret = gae(values, nxt, rewards, zeros, zeros, 0.5, 0.5, cut)
    assert adv.ravel().tolist() == [1.125, 0.5, -0.125, -0.5]
    assert ret.ravel().tolist() == [2.125, 2.5, 2.875, 3.5]
    whole, _ = gae(values, nxt, rewards, zeros, zeros, 0.5, 0.5)
    assert whole.ravel().tolist() == [1.1171875, 0.46875, -0.125, -0.5]
    none, _ = gae(values, nxt, rewards, zeros, zeros, 0.5, 0.5, np.zeros((4, 1), bool))
    assert np.array_equal(none, whole)


def test_member_values_by_hand():
    # row 0 ends an episode begun before the rollout (not counted); A: rows 1-2, switch 3; B: rows 3-6, running on
    t = np.array([4, 0, 1, 0, 1, 2, 3]).reshape(7, 1)
    reward = np.array([100.0, 1, 2, 3, 4, 5, 6]).reshape(7, 1)
    v_b = np.array([1000.0, 10, 20, 30, 40, 50, 60]).reshape(7, 1, 1)
    done = np.array([1, 0, 1, 0, 0, 0, 0], bool).reshape(7, 1)
    # B's switch 4: h=0: 0 + V_B(s_0); h=1: r_0 + V_B(s_1); ... A ended after 2 steps: its return 3 for h=2, 3;
    # B's step 4 lies past the rollout, so h=4 counts no one
    mean, var, count = member_values(reward, v_b, t, np.array([9, 3, 3, 4, 4, 4, 4]).reshape(7, 1), done, 4)
    assert count.tolist() == [2, 2, 2, 2, 0]
    assert mean[:4, 0].tolist() == [20.0, 32.0, 30.0, 37.5] and np.isnan(mean[4, 0])
    assert var[:4].tolist() == [200.0, 242.0, 1458.0, 2380.5]
    # B's switch 1: B counts only for h <= 1, where the learner played its first h steps
    mean, var, count = member_values(reward, v_b, t, np.array([9, 3, 3, 1, 1, 1, 1]).reshape(7, 1), done, 4)
    assert count.tolist() == [2, 2, 1, 1, 0] and mean[:4, 0].tolist() == [20.0, 32.0, 3.0, 3.0]


def test_member_values_relative_by_hand():
    # as above, each episode's sum less V_B of its own first state: A's 10, B's 30 (the row-0 episode began before)
    t = np.array([4, 0, 1, 0, 1, 2, 3]).reshape(7, 1)
    reward = np.array([100.0, 1, 2, 3, 4, 5, 6]).reshape(7, 1)
    v_b = np.array([1000.0, 10, 20, 30, 40, 50, 60]).reshape(7, 1, 1)
    done = np.array([1, 0, 1, 0, 0, 0, 0], bool).reshape(7, 1)
    # A: 0, 1 + 20 - 10 = 11, then its return 3 - 10 = -7 for h = 2, 3; B: 0, 3 + 40 - 30 = 13, 27, 42
    gains, var, count = member_values(reward, v_b, t, np.array([9, 3, 3, 4, 4, 4, 4]).reshape(7, 1), done, 4,
                                      relative=True)
    assert count.tolist() == [2, 2, 2, 2, 0]
    assert gains[:4, 0].tolist() == [0.0, 12.0, 10.0, 17.5] and np.isnan(gains[4, 0])
    assert var[:4].tolist() == [0.0, 2.0, 578.0, 1200.5]
    # two heads: each head's gain is taken against its own V_B(s_0); the variance is the heads' mean's
    two = np.concatenate([v_b, v_b + np.arange(7).reshape(7, 1, 1)], -1)
    gains2, var2, _ = member_values(reward, two, t, np.array([9, 3, 3, 4, 4, 4, 4]).reshape(7, 1), done, 4,
                                    relative=True)
    # head 1 adds the row index: A 1 + 22 - 11 = 12, then 3 - 11 = -8; B 3 + 44 - 33 = 14, 7 + 55 - 33 = 29, 45
    assert gains2[:4, 1].tolist() == [0.0, 13.0, 10.5, 18.5]
    # the heads' mean per episode: A 11.5, -7.5, -7.5; B 13.5, 28, 43.5
    assert var2[:4].tolist() == [0.0, 2.0, 2 * 17.75 ** 2, 2 * 25.5 ** 2]


# ------------------------------------------------------------------------------------------- the lower bound
def test_lower_bound_by_hand():
    heads, targets = np.array([9.0, 10.0, 11.0]), np.array([4.0, 8.0, 12.0, 16.0])
    # heads: mean 10, variance 2/3; targets: variance 160/6 over n 4 -> 20/3; together 22/3
    assert lower_bound(heads, targets, 2.0) == pytest.approx(10 - 2 * np.sqrt(22 / 3), abs=1e-12)
    assert lower_bound(heads, targets, 2.0, floor=6.0) == 6.0  # never below the lowest possible return
    assert lower_bound(heads, targets[:1], 2.0, floor=0.0) == 0.0  # one episode measures no sampling error
    assert lower_bound(heads, np.zeros(0), 2.0) == float("-inf")


def test_lower_bound_is_calibrated_on_a_toy_with_known_returns():
    """Episodes of a policy whose expected return is known (7.0; returns 20 * Bernoulli(0.35), SMAC-like noise),
    critics fitted to bootstrap halves of each batch's returns, with an initialisation offset each: the bound
    lies above the true value in at most 2.5% of 2,000 batches, where the ensemble's spread alone misses more."""
    rng = np.random.default_rng(0)
    truth, trials, heads_n = 7.0, 2000, 5
    above = above_heads_only = 0
    for _ in range(trials):
        n = int(rng.integers(10, 150))  # episodes the learner played in the rollout
        returns = 20.0 * (rng.random(n) < 0.35)
        halves = rng.random((heads_n, n)) < 0.5
        heads = np.array([returns[h].mean() if h.any() else 0.0 for h in halves]) + rng.normal(0, 0.1, heads_n)
        above += lower_bound(heads, returns, 1.96) > truth
        above_heads_only += heads.mean() - 1.96 * heads.std() > truth
    assert above / trials <= 0.025  # the one-sided level of z = 1.96 (measured: 1.45%)
    assert above_heads_only / trials >= 0.05  # the ensemble alone (the earlier bound) is over-confident (9%)


def test_stepmix_members_are_credited_the_lower_of_their_gains_bound_and_their_own_episodes(tmp_path):
    cfg = stepmix_config(tmp_path, "test_stepmix_deep:last_symbol", "algo.bound_z=2.0")
    _, learner, _ = started(cfg)
    learner.vb.n, learner.vb.total, learner.vb.total_sq = 100, 1000.0, 100 * 100.0 + 99 * 4.0  # mean 10, var 4
    lo, hi = learner.vb.interval()
    assert learner.H == 5 and MIN_MEMBER_EPISODES == 8
    gains = np.array([[0.0, 0.0], [0.5, 0.7], [1.0, 1.0], [-3.0, -3.0], [5.0, 5.0], [9.0, 9.0]])
    var = np.array([0.0, 0.4, 0.0, 1.0, 1.0, 1.0])
    count = np.array([40, 40, 1, 30, 30, 30])
    # the members' own episodes: h = 1 and 2 returned 12 and 10 alternately (mean 11, sd sqrt(8/7) over 8);
    # h = 3 played 7 times only; h = 4 returned 6 +- 1 (16 episodes)
    learner.member_returns = [[], [12.0, 10.0] * 4, [12.0, 10.0] * 4, [20.0] * 7, [5.0, 7.0] * 8, []]
    learner._decide(np.array([12.0, 12.0]), np.array([5.0, 13.0]), (gains, var, count))
    L = 12 - 2 * np.sqrt(32 / 2)  # 4 (targets: variance 32 over 2 episodes): the learner's own bound, member H's
    own8 = 11 - 2 * np.sqrt(8 / 7) / np.sqrt(8)
    own16 = 6 - 2 * np.sqrt(16 / 15) / 4
    gain1 = lo + 0.6 - 2 * np.sqrt(0.02)  # h = 1: the gain's bound is the lower of the two
    # h = 2: one episode reached it in the rollout, so its own episodes alone; h = 3: too few of its own, so
    # min(L, lo) whatever its gain says; h = 4: its own episodes (6 +- ...) are far below lo + 5
    expected = [lo, min(gain1, own8), own8, min(L, lo), own16, L]
    thr = 0.9 * hi
    assert gain1 < own8 and own16 < lo + 5 - 2 * np.sqrt(1 / 30)
    assert learner.lower == L and learner.mixing == stepmix_kappa(expected, thr)
    # member 2 clears the threshold, member 3 (not yet measured) does not: kappa mixes them
    assert learner.mixing == pytest.approx(2 + (expected[2] - thr) / (expected[2] - expected[3]))


def test_each_finished_episode_joins_the_returns_of_the_member_it_played(tmp_path):
    cfg = stepmix_config(tmp_path, "test_stepmix_deep:last_symbol", "train.envs=4", "train.rollout=40",
                         "algo.member_window=3")
    env, learner, step = started(cfg, mixing=2.5)  # members 2 and 3 in about equal shares
    rollout, step, episodes = collect(env, learner, step, 40)
    learner._count_episodes(rollout)
    ended = rollout.done.nonzero()
    played = {h: [] for h in range(learner.H + 1)}
    returns = np.zeros(rollout.n_envs)
    for i in range(rollout.steps):
        returns = np.where(rollout.extras["t"][i] == 0, 0.0, returns) + rollout.reward[i]
        for e in np.flatnonzero(rollout.done[i]):
            played[int(rollout.extras["switch"][i, e])].append(float(returns[e]))
    assert len(ended[0]) == 32 and sorted(k for k, v in played.items() if v) == [2, 3]
    assert learner.member_returns == [v[-3:] for v in played.values()]  # the last member_window of each
    state = learner.state_dict()
    assert state["member_returns"] == learner.member_returns


# ------------------------------------------------------------------------------------------- the team decides
def test_one_decision_per_episode_for_the_whole_team_and_baseline_steps_are_the_baselines(tmp_path):
    cfg = stepmix_config(tmp_path, "test_stepmix_deep:last_symbol", "train.envs=4", "train.rollout=40")
    env, learner, step = started(cfg, mixing=2.5)  # learner for 2 steps, the third with probability 1/2
    rollout, _, _ = collect(env, learner, step, 40)
    ex = rollout.extras
    learn, t, switch = ex["learn_mask"], ex["t"], ex["switch"]
    assert learn.shape == (40, 4) and set(np.unique(switch)) == {2, 3}
    assert np.array_equal(learn, t < switch)
    assert np.array_equal(ex["cut"], (t == switch) & (switch > 0))
    for e in range(4):  # one switch per episode: constant from its first step to its last
        begins = np.flatnonzero(t[:, e] == 0)
        for a, b in zip(begins, [*begins[1:], 40]):
            assert len(set(switch[a:b, e])) == 1
    base = ~learn
    assert np.all(rollout.actions[base] == cfg["env"]["symbols"] - 1)  # every agent of the battle: the baseline
    with torch.no_grad():  # and at the learner's steps every agent's action is the learner's own sample
        logits = learner.mappo.actor(learner.mappo._actor_in(rollout.obs))
        logp = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(rollout.actions)[..., None])[..., 0]
    np.testing.assert_allclose(logp.numpy()[learn], ex["log_prob"][learn], rtol=1e-5, atol=1e-6)


def test_epsmix_coins_are_whole_episodes_and_baseline_episodes_tighten_vb(tmp_path):
    cfg = stepmix_config(tmp_path, "test_stepmix_deep:last_symbol", "algo.mix=epsmix", "train.envs=4")
    env, learner, step = started(cfg, mixing=0.5)
    assert learner.vb.n == 8 and learner.vb_initial["episodes"] == 8
    rollout, _, episodes = collect(env, learner, step, 30)
    switch = rollout.extras["switch"]
    assert set(np.unique(switch)) == {0, 5}  # the baseline's or the learner's whole episode
    assert not rollout.extras["cut"].any()
    learner.update(rollout)  # the episodes the baseline played alone join V_b's sample, each once
    ended_alone = int((rollout.done & (switch == 0)).sum())
    assert ended_alone > 0 and learner.vb.n == 8 + ended_alone
    returns = rollout.reward.reshape(6, 5, 4).sum(1)  # 5-step episodes from reset: their returns, [6, E]
    assert learner.window["episodes"] == 24 and np.isclose(learner.window["returns"], returns.sum())


# ------------------------------------------------------------------------------------------- masks
def _train_mappo(learner, rollout, state):
    """MAPPO's actor and critic parameters after one update of the rollout from `state`."""
    learner.mappo.load_state_dict(state)
    learner.mappo.update(rollout)
    return ([p.detach().clone() for p in learner.mappo.actor.parameters()],
            [p.detach().clone() for p in learner.mappo.critic.parameters()])


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _mixed_rollout(tmp_path, mixing, *more):
    """cfg, learner and a 40-step rollout on 4 battles of the scripted baseline mixed in at `mixing`."""
    cfg = stepmix_config(tmp_path, "test_stepmix_deep:last_symbol", "train.envs=4", "train.rollout=40", *more)
    env, learner, step = started(cfg, mixing=mixing)
    rollout, _, _ = collect(env, learner, step, 40)
    return cfg, learner, rollout


def test_baseline_steps_stay_out_of_the_actor_and_teach_the_critic_the_continuation(tmp_path):
    cfg, learner, rollout = _mixed_rollout(tmp_path, 2.5)
    ex = rollout.extras
    base, learn = ~ex["learn_mask"], ex["learn_mask"]
    assert np.array_equal(ex["value_mask"], ex["switch"] > 0) and ex["value_mask"].all()  # every episode began
    state = copy.deepcopy(learner.mappo.state_dict())  # state_dict holds the live tensors
    actor, critic = _train_mappo(learner, rollout, state)
    other = copy.deepcopy(rollout)
    other.actions[base] = 0  # other actions and log-probs at the baseline's steps: nothing reads them
    other.extras["log_prob"][base] -= 1.0
    a2, c2 = _train_mappo(learner, other, state)
    assert _same(actor, a2) and _same(critic, c2)
    other.reward[base] += 3.0  # the baseline's rewards: the critic's targets there, never the learner's advantages
    a3, c3 = _train_mappo(learner, other, state)
    assert _same(actor, a3) and not _same(critic, c3)
    other.actions[learn] = (other.actions[learn] + 1) % cfg["env"]["symbols"]  # the learner's own steps count
    a4, _ = _train_mappo(learner, other, state)
    assert not _same(actor, a4)
    batch = ppo_targets(rollout, lambda o, s, a: learner.mappo.values(s), 0.99, 0.95, None)
    assert torch.equal(batch.mask, torch.as_tensor(rollout.alive & learn[..., None], dtype=torch.float32))
    assert torch.equal(batch.value_mask, torch.as_tensor(rollout.alive, dtype=torch.float32))


def test_episodes_the_baseline_played_alone_enter_neither_loss(tmp_path):
    _, learner, rollout = _mixed_rollout(tmp_path, 0.5, "algo.mix=epsmix")
    ex = rollout.extras
    alone = ex["switch"] == 0
    assert alone.any() and (~alone).any()
    assert np.array_equal(ex["value_mask"], ex["learn_mask"])  # EpsMix: the learner's episodes are all its own
    state = copy.deepcopy(learner.mappo.state_dict())
    actor, critic = _train_mappo(learner, rollout, state)
    other = copy.deepcopy(rollout)
    other.actions[alone] = 0
    other.extras["log_prob"][alone] -= 1.0
    other.reward[alone] += 3.0
    a2, c2 = _train_mappo(learner, other, state)
    assert _same(actor, a2) and _same(critic, c2)


def test_imitation_clones_the_baselines_actions_at_its_steps_and_off_adds_nothing(tmp_path):
    cfg, learner, rollout = _mixed_rollout(tmp_path, 2.5, "algo.imitation_coef=0.5")
    ex = rollout.extras
    base = ~ex["learn_mask"]
    np.testing.assert_array_equal(ex["imitate_weight"], np.where(base, 0.5, 0.0))
    state = copy.deepcopy(learner.mappo.state_dict())
    actor, _ = _train_mappo(learner, rollout, state)
    other = copy.deepcopy(rollout)
    other.actions[base] = 0  # the baseline's actions are what the actor clones now
    a2, _ = _train_mappo(learner, other, state)
    assert not _same(actor, a2)
    other = copy.deepcopy(rollout)
    other.extras["log_prob"][base] -= 1.0  # but never the baseline's steps in PPO's ratio
    a3, _ = _train_mappo(learner, other, state)
    assert _same(actor, a3)
    last = cfg["env"]["symbols"] - 1  # the learner's probability of the baseline's action rises where it played

    def p_last():
        with torch.no_grad():
            logits = learner.mappo.actor(learner.mappo._actor_in(rollout.obs[base]))
            return float(torch.softmax(logits, -1)[..., last].mean())

    learner.mappo.load_state_dict(state)
    before = p_last()
    learner.mappo.update(rollout)
    assert p_last() > before
    _, _, rollout = _mixed_rollout(tmp_path, 2.5)
    assert "imitate_weight" not in rollout.extras  # 0, the default: the paper's learner


# ------------------------------------------------------------------------------------------- the baseline's copy
def state_equal(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            state_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            state_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def test_resume_is_exact_with_the_baselines_copy_after_its_directory_moved(tmp_path, baseline_run):
    moved = tmp_path / "baseline"
    shutil.copytree(baseline_run, moved)
    # 4-step episodes end on each 8-step rollout's last step, which the split run must count once too
    cfg = stepmix_config(tmp_path, moved, "algo.calibration_interval=1", "env.episode_limit=4")
    whole = Trainer(cfg, tmp_path / "whole", show_progress=False)
    whole.run(max_updates=4)
    Trainer(cfg, tmp_path / "split", show_progress=False).run(max_updates=2)
    shutil.move(moved, tmp_path / "elsewhere")  # the baseline's directory is gone
    resumed = Trainer(cfg, tmp_path / "split", resume=True, show_progress=False)
    assert resumed.learner.baseline is not None and resumed.learner.baseline.kind == "run"
    resumed.run(max_updates=2)
    state_equal(whole.learner.state_dict(), resumed.learner.state_dict())
    assert whole.learner.calibration["checks"] == 4 and whole.learner.vb.n > 8
    # marl eval needs neither the baseline's directory: the learner's own policy, from the checkpoint
    assert main(["eval", str(tmp_path / "split"), "--episodes", "2"]) == 0
    data = checkpoint.load(tmp_path / "split" / "checkpoints" / LAST)
    assert data["learner"]["baseline"]["config"]["run"]["algo"] == "mappo"


def test_a_checkpoint_whose_baseline_copy_predates_a_default_key_resumes_with_the_default(tmp_path, baseline_run):
    """Keys added to the baseline learner's defaults later (MAPPO's input_norm, 2026-11-30) are filled in."""
    cfg = stepmix_config(tmp_path, baseline_run)
    Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=1)
    path = tmp_path / "run" / "checkpoints" / LAST
    data = checkpoint.load(path)
    copied = data["learner"]["baseline"]["config"]["algo"]
    assert copied["input_norm"] is True
    del copied["input_norm"]
    checkpoint.save(path, {k: v for k, v in data.items() if k not in ("format", "version")})
    resumed = Trainer(cfg, tmp_path / "run", resume=True, show_progress=False)
    assert resumed.learner.baseline.config["algo"]["input_norm"] is True
    resumed.run(max_updates=1)


# ------------------------------------------------------------------------------------------- errors
def test_error_texts(tmp_path, baseline_run, capsys):
    assert kind_of(str(baseline_run)) == "run" and kind_of("pkg.mod:factory") == "scripted"
    with pytest.raises(BaselineError, match=r"^algo.baseline 'nope' is neither a run directory \(holding config.yaml "
                                            r"and checkpoints/last.pt\) nor module:factory \(a scripted policy\)$"):
        kind_of("nope")
    with pytest.raises(config_mod.ConfigError, match="^stepmix needs a baseline: algo.baseline=RUN_DIR"):
        build(config_mod.load("comm", "informants", "stepmix", FAST))
    with pytest.raises(BaselineError, match=r"^algo.baseline 'test_stepmix_deep:missing': cannot import 'missing' "
                                            r"from 'test_stepmix_deep' \(AttributeError\)"):
        build(stepmix_config(tmp_path, "test_stepmix_deep:missing"))
    with pytest.raises(BaselineError, match=r"^algo.baseline 'test_stepmix_deep:not_a_policy': factory\(spec\) "
                                            r"returned 'object', which has no act\(step, deterministic\)$"):
        build(stepmix_config(tmp_path, "test_stepmix_deep:not_a_policy"))
    with pytest.raises(BaselineError, match=rf"^algo.baseline {baseline_run} \(comm informants, mappo\) does not fit "
                                            r"this environment \(comm:informants: 4 agents, obs_dim 7, state_dim 12, 3 "
                                            r"actions\); give a run of the same environment$"):
        build(stepmix_config(tmp_path, baseline_run, "env.n_agents=4"))
    code = main(["train", "comm", "informants", "--algo", "stepmix", *FAST, f"train.runs_dir={tmp_path}",
                 "algo.baseline=no/such/run", "--steps", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == ("marl: error: algo.baseline 'no/such/run' is neither a run directory (holding "
                                     "config.yaml and checkpoints/last.pt) nor module:factory (a scripted policy)")


def test_a_recurrent_run_is_no_baseline(tmp_path):
    cfg = config_mod.load("comm", "informants", "mappo", [*FAST, f"train.runs_dir={tmp_path}", "algo.recurrent=true"])
    Trainer(cfg, tmp_path / "rnn", show_progress=False).run(max_updates=1)
    with pytest.raises(BaselineError, match=rf"^algo.baseline {tmp_path / 'rnn'} is a recurrent mappo run "
                                            r"\(algo.recurrent=true\); stepmix takes a feed-forward baseline, whose "
                                            r"actions depend on the step alone$"):
        build(stepmix_config(tmp_path, tmp_path / "rnn"))


# ------------------------------------------------------------------------------------------- algo.init
def test_init_baseline_starts_the_learner_as_a_copy_of_a_mappo_baseline(tmp_path, baseline_run):
    env, learner = build(stepmix_config(tmp_path, baseline_run, "algo.init=baseline"))
    base = learner.baseline.policy
    for mine, theirs in [(learner.mappo.actor, base.actor), (learner.mappo.critic, base.critic)]:
        pairs = list(zip(mine.parameters(), theirs.parameters(), strict=True))
        assert all(torch.equal(a, b) and a is not b for a, b in pairs)  # copies, not the baseline's own tensors
    state_equal(learner.mappo.value_norm.state_dict(), base.value_norm.state_dict())
    step = env.reset(seed=4)
    assert np.array_equal(learner.act(step, deterministic=True)[0], base.act(step, deterministic=True)[0])
    _, scratch = build(stepmix_config(tmp_path, baseline_run))
    assert not torch.equal(next(scratch.mappo.actor.parameters()), next(base.actor.parameters()))
    with torch.no_grad():  # the learner's training moves its copy only
        next(learner.mappo.actor.parameters()).add_(1.0)
    assert not torch.equal(next(learner.mappo.actor.parameters()), next(base.actor.parameters()))


def test_by_default_a_fitting_mappo_run_is_copied_and_imitated_and_anything_else_starts_from_scratch(tmp_path,
                                                                                                      baseline_run):
    cfg = config_mod.load("comm", "informants", "stepmix", [*FAST, f"algo.baseline={baseline_run}"])
    assert (cfg["algo"]["init"], cfg["algo"]["imitation_coef"]) == ("auto", 1.0)
    _, copied = build(cfg)
    assert copied.started_from_baseline
    assert torch.equal(next(copied.mappo.actor.parameters()), next(copied.baseline.policy.actor.parameters()))
    for other in ("test_stepmix_deep:last_symbol", baseline_run):  # a scripted policy; a run of other networks
        more = ["algo.hidden=8"] if other == baseline_run else []
        _, fresh = build(config_mod.load("comm", "informants", "stepmix", [*FAST, f"algo.baseline={other}", *more]))
        assert not fresh.started_from_baseline
    _, scratch = build(stepmix_config(tmp_path, baseline_run))
    assert not scratch.started_from_baseline


def test_init_baseline_error_texts(tmp_path, baseline_run, capsys):
    with pytest.raises(BaselineError, match=r"^algo.init=baseline copies a mappo baseline's networks, but "
                                            r"algo.baseline 'test_stepmix_deep:last_symbol' is a scripted policy; "
                                            r"give a mappo run or algo.init=scratch$"):
        build(stepmix_config(tmp_path, "test_stepmix_deep:last_symbol", "algo.init=baseline"))
    with pytest.raises(BaselineError, match=rf"^algo.init=baseline: the baseline '{baseline_run}' has other networks "
                                            r"than this learner's \(algo.hidden, algo.layers, algo.agent_id, "
                                            r"algo.input_norm\); give the same settings or algo.init=scratch$"):
        build(stepmix_config(tmp_path, baseline_run, "algo.init=baseline", "algo.hidden=8"))
    code = main(["train", "comm", "informants", "--algo", "stepmix", *FAST, f"train.runs_dir={tmp_path}",
                 f"algo.baseline={baseline_run}", "algo.init=warm", "--steps", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["marl: error: algo.init must be one of auto, scratch, baseline, got 'warm'"]
