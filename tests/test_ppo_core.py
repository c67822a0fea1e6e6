"""The PPO core: targets, masked entropy, statistics, the budget capability, and a bit-identity reference.

The reference digests in tests/data/ppo_reference.json were written by the code before the PPO target
step moved into agents/ppo.py. The same seed must still give the same bits in every parameter,
optimiser moment, value-norm statistic, sampling generator and reported metric after N updates. The
digests hold for one torch build on one kind of CPU: the file keeps one set per machine (conftest's
per-machine references), and a machine with none skips, saying why. `python tests/test_ppo_core.py`
adds (or replaces) this machine's set; run it only from code whose learning is known to be unchanged, e.g. a
commit whose digests pass on a machine that has a set.
"""

from __future__ import annotations

import hashlib
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import matching, stored_reference, write_reference

from marl.agents.commformer import CommFormer
from marl.agents.mappo import MAPPO
from marl.agents.ppo import (
    PPOTargets,
    Stats,
    ValueNorm,
    bootstrap_values,
    gae,
    imitation_loss,
    masked_entropy,
    masked_logits,
    normalize_advantages,
    ppo_targets,
)
from marl.rollout import collect
from marl.spec import BudgetAware, EnvSpec, Step

REFERENCE = Path(__file__).parent / "data" / "ppo_reference.json"
UPDATES = 5
ROLLOUT = 12
ENVS = 4


class Skirmish:
    """E toy battles of 4 agents against one foe: deaths, wins, losses, time-limit cuts, masked actions.

    Actions: 0 no-op (the only one for the dead, never for the living), 1 guard, 2 advance, 3 strike,
    4 lunge (only above half health). Each living agent may be hit, more rarely when guarding; strikes
    and lunges wear the foe down. An episode ends won (foe down), lost (every agent down) or cut at
    `limit` steps, then restarts at once (final_obs/final_state hold the ended step).
    """

    def __init__(self, n_envs: int, limit: int = 8):
        self.n_envs, self.limit, A = n_envs, limit, 4
        self.spec = EnvSpec(n_agents=A, obs_dim=5, state_dim=A + 2, n_actions=5, episode_limit=limit,
                            agent_names=tuple(f"agent_{i}" for i in range(A)), name="skirmish")

    def reset(self, seed: int | None = None) -> Step:
        """Every battle afresh."""
        self.rng = np.random.default_rng(seed)
        E, A = self.n_envs, self.spec.n_agents
        self.hp, self.foe = np.ones((E, A)), np.full(E, 3.0)
        self.t, self.ret = np.zeros(E, np.int64), np.zeros(E)
        zeros = np.zeros(E, bool)
        return self._step(np.zeros(E, np.float32), zeros, zeros, zeros, None, None)

    def _obs(self) -> np.ndarray:
        A = self.spec.n_agents
        others = (self.hp.sum(1, keepdims=True) - self.hp) / (A - 1)
        cols = [self.hp, np.broadcast_to(self.foe[:, None] / 3, self.hp.shape),
                np.broadcast_to(self.t[:, None] / self.limit, self.hp.shape), others,
                np.broadcast_to(np.arange(A) / A, self.hp.shape)]
        return np.stack(cols, -1).astype(np.float32)

    def _state(self) -> np.ndarray:
        return np.concatenate([self.hp, self.foe[:, None] / 3, self.t[:, None] / self.limit], 1).astype(np.float32)

    def _step(self, reward, done, truncated, won, final_obs, final_state) -> Step:
        alive = self.hp > 0
        avail = np.zeros((*alive.shape, 5), bool)
        avail[..., 0] = ~alive
        avail[..., 1:4] = alive[..., None]
        avail[..., 4] = self.hp > 0.5
        return Step(obs=self._obs(), state=self._state(), avail=avail, reward=reward, done=done,
                    truncated=truncated, alive=alive, t=self.t.copy(), episode_return=self.ret.astype(np.float32),
                    episode_length=self.t.copy(), won=won, final_obs=final_obs, final_state=final_state)

    def step(self, actions: np.ndarray) -> Step:
        """One step of every battle; ended battles restart."""
        alive = self.hp > 0
        struck = alive * ((actions == 3) * 0.15 + (actions == 4) * 0.3)
        self.foe -= struck.sum(1)
        hit = self.rng.random(alive.shape) < np.where(actions == 1, 0.1, 0.3)
        self.hp = np.maximum(self.hp - hit * alive * self.rng.uniform(0.2, 0.6, alive.shape), 0.0)
        won = self.foe <= 0
        terminated = won | ~(self.hp > 0).any(1)
        reward = (struck.sum(1) + 2.0 * won).astype(np.float32)
        self.t += 1
        self.ret += reward
        truncated = ~terminated & (self.t >= self.limit)
        done = terminated | truncated
        final_obs, final_state = self._obs(), self._state()
        length, ret = self.t.copy(), self.ret.copy()
        self.hp[done], self.foe[done], self.t[done], self.ret[done] = 1.0, 3.0, 0, 0.0
        step = self._step(reward, done, truncated, won, final_obs, final_state)
        step.episode_length, step.episode_return = length, ret.astype(np.float32)
        return step

    def close(self) -> None:
        """Nothing to release."""


