"""MRA: padding and permutation invariances, unseen team sizes, the MI and game-ID terms, exact resume, marl adapt."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import whole_and_resumed
from hypothesis import given, settings
from hypothesis import strategies as st

from marl import config as config_mod
from marl.adapt import reinforce_loss, tempered
from marl.agents.mra import MRA
from marl.agents.mra.learner import N_BASIC, game_id_loss, heal_index, mi_estimate
from marl.cli import main
from marl.spec import EnvSpec, ObsBlock, Rollout, Step

CFG = yaml.safe_load(open(config_mod.config_path("algos/mra.yaml"), encoding="utf-8"))
MOVE, ENEMY_W, ALLY_W, OWN_W, S_ALLY_W, S_ENEMY_W = 4, 5, 5, 1, 4, 3  # a marine map's widths, as on 3m


def marine_spec(A: int, M: int, unit_types: tuple[str, ...] = (), scenarios: tuple[EnvSpec, ...] = ()) -> EnvSpec:
    """An EnvSpec laid out as SMAC's marine maps are, for A agents against M enemies."""
    n_actions = N_BASIC + M
    obs = (ObsBlock("move", 1, MOVE), ObsBlock("enemy", M, ENEMY_W), ObsBlock("ally", A - 1, ALLY_W),
           ObsBlock("own", 1, OWN_W))
    state = (ObsBlock("ally", A, S_ALLY_W), ObsBlock("enemy", M, S_ENEMY_W), ObsBlock("last_action", A, n_actions))
    return EnvSpec(n_agents=A, obs_dim=sum(b.size for b in obs), state_dim=sum(b.size for b in state),
                   n_actions=n_actions, episode_limit=60, agent_names=tuple(f"marine_{a}" for a in range(A)),
                   unit_types=unit_types, obs_layout=obs, state_layout=state, name=f"test:{A}m_vs_{M}m",
                   scenarios=scenarios)


