"""MRA (meta representations for agents): one policy for SMAC teams of any size, top to bottom in one file.

Each agent's observation is cut into entity tokens along `EnvSpec.obs_layout` (its own features with the
move flags, one token per other ally, one per enemy); a relational encoder attends over them with a
mask taken from the absent rows (dead, unseen or padded units read as zeros), so no parameter depends
on the number of units. Its last layer has K mode heads (`algo.latent_modes`): each agent holds a
latent mode z, drawn once per episode as a hard Gumbel-softmax sample from a game-conditioned prior,
and z picks the head whose relation the policy reads. The prior is an MLP of the team size
(n_agents/10, n_enemies/10), so a team size never trained on still has one. Attacks are scored per
enemy token (action 6 + j against enemy token j), a Medivac's heals per ally token (slot 6 + j heals
agent j), so any number of units fits. The critic is centralised over the state's entity tokens
(`EnvSpec.state_layout`: allies, enemies, last actions) and gives each agent a value from its own
token.

Two extra terms, as in the paper: the mutual information I(a; z | s), estimated as
log pi(a|s,z) - log sum_z' prior(z') pi(a|s,z') (the exact expectation over the K modes rather than the
authors' 5 resampled z'), weighted by `algo.mi_coef`; and a game-identification head that predicts
which training scenario a battle plays from the agent's own token, its relation and z, a
cross-entropy weighted by `algo.game_id_coef`. Its classes are scored against an embedding of each
game's team size, so no parameter depends on the number of training scenarios either. The prior
learns through the straight-through sample of the stored z (forward: the one-hot z the agent played;
backward: the prior's probabilities), from the policy loss and the game-ID loss.

Training is PPO on the shared engine (agents/ppo.py). The authors trained MRA with an off-policy
learner (their code: a replay buffer and separate Adam optimisers, lr 3e-4); this is our on-policy
reading of it, so it runs on marl's collect/update loop and is comparable with MAPPO.

What is computed: only the living agents' rows go through the actor (a dead or padded agent's only action
is the no-op), and within a row only the present tokens through its token-wise layers (the attentions
see them on the dense padded grid); all K modes' logits are computed, as the MI term needs them.

`algo.latent_modes=1 algo.mi_coef=0 algo.game_id_coef=0` is the entity-PPO ablation: the same encoder
and heads with one mode and no extra terms.

Evaluation (act with deterministic=True) takes the argmax action; its latent z is drawn from the prior
with a generator of its own (`algo.eval_latent=sample`), or is the prior's most likely mode
(`mode`). Training's and evaluation's held z live apart, so an evaluation never disturbs the
episodes under way in training. `marl adapt` (marl/adapt.py) moves only a game's prior logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marl.agents.ppo import (
    Stats,
    ValueNorm,
    follow_lr_schedule,
    masked_entropy,
    masked_logits,
    masked_mean,
    policy_loss,
    ppo_targets,
    sample_actions,
    value_loss,
)
from marl.spec import EnvSpec, Rollout, Step

N_BASIC = 6  # SMAC's no-op, stop and four moves come before the attack (or heal) slots


# ----------------------------------------------------------------------------------------------- spec checks
def layout_problem(spec: EnvSpec) -> str | None:
    """Why MRA cannot read this environment's observations and state as entities (None: it can)."""
    obs = {b.name: b for b in spec.obs_layout}
    state = {b.name: b for b in spec.state_layout}
    if not {"move", "enemy", "ally", "own"} <= set(obs):
        return (f"mra reads entity tokens from the observation's blocks move, enemy, ally and own, but "
                f"{spec.name or 'this environment'} has {', '.join(obs) or 'no obs_layout'}; use a SMAC map")
    if not {"ally", "enemy"} <= set(state):
        return (f"mra's critic reads the state's ally and enemy blocks, but {spec.name or 'this environment'} has "
                f"{', '.join(state) or 'no state_layout'} (env.obs_instead_of_state must stay false)")
    if spec.n_actions != N_BASIC + obs["enemy"].count:
        return f"mra expects {N_BASIC} + one action per enemy, got {spec.n_actions} actions for " \
               f"{obs['enemy'].count} enemies"
    if "last_action" in state and state["last_action"].width != spec.n_actions:
        return "mra expects the state's last actions to be one-hot over the actions"
    return None


def game_features(spec: EnvSpec) -> tuple[int, int]:
    """A game's team sizes (n_agents, n_enemies): what the prior and the game-ID head know of a game."""
    enemy = next(b for b in spec.obs_layout if b.name == "enemy")
    return spec.n_agents, enemy.count


def games_of(spec: EnvSpec) -> tuple[EnvSpec, ...]:
    """The member scenarios of a VecEnv (its own spec when it plays one), indexed by Step.scenario."""
    return spec.scenarios or (spec,)


