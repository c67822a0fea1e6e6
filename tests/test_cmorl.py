"""C-MORL (agents/cmorl): slices, batched acting, the barrier, Stage 2, exact resume with the archive, the CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import whole_and_resumed

from marl import cli
from marl import config as config_mod
from marl.agents.cmorl.learner import BARRIER_FLOOR, CMORL, barrier, route, slices, stage1_preferences
from marl.agents.ppo import masked_mean
from marl.config import ConfigError
from marl.rollout import play_episodes
from marl.spec import EnvSpec, EvaluatesPolicies, ParetoFront, Step
from marl.trainer import Trainer, build_env


def _cfg(tmp_path, *extra):
    return config_mod.load("smac", "3m", "cmorl", [
        "train.envs=6", "train.rollout=8", "train.eval_interval=0", "train.record_replays=false",
        "train.checkpoint_interval=1", "train.log_interval=1", f"train.runs_dir={tmp_path}", "train.steps=192",
        "train.torch_threads=1", "train.update_threads=1", "algo.ppo_epochs=2", "algo.eval_every=1",
        "algo.eval_episodes=1", "algo.stage1_fraction=0.2", "algo.select_every=2", "algo.select=2", *extra])


def test_the_simulator_preset_gives_cmorl_two_objectives_and_leaves_mappo_alone():
    cm, mp = config_mod.load("smac", "3s5z", "cmorl"), config_mod.load("smac", "3s5z", "mappo")
    assert cm["env"]["objectives"] == ["combat", "safety"] and cm["train"]["envs"] == 10
    assert mp["env"]["objectives"] == ["combat"] and mp["train"]["envs"] == 8


def test_slices_are_contiguous_and_differ_by_at_most_one():
    assert slices(10, 6).tolist() == [0, 1, 1, 2, 2, 3, 4, 4, 5, 5]
    assert slices(12, 6).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert slices(7, 3).tolist() == [0, 0, 1, 1, 2, 2, 2]
    index, valid = route(np.array([0, 0, 1, 1, 2, 2, 2]), 3)
    assert index.tolist() == [[0, 1, 0], [2, 3, 0], [4, 5, 6]]
    assert valid.tolist() == [[True, True, False], [True, True, False], [True, True, True]]


def test_stage1_grid_is_the_authors():
    assert stage1_preferences(2).tolist() == [[0, 1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4], [0.8, 0.2], [1, 0]]
    three = stage1_preferences(3)
    assert three.shape == (6, 3) and np.allclose(three.sum(1), 1) and (three >= 0.2 - 1e-12).all()
    assert stage1_preferences(4).tolist() == np.eye(4).tolist()


def _toy(E=7, seed=0):
    spec = EnvSpec(n_agents=3, obs_dim=5, state_dim=4, n_actions=6, episode_limit=10, agent_names=("a", "b", "c"),
                   reward_dim=2, reward_names=("x", "y"))
    cfg = config_mod.load("smac", "3m", "cmorl")["algo"]
    rng = np.random.default_rng(seed)
    avail = rng.random((E, 3, 6)) < 0.7
    avail[..., 0] = True
    step = Step(obs=rng.normal(size=(E, 3, 5)).astype(np.float32), state=rng.normal(size=(E, 4)).astype(np.float32),
                avail=avail, reward=np.zeros((E, 2), np.float32), done=np.zeros(E, bool), truncated=np.zeros(E, bool),
                alive=np.ones((E, 3), bool), t=np.zeros(E, np.int64), episode_return=np.zeros((E, 2), np.float32),
                episode_length=np.zeros(E, np.int64), won=np.zeros(E, bool))
    return CMORL(spec, cfg, seed=seed), step


def test_batched_acting_equals_each_policy_acting_alone():
    learner, step = _toy(E=7)
    assert isinstance(learner, EvaluatesPolicies) and isinstance(learner, ParetoFront)
    owner = slices(7, learner.n_policies)
    batched = learner.act(step, deterministic=True)[0]
    alone = np.stack([learner.act_alone(int(owner[e]), step)[e] for e in range(7)])
    assert np.array_equal(batched, alone)
    # the policies do differ, so the routing is what makes them agree
    assert any(not np.array_equal(learner.act_alone(0, step), learner.act_alone(p, step)) for p in range(1, 6))
    # sampled actions: the stored log-probabilities are each owner's own
    actions, extras = learner.act(step)
    assert extras["value"].shape == (7, 3, 2) and extras["log_prob"].shape == (7, 3)
    for e in range(7):
        p = int(owner[e])
        net = learner._template(6, 5 + 3, 0.01)
        net.load_state_dict(learner.actor.one(p))
        x = torch.cat([torch.as_tensor(step.obs[e]), torch.eye(3)], -1)
        logits = net(x).masked_fill(~torch.as_tensor(step.avail[e]), -1e10)
        logp = torch.log_softmax(logits, -1).gather(-1, torch.as_tensor(actions[e]).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(logp, torch.as_tensor(extras["log_prob"][e]), atol=1e-6)


def test_the_barrier_raises_an_objective_near_its_threshold():
    torch.manual_seed(0)
    n, A = 64, 1
    logits = torch.zeros(n, A, 3, requires_grad=True)
    actions = torch.randint(0, 3, (n, A))
    adv = torch.randn(n, A, 2)
    old = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1).detach()
    mask = torch.ones(n, A)
    constrained = torch.tensor([False, True])

    def estimate():
        ratio = torch.exp(torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1) - old)
        return ratio, masked_mean(ratio * adv[..., 1], mask)

    grads = {}
    for margin in (0.01, 1.0):
        logits.grad = None
        ratio, _ = estimate()
        loss, clamped = barrier(ratio, adv, torch.tensor([0.0, margin]), constrained, mask, t=20.0)
        loss.backward()
        assert clamped.item() == 0
        grads[margin] = logits.grad.norm().item()
    assert grads[0.01] > 50 * grads[1.0]  # the nearer the threshold, the harder it pushes (1 / margin)
    before = estimate()[1].item()
    opt = torch.optim.SGD([logits], lr=0.05)
    for _ in range(5):
        ratio, _ = estimate()
        loss, _ = barrier(ratio, adv, torch.tensor([0.0, 0.01]), constrained, mask, t=20.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert estimate()[1].item() > before + 0.005  # objective 1's surrogate rose (from -0.0225 to -0.0146)


def test_clamped_barrier_cases_are_finite_gradient_free_and_counted():
    logits = torch.zeros(8, 2, 3, requires_grad=True)
    ratio = torch.exp(torch.log_softmax(logits, -1)[..., 0] - np.log(1 / 3))
    adv = torch.ones(8, 2, 3)
    loss, clamped = barrier(ratio, adv, torch.tensor([-5.0, -1.0, 2.0]), torch.tensor([True, True, False]),
                            torch.ones(8, 2), t=20.0)
    assert torch.isfinite(loss) and clamped.item() == 2
    assert loss.item() == pytest.approx(-np.log(BARRIER_FLOOR) / 20)
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0
    none, zero = barrier(ratio, adv, torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.ones(8, 2), t=20.0)
    assert none.item() == 0 and zero.item() == 0


def test_play_episodes_discounts_with_gamma():
    env = build_env(config_mod.load("smac", "3m", "cmorl"), 2)
    rng = np.random.default_rng(0)
    from marl.testing import random_actions

    one = play_episodes(env, lambda s: random_actions(s, rng), np.array([1, 1]), seed=3)
    assert np.allclose(one["discounted_return"], one["return"], atol=1e-4)
    rng = np.random.default_rng(0)
    half = play_episodes(env, lambda s: random_actions(s, rng), np.array([1, 1]), seed=3, gamma=0.5)
    assert np.array_equal(half["return"], one["return"])
    assert (np.abs(half["discounted_return"]) <= np.abs(one["discounted_return"]) + 1e-6).all()
    assert not np.allclose(half["discounted_return"], one["discounted_return"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmorl")
    cfg = _cfg(root)
    whole, resumed = whole_and_resumed(cfg, root, 2)
    return root, cfg, whole, resumed


def test_stage2_branches_one_per_objective_from_evaluated_returns(trained):
    _, cfg, whole, _ = trained
    learner = whole.learner
    assert learner.stage == 2 and learner.stage2_round >= 1
    P = learner.n_policies
    assert P % 2 == 0 and P <= 2 * 2  # at most `select` policies, two branches each
    assert learner.weights.tolist() == [[1, 0], [0, 1]] * (P // 2)
    assert learner.constrained.tolist() == [[False, True], [True, False]] * (P // 2)
    ids = {e.id: e for e in learner.archive}
    for p in range(P):
        parent = learner.parents[p]
        G = ids[parent].returns if parent in ids else None
        if G is not None:
            assert np.allclose(learner.thresholds[p].numpy(), G - 0.1 * np.abs(G), atol=1e-5)
    assert whole.eval_env_steps > 0  # evaluation steps are counted apart from the budget
    assert whole.env_steps == 4 * 6 * 8


def test_resume_is_exact_with_the_archive(trained):
    _, _, whole, resumed = trained
    a, b = whole.learner.state_dict(), resumed.learner.state_dict()
    for part in ("actor", "critic", "value_norm"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k in ("weights", "thresholds", "last_returns"):
        assert torch.equal(a[k], b[k]), k
    assert a["parents"] == b["parents"] and a["updates"] == b["updates"] == 4
    assert torch.equal(a["archive"]["returns"], b["archive"]["returns"])
    assert a["archive"]["ids"] == b["archive"]["ids"] and a["archive"]["selected"] == b["archive"]["selected"]
    assert len(a["archive"]["ids"]) >= 1
    assert whole.eval_env_steps == resumed.eval_env_steps


def test_marl_front_prints_rows_and_writes_csv_and_png(trained, capsys):
    root, _, whole, _ = trained
    run = root / "whole"
    assert cli.main(["front", str(run)]) == 0
    out = capsys.readouterr().out
    n = len(whole.learner.archive)
    assert f"{n} policies (discounted returns, gamma 0.99, episodes capped at 60 steps, 1 episodes each)" in out
    with open(run / "front.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and list(rows[0])[:3] == ["id", "combat", "safety"]
    got = sorted((float(r["combat"]), float(r["safety"])) for r in rows)
    want = sorted(tuple(e.returns) for e in whole.learner.archive)
    assert np.allclose(got, want, atol=1e-4)
    assert (run / "front.png").stat().st_size > 1000
    assert "HV " in out and "EU " in out and "SP " in out


def test_marl_eval_with_a_preference_plays_the_best_archived_policy(trained, capsys):
    root, _, whole, _ = trained
    run = root / "whole"
    assert cli.main(["eval", str(run), "--preference", "0.3,0.7", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    best = whole.learner.archive.best([0.3, 0.7])
    assert f"policy {best.id} of the Pareto archive (best w . G for w = [0.3, 0.7])" in out
    assert cli.main(["eval", str(run), "--preference", "[0.3,0.7]", "--episodes", "2", "--record", "1",
                     "--out", str(root / "rec")]) == 0
    assert len(list((root / "rec").glob("*.npz"))) == 1


@pytest.mark.parametrize("pref, text", [
    ("0.3", "marl: error: the preference has 1 value; give one per objective: 2 (combat, safety)\n"),
    ("-1,2", "marl: error: the preference (-1, 2) has a negative weight; weights must be >= 0, not all 0\n"),
    ("0,0", "marl: error: the preference (0, 0) is all zero; weights must be >= 0, not all 0\n"),
    ("a,b", "marl: error: --preference takes one number per objective (combat, safety), such as 0.3,0.7 or "
            "[0.3,0.7]; got 'a,b'\n")])
def test_a_bad_preference_is_one_line(trained, capsys, pref, text):
    root = trained[0]
    assert cli.main(["eval", str(root / "whole"), f"--preference={pref}"]) == 2
    assert capsys.readouterr().err == text


def test_front_and_preference_refuse_a_single_policy_run(tmp_path, capsys):
    cfg = config_mod.load("smac", "3m", "mappo", [f"train.runs_dir={tmp_path}", "train.envs=1", "train.rollout=4",
                                                  "train.eval_interval=0", "train.torch_threads=1"])
    Trainer(cfg, tmp_path / "run", show_progress=False).run(max_updates=1)
    assert cli.main(["front", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"marl: error: {tmp_path / 'run'} was trained with mappo, which keeps one "
                                       "policy, not a Pareto front (train with --algo cmorl)\n")
    assert cli.main(["eval", str(tmp_path / "run"), "--preference=1,0"]) == 2
    assert capsys.readouterr().err == ("marl: error: --preference picks a policy from a Pareto front; this run's "
                                       "learner mappo keeps one policy (train with --algo cmorl)\n")


@pytest.mark.parametrize("overrides, text", [
    (["env.objectives=combat"], "cmorl learns a front of trade-offs, but 3m has one reward; give it objectives "
                                "(smac: env.objectives=combat,safety) or train --algo mappo"),
    (["train.envs=4"], "train.envs is 4; cmorl gives each of its 6 Stage-1 policies (and each of the 2 branches of "
                       "a selected one) an environment of its own: set train.envs >= 6"),
    (["algo.preference=1,0"], "cmorl learns a policy per trade-off: algo.preference must stay null; pick a policy "
                              "afterwards with marl eval RUN_DIR --preference w"),
    (["algo.hv_ref=0"], "algo.hv_ref has 1 values; give one per objective: 2 (combat, safety)"),
    (["algo.stage1_preferences=[[1,0],[0,0]]"], "algo.stage1_preferences[1]: the preference (0, 0) is all zero; "
                                                "weights must be >= 0, not all 0")])
def test_settings_judged_against_the_environment(overrides, text):
    from marl.spec import EnvSpec as Spec

    cfg = config_mod.load("smac", "3m", "cmorl", overrides)
    k = len(cfg["env"]["objectives"])
    spec = Spec(n_agents=3, obs_dim=1, state_dim=1, n_actions=1, episode_limit=1, agent_names=("a", "b", "c"),
                reward_dim=k, reward_names=tuple(cfg["env"]["objectives"]), name="3m")
    with pytest.raises(ConfigError) as err:
        config_mod.check_built(cfg, spec)
    assert str(err.value) == text


# ---------------------------------------------------------------- the batched population (issue 15's speed work)
def _nets(inputs, norm, n=3, seed=0):
    from marl.agents.ppo import mlp

    torch.manual_seed(seed)
    nets = [mlp(inputs, 16, 2, 3, 1.0, norm) for _ in range(n)]
    for net in nets:  # away from the initialisation (LayerNorm weight 1, bias 0), so the fold is exercised
        for p in net.parameters():
            p.data += 0.3 * torch.randn_like(p)
    return nets


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("ids", [True, False])
def test_stacked_forward_and_its_gradients_equal_each_network_alone(norm, ids):
    from marl.agents.cmorl.learner import Stacked

    A, Ds = 4, 7
    nets = _nets(Ds + (A if ids else 0), norm)
    stacked = Stacked(nets)
    s = torch.randn(3, 5, 2, Ds) * 2 + 0.5
    x = s.unsqueeze(-2).expand(3, 5, 2, A, Ds)
    if ids:
        x = torch.cat([x, torch.eye(A).expand(3, 5, 2, A, A)], -1)
    want = torch.stack([nets[p](x[p]) for p in range(3)])
    got, shared = stacked(x), stacked.forward_shared(s, A, ids)
    assert got.shape == shared.shape == (3, 5, 2, A, 3)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(shared, want, atol=1e-5)
    assert torch.allclose(stacked(stacked.normalize(x), normalized=True), want, atol=1e-5)
    # the folded LayerNorm affine and the per-state first product give each network its own gradients
    want.pow(2).sum().backward()
    shared.pow(2).sum().backward()
    for name, t in stacked.tensors().items():
        alone = torch.stack([dict(nets[p].named_parameters())[name].grad for p in range(3)])
        assert torch.allclose(t.grad, alone, rtol=1e-4, atol=1e-4), name
    with torch.no_grad():  # acting caches the folded weights until a parameter changes
        before = stacked(x)
        next(iter(stacked.params.values())).add_(1.0)
        assert not torch.allclose(stacked(x), before)


def test_stacked_refuses_layers_it_cannot_batch():
    from marl.agents.cmorl.learner import Stacked

    with pytest.raises(TypeError, match="cannot batch a Dropout layer"):
        Stacked([torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())])


def test_batched_ppo_helpers_equal_one_call_per_policy():
    from marl.agents.ppo import masked_entropy, normalize_advantages, policy_loss, value_loss

    g = torch.Generator().manual_seed(0)
    P, n, A, K = 3, 40, 2, 2
    mask = (torch.rand(P, n, A, generator=g) < 0.7).float()
    mask[2] = 0
    mask[2, 0, 0] = 1  # one living agent: normalisation leaves it alone
    adv = torch.randn(P, n, A, generator=g) * 3 + 1
    logp, old = -torch.rand(P, n, A, generator=g), -torch.rand(P, n, A, generator=g)
    logits = torch.log_softmax(torch.randn(P, n, A, 5, generator=g), -1)
    v, ov, tg = (torch.randn(P, n, A, K, generator=g) for _ in range(3))
    norm = normalize_advantages(adv, mask, batch_dims=1)
    loss, info = policy_loss(logp, old, adv, 0.2, mask, batch_dims=1)
    ent = masked_entropy(logits, mask, batch_dims=1)
    vl = value_loss(v, ov, tg, 0.2, 1.0, True, mask.unsqueeze(-1), batch_dims=1)
    for p in range(P):
        assert torch.allclose(norm[p], normalize_advantages(adv[p], mask[p]), atol=1e-5)
        one, one_info = policy_loss(logp[p], old[p], adv[p], 0.2, mask[p])
        assert torch.allclose(loss[p], one, atol=1e-6)
        assert info["approx_kl"][p].item() == pytest.approx(one_info["approx_kl"], abs=1e-6)
        assert info["clip_frac"][p].item() == pytest.approx(one_info["clip_frac"], abs=1e-6)
        assert torch.allclose(ent[p], masked_entropy(logits[p], mask[p]), atol=1e-6)
        one_v = value_loss(v[p], ov[p], tg[p], 0.2, 1.0, True, mask[p].unsqueeze(-1).expand_as(v[p]))
        assert torch.allclose(vl[p], one_v, atol=1e-6)
    assert torch.equal(norm[2], adv[2])


def test_barrier_of_a_population_is_each_policys():
    g = torch.Generator().manual_seed(1)
    P, n, A, K = 4, 16, 2, 3
    ratio = torch.exp(0.1 * torch.randn(P, n, A, generator=g))
    adv = torch.randn(P, n, A, K, generator=g)
    margin = torch.tensor([[0.5, 0.01, -1.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0], [1.0, -3.0, 0.2]])
    constrained = torch.tensor([[True, True, False], [False, False, False], [True, False, True], [True, True, True]])
    mask = (torch.rand(P, n, A, generator=g) < 0.8).float()
    loss, clamped = barrier(ratio, adv, margin, constrained, mask, t=20.0)
    assert loss.shape == clamped.shape == (P,)
    for p in range(P):
        one, one_clamped = barrier(ratio[p], adv[p], margin[p], constrained[p], mask[p], t=20.0)
        assert torch.allclose(loss[p], one, atol=1e-6) and clamped[p].item() == one_clamped.item()
    assert loss[1].item() == 0 and clamped[1].item() == 0  # no constraint, no barrier
    assert clamped[3].item() >= 1  # margin -3: below the floor, counted


def test_input_norm_off_keeps_grid_positions_apart():
    from marl.agents.ppo import mlp

    torch.manual_seed(0)
    positions = torch.tensor([[2.0, 2.0, 1.0], [5.0, 5.0, 1.0], [1.0, 2.0, 1.0], [1.0, 9.0, 1.0]])  # (row, col, id)
    with_norm = mlp(3, 8, 1, 4, 1.0)(positions)
    assert torch.allclose(with_norm[0], with_norm[1], atol=1e-5) and torch.allclose(with_norm[2], with_norm[3],
                                                                                     atol=1e-5)
    without = mlp(3, 8, 1, 4, 1.0, input_norm=False)
    assert not isinstance(without[0], torch.nn.LayerNorm)
    out = without(positions)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[2], out[3])


def test_the_deep_sea_treasure_preset():
    cm = config_mod.load("gym", "deep-sea-treasure-concave-v0", "cmorl")
    assert cm["algo"]["input_norm"] is False and cm["algo"]["hv_ref"] == [0, -25] and cm["algo"]["eval_every"] == 2
    assert (cm["train"]["envs"], cm["train"]["rollout"], cm["train"]["steps"]) == (12, 100, 300000)
    assert cm["env"]["max_episode_steps"] == 100
    mp = config_mod.load("gym", "deep-sea-treasure-concave-v0", "mappo", ["algo.preference=1,0"])
    assert mp["train"]["envs"] == 12 and mp["env"]["max_episode_steps"] == 100  # the baseline's budget and cap
    assert config_mod.load("smac", "3m", "cmorl")["algo"]["input_norm"] is True


def test_pareto_baseline_spreads_preferences_and_measures_the_union():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "pareto_baseline.py"
    spec = importlib.util.spec_from_file_location("pareto_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.preferences(5, 2).tolist() == [[0, 1], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1, 0]]
    with pytest.raises(SystemExit, match="defined for 2 objectives"):
        mod.preferences(5, 3)
    # the concave deep-sea-treasure's two linearly supported points (gamma 0.99), a duplicate and a dominated one
    lo, hi = (1.0, -1.0), (124 * 0.99 ** 18, -(1 - 0.99 ** 19) / 0.01)
    out = mod.front_metrics(np.array([lo, hi, hi, (0.5, -2.0)]), np.array([0.0, -25.0]))
    assert out["size"] == 2 and out["hv"] == pytest.approx(804.5738, abs=1e-3)
    assert mod.reference(None, ("combat", "safety")).tolist() == [0, -20]
    assert mod.reference("0,-25", ("a", "b")).tolist() == [0, -25] and mod.reference(None, ("a", "b")) is None


def _envs_of(rollout, envs):
    """The sub-rollout of environments `envs` (time-limit cuts renumbered)."""
    import dataclasses

    keep = np.isin(rollout.final_e, envs)
    where = {e: i for i, e in enumerate(envs)}
    per_step = {f: getattr(rollout, f)[:, envs] for f in ("obs", "state", "avail", "alive", "actions", "reward", "done",
                                                           "truncated")}
    return dataclasses.replace(
        rollout, **per_step, extras={k: v[:, envs] for k, v in rollout.extras.items()},
        **{f: getattr(rollout, f)[envs] for f in ("next_obs", "next_state", "next_avail", "next_alive")},
        final_t=rollout.final_t[keep], final_e=np.array([where[e] for e in rollout.final_e[keep]], np.int64),
        final_obs=rollout.final_obs[keep], final_state=rollout.final_state[keep])


def test_one_update_of_the_population_equals_each_policy_trained_alone_on_its_slice():
    """Slices of 1, 2 and 2 environments (two groups of equal slices), two epochs: the batched update moves each
    policy exactly as a population of one trained on its own environments would."""
    from marl.registry import make_env
    from marl.rollout import collect

    prefs = [[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]]
    cfg = config_mod.load("smac", "3m", "cmorl", ["algo.eval_every=0", "algo.stage1_fraction=1", "algo.ppo_epochs=2",
                                                  f"algo.stage1_preferences={prefs}"])
    env = make_env("smac", "3m", 5, dict(cfg["env"]))
    population = CMORL(env.spec, cfg["algo"], seed=3)
    rollout, _, _ = collect(env, population, env.reset(seed=3), 30, {})
    before = [population.actor.one(p) for p in range(3)]
    alone = []
    for p, w in enumerate(prefs):
        one = CMORL(env.spec, {**cfg["algo"], "stage1_preferences": [w]}, seed=3)
        one.actor.load_state_dict({k: v[p:p + 1].clone() for k, v in population.actor.state_dict().items()})
        one.critic.load_state_dict({k: v[p:p + 1].clone() for k, v in population.critic.state_dict().items()})
        for k in ("mean", "mean_sq", "debias"):
            getattr(one.value_norm, k).copy_(getattr(population.value_norm, k)[p:p + 1])
        alone.append(one)
    population.update(rollout)
    owner = slices(5, 3)
    assert owner.tolist() == [0, 1, 1, 2, 2]
    for p, one in enumerate(alone):
        one.update(_envs_of(rollout, np.flatnonzero(owner == p)))
        for net in ("actor", "critic"):
            mine, theirs = getattr(population, net).one(p), getattr(one, net).one(0)
            for k in mine:
                assert torch.allclose(mine[k], theirs[k], atol=2e-5), (p, net, k)
        assert torch.allclose(population.value_norm.mean[p], one.value_norm.mean[0])
        assert not torch.allclose(population.actor.one(p)["1.weight"], before[p]["1.weight"])  # it did move
