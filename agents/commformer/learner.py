"""CommFormer learner: bi-level PPO over the networks and the communication graph, with gates.

Within the PPO epochs of an update, every `graph_every`-th epoch steps only the graph optimiser (edge
logits, lr 1e-4); the others step only the network optimiser (lr 5e-4, gradient clipping on the
network only). The first `warmup` updates use the raw logits as a soft mask. With `post_stable`, the
graph is frozen at its deterministic top-k once a fraction `post_stable_at` of the training budget
has passed (the trainer reports the fraction through `set_budget_fraction`). `graph: full` and `graph: random`
turn the same learner into the full-communication and fixed-random-graph ablations.

Graph-learning options (configs/algos/commformer.yaml; the defaults are the authors' values, under which
the logits hardly move, docs/learners.md section 2.10): `graph_tau` annealed to `graph_tau_end` over the
budget, `graph_noise: sample` (a Gumbel draw per sample instead of one per minibatch), `graph_objective:
unclipped` (no PPO clip on graph steps) and `graph_estimator: score` (rollouts sample their graphs, the
logits learn by the score function with the receiver's advantage). BENCHMARKS.md measures them on the
probe game `comm`, whose right graph is known.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from marl.spec import EnvSpec, Rollout, Step

from ..ppo import (
    PPOTargets,
    Stats,
    ValueNorm,
    follow_lr_schedule,
    masked_entropy,
    masked_logits,
    masked_mean,
    policy_loss,
    ppo_targets,
    value_loss,
)
from .graph import CommGraph, Gates, annealed_tau, apply_gates, decayed_coef
from .model import CommFormerNet

LISTENING_SAMPLES = 256  # rollout states the listening diagnostic reads (a few % of an update's work)
DEAF = 0.1  # a receiver whose attention on its senders is below this counts as deaf (graph/deaf_fraction)


def _gate_group(opt_state: dict, n_net: int, n_groups: int) -> dict:
    """A saved network optimiser state in the learner's layout: one parameter group over the networks and the
    gates, or the gates in a group of their own (gate_lr_decay: false). Both list the same parameters in the same
    order, so the moments keep their indices; a run that changes the setting on resume (a gate variant continuing
    a shared first half, before the gates learned anything) loads either. The rates are set before each update."""
    groups = opt_state["param_groups"]
    if len(groups) == n_groups:
        return opt_state
    ids = [i for group in groups for i in group["params"]]
    split = [ids[:n_net], ids[n_net:]] if n_groups == 2 else [ids]
    return {**opt_state, "param_groups": [{**groups[0], "params": part} for part in split]}


class _Batch(NamedTuple):
    """A rollout's inputs as tensors [T * E, N, ...], for the minibatches of an update."""

    obs: torch.Tensor
    normalized: torch.Tensor  # the observations through the network's input norm, which the epochs do not change
    avail: torch.Tensor
    alive: torch.Tensor
    actions: torch.Tensor
    gate_taken: torch.Tensor | None  # the gate decisions of the rollout (with gates)
    graph: torch.Tensor | None  # the graphs the rollout sampled [T * E, N, N] (graph_estimator: score)