# ----------------------------------------------------------------------------------------------- tokens
class Tokens:
    """Cuts flat observations and states into entity tokens along the spec's layouts (no parameters).

    Actor: own [.., own_w] (move flags, own features, timestep), allies [.., A-1, ally_w], enemies
    [.., n_e, enemy_w]. Critic: allies [.., A, w] (state row, the last action's first six entries, the
    timestep), enemies [.., n_e, w] (state row, how many agents attacked it last step). A row of zeros
    is an absent entity (dead, unseen or padding).
    """

    def __init__(self, spec: EnvSpec):
        self.A = spec.n_agents
        self.n_actions = spec.n_actions
        o, s = spec.block_slices(), spec.block_slices(spec.state_layout)
        ob = {b.name: b for b in spec.obs_layout}
        sb = {b.name: b for b in spec.state_layout}
        self.o, self.s, self.ob, self.sb = o, s, ob, sb
        self.n_enemies = ob["enemy"].count
        self.own_w = ob["move"].size + ob["own"].size + (ob["timestep"].size if "timestep" in ob else 0)
        self.ally_w, self.enemy_w = ob["ally"].width, ob["enemy"].width
        self.last_action = "last_action" in sb
        self.timestep = "timestep" in sb
        self.s_ally_w = sb["ally"].width + (N_BASIC if self.last_action else 0) + int(self.timestep)
        self.s_enemy_w = sb["enemy"].width + int(self.last_action)

    def actor(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """own [B, own_w], allies [B, A-1, ally_w], enemies [B, n_e, enemy_w] of observations [B, obs_dim]."""
        o, ob = self.o, self.ob
        parts = [obs[:, o["move"]], obs[:, o["own"]]] + ([obs[:, o["timestep"]]] if "timestep" in o else [])
        B = obs.shape[0]
        allies = obs[:, o["ally"]].reshape(B, ob["ally"].count, ob["ally"].width)
        enemies = obs[:, o["enemy"]].reshape(B, ob["enemy"].count, ob["enemy"].width)
        return torch.cat(parts, -1), allies, enemies

    def critic(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """allies [B, A, w], enemies [B, n_e, w] and their presence masks, of states [B, state_dim]."""
        s, sb, B = self.s, self.sb, state.shape[0]
        ally = state[:, s["ally"]].reshape(B, self.A, sb["ally"].width)
        enemy = state[:, s["enemy"]].reshape(B, self.n_enemies, sb["enemy"].width)
        ally_present, enemy_present = ally.abs().sum(-1) > 0, enemy.abs().sum(-1) > 0
        a_parts, e_parts = [ally], [enemy]
        if self.last_action:
            # split by meaning so no width depends on the team: the basic action per agent, and per enemy the
            # number of agents that attacked it (a Medivac's heal of agent j lands on enemy j's count)
            la = state[:, s["last_action"]].reshape(B, self.A, self.n_actions)
            a_parts.append(la[..., :N_BASIC])
            e_parts.append(la[..., N_BASIC:].sum(1).unsqueeze(-1))
        if self.timestep:
            a_parts.append(state[:, s["timestep"]].unsqueeze(1).expand(-1, self.A, 1))
        return torch.cat(a_parts, -1), torch.cat(e_parts, -1), ally_present, enemy_present


def heal_index(n_agents: int, n_slots: int) -> torch.Tensor:
    """int[A, n_slots]: agent i's ally row that slot j (heal agent j) scores, -1 for itself or past the team.

    Agent i's ally rows are the other agents in order, so agent j sits at row j below i and j - 1 above.
    """
    i = torch.arange(n_agents)[:, None]
    j = torch.arange(n_slots)[None, :]
    row = torch.where(j < i, j, j - 1)
    return torch.where((j == i) | (j >= n_agents), torch.full_like(row, -1), row)


# ----------------------------------------------------------------------------------------------- networks
def linear(inputs: int, outputs: int, gain: float = math.sqrt(2)) -> nn.Linear:
    """A Linear layer with orthogonal weights (gain) and zero bias, as agents/ppo.py's mlp."""
    lin = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(lin.weight, gain)
    nn.init.zeros_(lin.bias)
    return lin


def embed(inputs: int, d: int) -> nn.Sequential:
    """A token embedding: LayerNorm over the raw features, then a ReLU layer to d."""
    return nn.Sequential(nn.LayerNorm(inputs), linear(inputs, d), nn.ReLU())


def self_attention_mask(present: torch.Tensor) -> torch.Tensor:
    """bool[B, 1, N, N]: query i may attend to key j when j is present or j is i."""
    N = present.shape[-1]
    return present[:, None, None, :] | torch.eye(N, dtype=torch.bool, device=present.device)


def presence(allies: torch.Tensor, enemies: torch.Tensor) -> torch.Tensor:
    """bool[B, 1 + n_a + n_e]: which of an agent's tokens are present (its own always; a row of zeros is absent)."""
    own = torch.ones(allies.shape[0], 1, dtype=torch.bool, device=allies.device)
    return torch.cat([own, allies.abs().sum(-1) > 0, enemies.abs().sum(-1) > 0], 1)


class Block(nn.Module):
    """A pre-norm transformer block: masked multi-head self-attention over tokens, then a feed-forward layer."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = linear(d, 3 * d, 1.0), linear(d, d, 1.0)
        self.ff = nn.Sequential(linear(d, d), nn.ReLU(), linear(d, d, 1.0))

    def forward(self, x: torch.Tensor, present: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, d]; present bool[B, N]: absent tokens are never attended to (each token still sees itself).

        mask: self_attention_mask(present), when the caller has it already (several blocks share it)."""
        B, N, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(B, N, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if mask is None:
            mask = self_attention_mask(present)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(y.transpose(1, 2).reshape(B, N, d))
        return x + self.ff(self.ln2(x))

    def packed(self, x: torch.Tensor, tokens: torch.Tensor, B: int, N: int, mask: torch.Tensor) -> torch.Tensor:
        """The block on the present tokens only: x [P, d] are the tokens at flat positions tokens int[P] of a
        [B, N] grid (sorted); absent positions enter the attention as zero rows that no query may attend to
        (mask: self_attention_mask), so every present token's output equals forward()'s."""
        d = x.shape[1]
        qkv = self.qkv(self.ln1(x))
        dense = qkv.new_zeros(B * N, 3 * d).index_copy(0, tokens, qkv)
        q, k, v = dense.reshape(B, N, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(y.transpose(1, 2).reshape(B * N, d).index_select(0, tokens))
        return x + self.ff(self.ln2(x))


class Actor(nn.Module):
    """The relational encoder with K mode heads and the per-entity action heads (no size-dependent parameter)."""

    def __init__(self, tokens: Tokens, d: int, heads: int, modes: int, blocks: int = 1):
        super().__init__()
        self.d, self.K, self.dm = d, modes, max(d // 4, 1)
        self.own, self.ally, self.enemy = embed(tokens.own_w, d), embed(tokens.ally_w, d), embed(tokens.enemy_w, d)
        # shared self-attention among all the tokens before the mode heads (0: the mode heads alone, as the authors)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(blocks))
        # the K mode heads: one narrow query/key/value head each (width d/4), from the agent's own token over
        # every token; they are what the modes differ in
        dm = self.dm
        self.mq, self.mk, self.mv = linear(d, modes * dm, 1.0), linear(d, modes * dm, 1.0), linear(d, modes * dm, 1.0)
        # f_k = ReLU(W_own x_own + W_rel rel_k + e_k): the own token's part is computed once for the K modes
        self.feat_own, self.feat_rel = linear(d, d), linear(dm, d)
        self.mode_emb = nn.Parameter(torch.zeros(modes, d))
        self.basic = linear(d, N_BASIC, 0.01)
        # bilinear scores f_k . (W x_j): one matrix per kind, applied to each enemy (ally) token once, not per mode
        self.attack_k, self.heal_k = linear(d, d, 0.01), linear(d, d, 0.01)

    def forward(self, own: torch.Tensor, allies: torch.Tensor, enemies: torch.Tensor, present: torch.Tensor,
                heal_rows: torch.Tensor | None = None, medivac: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits of every mode [B, K, n_actions] (before masking), the own token [B, d] and relations [B, K, d/4].

        present bool[B, 1 + n_a + n_e] (presence() of the tokens); heal_rows int[B, n_slots] (heal_index of each
        agent) and medivac bool[B] say whose slots heal; without them (no Medivac in the game) every slot attacks.
        """
        B = own.shape[0]
        n_a, n_e = allies.shape[1], enemies.shape[1]
        N, K, d, dm = 1 + n_a + n_e, self.K, self.d, self.dm
        # only the present tokens go through the token-wise layers (embeddings, the blocks' projections and
        # feed-forward, the mode heads' keys and values); the attentions see them on the dense [B, N] grid, where
        # an absent token is a zero row nobody attends to. Packed in the grid's row-major order, so each kind's
        # present rows (boolean-mask order) land in place.
        tokens = present.reshape(-1).nonzero().squeeze(1)
        slot = tokens % N
        at_own, at_ally, at_enemy = (slot == 0).nonzero().squeeze(1), ((slot >= 1) & (slot <= n_a)).nonzero().squeeze(
            1), (slot > n_a).nonzero().squeeze(1)
        ally_present, enemy_present = present[:, 1:1 + n_a], present[:, 1 + n_a:]
        x = own.new_zeros(len(tokens), d).index_put((at_own,), self.own(own))
        x = x.index_put((at_ally,), self.ally(allies[ally_present])).index_put((at_enemy,),
                                                                              self.enemy(enemies[enemy_present]))
        if len(self.blocks):
            mask = self_attention_mask(present)  # once for all the blocks
            for block in self.blocks:
                x = block.packed(x, tokens, B, N, mask)
        x_own = x[at_own]  # the own token is always present: one per row, in row order
        q = self.mq(x_own).reshape(B, K, 1, dm)
        kv = torch.cat([self.mk(x), self.mv(x)], 1)
        # unbind, not kv[0] and kv[1]: a select's backward fills a zero tensor of the whole grid for each
        k, v = kv.new_zeros(B * N, 2 * K * dm).index_copy(0, tokens, kv).reshape(B, N, 2, K, dm).permute(
            2, 0, 3, 1, 4).unbind(0)
        rel = F.scaled_dot_product_attention(q, k, v, attn_mask=present[:, None, None, :]).squeeze(2)
        f = torch.relu(self.feat_own(x_own).unsqueeze(1) + self.feat_rel(rel) + self.mode_emb)  # [B, K, d]
        scale = 1.0 / math.sqrt(d)
        # bilinear scores against each present enemy (ally) token; an absent one scores 0, and is never available
        # (SMAC makes an attack or a heal available only on a unit in sight, whose row is not zeros)
        enemy_keys = x.new_zeros(B * n_e, d).index_copy(0, enemy_present.reshape(-1).nonzero().squeeze(1),
                                                        self.attack_k(x[at_enemy]))
        slots = f @ enemy_keys.reshape(B, n_e, d).transpose(1, 2) * scale  # [B, K, n_e]
        if medivac is not None:  # a game without Medivacs skips the heal scores: every slot would take the attack
            ally_keys = x.new_zeros(B * n_a, d).index_copy(0, ally_present.reshape(-1).nonzero().squeeze(1),
                                                           self.heal_k(x[at_ally]))
            heal = f @ ally_keys.reshape(B, n_a, d).transpose(1, 2) * scale  # [B, K, A-1]
            heal = torch.cat([heal, heal.new_zeros(B, K, 1)], -1)  # row -1 reads this zero column
            heal_slots = heal.gather(-1, heal_rows.clamp(min=-1).remainder(n_a + 1).unsqueeze(1).expand(B, K, n_e))
            slots = torch.where(medivac[:, None, None], heal_slots, slots)
        return {"logits": torch.cat([self.basic(f), slots], -1), "own": x_own, "relation": rel}


class Prior(nn.Module):
    """The game-conditioned prior over modes: logits MLP(n_agents/10, n_enemies/10) / temperature (the authors'
    temperature is 4; 1, the default, leaves the MLP's logits as they are, bit for bit)."""

    def __init__(self, modes: int, hidden: int = 32, temperature: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(linear(2, hidden), nn.Tanh(), linear(hidden, modes, 0.01))
        self.temperature = float(temperature)

    def forward(self, sizes: torch.Tensor) -> torch.Tensor:
        """Logits [..., K] of team sizes int[..., 2]."""
        return self.net(sizes.float() / 10.0) / self.temperature


class GameHead(nn.Module):
    """Game identification: the agent's token, relation and z, scored against an embedding of each game's sizes."""

    def __init__(self, d: int, relation: int, modes: int):
        super().__init__()
        self.query = nn.Sequential(linear(d + relation + modes, d), nn.ReLU(), linear(d, d, 1.0))
        self.game = nn.Sequential(linear(2, d), nn.ReLU(), linear(d, d, 1.0))

    def forward(self, own: torch.Tensor, relation: torch.Tensor, z: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """Logits [B, S] over the S games of sizes int[S, 2], from own [B, d], relation [B, d/4] and z [B, K]."""
        return self.query(torch.cat([own, relation, z], -1)) @ self.game(sizes.float() / 10.0).T


class Critic(nn.Module):
    """The centralised critic: a transformer block over the state's ally and enemy tokens, a value per ally."""

    def __init__(self, tokens: Tokens, d: int, heads: int):
        super().__init__()
        self.ally, self.enemy = embed(tokens.s_ally_w, d), embed(tokens.s_enemy_w, d)
        self.block = Block(d, heads)
        self.head = nn.Sequential(nn.LayerNorm(d), linear(d, d), nn.ReLU(), linear(d, 1, 1.0))

    def forward(self, allies, enemies, ally_present, enemy_present) -> torch.Tensor:
        """Values [B, A] (in the critic's space) from the tokens of Tokens.critic."""
        A = allies.shape[1]
        x = self.block(torch.cat([self.ally(allies), self.enemy(enemies)], 1),
                       torch.cat([ally_present, enemy_present], 1))
        return self.head(x[:, :A]).squeeze(-1)


# ----------------------------------------------------------------------------------------------- the two terms
def mi_estimate(logp_modes: torch.Tensor, z: torch.Tensor, prior_log_probs: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked agents of log pi(a|s,z) - log sum_k prior(k) pi(a|s,k).

    logp_modes [..., K]: log pi(a|s,k) of the action taken under each mode; z [..., K]: the one-hot
    (or straight-through) mode played; prior_log_probs [..., K]; mask [...].
    """
    own = (z * logp_modes).sum(-1)
    marginal = torch.logsumexp(logp_modes + prior_log_probs, -1)
    return masked_mean(own - marginal, mask)


def game_id_loss(logits: torch.Tensor, games: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked agents of the cross-entropy -log softmax(logits)[game]; logits [..., S], games [...]."""
    nll = -torch.log_softmax(logits, -1).gather(-1, games.unsqueeze(-1)).squeeze(-1)
    return masked_mean(nll, mask)


# ----------------------------------------------------------------------------------------------- the learner
class MRA:
    """The MRA learner (marl's Learner interface); see the module's docstring."""

    def __init__(self, spec: EnvSpec, cfg: dict, seed: int = 0, device: str = "cpu"):
        problem = layout_problem(spec)
        if problem:
            raise ValueError(problem)
        if spec.reward_dim != 1 and cfg.get("preference") is None:
            raise ValueError(f"mra learns one reward; this environment has {spec.reward_dim} objectives "
                             f"({', '.join(spec.reward_names)}): give algo.preference")
        self.spec, self.cfg, self.device = spec, cfg, torch.device(device)
        torch.manual_seed(seed)
        d, heads, K = cfg["hidden"], cfg["attn_heads"], cfg["latent_modes"]
        self.K = K
        self.tokens = Tokens(spec)
        self.actor = Actor(self.tokens, d, heads, K, cfg["encoder_blocks"]).to(self.device)
        self.prior = Prior(K, temperature=cfg.get("prior_temperature", 1.0)).to(self.device)
        self.game_head = GameHead(d, self.actor.dm, K).to(self.device)
        self.critic = Critic(self.tokens, d, heads).to(self.device)
        self.value_norm = ValueNorm().to(self.device)
        actor_params = [*self.actor.parameters(), *self.prior.parameters(), *self.game_head.parameters()]
        self.actor_opt = torch.optim.Adam(actor_params, lr=cfg["lr"], eps=cfg["adam_eps"])
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg["critic_lr"], eps=cfg["adam_eps"])
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_generator = torch.Generator().manual_seed(seed + 1)
        # per game (Step.scenario): team sizes int[S, 2] and who is a Medivac bool[S, A]
        games = games_of(spec)
        self.sizes = torch.tensor([game_features(g) for g in games], dtype=torch.long, device=self.device)
        medivac = torch.zeros(len(games), spec.n_agents, dtype=torch.bool)
        for s, g in enumerate(games):  # once, at construction: never in a forward pass
            for a, unit in enumerate(g.unit_types):
                medivac[s, a] = "medivac" in unit
        self.medivac = medivac.to(self.device)
        self.any_medivac = bool(medivac.any())  # no Medivac in any game: the actor skips the heal scores
        self.heal_rows = heal_index(spec.n_agents, self.tokens.n_enemies).to(self.device)
        # prior logits set by `marl adapt` for a team size: sizes int[M, 2] -> logits [M, K]
        self.override_sizes = torch.zeros(0, 2, dtype=torch.long)
        self.override_logits = torch.zeros(0, K)
        # held z int[E, A] of training's ("train") and evaluation's ("eval") battles, once they have acted: battle
        # state, not model shape, so a fresh learner holds none (marl eval --scenario compares model shapes only)
        self.latents: dict[str, torch.Tensor] = {}
        self._held_z: np.ndarray | None = None  # the z held at the last rollout's end (diagnostics)

    # ------------------------------------------------------------------ the prior and the latents
    def prior_logits(self, sizes: torch.Tensor) -> torch.Tensor:
        """Logits [..., K] of the prior for team sizes int[..., 2], an adapted game's own where `marl adapt` set one."""
        logits = self.prior(sizes)
        if len(self.override_sizes):
            hit = (sizes.unsqueeze(-2) == self.override_sizes.to(sizes.device)).all(-1)  # [..., M]
            chosen = self.override_logits.to(logits.device)[hit.int().argmax(-1)]
            logits = torch.where(hit.any(-1, keepdim=True), chosen, logits)
        return logits

    def _games(self, scenario) -> torch.Tensor:
        """Game index int[...] of each battle: Step.scenario, or 0 for a single scenario."""
        return torch.as_tensor(np.zeros(1, np.int64) if scenario is None else scenario, device=self.device)

    def _draw(self, games: torch.Tensor, n_agents: int, generator: torch.Generator, mode: bool) -> torch.Tensor:
        """z int[E, A]: each agent's hard Gumbel-softmax sample (tau 1) from its battle's prior (or its argmax)."""
        logits = self.prior_logits(self.sizes[games]).unsqueeze(1).expand(-1, n_agents, -1)
        if mode:
            return logits.argmax(-1)
        u = torch.rand(logits.shape, generator=generator).clamp(1e-10, 1.0 - 1e-7).to(logits.device)
        return (logits - torch.log(-torch.log(u))).argmax(-1)

    def _latents(self, step: Step, deterministic: bool) -> torch.Tensor:
        """The held z int[E, A] of the battles, redrawn where an episode starts (t == 0) or on a new set of battles."""
        key = "eval" if deterministic else "train"
        E, A = step.alive.shape
        games = self._games(step.scenario).expand(E) if step.scenario is None else self._games(step.scenario)
        mode = deterministic and self.cfg["eval_latent"] == "mode"
        gen = self.eval_generator if deterministic else self.generator
        z = self.latents.get(key)
        if z is None or z.shape != (E, A):
            z = self._draw(games, A, gen, mode)
        else:
            new = torch.as_tensor(step.t == 0)
            if bool(new.any()):
                z = torch.where(new[:, None].to(z.device), self._draw(games, A, gen, mode), z)
        self.latents[key] = z
        return z

    # ------------------------------------------------------------------ forward passes
    def actor_inputs(self, obs: torch.Tensor, agent: torch.Tensor, games: torch.Tensor) -> dict[str, torch.Tensor]:
        """The actor's parameter-free inputs for B agent rows: observations [B, obs_dim] of agents int[B] in battles
        playing games int[B] -> tokens, their presence, and (when the run has Medivacs) heal rows and Medivac flags.

        Computed once per update (they do not change between epochs); an agent's row never reads another's."""
        own, allies, enemies = self.tokens.actor(obs)
        inputs = {"own": own, "allies": allies, "enemies": enemies, "present": presence(allies, enemies)}
        if self.any_medivac:
            inputs.update(heal_rows=self.heal_rows[agent], medivac=self.medivac[games, agent])
        return inputs

    def policy(self, obs: torch.Tensor, games: torch.Tensor) -> dict[str, torch.Tensor]:
        """The actor on observations [n, A, obs_dim] of battles playing games int[n]: every mode's logits
        [n, A, K, n_actions] (unmasked), own tokens [n, A, d], relations [n, A, K, d/4]."""
        n, A = obs.shape[:2]
        agent = torch.arange(A, device=obs.device).repeat(n)
        out = self.actor(**self.actor_inputs(obs.reshape(n * A, -1), agent, games.repeat_interleave(A)))
        return {k: v.reshape(n, A, *v.shape[1:]) for k, v in out.items()}

    def _values(self, state: torch.Tensor) -> torch.Tensor:
        return self.critic(*self.tokens.critic(state))

    def values(self, state: np.ndarray) -> np.ndarray:
        """Denormalised values [n, A] of global states [n, state_dim]."""
        with torch.no_grad():
            v = self._values(torch.as_tensor(state, device=self.device))
            if self.cfg["value_norm"]:
                v = self.value_norm.denormalize(v)
        return v.cpu().numpy()

    # ------------------------------------------------------------------ acting
    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Actions under each agent's held mode: sampled (stored with log-prob, value and z), or the argmax.

        The actor runs on the living agents only: a dead (or padded) agent's only available action is the no-op,
        which it takes with probability 1 (log-prob 0) whatever its logits, so its logits are left at zero."""
        with torch.no_grad():
            z = self._latents(step, deterministic)
            E, A = step.alive.shape
            n_act = self.spec.n_actions
            games = self._games(step.scenario).expand(E) if step.scenario is None else self._games(step.scenario)
            rows = torch.as_tensor(step.alive, device=self.device).reshape(-1).nonzero().squeeze(1)
            logits = torch.zeros(E * A, n_act, device=self.device)
            if len(rows):
                obs = torch.as_tensor(step.obs, device=self.device).reshape(E * A, -1)[rows]
                out = self.actor(**self.actor_inputs(obs, rows % A, games[rows // A]))
                logits[rows] = out["logits"].gather(1, z.reshape(-1)[rows, None, None].expand(-1, 1, n_act)).squeeze(1)
            logits = masked_logits(logits.reshape(E, A, n_act), torch.as_tensor(step.avail, device=self.device))
            if deterministic:
                return logits.argmax(-1).cpu().numpy(), {}
            actions, log_prob = sample_actions(logits, self.generator)
            value = self._values(torch.as_tensor(step.state, device=self.device))
        return actions.cpu().numpy(), {"log_prob": log_prob.cpu().numpy(), "value": value.cpu().numpy(),
                                       "z": z.cpu().numpy()}

    # ------------------------------------------------------------------ learning
    def losses(self, inputs: dict[str, torch.Tensor], rows: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """The actor's loss on a minibatch of R living agent rows, and its parts: clipped policy loss -
        entropy_coef * entropy - mi_coef * MI + game_id_coef * game-ID cross-entropy, each a mean over the rows.

        inputs: actor_inputs() of the rows; rows: avail bool[R, n_actions], actions, z, games int[R],
        old_log_probs, advantages f32[R]. Only living agents enter PPO's masked means, so this equals the
        masked loss over the minibatch's [n, A] battle-steps; a dead or padded agent is never computed."""
        cfg = self.cfg
        out = self.actor(**inputs)
        avail, actions, z, games = rows["avail"], rows["actions"], rows["z"], rows["games"]
        ones = torch.ones(len(actions), device=actions.device)
        # the prior of each game once, then per row: the same values as the prior of each row's sizes
        prior_log = torch.log_softmax(self.prior_logits(self.sizes), -1)[games]  # [R, K]
        p = prior_log.exp()
        # the stored z forward, the prior's probabilities backward (straight-through), so the prior learns
        z_st = F.one_hot(z, self.K).float() + p - p.detach()
        logits = masked_logits((z_st.unsqueeze(-1) * out["logits"]).sum(1), avail)
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        entropy = masked_entropy(logp_all, ones)
        p_loss, info = policy_loss(logp, rows["old_log_probs"], rows["advantages"], cfg["clip"], ones)
        loss = p_loss - cfg["entropy_coef"] * entropy
        parts = {"policy_loss": p_loss, "entropy": entropy, **info}
        if cfg["mi_coef"] > 0 or cfg["game_id_coef"] > 0:
            rel = (z_st.unsqueeze(-1) * out["relation"]).sum(1)  # the relation of the mode played
        if cfg["mi_coef"] > 0:  # the one place every mode's logits are needed
            modes = torch.log_softmax(masked_logits(out["logits"], avail.unsqueeze(1)), -1)
            logp_modes = modes.gather(-1, actions[:, None, None].expand(-1, self.K, 1)).squeeze(-1)
            # the MI term shapes the policy's modes; the prior learns from the policy and game-ID losses only
            mi = mi_estimate(logp_modes, F.one_hot(z, self.K).float(), prior_log.detach(), ones)
            loss = loss - cfg["mi_coef"] * mi
            parts["mi"] = mi
        if cfg["game_id_coef"] > 0 and len(self.sizes) > 1:  # one game: nothing to tell apart
            g_logits = self.game_head(out["own"], rel, z_st, self.sizes)
            g_loss = game_id_loss(g_logits, games, ones)
            loss = loss + cfg["game_id_coef"] * g_loss
            with torch.no_grad():
                acc = masked_mean((g_logits.argmax(-1) == games).float(), ones)
            parts.update(game_id_loss=g_loss, game_id_acc=acc)
        return loss, parts

    def set_budget_fraction(self, fraction: float) -> None:
        """BudgetAware: the actor's and critic's learning rates follow `lr_decay` (none: constant)."""
        follow_lr_schedule(self.cfg, fraction, {"lr": self.actor_opt, "critic_lr": self.critic_opt})

    def update(self, rollout: Rollout) -> dict:
        """PPO epochs over the rollout's battle-steps; returns the losses, MI, game-ID accuracy, KL, grad norms.

        The tokens, masks and per-row data of the living agents are built once; each minibatch (a set of
        battle-steps, as before) takes its living agents' rows. One minibatch takes them all, unpermuted: the
        permutation is still drawn, so the generator's stream is that of any number of minibatches."""
        cfg = self.cfg
        # the z the battles held at the rollout's last step (the shards' when copies acted), for diagnostics()
        self._held_z = np.asarray(rollout.extras["z"][-1])
        value_norm = self.value_norm if cfg["value_norm"] else None
        T, E, A = rollout.alive.shape
        batch = ppo_targets(rollout, lambda obs, state, alive: self.values(state), cfg["gamma"], cfg["gae_lambda"],
                            value_norm, self.device, cfg.get("preference")).reshape(T * E, A)
        n = T * E
        dev = self.device
        games = (torch.zeros(n, dtype=torch.long, device=dev) if rollout.scenario is None
                 else torch.as_tensor(rollout.scenario, device=dev).reshape(n))
        flat = batch.mask.reshape(-1) > 0
        row = flat.nonzero().squeeze(1)  # the living agents' rows of the [n * A] battle-step agents
        step_of, agent = row // A, row % A
        obs = torch.as_tensor(rollout.obs, device=dev).reshape(n * A, -1)[row]
        inputs = self.actor_inputs(obs, agent, games[step_of])
        rows = {"avail": torch.as_tensor(rollout.avail, device=dev).reshape(n * A, -1)[row],
                "actions": torch.as_tensor(rollout.actions, device=dev).reshape(-1)[row],
                "z": torch.as_tensor(rollout.extras["z"], device=dev).reshape(-1)[row], "games": games[step_of],
                "old_log_probs": batch.old_log_probs.reshape(-1)[row], "advantages": batch.advantages.reshape(-1)[row]}
        critic_inputs = self.tokens.critic(torch.as_tensor(rollout.state, device=dev).reshape(n, -1))
        value_parts = (batch.old_values, batch.targets, batch.value_mask)
        actor_params = [p for g in self.actor_opt.param_groups for p in g["params"]]

        stats = Stats()
        for _ in range(cfg["ppo_epochs"]):
            perm = torch.randperm(n, generator=self.generator).to(dev)
            for idx in perm.chunk(cfg["minibatches"]) if cfg["minibatches"] > 1 else [None]:
                if idx is None:
                    mb_in, mb_rows, c_in, v_parts = inputs, rows, critic_inputs, value_parts
                else:
                    chosen = torch.zeros(n, dtype=torch.bool, device=dev)
                    chosen[idx] = True
                    r = chosen[step_of].nonzero().squeeze(1)
                    mb_in = {k: v[r] for k, v in inputs.items()}
                    mb_rows = {k: v[r] for k, v in rows.items()}
                    c_in = tuple(t[idx] for t in critic_inputs)
                    v_parts = tuple(t[idx] for t in value_parts)
                loss, parts = self.losses(mb_in, mb_rows)
                self.actor_opt.zero_grad()
                loss.backward()
                gn = nn.utils.clip_grad_norm_(actor_params, cfg["max_grad_norm"])
                self.actor_opt.step()

                v = self.critic(*c_in)
                v_loss = value_loss(v, v_parts[0], v_parts[1], cfg["clip"], cfg["huber_delta"], cfg["value_clip"],
                                    v_parts[2])
                self.critic_opt.zero_grad()
                (cfg["value_coef"] * v_loss).backward()
                cgn = nn.utils.clip_grad_norm_(self.critic.parameters(), cfg["max_grad_norm"])
                self.critic_opt.step()
                stats.add(**parts, value_loss=v_loss, grad_norm=gn, critic_grad_norm=cgn)
        with torch.no_grad():
            probs = torch.softmax(self.prior_logits(self.sizes), -1)
            stats.add(prior_entropy=-(probs * probs.clamp(min=1e-12).log()).sum(-1).mean())
        return stats.means()

    # ------------------------------------------------------------------ marl adapt (marl/adapt.py's LatentPrior)
    def game_of(self, spec: EnvSpec) -> tuple[int, int]:
        """The key `marl adapt` adapts a prior for: the team sizes of a single-scenario spec."""
        return game_features(spec)

    def game_prior_logits(self, game: tuple[int, int]) -> np.ndarray:
        """The prior's logits [K] for a game's team sizes (an adapted one's where set)."""
        with torch.no_grad():
            return self.prior_logits(torch.tensor(game, device=self.device)).cpu().numpy()

    def set_game_prior_logits(self, game: tuple[int, int], logits: np.ndarray) -> None:
        """Use these logits [K] as the prior of the game with these team sizes (the network stays as it is)."""
        key = torch.tensor([game], dtype=torch.long)
        value = torch.as_tensor(np.asarray(logits, np.float32)).reshape(1, self.K)
        keep = ~(self.override_sizes == key).all(-1)
        self.override_sizes = torch.cat([self.override_sizes[keep], key])
        self.override_logits = torch.cat([self.override_logits[keep], value])

    def held_latents(self, deterministic: bool = True) -> np.ndarray:
        """The z int[E, A] each battle's agents hold now (those of evaluation, or of training)."""
        z = self.latents.get("eval" if deterministic else "train")
        return np.zeros((0, 0), np.int64) if z is None else z.cpu().numpy().copy()

    def reseed_latents(self, seed: int) -> None:
        """Restart evaluation's latent draws from a seed and forget its held z (for comparable evaluations)."""
        self.eval_generator.manual_seed(seed)
        self.latents.pop("eval", None)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Networks, optimisers, value normalisation, generators, the held latents and adapted priors.

        The held latents and the adapted priors are empty dicts when there are none, so a fresh learner's state has
        no arrays whose shapes depend on the battles it plays or the games it was adapted to."""
        return {"actor": self.actor.state_dict(), "prior": self.prior.state_dict(),
                "game_head": self.game_head.state_dict(), "critic": self.critic.state_dict(),
                "value_norm": self.value_norm.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "generator": self.generator.get_state(),
                "eval_generator": self.eval_generator.get_state(),
                "latents": {k: v.cpu().clone() for k, v in self.latents.items()},
                "adapted_priors": self._adapted_priors()}

    def _adapted_priors(self) -> dict:
        """The games `marl adapt` set a prior for: {"sizes", "logits"}, or {} when there are none."""
        if not len(self.override_sizes):
            return {}
        return {"sizes": self.override_sizes.clone(), "logits": self.override_logits.clone()}

    def _load_adapted_priors(self, adapted: dict) -> None:
        """Restore _adapted_priors() ({} or no sizes: none)."""
        if adapted and len(adapted["sizes"]):
            self.override_sizes = torch.as_tensor(adapted["sizes"], dtype=torch.long).clone()
            self.override_logits = torch.as_tensor(adapted["logits"], dtype=torch.float32).clone()
        else:
            self.override_sizes, self.override_logits = torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, self.K)
        if self.override_logits.shape[-1] != self.K:
            raise ValueError(f"adapted prior logits of {self.override_logits.shape[-1]} modes for a learner of "
                             f"{self.K}")

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict() (of a run on any team size: no parameter depends on it)."""
        self.actor.load_state_dict(state["actor"])
        self.prior.load_state_dict(state["prior"])
        self.game_head.load_state_dict(state["game_head"])
        self.critic.load_state_dict(state["critic"])
        self.value_norm.load_state_dict(state["value_norm"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.generator.set_state(state["generator"])
        self.eval_generator.set_state(state["eval_generator"])
        # held z of other battles (another map, another number of envs) are redrawn at the next act
        self.latents = {k: torch.as_tensor(v, dtype=torch.long, device=self.device).clone()
                        for k, v in state["latents"].items() if torch.as_tensor(v).numel()}
        adapted = state.get("adapted_priors")
        if adapted is None:  # a checkpoint written before adapted_priors
            adapted = {"sizes": state["override_sizes"], "logits": state["override_logits"]}
        self._load_adapted_priors(adapted)

    # ------------------------------------------------------------------ acting in shards (ActingState)
    def acting_state(self) -> dict:
        """What act() reads: the actor, the prior (and the adapted priors), the critic that gives the stored values;
        and this copy's sampling generator and the z its training battles hold (drawn once per episode, so a
        shard keeps them across updates rather than redrawing them mid-episode)."""
        z = self.latents.get("train")
        return {"policy": {"actor": self.actor.state_dict(), "prior": self.prior.state_dict(),
                           "critic": self.critic.state_dict(), "adapted_priors": self._adapted_priors()},
                "shard": {"generator": self.generator.get_state(),
                          "latents": torch.zeros(0, 0, dtype=torch.long) if z is None else z.cpu().clone()}}

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() given."""
        if "policy" in state:
            p = state["policy"]
            self.actor.load_state_dict(p["actor"])
            self.prior.load_state_dict(p["prior"])
            self.critic.load_state_dict(p["critic"])
            self._load_adapted_priors(p["adapted_priors"])
        if "shard" in state:
            self.generator.set_state(state["shard"]["generator"])
            z = torch.as_tensor(state["shard"]["latents"], dtype=torch.long)
            if z.numel():
                self.latents["train"] = z.to(self.device).clone()
            else:
                self.latents.pop("train", None)

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """Sample z and actions from a stream of the shard's own; the per-battle state, the held z, starts empty
        (the shard's battles start at reset, where every z is drawn)."""
        self.generator = torch.Generator().manual_seed(seed)
        self.latents.pop("train", None)

    def prepare_acting(self, step: Step) -> None:
        """Nothing to settle before acting."""

    def diagnostics(self) -> dict:
        """A histogram of the modes the training battles' agents held at the last rollout's end (with shards or Ray
        workers the copies hold them, not this learner); empty before the first update."""
        z = self._held_z
        return {"histograms": {"mra/latent_z": z.reshape(-1)}} if z is not None and z.size else {}
