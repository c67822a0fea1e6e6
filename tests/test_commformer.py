"""CommFormer: graph masks, straight-through gradients, bi-level steps, gates, causality, determinism."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import whole_and_resumed
from hypothesis import given, settings
from hypothesis import strategies as st

from marl import config as config_mod
from marl.agents.commformer import CommFormer, CommGraph, Gates, apply_gates, k_of
from marl.agents.commformer.graph import annealed_tau, decayed_coef
from marl.agents.commformer.model import CommFormerNet
from marl.agents.ppo import masked_logits
from marl.envs.smac import SMACVecEnv
from marl.rollout import collect


@given(n=st.integers(2, 27), sparsity=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_masks_have_k_incoming_edges_plus_self_loop(n, sparsity, seed):
    g = CommGraph(n, sparsity, seed=seed)
    with torch.no_grad():
        g.edge_logits.normal_(generator=torch.Generator().manual_seed(seed))
    k = min(max(int(n * sparsity), 1), n - 1)
    assert g.k == k
    gen = torch.Generator().manual_seed(seed)
    random_graph = CommGraph(n, sparsity, "random", seed=seed)
    for mask in (g.deterministic(), g.sample(gen).detach(), random_graph.deterministic()):
        assert torch.equal(mask.diagonal(), torch.ones(n))
        off = mask.masked_fill(torch.eye(n, dtype=torch.bool), 0)
        assert torch.equal(off.sum(1), torch.full((n,), float(k)))
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}


def test_k_for_3s5z_is_three():
    assert k_of(8, 0.4) == 3


def test_deterministic_mask_is_the_top_k_of_the_logits():
    g = CommGraph(4, 0.5)
    with torch.no_grad():
        g.edge_logits.copy_(torch.tensor([[9.0, 1, 2, 3], [5, 9, 1, 4], [0, 1, 9, 2], [3, 2, 1, 9]]))
    expected = torch.tensor([[1.0, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 0, 1]])
    assert torch.equal(g.deterministic(), expected)


def test_gradients_reach_edge_logits_through_the_straight_through_path():
    g = CommGraph(6, 0.4)
    weights = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    (g.sample(torch.Generator().manual_seed(1)) * weights).sum().backward()
    assert g.edge_logits.grad is not None and g.edge_logits.grad.abs().sum() > 0
    # and through the attention of the encoder
    g.edge_logits.grad = None
    net = CommFormerNet(obs_dim=5, n_actions=4, n_agents=6)
    mask = g.sample(torch.Generator().manual_seed(2)).expand(3, 6, 6)
    _, values = net.encode(torch.randn(3, 6, 5), mask)
    values.sum().backward()
    assert g.edge_logits.grad.abs().sum() > 0


def test_full_and_random_graphs_are_fixed():
    full = CommGraph(5, 0.4, "full")
    assert torch.equal(full.sample(), torch.ones(5, 5)) and torch.equal(full.deterministic(), torch.ones(5, 5))
    rnd = CommGraph(5, 0.4, "random", seed=3)
    assert torch.equal(rnd.sample(), rnd.deterministic())
    assert torch.equal(rnd.deterministic(), CommGraph(5, 0.4, "random", seed=3).deterministic())


def test_a_closed_gate_removes_incoming_messages():
    torch.manual_seed(0)
    net = CommFormerNet(obs_dim=7, n_actions=5, n_agents=4)
    base = torch.ones(4, 4)
    gates = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    mask = apply_gates(base.expand(1, 4, 4), gates)
    assert torch.equal(mask[0, 0], torch.tensor([1.0, 0, 0, 0]))
    obs = torch.randn(1, 4, 7)
    other = obs.clone()
    other[:, 1:] = torch.randn(1, 3, 7)
    rep_a, v_a = net.encode(obs, mask)
    rep_b, v_b = net.encode(other, mask)
    assert torch.allclose(rep_a[:, 0], rep_b[:, 0]) and torch.allclose(v_a[:, 0], v_b[:, 0])
    assert not torch.allclose(rep_a[:, 1], rep_b[:, 1])
    # the decoder output of agent 0 does not depend on the others either
    acts = torch.zeros(1, 4, dtype=torch.long)
    la = net.decode(rep_a, acts, mask)
    lb = net.decode(rep_b, acts, mask)
    assert torch.allclose(la[:, 0], lb[:, 0])


def test_a_closed_gate_also_cuts_the_earlier_agents_actions():
    torch.manual_seed(0)
    net = CommFormerNet(obs_dim=7, n_actions=5, n_agents=4)
    rep, _ = net.encode(torch.randn(1, 4, 7), torch.ones(1, 4, 4))
    a = torch.tensor([[0, 1, 2, 3]])
    b = torch.tensor([[4, 3, 2, 3]])  # agents 0 and 1 act differently
    listening = torch.ones(1, 4, 4)
    deaf = apply_gates(listening, torch.tensor([[1.0, 1.0, 0.0, 1.0]]))  # agent 2 does not listen
    assert not torch.allclose(net.decode(rep, a, listening)[:, 2], net.decode(rep, b, listening)[:, 2])
    assert torch.allclose(net.decode(rep, a, deaf)[:, 2], net.decode(rep, b, deaf)[:, 2])
    # one agent's row alone equals that row of the full pass (what acting uses)
    assert torch.allclose(net.decode(rep, a, deaf, agent=2)[:, 0], net.decode(rep, a, deaf)[:, 2], atol=1e-6)


def test_a_closed_gate_is_exactly_the_agent_alone():
    # a deaf agent's representation, value and action logits are those it has with no incoming edge at
    # all: the weight of its cut messages goes to its self loop (and the decoder's start token)
    torch.manual_seed(0)
    net = CommFormerNet(obs_dim=7, n_actions=5, n_agents=4)
    obs, acts = torch.randn(3, 4, 7), torch.randint(0, 5, (3, 4))
    support = torch.ones(3, 4, 4)
    gated = apply_gates(support, torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(3, 4))
    alone = torch.eye(4).expand(3, 4, 4)
    rep_g, v_g = net.encode(obs, gated, support)
    rep_a, v_a = net.encode(obs, alone)
    for i in (1, 3):
        assert torch.allclose(rep_g[:, i], rep_a[:, i], atol=1e-6) and torch.allclose(v_g[:, i], v_a[:, i], atol=1e-6)
        assert torch.allclose(net.decode(rep_g, acts, gated, support)[:, i], net.decode(rep_g, acts, alone)[:, i],
                              atol=1e-6)
    # open gates leave the graph's attention untouched
    # open gates leave the graph's attention untouched, in value and in the edge logits' gradient
    graph = CommGraph(4, 0.5)
    with torch.no_grad():
        graph.edge_logits.normal_()
    grads = []
    for gates in (torch.ones(3, 4), None):
        graph.edge_logits.grad = None
        edges = graph.sample(torch.Generator().manual_seed(1)).expand(3, 4, 4)
        mask = apply_gates(edges, gates) if gates is not None else edges
        rep, v = net.encode(obs, mask, edges)
        (rep.sum() + v.sum() + net.decode(rep, acts, mask, edges).sum()).backward()
        grads.append((rep.detach(), graph.edge_logits.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5) and grads[1][1].abs().sum() > 0


def test_gate_straight_through_forward_is_the_decision():
    p = torch.tensor([0.2, 0.9], requires_grad=True)
    g = Gates.straight_through(torch.tensor([1.0, 0.0]), p)
    assert torch.equal(g.detach(), torch.tensor([1.0, 0.0]))
    g.sum().backward()
    assert torch.equal(p.grad, torch.ones(2))


def test_decoder_is_causal_over_agents():
    torch.manual_seed(0)
    net = CommFormerNet(obs_dim=6, n_actions=5, n_agents=5)
    rep, _ = net.encode(torch.randn(2, 5, 6), torch.ones(2, 5, 5))
    a = torch.randint(0, 5, (2, 5), generator=torch.Generator().manual_seed(1))
    for i in range(5):
        b = a.clone()
        b[:, i:] = (b[:, i:] + 1) % 5  # change the actions of agent i and those after it
        la = net.decode(rep, a, torch.ones(2, 5, 5))
        lb = net.decode(rep, b, torch.ones(2, 5, 5))
        assert torch.allclose(la[:, : i + 1], lb[:, : i + 1])  # agent i sees only actions before it
        if i + 1 < 5:
            assert not torch.allclose(la[:, i + 1:], lb[:, i + 1:])


def _learner(map_name="3m", **over):
    cfg = config_mod.load("smac", map_name, "commformer", [f"algo.{k}={v}" for k, v in over.items()])["algo"]
    env = SMACVecEnv(map_name, 2)
    return CommFormer(env.spec, cfg, seed=0), env


def test_evaluation_uses_the_deterministic_top_k(monkeypatch):
    learner, env = _learner(warmup=0)
    with torch.no_grad():
        learner.graph.edge_logits.normal_(generator=torch.Generator().manual_seed(4))
    step = env.reset(seed=0)
    monkeypatch.setattr(learner.graph, "sample", lambda *a, **k: pytest.fail("sampled a graph while acting"))
    a1, e1 = learner.act(step, deterministic=True)
    a2, e2 = learner.act(step, deterministic=True)
    assert np.array_equal(a1, a2) and np.array_equal(e1["messages"], e2["messages"])
    gates = e1["gates"]
    k = learner.graph.k
    # each living agent with an open gate hears its k kept senders, a closed gate hears nobody
    np.testing.assert_array_equal(e1["messages"], np.where(gates > 0, float(k), 0.0))


def test_decoding_levels_follow_the_graph():
    levels = CommFormer._decoding_levels
    as_lists = lambda support: [lv.tolist() for lv in levels(support)]  # noqa: E731
    eye = torch.eye(4).expand(2, 4, 4)
    assert as_lists(eye) == [[0, 1, 2, 3]]  # nobody hears an earlier agent: one pass
    assert as_lists(torch.ones(2, 4, 4)) == [[0], [1], [2], [3]]  # full graph: one agent at a time
    chain = torch.eye(4).clone()
    chain[3, 1] = 1.0  # 3 hears 1: 3 waits for 1
    chain[2, 3] = 1.0  # a later sender is not heard in the decoder (causal)
    assert as_lists(chain.expand(1, 4, 4)) == [[0, 1, 2], [3]]
    other = torch.eye(4).clone()
    other[1, 0] = 1.0  # in another battle 1 hears 0
    assert as_lists(torch.stack([chain, other])) == [[0, 2], [1], [3]]


@pytest.mark.parametrize("graph", ["learned", "full"])
def test_acting_by_levels_equals_decoding_one_agent_at_a_time(graph):
    learner, env = _learner("3s5z", warmup=0, graph=graph)
    with torch.no_grad():
        learner.graph.edge_logits.normal_(generator=torch.Generator().manual_seed(2))
    step = env.reset(seed=0)
    for _ in range(5):
        step = env.step(learner.act(step)[0])
    obs, avail, alive = (torch.as_tensor(x) for x in (step.obs, step.avail, step.alive))
    gates = learner._gate_decisions(obs, True)[0]
    masks, support = learner._step_masks(learner.graph.deterministic(), gates, alive)
    rep, _ = learner.net.encode(obs, masks, support)
    with torch.no_grad():
        acts, logp = learner._decode_actions(rep, masks, support, avail, True)
        # reference: agent after agent, each seeing the earlier agents' chosen actions
        inputs = learner.net.decoder_inputs(masks, support, obs.shape[0])
        tokens = torch.zeros(obs.shape[0], learner.spec.n_agents + 1, dtype=torch.long)
        for i in range(learner.spec.n_agents):
            logits = masked_logits(learner.net.decode_rows(rep, tokens, inputs, slice(i, i + 1))[:, 0], avail[:, i])
            assert torch.equal(acts[:, i], logits.argmax(-1))
            tokens[:, i + 1] = acts[:, i] + 1
        # sampled actions: their log-probs are those the teacher-forced training pass gives them
        acts, logp = learner._decode_actions(rep, masks, support, avail, False)
        full = torch.log_softmax(masked_logits(learner.net.decode(rep, acts, masks, support), avail), -1)
        assert torch.allclose(full.gather(-1, acts.unsqueeze(-1)).squeeze(-1), logp, atol=1e-5)
    # the full graph needs a pass per agent; 3s5z's sparse graph (k = 3) needs fewer
    n_levels = len(learner._decoding_levels(support))
    assert n_levels == 8 if graph == "full" else n_levels < 8


def test_never_samples_an_unavailable_action():
    learner, env = _learner(warmup=0)
    step = env.reset(seed=0)
    for _ in range(30):
        acts, _ = learner.act(step)
        assert np.take_along_axis(step.avail, acts[..., None], -1).all()
        step = env.step(acts)


def test_only_the_graph_optimiser_steps_on_bilevel_epochs(monkeypatch):
    learner, env = _learner(warmup=0, ppo_epochs=10, graph_every=5, minibatches=2)
    calls = []
    monkeypatch.setattr(learner.graph_opt, "step", lambda *a, **k: calls.append("graph"))
    real_net_step = learner.net_opt.step
    monkeypatch.setattr(learner.net_opt, "step", lambda *a, **k: (calls.append("net"), real_net_step())[1])
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    learner.update(rollout)
    # epochs 5 and 10 (1-based) are graph epochs: 2 minibatches each
    expected = (["net"] * 8 + ["graph"] * 2) * 2
    assert calls == expected


def test_graph_learns_and_warmup_and_post_stable_freeze_it():
    learner, env = _learner(warmup=1, ppo_epochs=5, graph_every=5)
    before = learner.graph.edge_logits.detach().clone()
    step = env.reset(seed=0)
    rollout, step, _ = collect(env, learner, step, 8)
    learner.update(rollout)  # warm-up update: soft mask, no graph step
    assert torch.equal(before, learner.graph.edge_logits.detach())
    rollout, step, _ = collect(env, learner, step, 8)
    learner.update(rollout)
    after = learner.graph.edge_logits.detach().clone()
    assert not torch.equal(before, after)
    learner.set_budget_fraction(0.6)  # past post_stable_at = 0.5
    rollout, step, _ = collect(env, learner, step, 8)
    learner.update(rollout)
    assert learner.graph.frozen and torch.equal(after, learner.graph.edge_logits.detach())


def test_state_dict_round_trip_acts_the_same():
    learner, env = _learner(warmup=0)
    step = env.reset(seed=0)
    rollout, step, _ = collect(env, learner, step, 8)
    learner.update(rollout)
    other, _ = _learner(warmup=0)
    other.load_state_dict(learner.state_dict())
    a1, _ = learner.act(step, deterministic=True)
    a2, _ = other.act(step, deterministic=True)
    assert np.array_equal(a1, a2)
    for (k, v), (_, w) in zip(learner.net.state_dict().items(), other.net.state_dict().items()):
        assert torch.equal(v, w), k


def test_diagnostics_give_the_graph_pictures_and_scalars():
    learner, env = _learner(warmup=0)
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    learner.update(rollout)
    diag = learner.diagnostics()
    assert set(diag["images"]) == {"graph/edge_heatmap", "graph/topk_mask", "graph/node_link"}
    for img in diag["images"].values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert diag["scalars"]["graph/density"] == pytest.approx(learner.graph.k / 2)  # 3m: k = 1 of 2 senders
    assert {"graph/entropy", "graph/edges_changed", "graph/messages_per_agent_step",
            "graph/gate_open_rate"} <= set(diag["scalars"])
    assert diag["histograms"]["graph/edge_probabilities"].shape == (6,)
    # an unchanged graph gives the same pictures again; a changed one is drawn anew
    again = learner.diagnostics()["images"]
    assert all(np.array_equal(again[k], diag["images"][k]) for k in again)
    with torch.no_grad():
        learner.graph.edge_logits[0, 1] += 1e-5  # far less than one of the heatmap's 256 colours
    assert learner.diagnostics()["images"]["graph/edge_heatmap"] is diag["images"]["graph/edge_heatmap"]
    with torch.no_grad():
        learner.graph.edge_logits[0, 1] += 3.0
    changed = learner.diagnostics()["images"]
    assert not np.array_equal(changed["graph/edge_heatmap"], diag["images"]["graph/edge_heatmap"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relation_embedding_scores_equal_the_direct_formula(seed):
    from marl.agents.commformer.model import GraphAttention

    torch.manual_seed(seed)
    att = GraphAttention(16)
    x, y = torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    mask = (torch.rand(3, 5, 5) > 0.5).float()
    mask[:, range(5), range(5)] = 1
    # (q_i + r_ij) . (k_j + r_ij) with r_ij the embedding of the 0/1 edge: whatever "no edge" embeds to,
    # those pairs are masked out, so the result is the attention with the edge embedding alone
    no_edge = torch.randn(16)
    rel = torch.where((mask > 0).unsqueeze(-1), att.edge.detach(), no_edge)
    q, k = att.q(x).unsqueeze(2) + rel, att.k(y).unsqueeze(1) + rel
    scores = ((q * k).sum(-1) * att.scale).masked_fill(mask <= 0, float("-inf"))
    direct = att.out(torch.softmax(scores, -1).nan_to_num(0) * mask @ att.v(y))
    assert torch.allclose(att(x, att.keys_values(y), mask), direct, atol=1e-5)


def test_attention_loads_checkpoints_with_two_relation_embeddings():
    from marl.agents.commformer.model import GraphAttention

    att = GraphAttention(8)
    state = att.state_dict()
    both = torch.randn(2, 8)
    state["relation.weight"] = both  # the layout of checkpoints written before the edge embedding alone
    att.load_state_dict(state)
    assert torch.equal(att.edge.detach(), both[1])


def test_a_closed_gate_still_gets_a_gradient_so_it_can_reopen():
    torch.manual_seed(0)
    net = CommFormerNet(obs_dim=7, n_actions=5, n_agents=4)
    support = torch.ones(1, 4, 4)
    p = torch.full((1, 4), 0.1, requires_grad=True)
    gates = Gates.straight_through(torch.zeros(1, 4), p)  # every gate closed
    rep, values = net.encode(torch.randn(1, 4, 7), apply_gates(support, gates), support)
    values.sum().backward()
    assert p.grad.abs().sum() > 0


# the graph options that depart from the authors' (configs/algos/commformer.yaml), all on at once
GRAPH_OPTIONS = ["algo.graph_lr=0.01", "algo.graph_tau_end=0.1", "algo.graph_noise=sample",
                 "algo.graph_objective=unclipped", "algo.gate_cost=0.03", "algo.gate_cost_from=0.5",
                 "algo.listen_floor=0.2", "algo.gates_from=0.15"]


@pytest.mark.parametrize("options", [[], GRAPH_OPTIONS, ["algo.graph_estimator=score", "algo.graph_tau_end=0.1"]],
                         ids=["authors", "graph_options", "score"])
def test_commformer_resumes_exactly(tmp_path, options):
    cfg = config_mod.load("smac", "3m", "commformer", [
        "train.envs=2", "train.rollout=8", "algo.ppo_epochs=5", "algo.warmup=1", "train.eval_interval=0",
        "train.checkpoint_interval=1", "train.log_interval=1", f"train.runs_dir={tmp_path}", "train.steps=100",
        "train.torch_threads=1", "train.update_threads=1", *options])
    whole, resumed = whole_and_resumed(cfg, tmp_path, 2)
    a, b = whole.learner.state_dict(), resumed.learner.state_dict()
    for part in ("net", "graph", "gates"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["updates"] == b["updates"] == 4
    assert not torch.equal(a["graph"]["edge_logits"], torch.ones(3, 3))  # the graph did learn
    assert whole.learner.tau() == resumed.learner.tau()


def test_folded_observation_norm_equals_the_layer_stack_in_value_and_gradient():
    torch.manual_seed(0)
    net = CommFormerNet(obs_dim=9, n_actions=5, n_agents=4)
    with torch.no_grad():  # a learned scale and shift, not the identity they start as
        net.obs_in[0].weight.normal_()
        net.obs_in[0].bias.normal_()
    obs = torch.randn(3, 4, 9) * 5 + 2
    folded = net.embed_obs(net.normalized_obs(obs))
    stacked = net.obs_in(obs)
    assert torch.allclose(folded, stacked, atol=1e-5)
    params = list(net.obs_in.parameters())
    g_folded = torch.autograd.grad(folded.square().sum(), params)
    g_stacked = torch.autograd.grad(stacked.square().sum(), params)
    for a, b in zip(g_folded, g_stacked):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ graph-learning options (issue 13)
@pytest.mark.parametrize("start, end, fraction, tau", [
    (1.0, 0.1, 0.0, 1.0), (1.0, 0.1, 1.0, 0.1), (1.0, 0.1, 0.5, 0.1 ** 0.5), (1.0, 0.1, 0.25, 0.1 ** 0.25),
    (1.0, 0.1, 2.0, 0.1), (1.0, 0.1, -1.0, 1.0), (2.0, 0.5, 0.5, 1.0), (1.0, 1.0, 0.7, 1.0)])
def test_tau_is_annealed_geometrically_over_the_budget(start, end, fraction, tau):
    assert annealed_tau(start, end, fraction) == pytest.approx(tau, rel=1e-12)


@pytest.mark.parametrize("start, until, fraction, coef", [
    (0.01, 0.5, 0.0, 0.01), (0.01, 0.5, 0.25, 0.005), (0.01, 0.5, 0.5, 0.0), (0.01, 0.5, 0.9, 0.0),
    (0.01, 1.0, 0.75, 0.0025), (0.01, 0.5, -1.0, 0.01), (0.0, 0.5, 0.1, 0.0), (0.01, 0.0, 0.0, 0.0),
    (0.01, 0.0, -1.0, 0.0)])
def test_the_graph_entropy_weight_falls_linearly_to_zero(start, until, fraction, coef):
    assert decayed_coef(start, until, fraction) == pytest.approx(coef, rel=1e-12)


def test_row_entropy_is_the_entropy_of_the_rows_without_the_receiver():
    graph = CommGraph(3, 0.4)
    with torch.no_grad():
        graph.edge_logits.copy_(torch.tensor([[9.0, 0.0, math.log(3)], [1.0, -5.0, 1.0], [2.0, 0.0, 7.0]]))
    rows = [[0.25, 0.75], [0.5, 0.5], [1 / (1 + math.e ** -2), 1 / (1 + math.e ** 2)]]
    expected = sum(-sum(p * math.log(p) for p in row) for row in rows) / 3
    h = graph.row_entropy()
    assert float(h.detach()) == pytest.approx(expected, rel=1e-6)
    h.backward()
    grad = graph.edge_logits.grad
    assert torch.equal(grad.diagonal(), torch.zeros(3)) and torch.isfinite(grad).all()
    assert grad[0, 1] > 0 > grad[0, 2] and grad[1, 0] == pytest.approx(0.0, abs=1e-7)  # towards even rows


def test_the_graph_entropy_weight_reaches_zero_at_the_freeze():
    learner, _ = _learner(graph_entropy_coef=0.002, post_stable_at=0.5)
    for fraction, coef in [(0.0, 0.002), (0.25, 0.001), (0.5, 0.0), (0.8, 0.0)]:
        learner.set_budget_fraction(fraction)
        assert learner.graph_entropy_coef() == pytest.approx(coef, rel=1e-12, abs=1e-15)
    assert learner.graph.frozen


def test_a_samples_hard_top_k_is_the_same_at_every_temperature():
    graph = CommGraph(8, 0.4)
    with torch.no_grad():
        graph.edge_logits.copy_(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))
    masks = [graph.sample(torch.Generator().manual_seed(7), tau, batch=64).detach().round() for tau in (0.3, 1.0, 5.0)]
    assert torch.equal(masks[0], masks[1]) and torch.equal(masks[1], masks[2])


def test_the_graph_entropy_term_spreads_the_rows():
    def update(coef):
        learner, env = _learner("3s5z", warmup=0, ppo_epochs=5, graph_every=5, post_stable=False,
                                graph_entropy_coef=coef, graph_lr=0.01)
        with torch.no_grad():
            learner.graph.edge_logits.copy_(torch.eye(8).roll(1, 1) * 4.0)  # each row peaked on one sender
        learner.set_budget_fraction(0.5)  # coef / 2 at half the budget
        assert learner.graph_entropy_coef() == pytest.approx(coef / 2)
        rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
        before = float(learner.graph.row_entropy())
        learner.update(rollout)
        return before, float(learner.graph.row_entropy()), learner.diagnostics()["scalars"]["graph/entropy_coef"]

    before, plain, _ = update(0.0)
    _, spread, logged = update(1.0)
    assert logged == 0.5
    # Adam's first step moves each logit by graph_lr against its gradient's sign; the entropy's (about 0.03 per
    # logit at weight 0.5) outweighs the policy's (about 1e-4), so the peak falls by 0.01 and the others rise by 0.01
    expected = CommGraph(8, 0.25)
    with torch.no_grad():
        expected.edge_logits.copy_(torch.eye(8).roll(1, 1) * 3.98 + 0.01)
    assert spread == pytest.approx(float(expected.row_entropy()), rel=1e-4)  # Adam eps: steps of 0.00999x
    assert spread > before + 0.005 and abs(plain - before) < 0.005


def test_graph_steps_without_the_value_loss_drop_only_the_critic_term():
    learner, env = _learner(warmup=0, gates=False)
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    batch, data = learner._targets(rollout), learner._batch_tensors(rollout)
    base = learner.graph.sample(torch.Generator().manual_seed(3), 1.0, None)
    whole = {graph_epoch: learner._loss(data, batch, slice(None), base, graph_epoch) for graph_epoch in (False, True)}
    learner.cfg["graph_value_loss"] = False
    for graph_epoch, (loss, metrics) in whole.items():
        without, _ = learner._loss(data, batch, slice(None), base, graph_epoch)
        dropped = learner.cfg["value_coef"] * metrics["value_loss"] if graph_epoch else 0.0
        assert float(without) == pytest.approx(float(loss - dropped), rel=1e-6, abs=1e-7)
    assert float(whole[True][1]["value_loss"]) > 0


def test_the_learner_samples_at_the_annealed_tau_and_one_graph_per_sample(monkeypatch):
    learner, env = _learner(warmup=0, graph_tau_end=0.1, graph_noise="sample", post_stable=False)
    assert learner.tau() == 1.0
    learner.set_budget_fraction(0.5)
    assert learner.tau() == pytest.approx(0.1 ** 0.5)
    seen, real = [], learner.graph.sample
    monkeypatch.setattr(learner.graph, "sample",
                        lambda g, tau, batch: (seen.append((tau, batch)), real(g, tau, batch))[1])
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    learner.update(rollout)
    assert seen == [(pytest.approx(0.1 ** 0.5), 2 * 8)] * learner.cfg["ppo_epochs"]  # every epoch, whole batch
    assert learner.diagnostics()["scalars"]["graph/tau"] == pytest.approx(0.1 ** 0.5)


@pytest.mark.parametrize("noise, calls", [("batch", [None] * 10), ("sample", [16] * 10)])
def test_graph_noise_option_chooses_one_draw_per_batch_or_per_sample(monkeypatch, noise, calls):
    learner, env = _learner(warmup=0, ppo_epochs=10, graph_noise=noise)
    seen, real = [], learner.graph.sample
    monkeypatch.setattr(learner.graph, "sample", lambda g, tau, batch: (seen.append(batch), real(g, tau, batch))[1])
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    learner.update(rollout)
    assert seen == calls


def test_per_sample_graphs_are_k_hot_rows_that_differ_and_pass_gradients():
    g = CommGraph(8, 0.125)
    masks = g.sample(torch.Generator().manual_seed(0), 0.5, batch=64)
    assert masks.shape == (64, 8, 8)
    assert torch.equal(masks.detach().diagonal(dim1=1, dim2=2), torch.ones(64, 8))
    off = masks.detach() * (1 - torch.eye(8))
    assert torch.equal(off.sum(-1), torch.ones(64, 8))  # k = 1 sender per receiver in every sample
    assert len({tuple(m.argmax(-1).tolist()) for m in off}) == 64  # 7**8 graphs: no two draws alike
    (masks * torch.randn(64, 8, 8, generator=torch.Generator().manual_seed(1))).sum().backward()
    assert g.edge_logits.grad.abs().sum() > 0
    # one draw for the batch consumes N * N uniforms, one per sample B * N * N: the authors' stream is untouched
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    g.sample(a, 1.0)
    torch.rand(8, 8, generator=b)
    assert torch.equal(torch.rand(1, generator=a), torch.rand(1, generator=b))


@pytest.mark.parametrize("objective, graph_clip", [("ppo", 0.05), ("unclipped", float("inf"))])
def test_graph_objective_unclips_only_the_graph_epochs(monkeypatch, objective, graph_clip):
    import marl.agents.commformer.learner as learner_mod

    learner, env = _learner(warmup=0, ppo_epochs=10, clip=0.05, graph_objective=objective)
    clips, real = [], learner_mod.policy_loss
    monkeypatch.setattr(learner_mod, "policy_loss", lambda *a: (clips.append(a[3]), real(*a))[1])
    rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
    learner.update(rollout)
    assert clips == ([0.05] * 4 + [graph_clip]) * 2  # epochs 5 and 10 are the graph's


@pytest.mark.parametrize("fraction, charged", [(0.0, False), (0.49, False), (0.5, True), (0.9, True)])
def test_gate_cost_is_charged_only_from_gate_cost_from(fraction, charged):
    """Before gate_cost_from the update is the same as with gate_cost 0; from it, the same as with the cost."""
    states = {}
    for name, cost, start in [("from", 0.5, 0.5), ("never", 0.0, 0.0), ("always", 0.5, 0.0)]:
        learner, env = _learner(warmup=0, ppo_epochs=2, gate_cost=cost, gate_cost_from=start, gates_from=0.0)
        learner.set_budget_fraction(fraction)
        rollout, _, _ = collect(env, learner, env.reset(seed=0), 8)
        learner.update(rollout)
        states[name] = learner.state_dict()["gates"]
    same = states["always" if charged else "never"]
    other = states["never" if charged else "always"]
    assert all(torch.equal(states["from"][k], same[k]) for k in same)
    assert not all(torch.equal(states["from"][k], other[k]) for k in other)


@pytest.mark.parametrize("fraction", [0.0, 0.29])
def test_before_gates_from_every_gate_is_open_and_the_update_is_the_one_without_gates(fraction):
    """Before gates_from: acting hears every edge (gates all 1), and the update leaves the gates and the
    networks where a learner without gates would; from it the gates are drawn again."""
    torch.manual_seed(0)
    gated, env = _learner(warmup=0, ppo_epochs=2, gates_from=0.3, gate_cost=0.5)
    torch.manual_seed(0)
    plain, env_plain = _learner(warmup=0, ppo_epochs=2, gates_from=0.3, gate_cost=0.5)
    plain.gates = None  # the same networks, graph and generator, no gate module
    for learner in (gated, plain):
        learner.set_budget_fraction(fraction)
    start = {k: v.clone() for k, v in gated.gates.state_dict().items()}
    rollout, _, _ = collect(env, gated, env.reset(seed=0), 8)
    assert np.all(rollout.extras["gates"] == 1.0)
    rollout_plain, _, _ = collect(env_plain, plain, env_plain.reset(seed=0), 8)
    assert np.array_equal(rollout.actions, rollout_plain.actions)
    gated.update(rollout)
    plain.update(rollout_plain)
    assert all(torch.equal(start[k], v) for k, v in gated.gates.state_dict().items())  # no gradient, no cost
    a, b = gated.state_dict()["net"], plain.state_dict()["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    gated.set_budget_fraction(0.3)
    p = gated.gates.prob(torch.as_tensor(rollout.obs[0]))
    assert p.min() < 1.0
    gates, probs = gated._gate_decisions(torch.as_tensor(rollout.obs[0]), deterministic=True)
    assert torch.equal(gates, (probs > 0.5).float())


def _same(a: dict, b: dict, parts=("net", "gates")) -> bool:
    return all(torch.equal(a[part][k], b[part][k]) for part in parts for k in a[part])


def test_the_gates_own_parameter_group_changes_no_bit_of_an_update():
    """gate_lr_decay: false puts the gates in a second group of the one optimiser; at equal rates the updates are
    those of the one group (same moments, same clip, same step), with the gates deciding or not."""
    states = []
    for gate_decay in (True, False):
        learner, env = _learner(warmup=0, ppo_epochs=2, gate_cost=0.5, gates_from=0.5, gate_lr_decay=gate_decay)
        assert len(learner.net_opt.param_groups) == (1 if gate_decay else 2)
        step = env.reset(seed=0)
        for fraction in (0.0, 0.6):  # the second update trains the gates
            learner.set_budget_fraction(fraction)
            rollout, step, _ = collect(env, learner, step, 8)
            learner.update(rollout)
        states.append(learner.state_dict())
    assert _same(*states)
    moments = [s["net_opt"]["state"] for s in states]
    assert moments[0].keys() == moments[1].keys()
    assert all(torch.equal(moments[0][i][k], moments[1][i][k]) for i in moments[0] for k in moments[0][i])


@pytest.mark.parametrize("saved, resumed", [(True, False), (False, True)])
def test_a_checkpoint_resumes_across_gate_lr_decay(saved, resumed):
    """A checkpoint of one optimiser layout (the gates in the networks' group, or in their own) loads into the
    other with the same moments, and the next update is the one the saved layout gives (lr_decay: none)."""
    learner, env = _learner(warmup=0, ppo_epochs=2, gate_cost=0.5, gate_lr_decay=saved)
    step = env.reset(seed=0)
    rollout, step, _ = collect(env, learner, step, 8)
    learner.update(rollout)
    state = learner.state_dict()
    rollout, _, _ = collect(env, learner, step, 8)
    after = []
    for layout in (saved, resumed):
        other, _ = _learner(warmup=0, ppo_epochs=2, gate_cost=0.5, gate_lr_decay=layout)
        other.load_state_dict(copy.deepcopy(state))  # loading shares the moments, which an update moves in place
        assert len(other.net_opt.param_groups) == (1 if layout else 2)
        other.update(rollout)
        after.append(other.state_dict())
    assert _same(*after)


@pytest.mark.parametrize("gate_decay", [True, False])
def test_gate_lr_decay_false_keeps_the_gates_rate_while_the_network_decays(gate_decay):
    learner, _ = _learner(lr_decay="linear", gate_lr_decay=gate_decay)
    lr = learner.cfg["lr"]
    for fraction in (0.0, 0.5, 0.75, 1.0):
        learner.set_budget_fraction(fraction)
        rates = [g["lr"] for g in learner.net_opt.param_groups]
        assert rates[0] == pytest.approx(lr * (1 - fraction), rel=1e-12, abs=0.0)
        assert rates[1:] == ([] if gate_decay else [lr])  # one group (the gates with the network) or the gates' own
    assert learner.graph_opt.param_groups[0]["lr"] == learner.cfg["graph_lr"]


def test_without_gates_the_optimiser_has_the_network_group_only():
    learner, _ = _learner(gates="false", lr_decay="linear", gate_lr_decay="false")
    learner.set_budget_fraction(0.5)
    assert [g["lr"] for g in learner.net_opt.param_groups] == [pytest.approx(learner.cfg["lr"] / 2, rel=1e-12)]


def test_a_zero_uniform_draw_never_picks_an_unavailable_action(monkeypatch):
    """torch.rand can return exactly 0; its Gumbel noise must still leave unavailable actions out."""
    learner, env = _learner(warmup=0)
    step = env.reset(seed=0)
    real = torch.rand
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.zeros(shape) if len(shape) == 3 else real(shape, **kw))
    actions, _ = learner.act(step)
    avail = np.asarray(step.avail)
    assert all(avail[e, i, actions[e, i]] for e in range(actions.shape[0]) for i in range(actions.shape[1]))


def test_margins_drift_and_communication_graph_are_exact():
    learner, env = _learner("3s5z", warmup=0, sparsity=0.25)  # N = 8, k = 2
    logits = torch.ones(8, 8)
    logits[0, 1:4] = torch.tensor([3.0, 2.5, 1.0])  # top 2 of row 0: 3 and 2.5, then 1: margin 1.5
    logits[5, 0] = -2.0  # row 5: a tie among the others at 1, margin 0
    with torch.no_grad():
        learner.graph.edge_logits.copy_(logits)
    scalars = learner.diagnostics()["scalars"]
    assert scalars["graph/topk_margin_mean"] == pytest.approx(1.5 / 8)
    assert scalars["graph/topk_margin_min"] == 0.0
    assert scalars["graph/logit_drift"] == pytest.approx(3.0)  # |-2 - 1|
    graph = learner.communication_graph()
    assert graph.dtype == bool and graph.shape == (8, 8) and not graph.diagonal().any()
    assert graph.sum(1).tolist() == [2] * 8 and graph[0, 1] and graph[0, 2]
    assert np.array_equal(graph, (learner.graph.deterministic().numpy() > 0) & ~np.eye(8, dtype=bool))
    assert CommGraph(3, 1.0).margins() is None  # every other agent is kept: no (k+1)-th logit


def test_trainer_logs_planted_recall_when_learner_and_env_can_tell(tmp_path, monkeypatch):
    from marl.logging import RunLogger
    from marl.spec import GraphReporter, PlantedGraph
    from marl.trainer import Trainer, planted_recall

    planted = np.zeros((4, 4), bool)
    planted[[0, 1, 2, 3], [1, 2, 3, 0]] = True
    assert planted_recall(planted, planted) == 1.0
    assert planted_recall(planted.T, planted) == 0.0
    half = planted.copy()
    half[0] = half[1] = False
    assert planted_recall(half | planted.T, planted) == 0.5
    logged = []
    monkeypatch.setattr(RunLogger, "scalars", lambda self, values, step: logged.append(values))
    cfg = config_mod.load("comm", "informants", "commformer", [
        "env.n_agents=4", "train.envs=2", "train.rollout=4", "algo.ppo_epochs=2", "train.eval_interval=1",
        "train.eval_episodes=2", "train.checkpoint_interval=0", "train.log_interval=1000", "train.record_replays=false",
        f"train.runs_dir={tmp_path}", "train.steps=100", "train.torch_threads=1", "train.update_threads=1"])
    tr = Trainer(cfg, tmp_path / "run", show_progress=False)
    tr.run(max_updates=1)
    assert isinstance(tr.learner, GraphReporter) and isinstance(tr._eval_env, PlantedGraph)
    recall = [v["graph/planted_recall"] for v in logged if "graph/planted_recall" in v]
    assert recall == [planted_recall(tr.learner.communication_graph(), tr._eval_env.planted_graph())]


def test_score_estimator_samples_rollout_graphs_and_trains_under_them(monkeypatch):
    learner, env = _learner(warmup=0, ppo_epochs=5, graph_estimator="score", post_stable=False)
    step = env.reset(seed=0)
    _, extras = learner.act(step, deterministic=True)
    assert "graph" not in extras  # evaluation keeps the deterministic top-k
    rollout, _, _ = collect(env, learner, step, 8)
    graphs = rollout.extras["graph"]
    assert graphs.shape == (8, 2, 3, 3) and graphs.dtype == bool
    assert graphs[..., [0, 1, 2], [0, 1, 2]].all() and (graphs.sum(-1) == 1 + learner.graph.k).all()  # self loops
    assert len({g.tobytes() for g in graphs.reshape(16, 3, 3)}) > 1  # drawn per battle and step
    monkeypatch.setattr(learner.graph, "sample", lambda *a, **k: pytest.fail("the update drew a graph of its own"))
    seen, real = [], learner._loss
    monkeypatch.setattr(learner, "_loss",
                        lambda data, b, idx, base, ge: (seen.append(base), real(data, b, idx, base, ge))[1])
    before = learner.graph.edge_logits.detach().clone()
    learner.update(rollout)
    assert all(torch.equal(base, torch.as_tensor(graphs.reshape(16, 3, 3)).float()) for base in seen)
    assert not torch.equal(before, learner.graph.edge_logits.detach())  # the score moved the logits


def test_graph_score_loss_is_minus_advantage_times_log_probability():
    learner, _ = _learner(warmup=0, graph_estimator="score")  # 3m: N = 3, k = 1
    with torch.no_grad():
        learner.graph.edge_logits.copy_(torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.0, 0.0], [3.0, 1.0, 0.0]]))
    graph = torch.zeros(2, 3, 3)
    graph[0, 0, 2] = graph[0, 1, 0] = graph[0, 2, 1] = 1.0  # sample 0: senders 2, 0, 1
    graph[1, 0, 1] = graph[1, 1, 2] = graph[1, 2, 0] = 1.0  # sample 1: senders 1, 2, 0
    graph += torch.eye(3)  # self loops carry no score
    adv = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    alive = torch.tensor([[True, True, True], [True, True, False]])
    lp = [[math.log(math.e ** 2 / (math.e + math.e ** 2)), math.log(math.e ** 0.5 / (math.e ** 0.5 + 1)),
           math.log(math.e / (math.e ** 3 + math.e))],
          [math.log(math.e / (math.e + math.e ** 2)), math.log(1 / (math.e ** 0.5 + 1)), None]]
    expected = -(1.0 * lp[0][0] - 2.0 * lp[0][1] + 0.5 * lp[0][2] + 0.0 * lp[1][0] + 3.0 * lp[1][1]) / 5
    got = learner._graph_score_loss(graph, adv, alive)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert torch.equal(learner.graph.edge_logits.grad.diagonal(), torch.zeros(3))


@pytest.mark.parametrize("override, message", [
    ("algo.graph_noise=samples", "algo.graph_noise must be one of batch, sample, got 'samples'"),
    ("algo.graph_objective=clip", "algo.graph_objective must be one of ppo, unclipped, got 'clip'"),
    ("algo.graph_estimator=reinforce", "algo.graph_estimator must be one of straight_through, score, got 'reinforce'"),
    ("algo.graph_tau_end=0", "algo.graph_tau_end must be > 0, got 0"),
    ("algo.graph_entropy_coef=-0.1", "algo.graph_entropy_coef must be >= 0, got -0.1")])
def test_graph_options_outside_their_values_are_one_line_errors(tmp_path, capsys, override, message):
    from marl.cli import main

    assert main(["train", "comm", "informants", f"train.runs_dir={tmp_path}", override]) == 2
    assert capsys.readouterr().err == f"marl: error: {message}\n"
    assert not any(tmp_path.iterdir())


def test_listening_is_one_minus_the_self_loops_attention_weight_by_hand():
    """graph/listening_*: per receiver, the encoder's softmax weight on its senders, from its scores by hand."""
    torch.manual_seed(0)
    N, D = 4, 8
    net = CommFormerNet(obs_dim=6, n_actions=3, n_agents=N, dim=D)
    obs = torch.randn(5, N, 6)
    support = torch.eye(N)
    support[0, 1] = support[1, 2] = support[2, 3] = 1.0  # agent 3 hears no one but itself
    got = net.listening(obs, support)
    att = net.encoder[0].att
    x = net.embed_obs(net.normalized_obs(obs))
    q = x @ att.q.weight.T + att.q.bias + att.edge
    k = x @ att.k.weight.T + att.k.bias + att.edge
    want = []
    for i in range(N):
        heard = support[i].nonzero().flatten()
        w = torch.softmax((q[:, i:i + 1] * k[:, heard]).sum(-1) / math.sqrt(D), -1)
        want.append((1 - w[:, (heard == i).nonzero().item()]).mean())
    torch.testing.assert_close(got, torch.stack(want).detach())
    assert got[3] == 0.0 and ((got[:3] > 0) & (got[:3] < 1)).all()
    # without self loops a receiver's whole softmax is on its senders
    torch.testing.assert_close(net.listening(obs, support * (1 - torch.eye(N)))[:3], torch.ones(3))


def test_the_listening_diagnostic_is_logged_from_the_rollout_under_the_deterministic_graph():
    cfg = config_mod.load("comm", "informants", "commformer", ["train.envs=4", "train.rollout=5", "env.n_agents=4",
                                                               "algo.n_embd=8", "algo.ppo_epochs=2", "algo.warmup=0"])
    from marl.trainer import build

    env, learner = build(cfg)
    step = env.reset(seed=1)
    rollout, step, _ = collect(env, learner, step, 5)
    learner.update(rollout)
    scalars = learner.diagnostics()["scalars"]
    listening = learner.net.listening(torch.as_tensor(rollout.obs.reshape(-1, 4, rollout.obs.shape[-1])),
                                      learner.graph.deterministic())
    assert scalars["graph/listening_mean"] == pytest.approx(float(listening.mean()))
    assert scalars["graph/listening_min"] == pytest.approx(float(listening.min()))
    assert scalars["graph/deaf_fraction"] == float((listening < 0.1).float().mean())


def test_listen_floor_spreads_its_share_of_each_row_evenly_over_the_edges():
    """algo.listen_floor b: the encoder's weights are (1 - b) softmax + b / (edges in the row)."""
    torch.manual_seed(1)
    N = 4
    plain = CommFormerNet(obs_dim=6, n_actions=3, n_agents=N, dim=8)
    floored = CommFormerNet(obs_dim=6, n_actions=3, n_agents=N, dim=8, listen_floor=0.3)
    floored.load_state_dict(plain.state_dict())
    obs = torch.randn(5, N, 6)
    support = torch.eye(N)
    support[0, 1] = support[0, 2] = support[1, 2] = 1.0  # rows of 3, 2, 1 and 1 edges (self included)
    on_senders = torch.tensor([2 / 3, 1 / 2, 0.0, 0.0])  # the even spread's share on the senders
    torch.testing.assert_close(floored.listening(obs, support), 0.7 * plain.listening(obs, support) + 0.3 * on_senders)
    # a collapsed receiver still hears its sender: at least b / 2 of the weight with one sender and itself
    assert (floored.listening(obs, support)[1] >= 0.15).item()
    x = floored.embed_obs(floored.normalized_obs(obs))
    att = floored.encoder[0].att
    k, _ = att.keys_values(x)
    weights, _ = att.softmax_weights(x, k, support.expand(5, N, N))
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, N))
    assert (weights[:, 3, :3] == 0).all()  # no edge, no weight


@pytest.mark.parametrize("graph", ["full", "random"])
def test_the_graph_settings_leave_the_fixed_graph_ablations_bit_identical(graph):
    """The 5m_vs_6m preset's graph settings act on graph steps only, so its full and random rows are the runs made
    without them: two updates (each with graph epochs) give the same network, gates and edge logits."""
    preset = config_mod._read_yaml("presets/smac/5m_vs_6m.yaml")["algos"]["commformer"]
    states = []
    for over in ({}, preset):
        learner, env = _learner(graph=graph, warmup=0, **over)
        step = env.reset(seed=0)
        for _ in range(2):
            rollout, step, _ = collect(env, learner, step, 8)
            learner.update(rollout)
        states.append(learner.state_dict())
    a, b = states
    for part in ("net", "gates", "graph"):
        assert a[part].keys() == b[part].keys() and a[part]
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert learner.graph.mode == graph and learner.cfg["graph_value_loss"] is False
