"""C-MORL (Liu et al., ICLR 2025): a Pareto front of team policies in two stages, in one process.

Read top to bottom, like a CleanRL file:

1. **The population.** P policies, each a MAPPO pair (a shared actor over each agent's observation, a
   centralised critic over the global state with one output per objective). Their parameters are
   stacked ([P, ...] tensors, `torch.func.stack_module_state`) and the whole population acts and
   learns in one batched forward (`Stacked`: one `torch.baddbmm` per layer), never a loop; the PPO losses
   of all P policies are per-policy masked means over [P, ...] tensors (agents/ppo.py's `batch_dims`).
2. **The environments are shared in contiguous slices.** With E environments and P policies,
   policy p owns environments [p E // P, (p + 1) E // P): slices differ in size by at most one, and
   every policy needs one, so train.envs >= P (the schema checks it for Stage 1; Stage 2 runs at most
   E // K selected policies' branches at once).
3. **Stage 1** trains one policy per preference w of a simplex grid (the authors': 6 vectors for 2
   objectives, 6 inner ones for 3, the one-hot corners for 4 or more) with PPO on the scalarised
   advantage w . A (advantages per objective from GAE with a trailing objective axis, agents/ppo.py).
   It ends at the first update where `stage1_fraction` of the step budget is done (BudgetAware).
4. **Evaluation.** Every `eval_every` updates (and at each stage change) all P policies play
   `eval_episodes` deterministic episodes each in ONE batched evaluator call (P * eval_envs battles,
   routed by the same slice rule); the mean discounted return (gamma = algo.gamma, episodes capped by
   the environment's limit) of every evaluated policy is offered to the Pareto archive (at most
   `archive_size` non-dominated policies, pruned by crowding distance), with its weights.
5. **Stage 2** starts right after Stage 1 and then every `select_every` updates: select the archived
   policies with the largest crowding distance not selected before (`select`; null: 5 for 2
   objectives, 6 otherwise; at most E // K); for each selected policy r and objective l a branch
   copied from r runs PPO on objective l plus the log barrier
   (1/t) mean_{j != l} -log(max(R_j - c_j, 1e-3)), t = `barrier_t`, with thresholds c_j from r's
   EVALUATED return: c_j = G_j(r) - (1 - beta) |G_j(r)| (beta G_j(r), the paper's, for G_j >= 0; for a
   negative return the same relative slack, where beta G_j would demand an improvement).
   R_j - c_j = (G_j(branch) - c_j) + mean((ratio - 1) A_j): the branch's last evaluated margin plus the
   first-order (importance-sampled) change of objective j under the new policy. Where the margin is
   below 1e-3 the clamp leaves no gradient; those cases are counted (loss/barrier_clamped).
   All branches of a selection run at once; when every archived policy has been selected, the
   branches keep training until a later evaluation archives new ones.

The step budget counts training transitions only; the evaluator's steps are logged apart
(train/eval_env_steps). Optimisers are Adam over the stacked tensors (elementwise, so it is P Adams),
with each policy's gradient norm clipped on its own. A branch starts with fresh optimiser moments.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state

from marl.pareto import ParetoArchive, check_preference, expected_utility, hypervolume, sparsity, weight_grid
from marl.spec import EnvSpec, Evaluator, Rollout, Step

from ..ppo import (
    Stats,
    ValueNorm,
    follow_lr_schedule,
    masked_entropy,
    masked_logits,
    mlp,
    normalize_advantages,
    policy_loss,
    rollout_advantages,
    sample_actions,
    value_loss,
)

BARRIER_FLOOR = 1e-3  # log(max(margin, 1e-3)): the authors' clamp


def stage1_preferences(n_objectives: int) -> np.ndarray:
    """The authors' Stage-1 grid: 2 objectives step 0.2 (6), 3 objectives 0.2..0.8 (6), else one-hot corners."""
    if n_objectives == 2:
        return weight_grid(2, 5)
    if n_objectives == 3:
        inner = weight_grid(3, 5)
        return inner[(inner > 0).all(1)]  # the compositions of 5 into 3 positive parts: 6 vectors
    return np.eye(n_objectives)


def default_select(n_objectives: int) -> int:
    """Policies selected per Stage-2 round: 5 for 2 objectives, 6 otherwise (the authors')."""
    return 5 if n_objectives == 2 else 6


def slices(n_envs: int, n_policies: int) -> np.ndarray:
    """owner int[E]: policy p owns the contiguous environments [p E // P, (p + 1) E // P)."""
    return _slices(n_envs, n_policies).copy()


@functools.lru_cache(maxsize=64)
def _slices(n_envs: int, n_policies: int) -> np.ndarray:
    bounds = (np.arange(n_policies + 1) * n_envs) // n_policies
    return np.repeat(np.arange(n_policies), np.diff(bounds))