def team(A: int, M: int, E: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A battle's unpadded arrays as blocks: random rows with some absent (zero) ones, one dead agent."""
    rng = np.random.default_rng(seed)
    nz = lambda *shape: rng.uniform(0.1, 1.0, shape).astype(np.float32)  # noqa: E731 - rows that are present
    enemy, ally = nz(E, A, M, ENEMY_W), nz(E, A, A - 1, ALLY_W)
    enemy[:, :, M - 1] = 0  # an enemy out of sight
    ally[:, 0, 0] = 0  # an ally agent 0 cannot see
    obs = {"move": nz(E, A, MOVE), "enemy": enemy, "ally": ally, "own": nz(E, A, OWN_W)}
    la = np.zeros((E, A, N_BASIC + M), np.float32)
    la[:, :, N_BASIC] = 1  # everyone attacked enemy 0
    state = {"ally": nz(E, A, S_ALLY_W), "enemy": nz(E, M, S_ENEMY_W), "last_action": la}
    state["ally"][:, A - 1] = 0  # the last agent is dead
    avail = np.zeros((E, A, N_BASIC + M), bool)
    avail[:, :, :N_BASIC] = True
    avail[:, :, N_BASIC:] = obs["enemy"][..., 0] > 0.5
    alive = np.ones((E, A), bool)
    alive[:, A - 1] = False
    return {"obs": obs, "state": state, "avail": avail, "alive": alive}


def pad(t: dict, A: int, M: int, PA: int, PM: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The team's obs, state, avail and alive flattened as a mixture pads them to PA agents and PM enemies."""
    E = t["avail"].shape[0]
    o, s = t["obs"], t["state"]
    enemy = np.zeros((E, PA, PM, ENEMY_W), np.float32)
    enemy[:, :A, :M] = o["enemy"]
    ally = np.zeros((E, PA, PA - 1, ALLY_W), np.float32)
    ally[:, :A, :A - 1] = o["ally"]
    move, own = np.zeros((E, PA, MOVE), np.float32), np.zeros((E, PA, OWN_W), np.float32)
    move[:, :A], own[:, :A] = o["move"], o["own"]
    obs = np.concatenate([move, enemy.reshape(E, PA, -1), ally.reshape(E, PA, -1), own], -1)
    s_ally = np.zeros((E, PA, S_ALLY_W), np.float32)
    s_ally[:, :A] = s["ally"]
    s_enemy = np.zeros((E, PM, S_ENEMY_W), np.float32)
    s_enemy[:, :M] = s["enemy"]
    la = np.zeros((E, PA, N_BASIC + PM), np.float32)
    la[:, :A, :N_BASIC + M] = s["last_action"]
    state = np.concatenate([s_ally.reshape(E, -1), s_enemy.reshape(E, -1), la.reshape(E, -1)], -1)
    avail = np.zeros((E, PA, N_BASIC + PM), bool)
    avail[:, :A, :N_BASIC + M] = t["avail"]
    alive = np.zeros((E, PA), bool)
    alive[:, :A] = t["alive"]
    return obs, state, avail, alive


def learner(spec: EnvSpec, like: MRA | None = None, **cfg) -> MRA:
    """An MRA learner for spec (with the parameters of `like` when given, as a checkpoint of another size)."""
    out = MRA(spec, {**CFG, **cfg}, seed=3)
    if like is not None:
        out.load_state_dict(like.state_dict())
    return out


def logits_and_values(lr: MRA, obs, state) -> tuple[np.ndarray, np.ndarray]:
    """Every mode's logits [E, A, K, n_actions] and the values [E, A] of padded arrays."""
    with torch.no_grad():
        out = lr.policy(torch.as_tensor(obs), torch.zeros(obs.shape[0], dtype=torch.long))
    return out["logits"].numpy(), lr.values(state)


def test_a_teams_outputs_do_not_depend_on_the_padding_around_it():
    A, M = 3, 3
    t = team(A, M)
    base = learner(marine_spec(A, M))
    ref_logits, ref_values = logits_and_values(base, *pad(t, A, M, A, M)[:2])
    for P in (5, 8):
        lr = learner(marine_spec(P, P), like=base)
        logits, values = logits_and_values(lr, *pad(t, A, M, P, P)[:2])
        np.testing.assert_allclose(logits[:, :A, :, :N_BASIC + M], ref_logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(values[:, :A], ref_values, rtol=1e-5, atol=1e-5)
    assert np.isfinite(ref_logits).all() and np.ptp(ref_values) > 0


def test_permuting_an_agents_ally_rows_leaves_its_action_distribution_unchanged():
    A, M = 5, 4
    t = team(A, M)
    lr = learner(marine_spec(A, M))
    obs, state, _, _ = pad(t, A, M, A, M)
    perm = np.array([2, 0, 3, 1])
    t["obs"]["ally"][:, 1] = t["obs"]["ally"][:, 1, perm]  # agent 1's allies in another order
    obs2 = pad(t, A, M, A, M)[0]
    a, _ = logits_and_values(lr, obs, state)
    b, _ = logits_and_values(lr, obs2, state)
    assert not np.allclose(obs, obs2)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_permuting_the_enemy_rows_permutes_the_attack_logits_the_same_way():
    A, M = 4, 5
    t = team(A, M)
    lr = learner(marine_spec(A, M))
    obs, state, _, _ = pad(t, A, M, A, M)
    perm = np.array([3, 0, 4, 1, 2])
    t["obs"]["enemy"] = t["obs"]["enemy"][:, :, perm]
    b, _ = logits_and_values(lr, pad(t, A, M, A, M)[0], state)
    a, _ = logits_and_values(lr, obs, state)
    np.testing.assert_allclose(b[..., N_BASIC:], a[..., N_BASIC + perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b[..., :N_BASIC], a[..., :N_BASIC], rtol=1e-5, atol=1e-5)
    assert np.ptp(a[..., N_BASIC:]) > 0  # the attack logits differ between enemies


def test_permuting_the_agents_permutes_their_outputs():
    A, M = 4, 3
    t = team(A, M)
    lr = learner(marine_spec(A, M))
    obs, state, _, _ = pad(t, A, M, A, M)
    perm = np.array([2, 0, 3, 1])
    # a marine's allies are the others in order of their index: after the permutation, as before, up to order
    # (which the previous test shows does not matter); the state's rows follow the agents
    for k in ("move", "enemy", "ally", "own"):
        t["obs"][k] = t["obs"][k][:, perm]
    for k in ("ally", "last_action"):
        t["state"][k] = t["state"][k][:, perm]
    obs2, state2, _, _ = pad(t, A, M, A, M)
    a, va = logits_and_values(lr, obs, state)
    b, vb = logits_and_values(lr, obs2, state2)
    np.testing.assert_allclose(b, a[:, perm], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vb, va[:, perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("A,M", [(1, 1), (12, 12), (7, 13), (30, 30)])
def test_shapes_are_right_on_team_sizes_never_seen(A, M):
    trained = learner(marine_spec(3, 3))
    lr = learner(marine_spec(A, M), like=trained)
    E = 3
    obs, state, avail, alive = (pad(team(A, M, E), A, M, A, M) if A > 1 else
                                (np.ones((E, 1, MOVE + M * ENEMY_W + OWN_W), np.float32),
                                 np.ones((E, A * S_ALLY_W + M * S_ENEMY_W + A * (N_BASIC + M)), np.float32),
                                 np.ones((E, 1, N_BASIC + M), bool), np.ones((E, 1), bool)))
    step = Step(obs=obs, state=state, avail=avail, reward=np.zeros(E, np.float32), done=np.zeros(E, bool),
                truncated=np.zeros(E, bool), alive=alive, t=np.zeros(E, np.int64),
                episode_return=np.zeros(E, np.float32), episode_length=np.zeros(E, np.int64), won=np.zeros(E, bool))
    actions, extras = lr.act(step)
    assert actions.shape == extras["z"].shape == extras["log_prob"].shape == extras["value"].shape == (E, A)
    assert avail[np.arange(E)[:, None], np.arange(A)[None], actions].all()
    assert (extras["log_prob"] <= 0).all() and ((0 <= extras["z"]) & (extras["z"] < CFG["latent_modes"])).all()
    logits, values = logits_and_values(lr, obs, state)
    assert logits.shape == (E, A, CFG["latent_modes"], N_BASIC + M) and values.shape == (E, A)
    assert lr.game_prior_logits((A, M)).shape == (CFG["latent_modes"],)


@given(st.integers(1, 30), st.integers(1, 30), st.sampled_from([0.5, 2.0, 4.0]))
@settings(max_examples=20, deadline=None)
def test_the_prior_temperature_divides_the_mlps_logits(A, M, T):
    """prior_temperature T: the same MLP's logits over T on any team size (T = 1 leaves them exactly)."""
    plain = learner(marine_spec(3, 3))
    tempered = learner(marine_spec(3, 3), prior_temperature=T)
    tempered.prior.load_state_dict(plain.prior.state_dict())  # the temperature is no parameter: the same MLP
    sizes = torch.tensor([A, M])
    with torch.no_grad():
        raw = plain.prior.net(sizes.float() / 10.0)
        assert torch.equal(plain.prior(sizes), raw)
        assert torch.equal(tempered.prior(sizes), raw / T)
    np.testing.assert_array_equal(tempered.game_prior_logits((A, M)), (raw / T).numpy())


def test_heals_are_scored_per_ally_token_for_medivacs():
    # slot 6 + j of agent i heals agent j, read from agent i's ally row j (below i) or j - 1 (above)
    assert heal_index(3, 4).tolist() == [[-1, 0, 1, -1], [0, -1, 1, -1], [0, 1, -1, -1]]
    A, M = 3, 4
    spec = marine_spec(A, M, unit_types=("marine", "medivac", "marine"))
    lr = learner(spec)
    obs = pad(team(A, M), A, M, A, M)[0]
    with torch.no_grad():
        out = lr.policy(torch.as_tensor(obs), torch.zeros(2, dtype=torch.long))["logits"].numpy()
        # a Medivac's slots move with its ally rows, not the enemies: change agent 1's view of agent 2 only
        obs2 = obs.copy()
        start = MOVE + M * ENEMY_W + 1 * ALLY_W  # agent 1's ally row 1 (agent 2)
        obs2[:, 1, start:start + ALLY_W] *= 0.5
        out2 = lr.policy(torch.as_tensor(obs2), torch.zeros(2, dtype=torch.long))["logits"].numpy()
    assert not np.allclose(out2[:, 1, :, N_BASIC + 2], out[:, 1, :, N_BASIC + 2])  # heal agent 2 moved
    np.testing.assert_allclose(out2[:, 1, :, N_BASIC + 3], out[:, 1, :, N_BASIC + 3])  # no agent 3: a zero slot
    np.testing.assert_allclose(out[:, 1, :, N_BASIC + 1], 0.0)  # itself


def test_mi_estimate_and_game_id_loss_match_their_formulas():
    # two agents, K = 3 modes: log pi(a|s,k) of the action taken, the mode played, the prior, the mask
    logp = np.log(np.array([[0.5, 0.2, 0.1], [0.3, 0.3, 0.6]]))
    prior = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    z = np.array([0, 2])
    mask = np.array([1.0, 1.0])
    expect = np.mean([logp_e[z_e] - math.log(float(prior_e @ np.exp(logp_e)))
                      for logp_e, prior_e, z_e in zip(logp, prior, z)])
    got = mi_estimate(torch.tensor(logp), torch.nn.functional.one_hot(torch.tensor(z), 3).double(),
                      torch.tensor(np.log(prior)), torch.tensor(mask))
    assert float(got) == pytest.approx(expect, rel=1e-9)
    # the second agent dead: only the first counts; by hand, log 0.5 - log(0.1 + 0.06 + 0.05)
    got = mi_estimate(torch.tensor(logp), torch.nn.functional.one_hot(torch.tensor(z), 3).double(),
                      torch.tensor(np.log(prior)), torch.tensor([1.0, 0.0]))
    assert float(got) == pytest.approx(math.log(0.5) - math.log(0.21), rel=1e-9)
    # game ID: logits over 2 games, the true games, one agent masked out
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    games = torch.tensor([0, 0, 1])
    expect = (-(2 - math.log(math.exp(2) + 1)) - (0 - math.log(1 + math.e))) / 2
    assert float(game_id_loss(logits, games, torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(expect, rel=1e-6)


def mixture_rollout(T: int = 4, E: int = 4) -> tuple[EnvSpec, Rollout]:
    """A hand-made rollout of a 3m/5m mixture padded to 5 agents and 5 enemies, battles 0, 2 on 3m."""
    members = (marine_spec(3, 3), marine_spec(5, 5))
    spec = marine_spec(5, 5, scenarios=members)
    scen = np.array([0, 1, 0, 1])
    parts = [pad(team(A, A, E, seed=t), A, A, 5, 5) for t in range(T + 1) for A in (3, 5)]
    pick = lambda i, t: np.stack([parts[2 * t + scen[e]][i][e] for e in range(E)])  # noqa: E731
    obs, state, avail, alive = (np.stack([pick(i, t) for t in range(T)]) for i in range(4))
    rng = np.random.default_rng(1)
    actions = np.zeros((T, E, 5), np.int64)  # an available action each: a stop (the dead ones: no-op)
    actions[alive] = 1
    ro = Rollout(obs=obs, state=state, avail=avail, alive=alive, actions=actions,
                 reward=rng.normal(size=(T, E)).astype(np.float32), done=np.zeros((T, E), bool),
                 truncated=np.zeros((T, E), bool),
                 extras={"log_prob": np.full((T, E, 5), -1.5, np.float32), "value": np.zeros((T, E, 5), np.float32),
                         "z": rng.integers(0, CFG["latent_modes"], (T, E, 5))},
                 next_obs=pick(0, T), next_state=pick(1, T), next_avail=pick(2, T), next_alive=pick(3, T),
                 final_t=np.zeros(0, np.int64), final_e=np.zeros(0, np.int64),
                 final_obs=np.zeros((0, 5, spec.obs_dim), np.float32), final_state=np.zeros((0, spec.state_dim),
                                                                                           np.float32),
                 scenario=np.tile(scen, (T, 1)))
    return spec, ro


def test_an_update_on_a_mixture_trains_the_game_head_and_the_prior():
    spec, ro = mixture_rollout()
    lr = learner(spec, game_id_coef=1.0, ppo_epochs=3, minibatches=1)
    prior0 = lr.game_prior_logits((3, 3))
    metrics = lr.update(ro)
    assert {"mi", "game_id_loss", "game_id_acc", "prior_entropy"} <= set(metrics)
    assert metrics["game_id_loss"] > 0 and 0 <= metrics["game_id_acc"] <= 1
    assert not np.allclose(lr.game_prior_logits((3, 3)), prior0)  # the straight-through z reaches the prior
    # the ablation: one mode, no terms
    ablation = learner(spec, latent_modes=1, mi_coef=0.0, game_id_coef=0.0, ppo_epochs=1)
    ro.extras["z"] = np.zeros_like(ro.extras["z"])  # one mode: every agent plays mode 0
    assert not {"mi", "game_id_loss"} & set(ablation.update(ro))


def test_latents_are_drawn_once_per_episode_and_apart_for_evaluation():
    A, M = 3, 3
    lr = learner(marine_spec(A, M))
    obs, state, avail, alive = pad(team(A, M, E=64), A, M, A, M)
    step = Step(obs=obs, state=state, avail=avail, reward=np.zeros(64, np.float32), done=np.zeros(64, bool),
                truncated=np.zeros(64, bool), alive=alive, t=np.zeros(64, np.int64),
                episode_return=np.zeros(64, np.float32), episode_length=np.zeros(64, np.int64), won=np.zeros(64, bool))
    z0 = lr.act(step)[1]["z"]
    assert len(np.unique(z0)) > 1  # a near-uniform prior over 6 modes, drawn per agent
    step.t = np.ones(64, np.int64)
    step.t[5] = 0  # battle 5 starts a new episode
    z1 = lr.act(step)[1]["z"]
    keep = np.arange(64) != 5
    np.testing.assert_array_equal(z1[keep], z0[keep])
    lr.act(step, deterministic=True)  # evaluation holds its own
    np.testing.assert_array_equal(lr.held_latents(deterministic=False), z1)


def test_mra_resumes_exactly_latents_included(tmp_path):
    cfg = config_mod.load("smac", "3m", "mra", [
        "train.envs=2", "train.rollout=16", "algo.ppo_epochs=2", "train.eval_interval=0",
        "train.checkpoint_interval=1", "train.log_interval=1", f"train.runs_dir={tmp_path}", "train.steps=1000",
        "train.torch_threads=1", "train.update_threads=1"])
    whole, resumed = whole_and_resumed(cfg, tmp_path, 2)
    a, b = whole.learner.state_dict(), resumed.learner.state_dict()
    for part in ("actor", "prior", "game_head", "critic"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert torch.equal(a["latents"]["train"], b["latents"]["train"])
    assert torch.equal(a["generator"], b["generator"])
    np.testing.assert_array_equal(whole.step.obs, resumed.step.obs)


def test_adapt_refuses_a_run_without_a_latent_prior(tmp_path, capsys):
    common = ["train.envs=2", "train.rollout=8", "train.eval_interval=0", f"train.runs_dir={tmp_path}",
              "train.steps=16", "train.torch_threads=1", "train.update_threads=1"]
    assert main(["train", "smac", "3m", "--algo", "mappo", *common]) == 0
    run = next(tmp_path.glob("smac-3m-mappo-*"))
    capsys.readouterr()
    assert main(["adapt", str(run), "--scenario", "8m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"marl: error: {run} was trained with mappo, which has no latent prior to adapt; marl adapt "
                   "adapts runs of --algo mra")
    assert main(["train", "smac", "3m", "--algo", "mra", "algo.latent_modes=1", *common]) == 0
    run = next(tmp_path.glob("smac-3m-mra-*"))
    capsys.readouterr()
    assert main(["adapt", str(run), "--scenario", "8m"]) == 2
    assert capsys.readouterr().err.strip() == (f"marl: error: {run} has one latent mode (algo.latent_modes=1): its "
                                               "prior has nothing to adapt")
    assert main(["adapt", str(tmp_path / "nothing"), "--scenario", "8m"]) == 2
    assert capsys.readouterr().err.strip().startswith("marl: error: no config.yaml in the run directory")


def test_adapt_moves_only_the_prior_and_writes_an_adapted_run(tmp_path, capsys):
    common = ["train.envs=2", "train.rollout=8", "train.eval_interval=0", f"train.runs_dir={tmp_path}",
              "train.steps=16", "train.torch_threads=1", "train.update_threads=1"]
    assert main(["train", "smac", "3m", "--algo", "mra", *common]) == 0
    run = next(tmp_path.glob("smac-3m-mra-*"))
    capsys.readouterr()
    out = tmp_path / "adapted"
    assert main(["adapt", str(run), "--scenario", "8m", "--episodes", "2", "--steps", "2", "--eval-episodes", "4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "win rate before" in printed and "after" in printed and str(out) in printed
    from marl import checkpoint

    old = checkpoint.load(run / "checkpoints" / "last.pt")["learner"]
    new = checkpoint.load(out / "checkpoints" / "last.pt")
    for part in ("actor", "prior", "game_head", "critic"):
        for k in old[part]:
            assert torch.equal(old[part][k], new["learner"][part][k]), (part, k)  # the network is frozen
    assert new["learner"]["adapted_priors"]["sizes"].tolist() == [[8, 8]]
    assert new["config"]["run"]["scenario"] == "8m" and new["env"] is None
    assert config_mod.load_file(out / "config.yaml")["run"]["scenario"] == "8m"
    record = json.loads((out / "adapt.json").read_text())
    assert (record["lr"], record["start_max_prob"], len(record["prior_start"])) == (2.0, 0.5, 6)
    assert main(["adapt", str(run), "--scenario", "8m", "--out", str(out)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=8), st.floats(0.05, 1.0))
def test_tempered_caps_the_top_mode_and_keeps_the_order(logits, max_prob):
    logits = np.asarray(logits, np.float32)
    start = tempered(logits, max_prob)
    # the cap is judged in float64, as tempered() does (equal float32 logits give a float32 top of 1/K + 1 ulp)
    p0, p = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), -1), torch.softmax(torch.as_tensor(start), -1)
    K = len(logits)
    if float(p0.max()) <= max_prob:
        np.testing.assert_array_equal(start, logits)  # already below the cap: the prior as it is
    elif max_prob <= 1 / K:
        np.testing.assert_array_equal(start, np.zeros(K, np.float32))  # no prior that spread but the uniform
    else:  # the smallest temperature that brings the top mode down to the cap; the order of the modes stays
        assert float(p.max()) == pytest.approx(max_prob, abs=1e-5)
        scale = start[np.argmax(logits)] / logits[np.argmax(logits)] if logits[np.argmax(logits)] else None
        if scale is not None:
            assert 0 < scale <= 1
            np.testing.assert_allclose(start, logits * scale, rtol=1e-5, atol=1e-6)


def test_reinforce_loss_matches_its_formula_and_a_one_mode_prior_has_no_gradient():
    """The reason `marl adapt` starts from a tempered prior: when every agent of every episode holds the same mode
    the normalised advantages sum to zero against the same log-probability, and so does the gradient."""
    logits = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)
    z = torch.tensor([[0, 0], [1, 2], [2, 2]])
    ret = np.array([1.0, 3.0, 2.0])
    loss = reinforce_loss(logits, z, ret)
    adv = (ret - ret.mean()) / (ret.std() + 1e-8)
    logp = torch.log_softmax(logits.detach(), -1).numpy()
    expected = -np.mean([adv[e] * logp[z[e]].sum() for e in range(3)])
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    p = torch.softmax(logits.detach(), -1).numpy()
    counts = np.stack([np.bincount(z[e].numpy(), minlength=3) for e in range(3)])  # d/dl sum_a log p[z] = n - A p
    np.testing.assert_allclose(logits.grad.numpy(), -np.mean(adv[:, None] * (counts - 2 * p), 0), rtol=1e-5,
                               atol=1e-7)
    saturated = torch.tensor([-9.0, -9.0, 9.0], requires_grad=True)
    reinforce_loss(saturated, torch.full((8, 10), 2), np.arange(8.0)).backward()
    assert float(saturated.grad.abs().max()) < 1e-12  # zero but for rounding


def test_adapt_checks_its_start_cap(tmp_path, capsys):
    from marl import adapt as adapt_mod

    with pytest.raises(adapt_mod.AdaptError, match=r"start_max_prob must lie in \(0, 1\], got 0"):
        adapt_mod.adapt(tmp_path, "8m", start_max_prob=0)
    with pytest.raises(SystemExit) as exit_:
        main(["adapt", str(tmp_path), "--scenario", "8m", "--start-max-prob", "1.5"])
    assert exit_.value.code == 2
    assert "--start-max-prob: expects a probability in (0, 1], got '1.5'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["adapt", str(tmp_path), "--scenario", "8m", "--lr", "-1"])
    assert exit_.value.code == 2
    assert "--lr: expects a positive number, got '-1'" in capsys.readouterr().err
    parser_defaults = {a.dest: a.default for a in _adapt_parser()._actions}
    assert (parser_defaults["lr"], parser_defaults["start_max_prob"]) == (adapt_mod.LR, adapt_mod.START_MAX_PROB)


def _adapt_parser():
    import argparse

    from marl.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["adapt"]


# ------------------------------------------------------------------------------------ cheaper, the same function
def test_the_loss_on_living_rows_equals_the_masked_loss_over_every_agent():
    """update() runs the actor on the living agents' rows only; its loss and gradients are those of PPO's masked
    means over every agent of the battle-steps (dead and padded agents computed, then masked out)."""
    spec, ro = mixture_rollout()
    lr = learner(spec, mi_coef=0.3, game_id_coef=0.5)
    T, E, A = ro.alive.shape
    n = T * E
    obs = torch.as_tensor(ro.obs).reshape(n, A, -1)
    avail = torch.as_tensor(ro.avail).reshape(n, A, -1)
    actions = torch.as_tensor(ro.actions).reshape(n, A)
    z = torch.as_tensor(ro.extras["z"]).reshape(n, A)
    games = torch.as_tensor(ro.scenario).reshape(n)
    mask = torch.as_tensor(ro.alive).reshape(n, A).float()
    old = torch.full((n, A), -1.5)
    adv = torch.as_tensor(np.random.default_rng(2).normal(size=(n, A)), dtype=torch.float32)
    assert 0 < mask.mean() < 1  # dead agents and the 3m battles' padded ones
    F = torch.nn.functional
    params = [*lr.actor.parameters(), *lr.prior.parameters(), *lr.game_head.parameters()]

    out = lr.policy(obs, games)  # the reference, written out: every agent, masked means
    prior_log = torch.log_softmax(lr.prior_logits(lr.sizes[games]), -1).unsqueeze(1)
    p = prior_log.exp()
    z_st = F.one_hot(z, lr.K).float() + p - p.detach()
    logp_all = torch.log_softmax(((z_st.unsqueeze(-1) * out["logits"]).sum(2)).masked_fill(~avail, -1e10), -1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    mean = lambda x: (x * mask).sum() / mask.sum()  # noqa: E731
    entropy = mean(-(logp_all.exp() * logp_all).sum(-1))
    ratio = torch.exp(logp - old)
    surrogate = -mean(torch.min(ratio * adv, ratio.clamp(1 - CFG["clip"], 1 + CFG["clip"]) * adv))
    modes = torch.log_softmax(out["logits"].masked_fill(~avail.unsqueeze(2), -1e10), -1)
    lp_modes = modes.gather(-1, actions[:, :, None, None].expand(-1, -1, lr.K, 1)).squeeze(-1)
    mi = mean((F.one_hot(z, lr.K) * lp_modes).sum(-1) - torch.logsumexp(lp_modes + prior_log.detach(), -1))
    g = lr.game_head(out["own"], (z_st.unsqueeze(-1) * out["relation"]).sum(2), z_st, lr.sizes)
    g_loss = mean(-torch.log_softmax(g, -1).gather(-1, games[:, None, None].expand(-1, A, 1)).squeeze(-1))
    ref = surrogate - CFG["entropy_coef"] * entropy - 0.3 * mi + 0.5 * g_loss
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)

    row = mask.reshape(-1).nonzero().squeeze(1)
    rows = {"avail": avail.reshape(n * A, -1)[row], "actions": actions.reshape(-1)[row], "z": z.reshape(-1)[row],
            "games": games[row // A], "old_log_probs": old.reshape(-1)[row], "advantages": adv.reshape(-1)[row]}
    loss, parts = lr.losses(lr.actor_inputs(obs.reshape(n * A, -1)[row], row % A, games[row // A]), rows)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    assert parts["mi"].item() == pytest.approx(mi.item(), rel=1e-5, abs=1e-6)
    assert parts["game_id_loss"].item() == pytest.approx(g_loss.item(), rel=1e-5)
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None or not b.any())
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_acting_computes_the_living_agents_only_and_dead_ones_take_the_no_op():
    A, M, E = 5, 4, 6
    lr = learner(marine_spec(A, M))
    obs, state, avail, alive = pad(team(A, M, E), A, M, A, M)
    alive[2, 1] = False
    avail[~alive] = False
    avail[~alive, 0] = True  # as SMAC gives a dead unit: the no-op only
    step = Step(obs=obs, state=state, avail=avail, reward=np.zeros(E, np.float32), done=np.zeros(E, bool),
                truncated=np.zeros(E, bool), alive=alive, t=np.zeros(E, np.int64),
                episode_return=np.zeros(E, np.float32), episode_length=np.zeros(E, np.int64), won=np.zeros(E, bool))
    actions, extras = lr.act(step)
    assert (actions[~alive] == 0).all() and (extras["log_prob"][~alive] == 0).all()
    with torch.no_grad():
        every = lr.policy(torch.as_tensor(obs), torch.zeros(E, dtype=torch.long))["logits"]  # all agents, densely

    def log_probs(z: np.ndarray) -> torch.Tensor:  # of each agent's held mode, masked
        held = every.gather(2, torch.as_tensor(z)[..., None, None].expand(-1, -1, 1, every.shape[-1])).squeeze(2)
        return torch.log_softmax(held.masked_fill(~torch.as_tensor(avail), -1e10), -1)

    expect = log_probs(extras["z"]).gather(-1, torch.as_tensor(actions)[..., None]).squeeze(-1).numpy()
    np.testing.assert_allclose(extras["log_prob"][alive], expect[alive], rtol=1e-5, atol=1e-6)
    greedy = lr.act(step, deterministic=True)[0]  # evaluation: its own held modes, the argmax
    np.testing.assert_array_equal(greedy, log_probs(lr.held_latents(deterministic=True)).argmax(-1).numpy())
    assert (greedy[~alive] == 0).all()


def test_without_medivacs_the_heal_scores_are_skipped_and_every_slot_attacks():
    A, M = 3, 4
    lr = learner(marine_spec(A, M))
    assert not lr.any_medivac
    obs = torch.as_tensor(pad(team(A, M), A, M, A, M)[0]).reshape(2 * A, -1)
    agent, games = torch.arange(A).repeat(2), torch.zeros(2 * A, dtype=torch.long)
    inputs = lr.actor_inputs(obs, agent, games)
    assert set(inputs) == {"own", "allies", "enemies", "present"}
    with torch.no_grad():
        skipped = lr.actor(**inputs)["logits"]
        no_medivac = lr.actor(**inputs, heal_rows=lr.heal_rows[agent], medivac=torch.zeros(2 * A, dtype=torch.bool))
    torch.testing.assert_close(skipped, no_medivac["logits"], rtol=0, atol=0)


def test_a_fresh_learners_state_holds_no_battle_shaped_arrays():
    lr = learner(marine_spec(3, 3))
    state = lr.state_dict()
    assert state["latents"] == {} and state["adapted_priors"] == {}
    lr.set_game_prior_logits((4, 4), np.arange(CFG["latent_modes"], dtype=np.float32))
    again = learner(marine_spec(8, 8), like=lr)
    np.testing.assert_array_equal(again.game_prior_logits((4, 4)), np.arange(CFG["latent_modes"]))
    assert again.state_dict()["adapted_priors"]["sizes"].tolist() == [[4, 4]]


# ------------------------------------------------------------------------------------ the mixture, end to end
def test_mra_on_a_mixture_resumes_exactly_evaluates_unseen_teams_and_adapts(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from marl import checkpoint

    cfg = config_mod.load("smac", "3m,5m", "mra", [
        "train.envs=3", "train.rollout=16", "algo.ppo_epochs=1", "train.eval_interval=2", "train.eval_episodes=1",
        "train.checkpoint_interval=1", "train.log_interval=1", f"train.runs_dir={tmp_path}", "train.steps=100000",
        "train.record_replays=false", "train.torch_threads=1", "train.update_threads=1"])
    whole, resumed = whole_and_resumed(cfg, tmp_path, 1)
    assert whole.learner.sizes.tolist() == [[3, 3], [5, 5]]  # the game-ID head's classes: the training scenarios
    a, b = whole.learner.state_dict(), resumed.learner.state_dict()
    for part in ("actor", "prior", "game_head", "critic"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["latents"]["train"].shape == (3, 5) and torch.equal(a["latents"]["train"], b["latents"]["train"])
    assert torch.equal(a["generator"], b["generator"])
    for k in ("obs", "alive", "scenario"):
        np.testing.assert_array_equal(getattr(whole.step, k), getattr(resumed.step, k))
    assert whole.env.get_state()["battles"] == [2, 1]
    acc = EventAccumulator(str(tmp_path / "whole" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"eval/3m/win_rate", "eval/5m/win_rate"} <= tags
    assert any(t.endswith("game_id_acc") for t in tags)

    run = tmp_path / "whole"
    capsys.readouterr()
    assert main(["eval", str(run), "--scenario", "4m,6m", "--episodes", "1"]) == 0  # zero-shot, 6m larger
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "smac 4m,6m mra after 96 env steps, 1 episodes per scenario:"
    assert [row.split()[:2] for row in lines[2:]] == [["4m", "1"], ["6m", "1"], ["all", "2"]]
    out = tmp_path / "adapted"
    assert main(["adapt", str(run), "--scenario", "6m", "--episodes", "2", "--steps", "1", "--eval-episodes", "2",
                 "--out", str(out)]) == 0
    assert checkpoint.load(out / "checkpoints" / "last.pt")["learner"]["adapted_priors"]["sizes"].tolist() == [[6, 6]]
    capsys.readouterr()
    assert main(["eval", str(out), "--scenario", "4m", "--episodes", "1"]) == 0  # an adapted run evaluates too
    assert capsys.readouterr().out.startswith("smac 4m mra after 96 env steps")


# ------------------------------------------------------------------------------------ benchmarks/mra_transfer.py
def _transfer():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("mra_transfer",
                                                  Path(__file__).parents[1] / "benchmarks" / "mra_transfer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_transfer_table_compares_mra_with_entity_ppo_and_per_map_mappo(tmp_path):
    mt = _transfer()
    maps = ("4m", "6m", "7m", "10m", "12m")
    runs = {  # win rates per test map, as the eval stage writes them
        "mra-s1": [0.50, 0.75, 0.25, 0.5, 0.0], "mra-s2": [0.75, 0.5, 0.25, 0.25, 0.25],
        "mra-s3": [1.0, 0.5, 0.5, 0.0, 0.0],
        "entity-ppo-s1": [0.25, 0.0, 0.25, 0.0, 0.0], "entity-ppo-s2": [0.5, 0.5, 0.0, 0.0, 0.0],
    }
    mappo = {"4m": 1.0, "6m": 0.8, "7m": 0.0, "10m": 0.5, "12m": 0.25}
    results = tmp_path / "results"
    for name, wr in runs.items():
        mt.write_json(results / f"eval-{name}.json", {
            "env_steps": 10, "scenarios": {m: {"win_rate": w, "win_rate_low": 0, "win_rate_high": 1,
                                               "episode_return": 0} for m, w in zip(maps, wr)}})
    for m, w in mappo.items():
        mt.write_json(results / f"eval-mappo-{m}-s1.json", {"env_steps": 10, "scenarios": {m: {
            "win_rate": w, "win_rate_low": 0, "win_rate_high": 1, "episode_return": 0}}})
    for seed, (before, after) in {1: (0.0, 0.25), 2: (0.5, 0.5), 3: (0.25, 0.75)}.items():
        mt.write_json(results / f"adapt-mra-s{seed}-10m.json", {"run": f"/x/train/mra-s{seed}", "scenario": "10m",
                                                                "before": before, "after": after})
    s = mt.summarise(mt.load_results(tmp_path))
    mra, ppo = s["variants"]["mra"], s["variants"]["entity-ppo"]
    assert mra["seeds"] == 3 and ppo["seeds"] == 2
    assert mra["maps"]["4m"] == pytest.approx((0.75, 0.5, 1.0))
    # unseen means per seed: mra 0.4, 0.4, 0.4; entity-ppo 0.1, 0.2
    assert mra["unseen_mean"] == pytest.approx((0.4, 0.4, 0.4))
    assert ppo["unseen_mean"] == pytest.approx((0.15, 0.1, 0.2))
    assert s["mra_above_entity_ppo"] is True
    assert s["fraction"]["4m"] == pytest.approx(0.75) and s["fraction"]["6m"] == pytest.approx(0.5833333 / 0.8)
    assert s["fraction"]["7m"] is None  # MAPPO never won 7m: no fraction
    assert s["mappo"]["10m"] == pytest.approx((0.5, 0.5, 0.5))
    assert s["adapt"]["10m"]["seeds"] == 3 and s["adapt"]["12m"]["seeds"] == 0
    assert s["adapt"]["10m"]["before"] == pytest.approx((0.25, 0.0, 0.5))
    assert s["adapt"]["10m"]["after"] == pytest.approx((0.5, 0.25, 0.75))
    text = mt.table(s).splitlines()
    assert text[2] == "| mra | 3 | 75.0% (50%-100%) | 58.3% (50%-75%) | 33.3% (25%-50%) | 25.0% (0%-50%) | " \
                      "8.3% (0%-25%) | 40.0% |"
    assert text[4] == "| mappo (per map) | 1 | 100.0% | 80.0% | 0.0% | 50.0% | 25.0% | 51.0% |"
    assert "(MRA's lowest seed above entity-PPO's highest): yes" in text[6]
    assert text[7] == "MRA as a fraction of the per-map MAPPO (goal >= 0.80): 4m 0.75, 6m 0.73, 7m -"
    assert text[-2:] == ["| 10m | 3 | 25.0% (0%-50%) | 50.0% (25%-75%) |", "| 12m | 0 | - | - |"]
    # entity-PPO's best seed reaching MRA's worst: not beyond the range
    mt.write_json(results / "eval-entity-ppo-s3.json", {"env_steps": 10, "scenarios": {
        m: {"win_rate": 0.4, "win_rate_low": 0, "win_rate_high": 1, "episode_return": 0} for m in maps}})
    assert mt.summarise(mt.load_results(tmp_path))["mra_above_entity_ppo"] is False