PPO = {"gamma": 0.99, "gae_lambda": 0.95, "entropy_coef": 0.01, "value_coef": 1.0, "huber_delta": 10.0,
       "max_grad_norm": 10.0, "value_clip": True, "adam_eps": 1e-5}
MAPPO_CFG = {**PPO, "lr": 5e-4, "critic_lr": 5e-4, "clip": 0.2, "ppo_epochs": 3, "minibatches": 2,
             "value_norm": True, "hidden": 32, "layers": 2, "agent_id": True, "input_norm": True,
             "actor_gain": 0.01}
COMMFORMER_CFG = {**PPO, "lr": 5e-4, "graph_lr": 1e-2, "clip": 0.05, "ppo_epochs": 4, "minibatches": 1,
                  "graph_every": 2, "warmup": 1, "post_stable": True, "post_stable_at": 0.5, "sparsity": 0.5,
                  "graph": "learned", "self_loops": True, "gates": True, "gate_cost": 1e-2, "n_embd": 16,
                  "n_block": 1}
# each learner with its own paths: value normalisation off, several minibatches, no gates
CASES = {
    "mappo": (MAPPO, MAPPO_CFG),
    "mappo_no_value_norm": (MAPPO, {**MAPPO_CFG, "value_norm": False, "value_clip": False, "minibatches": 1}),
    "commformer": (CommFormer, COMMFORMER_CFG),
    "commformer_minibatches": (CommFormer, {**COMMFORMER_CFG, "minibatches": 2, "gates": False}),
}


@contextmanager
def one_thread():
    """One torch thread: the bits of a reduction can depend on the thread count, and tiny networks run fastest
    on one thread, and much slower on two when another process shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tell_budget(learner, fraction: float) -> None:
    """What the trainer tells a learner before each update."""
    if isinstance(learner, BudgetAware):
        learner.set_budget_fraction(fraction)


def _walk(node, path: str, out: dict[str, list]) -> None:
    """Leaves of a nested state in a fixed order (keys sorted), as (path, value) pairs per top-level part."""
    if isinstance(node, dict):
        for k in sorted(node, key=str):
            _walk(node[k], f"{path}/{k}", out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _walk(v, f"{path}[{i}]", out)
    else:
        out.setdefault(path.split("/")[1], []).append((path, node))


def digests(state: dict) -> tuple[dict[str, str], dict[str, float]]:
    """sha256 of each top-level part of a learner's state_dict (raw tensor bytes, dtypes, shapes, plain
    values) and, for debugging a mismatch, the sum of each part's floating-point tensors."""
    parts: dict[str, list] = {}
    _walk(state, "", parts)
    hashes, sums = {}, {}
    for part, leaves in parts.items():
        h, total = hashlib.sha256(), 0.0
        for path, value in leaves:
            h.update(path.encode())
            if isinstance(value, (torch.Tensor, np.ndarray)):
                t = torch.as_tensor(value).detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.numpy().tobytes())
                if t.is_floating_point():
                    total += float(t.double().sum())
            else:
                h.update(repr(value).encode())
        hashes[part], sums[part] = h.hexdigest(), total
    return hashes, sums