class CommFormer:
    """The CommFormer learner (marl's Learner interface)."""

    # EvalCounters: evaluation reports the messages each living agent received per step, and how often its gate opened
    eval_counters = {"messages": "messages_per_agent_step", "gates": "gate_open_rate"}

    def __init__(self, spec: EnvSpec, cfg: dict, seed: int = 0, device: str = "cpu"):
        if spec.reward_dim != 1 and cfg.get("preference") is None:
            raise ValueError(f"commformer learns one reward; this environment has {spec.reward_dim} objectives "
                             f"({', '.join(spec.reward_names)}): give algo.preference")
        self.spec, self.cfg, self.device = spec, cfg, torch.device(device)
        torch.manual_seed(seed)
        N = spec.n_agents
        self.net = CommFormerNet(spec.obs_dim, spec.n_actions, N, cfg["n_embd"], cfg["n_block"],
                                 cfg.get("listen_floor", 0.0)).to(self.device)
        self.graph = CommGraph(N, cfg["sparsity"], cfg["graph"], cfg["self_loops"], seed).to(self.device)
        self.gates = Gates(spec.obs_dim).to(self.device) if cfg["gates"] else None
        # one optimiser, one gradient clip over the networks and the gates; with gate_lr_decay: false the gates are a
        # second parameter group, whose rate keeps `lr` while the networks' decays (the same update otherwise)
        net_params = list(self.net.parameters())
        gate_params = list(self.gates.parameters()) if self.gates else []
        own = bool(gate_params) and not cfg.get("gate_lr_decay", True)
        groups = [{"params": net_params}, {"params": gate_params}] if own else [{"params": net_params + gate_params}]
        self.net_opt = torch.optim.Adam(groups, lr=cfg["lr"], eps=cfg["adam_eps"])
        self._net_params = net_params + gate_params  # what the clip sees
        self.graph_opt = torch.optim.Adam([self.graph.edge_logits], lr=cfg["graph_lr"], eps=cfg["adam_eps"])
        self.value_norm = ValueNorm().to(self.device)
        self.generator = torch.Generator().manual_seed(seed)
        self.updates = 0
        self.budget_fraction = 0.0  # told by the trainer before each update (BudgetAware)
        # the logits the graph started from, for the drift scalar (ones, the authors' initialisation). They are
        # a function of the config, so a learner built to resume has them already: the state keeps its layout
        self.initial_logits = self.graph.edge_logits.detach().clone()
        self._last_mask = self.graph.deterministic().detach().cpu().numpy()
        self._last_stats: dict = {}
        self._images_key, self._images = None, {}  # the last graph pictures drawn, and what they show
        self._acting_key, self._acting = None, None  # the acting graph and its decoding levels, while unchanged
        self._eye = torch.eye(N, device=self.device)

    # ------------------------------------------------------------------ masks
    def _acting_graph(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The graph rollouts act under (the soft mask in warm-up, else the top-k) and its decoding levels.

        Both change only when the edge logits do (their version counter moves with every in-place
        change), so they are computed once per update rather than once per step.
        """
        warm = self.updates < self.cfg["warmup"] and self.graph.mode == "learned"
        key = (self.graph.edge_logits._version, warm)
        if key != self._acting_key:
            with torch.no_grad():
                base = self.graph.soft().detach().clone() if warm else self.graph.deterministic()
            self._acting_key, self._acting = key, (base, self._decoding_levels(base))
        return self._acting

    def _step_masks(self, base: torch.Tensor, gates: torch.Tensor | None, alive: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, N] (mask, support) of one step: the graph with dead senders silenced (support), and the
        same with gates applied (mask). Self loops are kept in both."""
        B, N = alive.shape
        sender = alive.float().unsqueeze(1)  # [B, 1, N]
        support = base.expand(B, N, N) * (sender + (1 - sender) * self._eye)
        return (apply_gates(support, gates) if gates is not None else support), support

    def _gate_decisions(self, obs: torch.Tensor, deterministic: bool
                        ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self._gates_decide():  # no gates, or before gates_from: every gate open, exactly as with gates off
            return None, None
        p = self.gates.prob(obs)
        if deterministic:
            return (p > 0.5).float(), p
        return torch.bernoulli(p, generator=self.generator), p

    def _gates_decide(self) -> bool:
        """Whether the gates choose yet: from `gates_from` of the budget on (gates: true)."""
        return self.gates is not None and self.budget_fraction >= self.cfg.get("gates_from", 0.0)

    # ------------------------------------------------------------------ acting
    @staticmethod
    def _decoding_levels(support: torch.Tensor) -> list[torch.Tensor]:
        """Agents grouped so that each group only hears the actions of agents in earlier groups.

        Agent i hears agent j < i's action only over an edge (i, j) of this step's graph, so i can be
        decoded as soon as every such j is: with a sparse graph the N agents need fewer than N decoder
        passes. The edges of all battles in the batch are taken together: levels of a graph also serve
        any step whose edges it contains (dead senders and closed gates only remove edges).
        """
        n = support.shape[-1]
        hears = ((support.reshape(-1, n, n) > 0).any(0) & torch.ones(n, n, dtype=torch.bool).tril(-1)).tolist()
        level = [0] * n
        for i in range(n):
            level[i] = 1 + max((level[j] for j in range(i) if hears[i][j]), default=-1)
        return [torch.tensor([i for i in range(n) if level[i] == d]) for d in range(max(level) + 1)]

    def _decode_actions(self, rep, masks, support, avail, deterministic, levels=None):
        """Actions and their log-probs, decoded level by level (levels of `support` unless given).

        Sampling takes the argmax of the logits plus Gumbel noise drawn for every agent at once, which
        draws each action from its softmax."""
        B, N = avail.shape[:2]
        actions = torch.zeros(B, N, dtype=torch.long, device=self.device)
        log_probs = torch.zeros(B, N, device=self.device)
        # the table and masks are the same for every agent; the tokens of undecided agents are masked out
        inputs = self.net.decoder_inputs(masks, support, B)
        token_index = torch.zeros(B, N + 1, dtype=torch.long, device=self.device)
        if not deterministic:
            # u = 0 (one draw in 2^24) would give -inf, which loses even to an unavailable action's -1e10: an agent
            # with one available action then took a forbidden one (5m_vs_6m, 378k steps). The floor only moves 0.
            u = torch.rand(avail.shape, generator=self.generator, device=self.device).clamp_(min=torch.finfo().tiny)
            gumbel = -torch.log(-torch.log(u))
        for rows in self._decoding_levels(support) if levels is None else levels:
            rows = rows.to(self.device)
            logp = torch.log_softmax(masked_logits(self.net.decode_rows(rep, token_index, inputs, rows),
                                                   avail[:, rows]), -1)
            a = logp.argmax(-1) if deterministic else (logp + gumbel[:, rows]).argmax(-1)
            actions[:, rows] = a
            token_index[:, rows + 1] = a + 1
            log_probs[:, rows] = logp.gather(-1, a.unsqueeze(-1)).squeeze(-1)
        return actions, log_probs

    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Actions decoded agent by agent under the deterministic graph; stores log-probs, values, gates."""
        with torch.no_grad():
            obs = torch.as_tensor(step.obs, device=self.device)
            avail = torch.as_tensor(step.avail, device=self.device)
            alive = torch.as_tensor(step.alive, device=self.device)
            gates, _ = self._gate_decisions(obs, deterministic)
            explore = not deterministic and self._explores()
            if explore:  # a graph drawn per battle, trained afterwards by its score (graph_estimator: score)
                base, levels = self.graph.sample(self.generator, self.tau(), obs.shape[0]).detach(), None
            else:
                base, levels = self._acting_graph()
            masks, support = self._step_masks(base, gates, alive)
            rep, values = self.net.encode(obs, masks, support)
            actions, log_probs = self._decode_actions(rep, masks, support, avail, deterministic, levels)
        received = ((masks > 0).float() * (1 - self._eye)).sum(-1) * alive.float()
        extras = {"messages": received.cpu().numpy().astype(np.float32),
                  "comm": (masks > 0).cpu().numpy()}  # [B, N, N] receiver x sender, this step's edges
        if self.gates is not None:  # before gates_from every gate is open
            extras["gates"] = (gates.cpu().numpy().astype(np.float32) if gates is not None
                               else np.ones(received.shape, np.float32))
        if explore:
            extras["graph"] = (base > 0).cpu().numpy()
        if not deterministic:
            extras.update(log_prob=log_probs.cpu().numpy(), value=values.cpu().numpy())
        return actions.cpu().numpy(), extras

    def values(self, obs: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Denormalised values [B, N] under the deterministic graph and deterministic gates."""
        with torch.no_grad():
            o = torch.as_tensor(obs, device=self.device)
            gates, _ = self._gate_decisions(o, True)
            masks, support = self._step_masks(self.graph.deterministic(), gates,
                                              torch.as_tensor(alive, device=self.device))
            _, v = self.net.encode(o, masks, support)
            return self.value_norm.denormalize(v).cpu().numpy()

    # ------------------------------------------------------------------ learning
    def _explores(self) -> bool:
        """Whether rollouts sample their graphs (graph_estimator: score, while the graph learns after warm-up)."""
        return (self.cfg.get("graph_estimator", "straight_through") == "score" and self.graph.mode == "learned"
                and not self.graph.frozen and self.updates >= self.cfg["warmup"])

    def set_budget_fraction(self, fraction: float) -> None:
        """Post-stable: freeze the graph at its top-k once `post_stable_at` of the budget has passed; the
        fraction also sets the Gumbel temperature (graph_tau -> graph_tau_end) and the network's learning rate
        (`lr_decay`; the edge logits keep graph_lr, and the gates keep lr with `gate_lr_decay: false`)."""
        self.budget_fraction = float(fraction)
        follow_lr_schedule(self.cfg, fraction, {"lr": self.net_opt})
        if len(self.net_opt.param_groups) == 2:  # the gates' own group (gate_lr_decay: false)
            self.net_opt.param_groups[1]["lr"] = self.cfg["lr"]
        if self.cfg["post_stable"] and fraction >= self.cfg["post_stable_at"]:
            self.graph.frozen = True

    def update(self, rollout: Rollout) -> dict:
        """Bi-level PPO epochs; returns losses, entropy, KL, clip fraction, gate and graph statistics."""
        cfg = self.cfg
        batch = self._targets(rollout)
        data = self._batch_tensors(rollout)
        learned = self.graph.mode == "learned" and not self.graph.frozen
        warm = self.updates < cfg["warmup"]
        stats = Stats()
        graph_steps = 0
        for epoch in range(cfg["ppo_epochs"]):
            graph_epoch = learned and not warm and (epoch + 1) % cfg["graph_every"] == 0
            for idx in self._minibatches(len(data.obs)):
                base = (data.graph[idx] if data.graph is not None
                         else self._training_graph(learned, warm, data.alive[idx].shape[0]))
                loss, metrics = self._loss(data, batch, idx, base, graph_epoch)
                if graph_epoch:
                    self._graph_step(loss)
                    graph_steps += 1
                    grad_norm = torch.zeros(())
                else:
                    grad_norm = self._network_step(loss)
                gate_cost = metrics.pop("gate_cost")  # listed last, as it always was
                stats.add(**metrics, grad_norm=grad_norm, gate_cost=gate_cost)
        self.updates += 1
        self._last_stats = {**stats.means(), "graph_steps": float(graph_steps), **self._communication_stats(rollout)}
        return self._last_stats

    def _targets(self, rollout: Rollout) -> PPOTargets:
        """Advantages and value targets [T * E, N], bootstrapped with the deterministic graph's values."""
        batch = ppo_targets(rollout, lambda obs, state, alive: self.values(obs, alive), self.cfg["gamma"],
                            self.cfg["gae_lambda"], self.value_norm, self.device, self.cfg.get("preference"))
        return batch.reshape(rollout.steps * rollout.n_envs, self.spec.n_agents)

    def _batch_tensors(self, rollout: Rollout) -> _Batch:
        """The rollout's inputs as tensors [T * E, N, ...] on the device."""
        B, N, dev = rollout.steps * rollout.n_envs, self.spec.n_agents, self.device
        obs = torch.as_tensor(rollout.obs.reshape(B, N, -1), device=dev)
        return _Batch(obs=obs, normalized=self.net.normalized_obs(obs),  # the same in every epoch
                      avail=torch.as_tensor(rollout.avail.reshape(B, N, -1), device=dev),
                      alive=torch.as_tensor(rollout.alive.reshape(B, N), device=dev),
                      actions=torch.as_tensor(rollout.actions.reshape(B, N), device=dev),
                      gate_taken=(torch.as_tensor(rollout.extras["gates"].reshape(B, N), device=dev)
                                  if self.gates is not None else None),
                      graph=(torch.as_tensor(rollout.extras["graph"].reshape(B, N, N), device=dev).float()
                             if "graph" in rollout.extras else None))

    def _minibatches(self, n: int) -> list:
        """This epoch's minibatch indices; one minibatch is the whole batch, a view rather than a shuffled copy."""
        if self.cfg["minibatches"] == 1:
            return [slice(None)]
        return torch.randperm(n, generator=self.generator).to(self.device).chunk(self.cfg["minibatches"])

    def tau(self) -> float:
        """The Gumbel temperature of this update's graph samples (graph_tau annealed to graph_tau_end)."""
        return annealed_tau(self.cfg.get("graph_tau", 1.0), self.cfg.get("graph_tau_end", 1.0), self.budget_fraction)

    def graph_entropy_coef(self) -> float:
        """This update's weight of the edge logits' row entropy on graph steps: graph_entropy_coef falling linearly to
        0 at the freeze (post_stable_at), or at the budget's end without post_stable."""
        until = self.cfg["post_stable_at"] if self.cfg["post_stable"] else 1.0
        return decayed_coef(self.cfg.get("graph_entropy_coef", 0.0), until, self.budget_fraction)

    def _training_graph(self, learned: bool, warm: bool, batch: int) -> torch.Tensor:
        """The graph a minibatch of `batch` samples trains under: the soft logits in warm-up, a Gumbel top-k
        sample while the graph learns (one for the batch, or one per sample with graph_noise: sample), else
        the fixed top-k."""
        if warm and self.graph.mode == "learned":
            return self.graph.soft()
        if learned:
            per_sample = self.cfg.get("graph_noise", "batch") == "sample"
            return self.graph.sample(self.generator, self.tau(), batch if per_sample else None)
        return self.graph.deterministic()

    def _loss(self, data: _Batch, batch: PPOTargets, idx, base: torch.Tensor, graph_epoch: bool = False
              ) -> tuple[torch.Tensor, dict]:
        """The PPO objective of one minibatch (policy, entropy, value and gate cost) and its metrics.

        On graph epochs with graph_objective: unclipped the policy term is the plain importance-weighted
        advantage: under a tight clip, a sampled graph far from the rollout's moves most ratios out of the
        clip range, where the clipped objective gives the graph no gradient at all."""
        cfg = self.cfg
        clip = float("inf") if graph_epoch and cfg.get("graph_objective", "ppo") == "unclipped" else cfg["clip"]
        m = batch.mask[idx]
        gates, gate_cost = None, torch.zeros((), device=self.device)
        if self._gates_decide():  # before gates_from the update is the one without gates
            p = self.gates.prob(data.obs[idx])
            gates = Gates.straight_through(data.gate_taken[idx], p)
            gate_cost = masked_mean(p, m)
        masks, support = self._step_masks(base, gates, data.alive[idx])
        rep, v = self.net.encode(data.obs[idx], masks, support, data.normalized[idx])
        logits = masked_logits(self.net.decode(rep, data.actions[idx], masks, support), data.avail[idx])
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, data.actions[idx].unsqueeze(-1)).squeeze(-1)
        entropy = masked_entropy(logp_all, m)
        p_loss, info = policy_loss(logp, batch.old_log_probs[idx], batch.advantages[idx], clip, m)
        v_loss = value_loss(v, batch.old_values[idx], batch.targets[idx], cfg["clip"], cfg["huber_delta"],
                            cfg["value_clip"], batch.value_mask[idx])
        # gate_cost_from: with the graph still random, listening is worth nothing and a cost would shut the gates
        # (and a closed gate zeroes its receiver's row of the mask, so the graph stops learning there)
        cost = cfg["gate_cost"] if self.budget_fraction >= cfg.get("gate_cost_from", 0.0) else 0.0
        # graph_value_loss: false leaves the critic's loss out of graph steps. It favours the graph the rollout was
        # played under (whose values it holds), which keeps the top k where it is (5m_vs_6m, BENCHMARKS.md)
        value_coef = 0.0 if graph_epoch and not cfg.get("graph_value_loss", True) else cfg["value_coef"]
        loss = p_loss - cfg["entropy_coef"] * entropy + value_coef * v_loss + cost * gate_cost
        if graph_epoch and data.graph is not None:
            # the rollout's graphs are constants of the loss above; the logits learn by their score instead
            loss = loss + self._graph_score_loss(data.graph[idx], batch.advantages[idx], m)
        edge_entropy_coef = self.graph_entropy_coef() if graph_epoch else 0.0
        if edge_entropy_coef > 0:
            # keeps the rows from settling on the edges the warm-up left: an unsampled sender's attention weight is 0,
            # so its edge gets only the softmax's shared term (in proportion to its own small probability), and a row
            # whose top k lead by several units of Gumbel noise stops trying the others
            loss = loss - edge_entropy_coef * self.graph.row_entropy()
        return loss, {"policy_loss": p_loss, "value_loss": v_loss, "entropy": entropy, **info, "gate_cost": gate_cost}

    def _graph_score_loss(self, graph: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Score-function loss of the sampled graphs [B, N, N]: -A_i log P(row i) with the receiver's advantage
        (the critic is the baseline). log P(row i) is the sum of the selected senders' log-softmax: exact for k = 1,
        the first-order term of the top-k draw's Plackett-Luce probability otherwise. The draw is the top k of logits
        + Gumbel noise whatever the temperature, so its law, and this loss, do not depend on tau."""
        logp = torch.log_softmax(self.graph.edge_logits.masked_fill(self.graph.eye, float("-inf")), -1)
        picked = (graph * (1 - self._eye) * logp.nan_to_num(0.0, neginf=0.0)).sum(-1)  # [B, N]
        return -masked_mean(advantages * picked, mask)

    def _graph_step(self, loss: torch.Tensor) -> None:
        """A graph epoch's step: the edge logits alone follow the PPO objective."""
        self.net_opt.zero_grad()
        self.graph_opt.zero_grad()
        # asking autograd for the edge logits' gradient only skips the network's weight gradients, which this
        # epoch would throw away
        (self.graph.edge_logits.grad,) = torch.autograd.grad(loss, [self.graph.edge_logits])
        self.graph_opt.step()

    def _network_step(self, loss: torch.Tensor) -> torch.Tensor:
        """A network epoch's step, with the network's gradients clipped; returns their norm before clipping."""
        self.net_opt.zero_grad()
        self.graph_opt.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self._net_params, self.cfg["max_grad_norm"])
        self.net_opt.step()
        return grad_norm

    def _communication_stats(self, rollout: Rollout) -> dict:
        """Messages heard per living agent-step and, with gates, their open rate (kept per agent for the pictures)."""
        alive = rollout.alive
        out = {"messages_per_agent_step": float(rollout.extras["messages"][alive].mean()) if alive.any() else 0.0}
        if self.gates is not None:
            g = rollout.extras["gates"]
            out["gate_open_rate"] = float(g[alive].mean()) if alive.any() else 0.0
            self._gate_per_agent = (g * alive).sum((0, 1)) / np.maximum(alive.sum((0, 1)), 1)
        # the states the listening diagnostic reads when it is logged (a copy: the rollout's buffers are reused)
        states = rollout.obs.reshape(-1, self.spec.n_agents, rollout.obs.shape[-1])
        self._listening_obs = states[:LISTENING_SAMPLES].copy()
        return out

    # ------------------------------------------------------------------ state and diagnostics
    def state_dict(self) -> dict:
        """Networks, graph, gates, optimisers, value normalisation, generator and counters."""
        return {"net": self.net.state_dict(), "graph": self.graph.state_dict(),
                "gates": self.gates.state_dict() if self.gates else {}, "net_opt": self.net_opt.state_dict(),
                "graph_opt": self.graph_opt.state_dict(), "value_norm": self.value_norm.state_dict(),
                "generator": self.generator.get_state(), "updates": self.updates, "frozen": self.graph.frozen,
                "last_mask": torch.as_tensor(self._last_mask), "budget_fraction": self.budget_fraction}

    def acting_state(self) -> dict:
        """What act() reads: the network, graph and gates, the counters and fraction its schedules follow
        (warm-up, exploration, Gumbel temperature), and the sampling generator."""
        return {"policy": {"net": self.net.state_dict(), "graph": self.graph.state_dict(),
                           "gates": self.gates.state_dict() if self.gates else {}, "updates": self.updates,
                           "frozen": self.graph.frozen, "budget_fraction": self.budget_fraction},
                "shard": {"generator": self.generator.get_state()}}

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() given."""
        if "policy" in state:
            p = state["policy"]
            self.net.load_state_dict(p["net"])
            self.graph.load_state_dict(p["graph"])
            if self.gates:
                self.gates.load_state_dict(p["gates"])
            self.updates, self.graph.frozen = int(p["updates"]), bool(p["frozen"])
            self.budget_fraction = float(p["budget_fraction"])
        if "shard" in state:
            self.generator.set_state(state["shard"]["generator"])

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """Sample gates, graphs and actions from a stream of the shard's own; no per-battle state."""
        self.generator = torch.Generator().manual_seed(seed)

    def prepare_acting(self, step: Step) -> None:
        """Nothing to settle before acting."""

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        self.net.load_state_dict(state["net"])
        self.graph.load_state_dict(state["graph"])
        if self.gates:
            self.gates.load_state_dict(state["gates"])
        self.net_opt.load_state_dict(_gate_group(state["net_opt"], len(self.net_opt.param_groups[0]["params"]),
                                                 len(self.net_opt.param_groups)))
        for param in self.net_opt.param_groups[0]["params"]:
            # checkpoints from before 2026-11-22 hold two relation embeddings (no edge, edge) where there is one
            # now (GraphAttention keeps row 1 of them); Adam's moments of that parameter follow the same row
            moments = self.net_opt.state.get(param, {})
            for k in ("exp_avg", "exp_avg_sq"):
                if k in moments and param.shape[0] == 1 and moments[k].shape == (2, *param.shape[1:]):
                    moments[k] = moments[k][1:].clone()
        self.graph_opt.load_state_dict(state["graph_opt"])
        self.value_norm.load_state_dict(state["value_norm"])
        self.generator.set_state(state["generator"])
        self.updates, self.graph.frozen = int(state["updates"]), bool(state["frozen"])
        self._last_mask = state["last_mask"].numpy()
        # what acting reads before the next update sets it (gates_from, the temperature); 0 in older checkpoints
        self.budget_fraction = float(state.get("budget_fraction", 0.0))

    def communication_graph(self) -> np.ndarray:
        """bool[N, N] (receivers x senders, no self loops): the deterministic graph rollouts and evaluation use."""
        mask = self.graph.deterministic().detach().cpu().numpy() > 0
        np.fill_diagonal(mask, False)
        return mask

    def diagnostics(self) -> dict:
        """The graph as the user sees it: scalars, images (heatmap, mask, node-link) and a histogram."""
        from .viz import graph_images

        probs = self.graph.probs().detach().cpu().numpy()
        mask = self.graph.deterministic().detach().cpu().numpy()
        off = ~np.eye(len(mask), dtype=bool)
        p = probs[off].clip(1e-12, 1)
        rows = probs.clip(1e-12, 1)
        scalars = {"graph/density": float(mask[off].mean()),
                   "graph/entropy": float(-(rows * np.log(rows)).sum(1).mean()),
                   "graph/edges_changed": float(np.abs(mask - self._last_mask)[off].sum()),
                   "graph/tau": self.tau(),
                   "graph/entropy_coef": self.graph_entropy_coef(),
                   "graph/logit_drift": float((self.graph.edge_logits.detach() - self.initial_logits).abs().max())}
        margins = self.graph.margins()
        if margins is not None:  # how firmly each receiver's top k is chosen: 0 is a tie
            scalars.update({"graph/topk_margin_mean": float(margins.mean()),
                            "graph/topk_margin_min": float(margins.min())})
        for k in ("messages_per_agent_step", "gate_open_rate"):
            if k in self._last_stats:
                scalars[f"graph/{k}"] = self._last_stats[k]
        listening_obs = getattr(self, "_listening_obs", None)
        if listening_obs is not None:
            # whether each receiver still listens: its encoder attention on its senders, on the last rollout's first
            # LISTENING_SAMPLES states under the deterministic graph (only when logged; no randomness is drawn)
            listening = self.net.listening(torch.as_tensor(listening_obs, device=self.device),
                                           self.graph.deterministic()).cpu().numpy()
            scalars.update({"graph/listening_mean": float(listening.mean()),
                            "graph/listening_min": float(listening.min()),
                            "graph/deaf_fraction": float((listening < DEAF).mean())})
        self._last_mask = mask
        gate_rate = getattr(self, "_gate_per_agent", None) if self.gates is not None else None
        # the pictures show the probabilities (as one of 256 colours or line widths, scaled by the largest
        # one), the mask and which gates are mostly closed. At the authors' graph lr the probabilities move
        # by less than a colour for many updates, and once the graph is frozen not at all, while drawing the
        # pictures is most of what a snapshot costs: they are drawn again only when what they show changes
        top = max(float(p.max()), 1e-6)
        key = (np.rint(probs / top * 255).tobytes(), round(top, 3), mask.tobytes(),
               None if gate_rate is None else (np.asarray(gate_rate) < 0.5).tobytes())
        if key != self._images_key:
            self._images_key = key
            self._images = graph_images(probs, mask, list(self.spec.agent_names), gate_rate)
        images = dict(self._images)
        return {"scalars": scalars, "images": images, "histograms": {"graph/edge_probabilities": p}}
