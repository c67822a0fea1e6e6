"""MAPPO with `algo.recurrent=true` (the authors' rMAPPO): hidden states carried per battle, sequences unrolled
from the stored states, bootstraps read with the critic's state, the streams kept apart, exact resume, and a
memory game a feed-forward policy cannot win."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_ppo_core import ENVS, MAPPO_CFG, Skirmish, one_thread

from marl.agents.mappo import MAPPO
from marl.agents.ppo import chunked, masked_logits
from marl.rollout import collect
from marl.spec import EnvSpec, Step

RECURRENT = {**MAPPO_CFG, "recurrent": True, "chunk_length": 5}


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def _learner(cfg=None, seed: int = 3) -> tuple[Skirmish, MAPPO]:
    env = Skirmish(ENVS)
    return env, MAPPO(env.spec, dict(cfg or RECURRENT), seed=seed)


def test_chunked_cuts_time_into_padded_sequences_indexed_chunk_then_env():
    x = torch.arange(7 * 2, dtype=torch.float32).reshape(7, 2)  # [T=7, E=2], value 2 t + e
    out = chunked(x, 3)  # 3 chunks of 3 steps, the last padded by 2 zeros
    assert out.shape == (3, 6)
    # sequence (chunk c, env e) at column c * 2 + e holds steps 3c .. 3c + 2 of env e
    assert out[:, 0].tolist() == [0, 2, 4] and out[:, 3].tolist() == [7, 9, 11]
    assert out[:, 4].tolist() == [12, 0, 0] and out[:, 5].tolist() == [13, 0, 0]


def test_acting_stores_the_hidden_state_each_step_started_from_zeroed_where_an_episode_starts():
    env, learner = _learner()
    rollout, _, _ = collect(env, learner, env.reset(seed=11), 12)
    H = RECURRENT["hidden"]
    for key in ("h_actor", "h_critic"):
        h = rollout.extras[key]
        assert h.shape == (12, ENVS, env.spec.n_agents, H) and h.dtype == np.float32
        starts = np.zeros((12, ENVS), bool)
        starts[0] = True  # every battle starts at reset
        starts[1:] = rollout.done[:-1]
        assert not h[starts].any()
        assert (np.abs(h[~starts]).sum(-1) > 0).all()


@pytest.mark.parametrize("chunk", [1, 5, 12, 20])
def test_sequences_unrolled_from_the_stored_states_give_back_the_acting_log_probs_and_values(chunk):
    """Before any update the training pass must see exactly what acting saw, whatever the chunk length: a chunk
    that starts mid-episode starts from the stored state, and an episode that starts inside a chunk from zero."""
    env, learner = _learner({**RECURRENT, "chunk_length": chunk})
    rollout, _, _ = collect(env, learner, env.reset(seed=11), 12)
    assert rollout.done[:-1].any()  # episodes start inside the rollout
    batch, items, actor_out, critic_out, avail, actions = learner._sequences(rollout, learner.value_norm)
    with torch.no_grad():
        idx = torch.arange(items)
        logp = torch.log_softmax(masked_logits(actor_out(idx), avail), -1).gather(-1, actions.unsqueeze(-1))[..., 0]
        values = critic_out(idx)
    real = batch.mask > 0  # living entries (padding is dead)
    assert torch.allclose(logp[real], batch.old_log_probs[real], atol=1e-5)
    steps = chunked(torch.ones(12, ENVS * env.spec.n_agents), chunk).transpose(0, 1) > 0  # not padding
    assert torch.allclose(values[steps], batch.old_values[steps], atol=1e-5)


def test_the_bootstrap_is_the_value_the_critic_gives_at_the_next_step():
    env, learner = _learner()
    step = env.reset(seed=11)
    first, step, _ = collect(env, learner, step, 7)
    bootstrap, finals = learner._recurrent_bootstraps(first)
    second, _, _ = collect(env, learner, step, 1)
    on = ~first.done[-1]  # a battle whose episode goes on: the next act reads the same state and hidden state
    assert on.any()
    nxt = learner.value_norm.denormalize(torch.as_tensor(second.extras["value"][0])).numpy()
    np.testing.assert_allclose(bootstrap[on], nxt[on], atol=1e-5)
    assert finals.shape == (len(first.final_t), env.spec.n_agents)


def test_a_cut_episodes_last_state_is_valued_with_the_state_after_its_last_step():
    env, learner = _learner()
    rollout, _, _ = collect(env, learner, env.reset(seed=11), 12)
    assert len(rollout.final_t)
    _, finals = learner._recurrent_bootstraps(rollout)
    t, e = int(rollout.final_t[0]), int(rollout.final_e[0])
    H, A = RECURRENT["hidden"], env.spec.n_agents
    with torch.no_grad():
        x = learner._critic_in(rollout.state[t, e])
        _, h = learner.critic.step(x, torch.as_tensor(rollout.extras["h_critic"][t, e]).reshape(A, H))
        v, _ = learner.critic.step(learner._critic_in(rollout.final_state[0]), h)
        v = learner.value_norm.denormalize(v[:, 0]).numpy()
    np.testing.assert_allclose(finals[0], v, atol=1e-6)


def test_evaluation_keeps_its_own_hidden_states_and_leaves_the_training_stream_as_it_was():
    env, a = _learner()
    _, b = _learner()
    step = env.reset(seed=11)
    _, step, _ = collect(env, a, step, 5)
    b.load_state_dict(a.state_dict())
    other = Skirmish(2)
    s = other.reset(seed=5)
    for _ in range(4):  # an evaluation of a's deterministic policy on other battles
        s = other.step(a.act(s, deterministic=True)[0])
    acts_a, ex_a = a.act(step)
    acts_b, ex_b = b.act(step)
    np.testing.assert_array_equal(acts_a, acts_b)
    np.testing.assert_array_equal(ex_a["h_actor"], ex_b["h_actor"])


def test_resume_is_exact_hidden_states_included():
    env, a = _learner()
    step = env.reset(seed=11)
    rollout, step, _ = collect(env, a, step, 12)
    a.update(rollout)
    rollout, step, _ = collect(env, a, step, 6)  # stop mid-episode
    state = {k: v for k, v in a.state_dict().items()}
    assert state["memory"]["actor"].shape == (ENVS, env.spec.n_agents, RECURRENT["hidden"])
    env_state = (env.rng.bit_generator.state, env.hp.copy(), env.foe.copy(), env.t.copy(), env.ret.copy())
    go_on, _, _ = collect(env, a, step, 6)
    _, b = _learner(seed=99)
    b.load_state_dict(state)
    env.rng.bit_generator.state = env_state[0]
    env.hp, env.foe, env.t, env.ret = (x.copy() for x in env_state[1:])
    again, _, _ = collect(env, b, step, 6)
    np.testing.assert_array_equal(go_on.actions, again.actions)
    np.testing.assert_array_equal(go_on.extras["h_critic"], again.extras["h_critic"])


def test_a_shard_copy_restores_its_battles_hidden_states_and_a_new_shard_starts_empty():
    env, a = _learner()
    _, step, _ = collect(env, a, env.reset(seed=11), 5)
    shard = a.acting_state()["shard"]
    assert set(shard) == {"generator", "memory"}
    _, b = _learner(seed=99)
    b.load_acting_state(a.acting_state())
    np.testing.assert_array_equal(a.act(step)[1]["h_actor"], b.act(step)[1]["h_actor"])
    b.set_shard(0, ENVS, seed=7)
    assert b.memory == {}


def test_the_feed_forward_critic_has_no_values_without_a_hidden_state():
    _, learner = _learner()
    with pytest.raises(TypeError, match="hidden state"):
        learner.values(np.zeros((1, 6), np.float32))


class Recall:
    """A memory game: at step 0 each agent sees a cue (+1 or -1, its own); at step 1 it sees nothing and must
    act the cue's side (action 1 for +1, action 2 for -1), reward 1 per right agent out of 2; then it ends. A
    feed-forward policy sees nothing at step 1 and wins half the agents at best."""

    def __init__(self, n_envs: int):
        self.n_envs, A = n_envs, 2
        self.spec = EnvSpec(n_agents=A, obs_dim=2, state_dim=2, n_actions=3, episode_limit=2,
                            agent_names=("a0", "a1"), name="recall")

    def reset(self, seed=None) -> Step:
        self.rng = np.random.default_rng(seed)
        self.cue = self.rng.choice([-1.0, 1.0], (self.n_envs, 2))
        self.t = np.zeros(self.n_envs, np.int64)
        z = np.zeros(self.n_envs, bool)
        return self._step(np.zeros(self.n_envs, np.float32), z, np.zeros(self.n_envs, np.float32))

    def _step(self, reward, done, ret) -> Step:
        E = self.n_envs
        first = (self.t == 0)[:, None]
        obs = np.stack([np.where(first, self.cue, 0.0), np.broadcast_to(self.t[:, None], (E, 2))], -1)
        return Step(obs=obs.astype(np.float32), state=np.zeros((E, 2), np.float32), avail=np.ones((E, 2, 3), bool),
                    reward=reward, done=done, truncated=np.zeros(E, bool), alive=np.ones((E, 2), bool),
                    t=self.t.copy(), episode_return=ret, episode_length=np.full(E, 2), won=ret >= 2,
                    final_obs=obs.astype(np.float32), final_state=np.zeros((E, 2), np.float32))

    def step(self, actions) -> Step:
        done = self.t == 1
        right = np.where(self.cue > 0, actions == 1, actions == 2)
        reward = np.where(done, right.sum(1), 0).astype(np.float32)
        ret = reward.copy()
        self.t = np.where(done, 0, self.t + 1)
        self.cue = np.where(done[:, None], self.rng.choice([-1.0, 1.0], self.cue.shape), self.cue)
        return self._step(reward, done, ret)

    def close(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("recurrent", [True, False])
def test_only_the_recurrent_policy_learns_to_recall_the_cue(recurrent):
    cfg = {**MAPPO_CFG, "recurrent": recurrent, "chunk_length": 4, "lr": 3e-3, "critic_lr": 3e-3, "ppo_epochs": 4,
           "minibatches": 1, "input_norm": False}
    env = Recall(16)
    learner = MAPPO(env.spec, cfg, seed=0)
    step = env.reset(seed=0)
    for _ in range(60):
        rollout, step, _ = collect(env, learner, step, 8)
        learner.update(rollout)
    s = Recall(256)
    first = s.reset(seed=1)
    second = s.step(learner.act(first, deterministic=True)[0])
    reward = s.step(learner.act(second, deterministic=True)[0]).reward
    mean = float(reward.mean()) / 2  # the share of agents that recalled their cue
    if recurrent:
        assert mean > 0.95
    else:
        assert mean < 0.65


@pytest.mark.parametrize("chunks", [0, 2])
def test_the_trainer_resumes_a_recurrent_run_exactly_mid_episode(tmp_path, chunks):
    """In one process, and with the battles acted on in two shard copies (each keeping its own hidden states)."""
    from conftest import assert_same, whole_and_resumed

    from marl import config as config_mod

    cfg = config_mod.load("comm", "intermittent", "mappo", [
        "train.envs=2", "train.rollout=7", "algo.ppo_epochs=1", "train.eval_interval=1", "train.eval_episodes=1",
        "train.torch_threads=1", "train.update_threads=1", "train.checkpoint_interval=1", f"train.runs_dir={tmp_path}",
        "env.n_agents=3", "env.episode_limit=5", "algo.recurrent=true", "algo.chunk_length=3",
        f"train.act_chunks={chunks}"])
    whole, resumed = whole_and_resumed(cfg, tmp_path, 2)  # 7 steps a rollout, 5 an episode: stopped mid-episode
    if chunks == 0:
        assert whole.learner.memory["sample"]["actor"].abs().sum() > 0
    assert_same(whole.learner.state_dict(), resumed.learner.state_dict())
    assert whole.episodes == resumed.episodes > 0