def run_case(name: str) -> dict:
    """UPDATES collect-and-update rounds of one case; the digests, sums, metrics and what the rollouts held."""
    cls, cfg = CASES[name]
    with one_thread():
        env = Skirmish(ENVS)
        learner = cls(env.spec, dict(cfg), seed=3)
        step = env.reset(seed=11)
        metrics, seen = [], {"dead": 0, "unavailable": 0, "terminated": 0, "truncated": 0}
        for u in range(UPDATES):
            rollout, step, _ = collect(env, learner, step, ROLLOUT)
            tell_budget(learner, u / UPDATES)  # post-stable (at 0.5) freezes the graph from the fourth update
            metrics.append(learner.update(rollout))
            seen["dead"] += int((~rollout.alive).sum())
            seen["unavailable"] += int((~rollout.avail[rollout.alive]).sum())
            seen["terminated"] += int((rollout.done & ~rollout.truncated).sum())
            seen["truncated"] += len(rollout.final_t)
        hashes, sums = digests(learner.state_dict())
    return {"digests": hashes, "sums": sums, "metrics": metrics, "seen": seen}


@pytest.fixture(autouse=True)
def tiny_networks_on_one_thread():
    """Every test here on one torch thread (see one_thread)."""
    with one_thread():
        yield


def _rollout(cls=MAPPO, cfg=None, steps: int = ROLLOUT):
    """A learner and one rollout of it on Skirmish (deaths, cut and terminal episodes)."""
    env = Skirmish(ENVS)
    learner = cls(env.spec, dict(cfg or MAPPO_CFG), seed=3)
    rollout, _, _ = collect(env, learner, env.reset(seed=11), steps)
    assert len(rollout.final_t) and (~rollout.alive).any()
    return learner, rollout


def test_targets_without_value_norm_are_the_returns_and_advantages_are_normalised_over_the_living():
    learner, rollout = _rollout(cfg={**MAPPO_CFG, "value_norm": False})
    batch = ppo_targets(rollout, lambda obs, state, alive: learner.values(state), 0.99, 0.95, None)
    shape = rollout.alive.shape
    assert batch.imitate_weight is None  # no extras "imitate_weight": no behaviour cloning
    assert all(getattr(batch, f).shape == shape for f in PPOTargets.__dataclass_fields__ if f != "imitate_weight")
    assert torch.equal(batch.targets, batch.returns)
    assert torch.equal(batch.mask, torch.as_tensor(rollout.alive).float())
    assert torch.equal(batch.old_log_probs, torch.as_tensor(rollout.extras["log_prob"]))
    assert torch.equal(batch.old_values, torch.as_tensor(rollout.extras["value"]))
    live = batch.advantages[batch.mask > 0]
    assert abs(float(live.mean())) < 1e-5 and float(live.std()) == pytest.approx(1.0, abs=1e-4)
    # advantage + old value = return: GAE ran on the stored values themselves (no denormalisation)
    raw = batch.returns - torch.as_tensor(rollout.extras["value"])
    live_raw = raw[batch.mask > 0]
    assert torch.allclose(batch.advantages, (raw - live_raw.mean()) / (live_raw.std() + 1e-5), atol=1e-5)