def route(owner: np.ndarray, n_policies: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by owning policy: index int[P, S] into the rows (padded with row 0) and valid bool[P, S]."""
    groups = [np.flatnonzero(owner == p) for p in range(n_policies)]
    width = max(1, max(len(g) for g in groups))
    index = np.zeros((n_policies, width), np.int64)
    valid = np.zeros((n_policies, width), bool)
    for p, g in enumerate(groups):
        index[p, : len(g)] = g
        valid[p, : len(g)] = True
    return index, valid


def barrier(ratio: torch.Tensor, adv: torch.Tensor, margin: torch.Tensor, constrained: torch.Tensor,
            mask: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-barrier loss and the number of clamped (gradient-free) constraints, of one policy or of many.

    ratio [..., n, A], adv [..., n, A, K] (per-objective advantages in return units), margin [..., K] (the
    last evaluated G_j - c_j), constrained bool[..., K], mask [..., n, A]; the leading axes (a population's
    P) give one loss and one count each. R_j - c_j = margin_j + mean((ratio - 1) A_j) over the masked entries.
    """
    lead = ratio.shape[:-2]
    if not bool(constrained.any()):
        return ratio.new_zeros(lead), ratio.new_zeros(lead)
    weight = (ratio - 1) * mask  # [..., n, A]
    change = (weight.unsqueeze(-1) * adv).sum((-3, -2)) / mask.sum((-2, -1)).clamp(min=1).unsqueeze(-1)
    slack = margin + change
    clamped = constrained & (slack < BARRIER_FLOOR)
    logs = torch.log(torch.clamp(slack, min=BARRIER_FLOOR))  # clamp: no gradient below the floor
    loss = -(logs * constrained).sum(-1) / constrained.sum(-1).clamp(min=1) / t
    return loss, clamped.sum(-1).float()


class Stacked(nn.Module):
    """P copies of one network as stacked [P, ...] parameters, applied to [P, ...] inputs in one batched forward.

    The template is an `mlp` (LayerNorm input, Linear and elementwise layers). The forward is explicit, not
    `torch.vmap`: each Linear is one `torch.baddbmm` over the stacked weights, and the input LayerNorm's
    affine part (per policy) is folded into the first Linear, W (g x + b) + c = (W g) x + (W b + c), so
    the normalisation itself has no parameters, needs no gradient (the input needs none) and can be
    computed once per update (`normalize`). The parameters, their names and the function are the template's.
    """

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        params, _ = stack_module_state(modules)
        self.params = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.detach().clone())
                                        for k, v in params.items()})
        self._names = list(params)
        self._plan = self._compile(modules[0])
        self._folded: tuple | None = None  # (parameter versions, _layers()) while acting

    @staticmethod
    def _compile(net: nn.Module) -> list[tuple[str, str, nn.Module | None]]:
        """The template's layers as (kind, parameter prefix, module): "norm", "linear" or "elementwise"."""
        plan = []
        for name, mod in net.named_children():
            if isinstance(mod, nn.LayerNorm):
                if plan or len(mod.normalized_shape) != 1 or not mod.elementwise_affine:
                    raise TypeError("Stacked folds one affine LayerNorm over the last axis, at the input only")
                plan.append(("norm", name, copy.deepcopy(mod)))
            elif isinstance(mod, nn.Linear):
                plan.append(("linear", name, None))
            elif isinstance(mod, (nn.ReLU, nn.Tanh, nn.ELU, nn.GELU, nn.Identity)):
                plan.append(("elementwise", name, copy.deepcopy(mod)))
            else:
                raise TypeError(f"Stacked cannot batch a {type(mod).__name__} layer")
        if plan and plan[0][0] == "norm" and (len(plan) < 2 or plan[1][0] != "linear"):
            raise TypeError("Stacked folds the input LayerNorm into a Linear that must follow it")
        return plan

    @property
    def size(self) -> int:
        """P, the number of stacked networks."""
        return next(iter(self.params.values())).shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """name -> stacked tensor [P, ...], in the template's parameter names."""
        return {n: self.params[n.replace(".", "__")] for n in self._names}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The input LayerNorm without its affine part (which `forward` folds into the first Linear)."""
        kind, _, norm = self._plan[0]
        if kind != "norm":
            return x
        return F.layer_norm(x, norm.normalized_shape, eps=norm.eps)

    def forward(self, x: torch.Tensor, normalized: bool = False, members: torch.Tensor | None = None
                ) -> torch.Tensor:
        """x [P, ..., in] -> each network p applied to x[p]: [P, ..., out]. normalized: x is `normalize`d already;
        members: the networks (indices) x is for, in order (default all)."""
        P, lead = x.shape[0], x.shape[1:-1]
        h = x.reshape(P, -1, x.shape[-1])
        layers = iter(self._layers(members))
        for kind, _, mod in self._plan:
            if kind == "norm":
                h = h if normalized else self.normalize(h)
            elif kind == "linear":
                w, c = next(layers)
                h = torch.baddbmm(c.unsqueeze(1), h, w.transpose(1, 2))
            else:
                h = mod(h)
        return h.reshape(P, *lead, h.shape[-1])

    def shared_norm(self, s: torch.Tensor, n_ids: int) -> tuple[torch.Tensor, ...]:
        """The input LayerNorm of [s, one_hot(a)] for a < n_ids, from s alone: a one-hot adds the same sum (1) and
        the same squared deviations to every agent's input, so the statistics are per s. Returns (s normalised,
        mean, 1 / std), each [..., Ds] or [..., 1]; without an input LayerNorm, (s, None, None)."""
        kind, _, norm = self._plan[0]
        if kind != "norm":
            return s, None, None
        width = s.shape[-1] + n_ids
        mean = (s.sum(-1, keepdim=True) + (1.0 if n_ids else 0.0)) / width
        sq = ((s - mean) ** 2).sum(-1, keepdim=True)
        if n_ids:
            sq = sq + (1 - mean) ** 2 + (n_ids - 1) * mean ** 2  # the one-hot's entries: one 1, n_ids - 1 zeros
        rstd = torch.rsqrt(sq / width + norm.eps)
        return (s - mean) * rstd, mean, rstd

    def forward_shared(self, s: torch.Tensor, n_agents: int, ids: bool, normed: tuple | None = None,
                       members: torch.Tensor | None = None) -> torch.Tensor:
        """Each network p applied to [s[p], one_hot(a)] (ids) or to s[p] (no ids) for every agent a, without
        making the per-agent inputs: s [P, ..., Ds] -> [P, ..., n_agents, out], equal to `forward` on them.

        A centralised critic sees one state for all agents, so the first Linear's state part, the largest
        product, is computed once per state and each agent adds its id column: W [s^, (e_a - m) r] + c =
        W_s s^ + r (W_id[:, a] - m W_id 1) + c. normed: `shared_norm`(s) computed already; members as `forward`.
        """
        P, lead = s.shape[0], s.shape[1:-1]
        n_ids = n_agents if ids else 0
        x, mean, rstd = normed if normed is not None else self.shared_norm(s, n_ids)
        x = x.reshape(P, -1, x.shape[-1])
        layers = self._layers(members)
        w, c = layers[0]
        width = x.shape[-1]
        h = torch.baddbmm(c.unsqueeze(1), x, w[..., :width].transpose(1, 2))  # [P, R, H]: once per state
        if n_ids:
            w_id = w[..., width:].transpose(1, 2)  # [P, A, H]
            if mean is None:
                h = h.unsqueeze(2) + w_id.unsqueeze(1)
            else:
                mean, rstd = mean.reshape(P, -1, 1, 1), rstd.reshape(P, -1, 1, 1)
                h = h.unsqueeze(2) + rstd * (w_id.unsqueeze(1) - mean * w_id.sum(1)[:, None, None, :])
        else:
            h = h.unsqueeze(2)  # every agent's input is the state: one output, shared below
        rest = iter(layers[1:])
        linears = 0
        for kind, _, mod in self._plan:
            if kind == "linear":
                linears += 1
                if linears == 1:
                    h = h.reshape(P, -1, h.shape[-1])
                    continue
                w, c = next(rest)
                h = torch.baddbmm(c.unsqueeze(1), h, w.transpose(1, 2))
            elif kind == "elementwise" and linears:
                h = mod(h)
        h = h.reshape(P, *lead, max(n_ids, 1), h.shape[-1])
        return h if n_ids else h.expand(P, *lead, n_agents, h.shape[-1])

    def _layers(self, members: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each Linear's (weight [P, out, in], bias [P, out]) (of the members only, if given), the first with the
        input LayerNorm's affine folded in. Without gradients (acting, all members) they are cached until an
        optimiser step or a load changes a parameter."""
        if members is not None:
            t = {name: v[members] for name, v in self.tensors().items()}
            return self._fold(t)
        grad = torch.is_grad_enabled()
        if not grad:
            version = tuple(p._version for p in self.params.values())
            if self._folded is not None and self._folded[0] == version:
                return self._folded[1]
        out = self._fold(self.tensors())
        if not grad:
            self._folded = (version, out)
        return out

    def _fold(self, t: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The Linears' (weight, bias) of stacked tensors t, the input LayerNorm's affine folded into the first."""
        out, affine = [], None
        for kind, name, _ in self._plan:
            if kind == "norm":
                affine = t[f"{name}.weight"], t[f"{name}.bias"]  # [P, in] each
            elif kind == "linear":
                w, c = t[f"{name}.weight"], t[f"{name}.bias"]
                if affine is not None:
                    g, b = affine
                    c = torch.baddbmm(c.unsqueeze(-1), w, b.unsqueeze(-1)).squeeze(-1)  # W b + c
                    w = w * g.unsqueeze(1)  # W g
                    affine = None
                out.append((w, c))
        return out

    def one(self, p: int) -> dict[str, torch.Tensor]:
        """Policy p's parameters (copies), as a plain state dict of the template network."""
        return {n: t[p].detach().clone() for n, t in self.tensors().items()}


def _clip_per_policy(tensors: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip the gradient of each policy (dim 0 of the stacked tensors) to max_norm; returns the norms [P]."""
    grads = [t.grad for t in tensors if t.grad is not None]
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads)
    norm = sq.sqrt()
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.reshape(-1, *([1] * (g.dim() - 1))))
    return norm


class CMORL:
    """The C-MORL learner (marl's Learner, with BudgetAware, EvaluatesPolicies and ParetoFront)."""

    def __init__(self, spec: EnvSpec, cfg: dict, seed: int = 0, device: str = "cpu"):
        if spec.reward_dim < 2:
            raise ValueError(f"cmorl learns a front of trade-offs between objectives; {spec.name or 'this environment'}"
                             " has one reward: set env.objectives (smac: combat,safety) or train --algo mappo")
        self.spec, self.cfg, self.device = spec, cfg, torch.device(device)
        self.K = spec.reward_dim
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self._eye = torch.eye(spec.n_agents, device=self.device)
        self.archive = ParetoArchive(self.K, cfg["archive_size"])
        self.evaluator: Evaluator | None = None
        self.stage, self.updates, self.fraction, self.stage2_round = 1, 0, 0.0, 0
        self.eval_seed = seed + 4_000_037
        self.n_envs = 0  # E of the training rollouts, known at the first update
        self.last_metrics: dict = {}
        self._fresh_eval = False
        self._chosen: dict | None = None  # use_preference's policy, for marl eval
        self._routes: dict = {}  # _routing's cache
        self._shard: tuple[int, int] | None = None  # (offset, total) of the battles a shard's copy acts on
        weights = np.asarray(cfg["stage1_preferences"] or stage1_preferences(self.K), np.float64)
        for w in weights:
            check_preference(w, self.K, spec.reward_names)
        ids = self.spec.n_agents if cfg["agent_id"] else 0
        actors = [self._template(spec.n_actions, spec.obs_dim + ids, 0.01) for _ in weights]
        critics = [self._template(self.K, spec.state_dim + ids, 1.0) for _ in weights]
        self._install(actors, critics, weights, np.zeros((len(weights), self.K), bool),
                      np.zeros((len(weights), self.K)), [-1] * len(weights), None)

    # ------------------------------------------------------------------ the population
    def _install(self, actors, critics, weights, constrained, margins, parents, norm_state) -> None:
        """Make the stacked networks, value statistics and optimisers of a new population."""
        cfg = self.cfg
        self.actor = Stacked(actors).to(self.device)
        self.critic = Stacked(critics).to(self.device)
        P = self.actor.size
        self.value_norm = ValueNorm(shape=(P, self.K)).to(self.device)
        if norm_state is not None:
            self.value_norm.load_state_dict(norm_state)
        self.weights = torch.as_tensor(np.asarray(weights), dtype=torch.float32, device=self.device)  # [P, K]
        self.constrained = torch.as_tensor(np.asarray(constrained), dtype=torch.bool, device=self.device)  # [P, K]
        self.thresholds = torch.as_tensor(np.asarray(margins), dtype=torch.float32, device=self.device)  # [P, K] c_j
        self.parents = list(parents)  # archive id each branch was copied from (-1: Stage 1)
        self.last_returns = torch.zeros(P, self.K, device=self.device)  # evaluated G of each policy, for R_j
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg["lr"], eps=cfg["adam_eps"])
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg["critic_lr"], eps=cfg["adam_eps"])

    @property
    def n_policies(self) -> int:
        """P, the policies acting and learning now."""
        return self.actor.size

    def _template(self, outputs: int, inputs: int, gain: float) -> nn.Module:
        """A network of the population's shape (for payloads and single-policy acting)."""
        return mlp(inputs, self.cfg["hidden"], self.cfg["layers"], outputs, gain, self.cfg["input_norm"])

    def _payload(self, p: int) -> dict:
        """Policy p's weights and value statistics, as the archive keeps them."""
        vn = self.value_norm
        return {"actor": self.actor.one(p), "critic": self.critic.one(p),
                "value_norm": {"mean": vn.mean[p].clone(), "mean_sq": vn.mean_sq[p].clone(),
                               "debias": vn.debias[p].clone()}}

    # ------------------------------------------------------------------ inputs
    def _with_id(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg["agent_id"]:
            return x
        return torch.cat([x, self._eye.expand(*x.shape[:-1], -1)], -1)

    def _actor_in(self, obs) -> torch.Tensor:
        return self._with_id(torch.as_tensor(obs, device=self.device))

    def _critic_in(self, state) -> torch.Tensor:
        s = torch.as_tensor(state, device=self.device)
        s = s.unsqueeze(-2).expand(*s.shape[:-1], self.spec.n_agents, s.shape[-1])
        return self._with_id(s)

    def _routing(self, owner: np.ndarray, n_policies: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`route` as tensors, and each row's place in the padded [P * S] layout; cached (acting reuses it)."""
        key = (owner.tobytes(), len(owner), n_policies)
        if key not in self._routes:
            index, valid = route(owner, n_policies)
            place = np.empty(len(owner), np.int64)
            place[index[valid]] = np.flatnonzero(valid.reshape(-1))
            if len(self._routes) > 64:  # owners of final states vary; the slices' few do not
                self._routes.clear()
            self._routes[key] = (torch.as_tensor(index, device=self.device), torch.as_tensor(place, device=self.device))
        return self._routes[key]

    def _per_policy(self, net: Stacked, x: torch.Tensor, owner: np.ndarray) -> torch.Tensor:
        """Rows x [n, ...] each through its owner's network, in one batched forward: [n, ...out]."""
        index, place = self._routing(owner, net.size)
        out = net(x[index])  # [P, S, ...]
        return out.reshape(-1, *out.shape[2:])[place]

    def _critic_rows(self, state: np.ndarray, owner: np.ndarray) -> torch.Tensor:
        """Critic outputs [n, A, K] of states [n, state_dim], each by its owner's critic (one batched forward)."""
        index, place = self._routing(owner, self.critic.size)
        out = self.critic.forward_shared(torch.as_tensor(state, device=self.device)[index], self.spec.n_agents,
                                         self.cfg["agent_id"])  # [P, S, A, K]
        return out.reshape(-1, *out.shape[2:])[place]

    def _values(self, state: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Denormalised values [n, A, K] of states [n, state_dim] by their owners' critics."""
        with torch.no_grad():
            v = self._critic_rows(state, owner)
            mean, std = self.value_norm.stats()
            o = torch.as_tensor(owner, device=self.device)
            v = v * std[o][:, None] + mean[o][:, None]
        return v.cpu().numpy()

    # ------------------------------------------------------------------ acting
    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Every policy acts on its slice of the E environments, all in one batched forward."""
        if self._chosen is not None:
            return self._act_chosen(step), {}
        owner = self._owners(step.n_envs)
        with torch.no_grad():
            avail = torch.as_tensor(step.avail, device=self.device)
            logits = masked_logits(self._per_policy(self.actor, self._actor_in(step.obs), owner), avail)
            if deterministic:
                return logits.argmax(-1).cpu().numpy(), {}
            actions, log_prob = sample_actions(logits, self.generator)
            value = self._critic_rows(step.state, owner)
        return actions.cpu().numpy(), {"log_prob": log_prob.cpu().numpy(), "value": value.cpu().numpy()}

    def _owners(self, n_envs: int) -> np.ndarray:
        """Which policy acts on each battle of a Step: its slice of all the run's battles (global indices)."""
        if self._shard is None:
            return slices(n_envs, self.n_policies)
        offset, total = self._shard
        return slices(total, self.n_policies)[offset: offset + n_envs]

    def act_alone(self, p: int, step: Step) -> np.ndarray:
        """Policy p's deterministic actions on every environment of a Step, through its own unstacked network."""
        ids = self.spec.n_agents if self.cfg["agent_id"] else 0
        net = self._template(self.spec.n_actions, self.spec.obs_dim + ids, 0.01).to(self.device)
        net.load_state_dict(self.actor.one(p))
        with torch.no_grad():
            logits = masked_logits(net(self._actor_in(step.obs)), torch.as_tensor(step.avail, device=self.device))
        return logits.argmax(-1).cpu().numpy()

    # ------------------------------------------------------------------ learning
    def set_budget_fraction(self, fraction: float) -> None:
        """BudgetAware: Stage 1 ends once stage1_fraction of the budget is done; the population's learning rates
        follow `lr_decay` over the whole budget (a Stage-2 branch's new optimisers from its next update on)."""
        self.fraction = float(fraction)
        follow_lr_schedule(self.cfg, fraction, {"lr": self.actor_opt, "critic_lr": self.critic_opt})

    def update(self, rollout: Rollout) -> dict:
        """One PPO update of the whole population; evaluations, archive and Stage-2 selections on schedule."""
        cfg = self.cfg
        self.n_envs = rollout.n_envs
        stats = self._ppo(rollout)
        self.updates += 1
        if self.stage == 1 and self.fraction >= cfg["stage1_fraction"]:
            self._evaluate_population()
            self._start_round()
        elif self.stage == 2 and self.updates % cfg["select_every"] == 0:
            self._evaluate_population()
            self._start_round()
        elif cfg["eval_every"] and self.updates % cfg["eval_every"] == 0:
            self._evaluate_population()
        stats.update(stage=float(self.stage), policies=float(self.n_policies), archive=float(len(self.archive)))
        return stats

    def _ppo(self, rollout: Rollout) -> dict:
        """PPO epochs of all P policies at once on their own slices (scalarised w . A, plus Stage 2's barrier)."""
        cfg, P, K = self.cfg, self.n_policies, self.K
        E, A = rollout.n_envs, self.spec.n_agents
        owner = slices(E, P)
        mean, std = self.value_norm.stats()
        o = torch.as_tensor(owner, device=self.device)
        values = (torch.as_tensor(rollout.extras["value"], device=self.device) * std[o][:, None]
                  + mean[o][:, None]).cpu().numpy()  # [T, E, A, K] in return units
        bootstrap = self._values(rollout.next_state, owner)
        final = self._values(rollout.final_state, owner[rollout.final_e]) if len(rollout.final_t) else \
            np.zeros((0, A, K), np.float32)
        adv, returns = rollout_advantages(rollout, values, bootstrap, final, cfg["gamma"], cfg["gae_lambda"])

        # [T, E, ...] -> [G, N = S * T, ...] per group of the G policies whose slices have S environments: no
        # padding (slices differ in size by at most one, so there are one or two groups)
        sizes = np.bincount(owner, minlength=P)
        actor_in = self._actor_in(rollout.obs)  # [T, E, A, D]
        groups = [self._group(rollout, np.flatnonzero(sizes == size), owner, adv, returns, actor_in)
                  for size in np.unique(sizes)]
        if len(groups) == 1:
            groups[0]["members"] = None  # every policy, in order: no parameter gather
        stats = Stats()
        for _ in range(cfg["ppo_epochs"]):
            if cfg["minibatches"] == 1:  # the whole batch: a mean over it needs no shuffling (nor its copy)
                batches = [[slice(None)] * len(groups)]
            else:
                batches = zip(*[torch.randperm(g["n"], generator=self.generator).to(self.device)
                                .chunk(cfg["minibatches"]) for g in groups])
            for idxs in batches:
                # every loss term is per policy: masked means over each policy's own rows, summed, as each
                # policy's parameters get only its own term's gradient
                parts = [self._actor_terms(g, idx) for g, idx in zip(groups, idxs)]
                self.actor_opt.zero_grad()
                sum(part.pop("loss") for part in parts).backward()
                gn = _clip_per_policy(list(self.actor.parameters()), cfg["max_grad_norm"])
                self.actor_opt.step()

                v_loss = torch.cat([self._value_loss(g, idx) for g, idx in zip(groups, idxs)])
                self.critic_opt.zero_grad()
                (cfg["value_coef"] * v_loss.sum()).backward()
                cgn = _clip_per_policy(list(self.critic.parameters()), cfg["max_grad_norm"])
                self.critic_opt.step()
                per = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
                stats.add(policy_loss=per["policy_loss"].mean(), value_loss=v_loss.mean(),
                          entropy=per["entropy"].mean(), barrier=per["barrier"].mean(),
                          barrier_clamped=per["clamped"].sum(), approx_kl=per["approx_kl"].mean(),
                          clip_frac=per["clip_frac"].mean(), grad_norm=gn.mean(), critic_grad_norm=cgn.mean())
        out = stats.means()
        out["barrier_clamped"] = out["barrier_clamped"] * cfg["ppo_epochs"] * cfg["minibatches"]  # a count
        return out

    def _group(self, rollout: Rollout, members: np.ndarray, owner: np.ndarray, adv: np.ndarray,
               returns: np.ndarray, actor_in: torch.Tensor) -> dict:
        """The training tensors [G, N = S * T, ...] of policies `members` (all with S environments), their value
        statistics updated, the inputs normalised once for all epochs, the advantages w . A normalised."""
        cfg, P, K, T, A = self.cfg, self.n_policies, self.K, rollout.steps, self.spec.n_agents
        envs = torch.as_tensor(np.stack([np.flatnonzero(owner == p) for p in members]), device=self.device)
        G, n = len(members), envs.shape[1] * T

        def gather(x, dtype=torch.float32) -> torch.Tensor:
            t = torch.as_tensor(x, device=self.device).transpose(0, 1)[envs]  # [G, S, T, ...]
            t = t.reshape(G, n, *t.shape[3:])
            return t if dtype is None else t.to(dtype)

        who = torch.as_tensor(members, device=self.device)
        g = {"members": who, "n": n, "mask": gather(rollout.alive), "adv": gather(adv), "state": gather(rollout.state),
             "old_values": gather(rollout.extras["value"]), "old_logp": gather(rollout.extras["log_prob"]),
             "avail": gather(rollout.avail, None), "actions": gather(rollout.actions, None),
             "margin": (self.last_returns - self.thresholds)[who],  # the last evaluated G_j - c_j
             "constrained": self.constrained[who]}
        ret = gather(returns)  # [G, N, A, K]
        scal = (g["adv"] * self.weights[who][:, None, None, :]).sum(-1)  # w . A per policy
        g["norm_adv"] = normalize_advantages(scal, g["mask"], batch_dims=1)  # over each policy's living agents
        full = ret.new_zeros(n * A, P, K)  # the value statistics of the members see their own living agents
        seen = ret.new_zeros(n * A, P, 1)
        full[:, who] = ret.permute(1, 2, 0, 3).reshape(n * A, G, K)
        seen[:, who] = g["mask"].permute(1, 2, 0).reshape(n * A, G, 1)
        self.value_norm.update(full, seen)
        mean, std = self.value_norm.stats()
        g["targets"] = (ret - mean[who][:, None, None, :]) / std[who][:, None, None, :]
        # the input LayerNorms have no parameters left (Stacked folds their affine part into the first Linear)
        # and the inputs need no gradient, so they are normalised once for all epochs (the critic's per state:
        # it adds each agent's id after its first product, Stacked.forward_shared)
        g["actor_x"] = self.actor.normalize(gather(actor_in, None))
        g["state_x"] = self.critic.shared_norm(g["state"], A if cfg["agent_id"] else 0)
        return g

    def _actor_terms(self, g: dict, idx) -> dict:
        """A group's actor loss (summed over its policies) and its per-policy terms ([G] each, detached)."""
        cfg, m = self.cfg, g["mask"][:, idx]
        logits = masked_logits(self.actor(g["actor_x"][:, idx], normalized=True, members=g["members"]),
                               g["avail"][:, idx])
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, g["actions"][:, idx].unsqueeze(-1)).squeeze(-1)  # [G, b, A]
        old = g["old_logp"][:, idx]
        p_loss, info = policy_loss(logp, old, g["norm_adv"][:, idx], cfg["clip"], m, batch_dims=1)
        entropy = masked_entropy(logp_all, m, batch_dims=1)
        b_loss, clamped = barrier(torch.exp(logp - old), g["adv"][:, idx], g["margin"], g["constrained"], m,
                                  cfg["barrier_t"])
        loss = (p_loss - cfg["entropy_coef"] * entropy + b_loss).sum()
        return {"loss": loss, "policy_loss": p_loss.detach(), "entropy": entropy.detach(), "barrier": b_loss.detach(),
                "clamped": clamped, **info}

    def _value_loss(self, g: dict, idx) -> torch.Tensor:
        """A group's per-policy value losses [G]."""
        cfg = self.cfg
        normed = tuple(x if x is None else x[:, idx] for x in g["state_x"])
        v = self.critic.forward_shared(g["state"][:, idx], self.spec.n_agents, cfg["agent_id"], normed,
                                       g["members"])  # [G, b, A, K]
        return value_loss(v, g["old_values"][:, idx], g["targets"][:, idx], cfg["clip"], cfg["huber_delta"],
                          cfg["value_clip"], g["mask"][:, idx].unsqueeze(-1), batch_dims=1)

    # ------------------------------------------------------------------ evaluation, archive, Stage 2
    def attach_evaluator(self, evaluator: Evaluator) -> None:
        """EvaluatesPolicies: the trainer's evaluator, on battles training does not step."""
        self.evaluator = evaluator

    def evaluate_policies(self) -> np.ndarray:
        """Every policy's mean discounted return [P, K] over eval_episodes deterministic episodes, in one call."""
        if self.evaluator is None:
            raise RuntimeError("cmorl evaluates its policies with the trainer's evaluator: attach_evaluator first")
        cfg, P = self.cfg, self.n_policies
        slots = cfg["eval_envs"]
        owner = slices(P * slots, P)  # slots per policy, contiguous: the act() rule with E = P * slots
        played = self.evaluator(lambda step: self.act(step, deterministic=True)[0], P * slots,
                                cfg["eval_episodes"], self.eval_seed + self.updates, cfg["gamma"])
        who = owner[played["env"]]
        disc = np.asarray(played["discounted_return"], np.float64).reshape(len(who), self.K)
        return np.stack([disc[who == p].mean(0) for p in range(P)])

    def _evaluate_population(self) -> None:
        """Evaluate all policies; each enters the archive if no archived policy dominates it."""
        G = self.evaluate_policies()
        self.last_returns = torch.as_tensor(G, dtype=torch.float32, device=self.device)
        for p in range(self.n_policies):
            self.archive.add(G[p], self._payload(p), weight=self.weights[p].tolist(), stage=self.stage,
                             update=self.updates, parent=self.parents[p], gamma=self.cfg["gamma"],
                             episode_cap=self.spec.episode_limit, episodes=self.cfg["eval_episodes"])
        self.last_metrics = self.front_metrics()
        self._fresh_eval = True

    def _start_round(self) -> None:
        """Stage 2: select archived policies and start their branches, one per objective (if any are left)."""
        cfg, K = self.cfg, self.K
        n = cfg["select"] if cfg["select"] is not None else default_select(K)
        room = max(1, self.n_envs // K)  # every branch needs an environment of its own
        chosen = self.archive.select(min(n, room))
        self.stage = 2
        if not chosen:
            return  # every archived policy was selected already: the branches train on
        self.stage2_round += 1
        ids = self.spec.n_agents if cfg["agent_id"] else 0
        actors, critics, weights, constrained, thresholds, parents, norms = [], [], [], [], [], [], []
        beta = cfg["barrier_beta"]
        for entry in chosen:
            G = entry.returns
            for obj in range(K):
                a = self._template(self.spec.n_actions, self.spec.obs_dim + ids, 0.01)
                a.load_state_dict(entry.payload["actor"])
                c = self._template(K, self.spec.state_dim + ids, 1.0)
                c.load_state_dict(entry.payload["critic"])
                actors.append(a)
                critics.append(c)
                weights.append(np.eye(K)[obj])
                con = np.ones(K, bool)
                con[obj] = False
                constrained.append(con)
                thresholds.append(G - (1 - beta) * np.abs(G))
                parents.append(entry.id)
                norms.append(entry.payload["value_norm"])
        norm_state = {k: torch.stack([torch.as_tensor(nm[k]) for nm in norms]) for k in ("mean", "mean_sq", "debias")}
        self._install([a.to(self.device) for a in actors], [c.to(self.device) for c in critics], np.stack(weights),
                      np.stack(constrained), np.stack(thresholds), parents, norm_state)
        self.last_returns = torch.as_tensor(np.repeat(np.stack([e.returns for e in chosen]), K, axis=0),
                                            dtype=torch.float32, device=self.device)

    def reference_point(self) -> np.ndarray | None:
        """The HV reference point: algo.hv_ref, else the environment's fixed one for known objectives (SMAC)."""
        if self.cfg["hv_ref"] is not None:
            return np.asarray(self.cfg["hv_ref"], np.float64)
        from marl.envs.smac.env import OBJECTIVES

        if all(n in OBJECTIVES for n in self.spec.reward_names):
            return np.array([OBJECTIVES[n] for n in self.spec.reward_names])
        return None

    def front_metrics(self) -> dict:
        """HV (when a reference point is known), EU over the weight grid and SP of the archive."""
        pts = self.archive.returns()
        if not len(pts):
            return {}
        out = {"pareto/eu": expected_utility(pts, weight_grid(self.K, 100 if self.K <= 3 else 10)),
               "pareto/sp": sparsity(pts), "pareto/size": float(len(pts))}
        ref = self.reference_point()
        if ref is not None:
            out["pareto/hv"] = hypervolume(pts, ref, strict=False)
        return out

    # ------------------------------------------------------------------ ParetoFront
    def pareto_archive(self) -> ParetoArchive:
        """ParetoFront: the archive of evaluated policies."""
        return self.archive

    def use_preference(self, preference):
        """ParetoFront: act deterministically with the archived policy of the best w . G; returns its entry."""
        entry = self.archive.best(check_preference(preference, self.K, self.spec.reward_names))
        ids = self.spec.n_agents if self.cfg["agent_id"] else 0
        net = self._template(self.spec.n_actions, self.spec.obs_dim + ids, 0.01).to(self.device)
        net.load_state_dict(entry.payload["actor"])
        self._chosen = {"net": net, "entry": entry}
        return entry

    def _act_chosen(self, step: Step) -> np.ndarray:
        with torch.no_grad():
            logits = masked_logits(self._chosen["net"](self._actor_in(step.obs)),
                                   torch.as_tensor(step.avail, device=self.device))
        return logits.argmax(-1).cpu().numpy()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The population, its optimisers and statistics, the stage, the generator and the whole archive."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "value_norm": self.value_norm.state_dict(), "weights": self.weights.clone(),
                "constrained": self.constrained.clone(), "thresholds": self.thresholds.clone(),
                "last_returns": self.last_returns.clone(), "parents": list(self.parents),
                "stage": self.stage, "updates": self.updates, "stage2_round": self.stage2_round,
                "fraction": self.fraction, "generator": self.generator.get_state(),
                "archive": self.archive.state_dict(), "reward_names": list(self.spec.reward_names)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict() (the population's size may be Stage 2's)."""
        P = state["weights"].shape[0]
        ids = self.spec.n_agents if self.cfg["agent_id"] else 0
        actors = [self._template(self.spec.n_actions, self.spec.obs_dim + ids, 0.01) for _ in range(P)]
        critics = [self._template(self.K, self.spec.state_dim + ids, 1.0) for _ in range(P)]
        self._install([a.to(self.device) for a in actors], [c.to(self.device) for c in critics],
                      state["weights"].cpu().numpy(), state["constrained"].cpu().numpy(),
                      state["thresholds"].cpu().numpy(), state["parents"], state["value_norm"])
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.last_returns = state["last_returns"].to(self.device)
        self.stage, self.updates = int(state["stage"]), int(state["updates"])
        self.stage2_round, self.fraction = int(state["stage2_round"]), float(state["fraction"])
        self.generator.set_state(state["generator"])
        self.archive.load_state_dict(state["archive"])

    # ------------------------------------------------------------------ acting in shards (ActingState)
    def acting_state(self) -> dict:
        """The population's networks and preferences (their number, Stage 2's) and the sampling generator."""
        return {"policy": {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                           "weights": self.weights.clone(), "value_norm": self.value_norm.state_dict()},
                "shard": {"generator": self.generator.get_state()}}

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() given; a population of another size is rebuilt to fit."""
        if "policy" in state:
            p = state["policy"]
            P = p["weights"].shape[0]
            if P != self.n_policies:
                ids = self.spec.n_agents if self.cfg["agent_id"] else 0
                actors = [self._template(self.spec.n_actions, self.spec.obs_dim + ids, 0.01) for _ in range(P)]
                critics = [self._template(self.K, self.spec.state_dim + ids, 1.0) for _ in range(P)]
                self._install([a.to(self.device) for a in actors], [c.to(self.device) for c in critics],
                              p["weights"].cpu().numpy(), np.zeros((P, self.K), bool), np.zeros((P, self.K)),
                              [-1] * P, p["value_norm"])
            self.actor.load_state_dict(p["actor"])
            self.critic.load_state_dict(p["critic"])
            self.weights = p["weights"].to(self.device)
        if "shard" in state:
            self.generator.set_state(state["shard"]["generator"])

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """Act on battles offset.. of `total` (each policy keeps its slice of all battles) from a stream of its own."""
        self._shard = (int(offset), int(total))
        self.generator = torch.Generator().manual_seed(seed)

    def prepare_acting(self, step: Step) -> None:
        """Nothing to settle before acting."""

    def diagnostics(self) -> dict:
        """After an evaluation: HV, EU, SP as scalars and the front as a picture; else nothing."""
        if not self._fresh_eval:
            return {}
        self._fresh_eval = False
        from marl.pareto import front_image

        pts = self.archive.returns()
        return {"scalars": dict(self.last_metrics),
                "images": {"pareto/front": front_image(pts, self.spec.reward_names, self.reference_point())}}