def test_targets_with_value_norm_fold_in_the_living_returns_first():
    learner, rollout = _rollout()
    before = ValueNorm()
    before.load_state_dict(learner.value_norm.state_dict())
    batch = ppo_targets(rollout, lambda obs, state, alive: learner.values(state), 0.99, 0.95, learner.value_norm)
    expected = ValueNorm()
    expected.load_state_dict(before.state_dict())
    expected.update(batch.returns[torch.as_tensor(rollout.alive)])  # the dead agents' returns are left out
    for k, v in expected.state_dict().items():
        assert torch.equal(learner.value_norm.state_dict()[k], v), k
    assert torch.equal(batch.targets, learner.value_norm.normalize(batch.returns))
    # GAE ran in return units: the stored values were denormalised with the statistics before the update
    values = before.denormalize(torch.as_tensor(rollout.extras["value"]))
    assert not torch.equal(values, torch.as_tensor(rollout.extras["value"]))
    adv = batch.returns - values
    assert torch.allclose(normalize_advantages(adv, batch.mask), batch.advantages, atol=1e-5)


def test_a_value_mask_widens_the_value_loss_and_norm_but_not_the_policys_steps():
    learner, rollout = _rollout()
    rng = np.random.default_rng(5)
    learn = rng.random(rollout.alive.shape[:2]) < 0.4
    critic = learn | (rng.random(learn.shape) < 0.5)
    norm, plain_norm = ValueNorm(), ValueNorm()
    norm.load_state_dict(learner.value_norm.state_dict())
    plain_norm.load_state_dict(learner.value_norm.state_dict())
    rollout.extras["learn_mask"] = learn
    plain = ppo_targets(rollout, lambda obs, state, alive: learner.values(state), 0.99, 0.95, plain_norm)
    assert plain.value_mask is plain.mask  # no value_mask: the value loss keeps the policy's steps
    rollout.extras["value_mask"] = critic
    batch = ppo_targets(rollout, lambda obs, state, alive: learner.values(state), 0.99, 0.95, norm)
    assert torch.equal(batch.mask, torch.as_tensor(rollout.alive & learn[..., None]).float())
    assert torch.equal(batch.value_mask, torch.as_tensor(rollout.alive & critic[..., None]).float())
    assert torch.equal(batch.advantages, plain.advantages)  # the advantages are the policy's steps' alone
    expected = ValueNorm()
    expected.load_state_dict(learner.value_norm.state_dict())
    expected.update(batch.returns[torch.as_tensor(rollout.alive & critic[..., None])])
    for k, v in expected.state_dict().items():
        assert torch.equal(norm.state_dict()[k], v), k
    assert torch.equal(batch.targets, norm.normalize(batch.returns))


def test_imitate_weight_reaches_the_living_entries_and_clones_the_actions_taken():
    learner, rollout = _rollout()
    rng = np.random.default_rng(6)
    learn = rng.random(rollout.alive.shape[:2]) < 0.4
    weight = np.where(learn, 0.0, 0.5).astype(np.float32)
    rollout.extras.update(learn_mask=learn, imitate_weight=weight)
    batch = ppo_targets(rollout, lambda obs, state, alive: learner.values(state), 0.99, 0.95, None)
    np.testing.assert_array_equal(batch.imitate_weight.numpy(), weight[..., None] * rollout.alive)
    assert batch.reshape(-1).imitate_weight.shape == (rollout.alive.size,)
    # imitation_loss: the weighted mean negative log-likelihood over the weighted entries, by hand
    logp = torch.as_tensor(rng.normal(size=rollout.alive.shape), dtype=torch.float32)
    w = batch.imitate_weight
    expected = -float((logp * w).sum()) / int((w > 0).sum())
    assert float(imitation_loss(logp, w)) == pytest.approx(expected, rel=1e-6)
    assert float(imitation_loss(logp, torch.zeros_like(w))) == 0.0


def test_mappo_with_only_imitation_steps_learns_the_actions_taken_there():
    """No step of the learner's own (learn_mask all off): the actor moves toward the other policy's actions."""
    learner, rollout = _rollout()
    rollout.extras.update(learn_mask=np.zeros(rollout.alive.shape[:2], bool),
                          imitate_weight=np.ones(rollout.alive.shape[:2], np.float32))
    n = rollout.alive.size
    obs = learner._actor_in(rollout.obs).reshape(n, -1)
    avail = torch.as_tensor(rollout.avail.reshape(n, -1))
    taken = torch.as_tensor(rollout.actions.reshape(-1))
    live = torch.as_tensor(rollout.alive.reshape(-1))

    def nll():
        with torch.no_grad():
            logp = torch.log_softmax(masked_logits(learner.actor(obs), avail), -1)
            return -float(logp.gather(-1, taken[:, None]).squeeze(-1)[live].mean())

    before = nll()
    metrics = learner.update(rollout)
    assert metrics["imitation_loss"] > 0 and metrics["policy_loss"] == 0.0
    assert nll() < before


def test_bootstrap_asks_for_the_next_step_and_the_cut_episodes_with_everyone_alive():
    _, rollout = _rollout()
    calls = []

    def values_of(obs, state, alive):
        calls.append((obs, state, alive))
        return np.full(alive.shape, float(len(calls)), np.float32)

    bootstrap, finals = bootstrap_values(rollout, values_of)
    assert np.array_equal(calls[0][2], rollout.next_alive) and calls[0][0] is rollout.next_obs
    assert calls[1][1] is rollout.final_state and calls[1][2].all() and calls[1][2].shape == (len(rollout.final_t), 4)
    assert (bootstrap == 1).all() and (finals == 2).all()
    rollout.final_t = rollout.final_t[:0]
    calls.clear()
    _, finals = bootstrap_values(rollout, values_of)
    assert len(calls) == 1 and finals.shape == (0, 4) and finals.dtype == np.float32


def test_gae_with_a_trailing_objective_axis_is_gae_of_each_objective():
    rng = np.random.default_rng(0)
    T, E, A, K = 6, 3, 2, 2
    values, nxt, rewards = (rng.normal(size=(T, E, A, K)).astype(np.float32) for _ in range(3))
    done = rng.random((T, E)) < 0.3
    terminated = (done & (rng.random((T, E)) < 0.5)).astype(np.float32)
    adv, ret = gae(values, nxt, rewards, terminated, done.astype(np.float32), 0.9, 0.8)
    for k in range(K):
        adv_k, ret_k = gae(values[..., k], nxt[..., k], rewards[..., k], terminated, done.astype(np.float32), 0.9, 0.8)
        assert np.array_equal(adv[..., k], adv_k) and np.array_equal(ret[..., k], ret_k)


def test_masked_entropy_counts_only_the_masked_entries():
    uniform = torch.log_softmax(torch.zeros(2, 3, 4), -1)
    certain = torch.log_softmax(torch.tensor([0.0, -1e10, -1e10, -1e10]), -1).expand(2, 3, 4)
    mixed = torch.where(torch.tensor([[True, False, True], [False, False, False]])[..., None], uniform, certain)
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert float(masked_entropy(mixed, mask)) == pytest.approx(np.log(4))
    assert float(masked_entropy(mixed, torch.ones(2, 3))) == pytest.approx(2 * np.log(4) / 6)
    assert float(masked_entropy(mixed, torch.zeros(2, 3))) == 0.0


def test_stats_average_each_metric_over_the_minibatches_in_the_order_first_added():
    stats = Stats()
    stats.add(loss=torch.tensor(1.0, requires_grad=True), kl=0.5)
    stats.add(loss=torch.tensor(2.0), kl=np.float32(1.5), grad_norm=3)
    means = stats.means()
    assert means == {"loss": 1.5, "kl": 1.0, "grad_norm": 3.0} and list(means) == ["loss", "kl", "grad_norm"]
    assert all(type(v) is float for v in means.values())


def test_targets_reshape_every_field():
    t = PPOTargets(*(torch.arange(24.0).reshape(2, 3, 4) + i for i in range(8)))
    flat = t.reshape(-1)
    assert all(getattr(flat, f).shape == (24,) for f in PPOTargets.__dataclass_fields__)
    assert torch.equal(flat.mask, t.mask.reshape(-1)) and torch.equal(flat.value_mask, t.value_mask.reshape(-1))
    assert torch.equal(flat.imitate_weight, t.imitate_weight.reshape(-1))
    assert torch.equal(t.reshape(6, 4).old_values, t.old_values.reshape(6, 4))
    assert PPOTargets(*(torch.zeros(2, 3) for _ in range(7))).reshape(-1).imitate_weight is None  # optional


def test_commformer_is_budget_aware_and_freezes_its_graph_at_the_post_stable_fraction():
    env = Skirmish(1)
    learner = CommFormer(env.spec, dict(COMMFORMER_CFG))
    assert isinstance(learner, BudgetAware) and not hasattr(learner, "progress")
    learner.set_budget_fraction(0.49)
    assert not learner.graph.frozen
    learner.set_budget_fraction(0.5)
    assert learner.graph.frozen
    never = CommFormer(env.spec, {**COMMFORMER_CFG, "post_stable": False})
    never.set_budget_fraction(1.0)
    assert not never.graph.frozen


@pytest.fixture(scope="module")
def reference() -> dict:
    return stored_reference(REFERENCE)


def test_the_reference_of_a_machine_is_its_most_specific_match():
    old = {"machine": {"torch": "2.13.0+cpu", "cpu": "AVX512", "arch": "x86_64"}}
    amd = {"machine": {**old["machine"], "cpu_model": "AuthenticAMD 25 17"}}
    here = {**old["machine"], "cpu_model": "AuthenticAMD 25 17"}
    assert matching([old, amd], here) is amd and matching([amd, old], here) is amd
    assert matching([old, amd], {**here, "cpu_model": "GenuineIntel 6 143"}) is old
    assert matching([old, amd], {**here, "cpu": "AVX2"}) is None


@pytest.mark.parametrize("name", list(CASES))
def test_updates_are_bit_identical_to_the_reference(reference, name):
    got, want = run_case(name), reference["cases"][name]
    assert got["seen"] == want["seen"]
    assert got["metrics"] == want["metrics"]
    for part, digest in want["digests"].items():
        assert got["digests"][part] == digest, (part, got["sums"][part], want["sums"][part])
    assert got["digests"] == want["digests"]


def test_the_reference_runs_cover_deaths_cuts_masks_and_the_graph_schedule(reference):
    for name, case in reference["cases"].items():
        seen = case["seen"]
        assert min(seen.values()) > 0, (name, seen)  # deaths, masked actions, terminal and cut episodes
    cf = reference["cases"]["commformer"]["metrics"]
    # update 1 is the warm-up (no graph step), 2 and 3 learn the graph, 4 and 5 are after the freeze
    assert [m["graph_steps"] for m in cf] == [0.0, 2.0, 2.0, 0.0, 0.0]


@pytest.mark.parametrize("recurrent", [False, True])
@pytest.mark.parametrize("gain", [0.01, 1.0])
def test_actor_gain_scales_the_orthogonal_actor_head_and_leaves_the_critic_at_one(recurrent, gain):
    """algo.actor_gain is the orthogonal init gain of the actor's output layer (the MAPPO authors' --gain): every
    singular value of the head's weight is the gain; the critic's head keeps gain 1."""
    env = Skirmish(1)
    learner = MAPPO(env.spec, {**MAPPO_CFG, "actor_gain": gain, "recurrent": recurrent, "chunk_length": 4})
    actor_head = learner.actor.head if recurrent else learner.actor[-1]
    critic_head = learner.critic.head if recurrent else learner.critic[-1]
    assert actor_head.weight.shape == (env.spec.n_actions, 32)
    assert torch.allclose(torch.linalg.svdvals(actor_head.weight), torch.full((env.spec.n_actions,), gain), rtol=1e-5)
    assert torch.allclose(torch.linalg.svdvals(critic_head.weight), torch.ones(1), rtol=1e-5)
    assert not actor_head.bias.any()


# ------------------------------------------------------------------------------------ the lr schedule
# each built-in PPO learner's optimisers (attribute paths): the key of its base rate, and whether lr_decay moves it
NETS = {"actor_opt": ("lr", True), "critic_opt": ("critic_lr", True)}
SCHEDULED = {
    "mappo": ("smac", "3m", [], NETS),
    "commformer": ("smac", "3m", [], {"net_opt": ("lr", True), "graph_opt": ("graph_lr", False)}),
    "mra": ("smac", "3m", [], NETS),
    "cmorl": ("smac", "3m", ["train.envs=6"], NETS),
    "stepmix": ("comm", "informants", ["algo.baseline=test_stepmix_deep:last_symbol"],
                {"mappo.actor_opt": ("lr", True), "mappo.critic_opt": ("critic_lr", True),
                 "bound_opt": ("critic_lr", False)}),
}


def optimisers_of(learner) -> dict[str, torch.optim.Optimizer]:
    """Every torch optimiser a learner holds, by attribute path (one level of sub-learners deep)."""
    found = {}
    for name, value in vars(learner).items():
        if isinstance(value, torch.optim.Optimizer):
            found[name] = value
        elif hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, torch.Tensor, torch.Generator)):
            found.update({f"{name}.{k}": v for k, v in vars(value).items() if isinstance(v, torch.optim.Optimizer)})
    return found


@pytest.mark.parametrize("algo", list(SCHEDULED))
def test_lr_decay_linear_sets_every_network_rate_from_the_budget_and_none_leaves_them(algo):
    from marl import config as config_mod
    from marl.registry import make_learner
    from marl.trainer import build_env

    env_name, scenario, extra, keys = SCHEDULED[algo]
    rates = {}
    for decay in ("none", "linear"):
        cfg = config_mod.load(env_name, scenario, algo, ["train.envs=2", *extra, f"algo.lr_decay={decay}"])
        env = build_env(cfg, 2)
        learner = make_learner(algo, env.spec, cfg["algo"], 0, "cpu")
        env.close()
        opts = optimisers_of(learner)
        assert set(opts) == set(keys)  # no optimiser of the learner goes unlisted here
        assert isinstance(learner, BudgetAware)
        for fraction in (0.0, 0.25, 0.6, 1.0):
            learner.set_budget_fraction(fraction)
            rates[decay, fraction] = {path: [g["lr"] for g in o.param_groups] for path, o in opts.items()}
        base = {path: cfg["algo"][key] for path, (key, _) in keys.items()}
    for fraction in (0.0, 0.25, 0.6, 1.0):
        for path, (_, decays) in keys.items():
            assert all(lr == base[path] for lr in rates["none", fraction][path]), (path, fraction)
            want = base[path] * (1.0 - fraction) if decays else base[path]
            assert rates["linear", fraction][path] == pytest.approx([want] * len(rates["linear", fraction][path]),
                                                                    rel=1e-12, abs=0.0), (path, fraction)


def test_scheduled_lr_values_and_an_unknown_schedule():
    from marl.agents.ppo import scheduled_lr

    assert scheduled_lr(5e-4, "none", 0.7) == 5e-4
    assert scheduled_lr(0.5, "linear", 0.25) == 0.375
    assert scheduled_lr(4e-4, "linear", 1.0) == 0.0
    assert scheduled_lr(4e-4, "linear", 1.5) == 0.0  # a run extended past its budget does not go negative
    with pytest.raises(ValueError, match="^algo.lr_decay is 'cosine'; accepted: none, linear$"):
        scheduled_lr(4e-4, "cosine", 0.5)


if __name__ == "__main__":
    cases = {name: run_case(name) for name in CASES}
    kept = write_reference(REFERENCE, {"updates": UPDATES, "cases": cases})
    print(f"wrote this machine's set into {REFERENCE} ({kept} other set(s) kept)", file=sys.stderr)
