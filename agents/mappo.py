"""MAPPO: a shared actor over each agent's observation, a centralised critic over the global state.

Settings follow MAPPO's SMAC configuration (docs/learners.md section 1): GAE, clipped PPO, Huber value loss with
clipping and running value normalisation, advantages normalised over living agents, losses masked
for dead agents, unavailable actions at logits of -1e10. Both networks see the agent's one-hot id,
so the critic gives one value per agent from the shared state. On a vector reward it learns the
scalarised w . r of `algo.preference` (linear scalarisation, the multi-objective baseline).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from marl.spec import EnvSpec, Rollout, Step

from .ppo import (
    Stats,
    ValueNorm,
    imitation_loss,
    masked_entropy,
    masked_logits,
    mlp,
    policy_loss,
    ppo_targets,
    sample_actions,
    value_loss,
)


class MAPPO:
    """The MAPPO learner (marl's Learner interface)."""

    def __init__(self, spec: EnvSpec, cfg: dict, seed: int = 0, device: str = "cpu"):
        if spec.reward_dim != 1 and cfg.get("preference") is None:
            raise ValueError(f"mappo learns one reward; this environment has {spec.reward_dim} objectives "
                             f"({', '.join(spec.reward_names)}): give algo.preference")
        self.spec, self.cfg, self.device = spec, cfg, torch.device(device)
        torch.manual_seed(seed)
        A = spec.n_agents
        ids = A if cfg["agent_id"] else 0
        self.actor = mlp(spec.obs_dim + ids, cfg["hidden"], cfg["layers"], spec.n_actions, 0.01,
                         cfg["input_norm"]).to(self.device)
        self.critic = mlp(spec.state_dim + ids, cfg["hidden"], cfg["layers"], 1, 1.0, cfg["input_norm"]).to(self.device)
        self.value_norm = ValueNorm().to(self.device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg["lr"], eps=cfg["adam_eps"])
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg["critic_lr"], eps=cfg["adam_eps"])
        self.generator = torch.Generator().manual_seed(seed)
        self._eye = torch.eye(A, device=self.device)

    # ------------------------------------------------------------------ inputs
    def _with_id(self, x: torch.Tensor) -> torch.Tensor:
        """x[..., A, D] with each agent's one-hot id appended (when configured)."""
        if not self.cfg["agent_id"]:
            return x
        return torch.cat([x, self._eye.expand(*x.shape[:-1], -1)], -1)

    def _actor_in(self, obs: np.ndarray) -> torch.Tensor:
        return self._with_id(torch.as_tensor(obs, device=self.device))

    def _critic_in(self, state: np.ndarray) -> torch.Tensor:
        s = torch.as_tensor(state, device=self.device)
        s = s.unsqueeze(-2).expand(*s.shape[:-1], self.spec.n_agents, s.shape[-1])
        return self._with_id(s)

    def values(self, state: np.ndarray) -> np.ndarray:
        """Denormalised values [..., A] of global states [..., state_dim]."""
        with torch.no_grad():
            v = self.critic(self._critic_in(state)).squeeze(-1)
            if self.cfg["value_norm"]:
                v = self.value_norm.denormalize(v)
        return v.cpu().numpy()

    # ------------------------------------------------------------------ acting
    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Sample (or, deterministic, take the argmax of) masked actions; store log-probs and values."""
        with torch.no_grad():
            avail = torch.as_tensor(step.avail, device=self.device)
            logits = masked_logits(self.actor(self._actor_in(step.obs)), avail)
            if deterministic:
                return logits.argmax(-1).cpu().numpy(), {}
            actions, log_prob = sample_actions(logits, self.generator)
            value = self.critic(self._critic_in(step.state)).squeeze(-1)
        return actions.cpu().numpy(), {"log_prob": log_prob.cpu().numpy(), "value": value.cpu().numpy()}

    # ------------------------------------------------------------------ learning
    def update(self, rollout: Rollout) -> dict:
        """PPO epochs over the rollout; returns mean losses, entropy, KL, clip fraction, grad norms."""
        cfg = self.cfg
        value_norm = self.value_norm if cfg["value_norm"] else None
        batch = ppo_targets(rollout, lambda obs, state, alive: self.values(state), cfg["gamma"], cfg["gae_lambda"],
                            value_norm, self.device, cfg.get("preference")).reshape(-1)
        n = batch.mask.numel()
        actor_in = self._actor_in(rollout.obs).reshape(n, -1)
        critic_in = self._critic_in(rollout.state).reshape(n, -1)
        avail = torch.as_tensor(rollout.avail.reshape(n, -1), device=self.device)
        actions = torch.as_tensor(rollout.actions.reshape(-1), device=self.device)

        stats = Stats()
        for _ in range(cfg["ppo_epochs"]):
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            for idx in perm.chunk(cfg["minibatches"]):
                m = batch.mask[idx]
                logp_all = torch.log_softmax(masked_logits(self.actor(actor_in[idx]), avail[idx]), -1)
                logp = logp_all.gather(-1, actions[idx].unsqueeze(-1)).squeeze(-1)
                entropy = masked_entropy(logp_all, m)
                p_loss, info = policy_loss(logp, batch.old_log_probs[idx], batch.advantages[idx], cfg["clip"], m)
                actor_loss = p_loss - cfg["entropy_coef"] * entropy
                if batch.imitate_weight is not None:  # another policy's steps (StepMix's baseline), cloned
                    bc = imitation_loss(logp, batch.imitate_weight[idx])
                    actor_loss = actor_loss + bc
                    info["imitation_loss"] = float(bc.detach())
                self.actor_opt.zero_grad()
                actor_loss.backward()
                gn = nn.utils.clip_grad_norm_(self.actor.parameters(), cfg["max_grad_norm"])
                self.actor_opt.step()

                v = self.critic(critic_in[idx]).squeeze(-1)
                v_loss = value_loss(v, batch.old_values[idx], batch.targets[idx], cfg["clip"], cfg["huber_delta"],
                                    cfg["value_clip"], batch.value_mask[idx])
                self.critic_opt.zero_grad()
                (cfg["value_coef"] * v_loss).backward()
                cgn = nn.utils.clip_grad_norm_(self.critic.parameters(), cfg["max_grad_norm"])
                self.critic_opt.step()

                stats.add(policy_loss=p_loss, value_loss=v_loss, entropy=entropy, **info, grad_norm=gn,
                          critic_grad_norm=cgn)
        return stats.means()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Networks, optimisers, value normalisation and the sampling generator."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "value_norm": self.value_norm.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.value_norm.load_state_dict(state["value_norm"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.generator.set_state(state["generator"])

    # ------------------------------------------------------------------ acting in shards (ActingState)
    def acting_state(self) -> dict:
        """The networks act() reads (the critic gives the stored values) and the sampling generator."""
        return {"policy": {"actor": self.actor.state_dict(), "critic": self.critic.state_dict()},
                "shard": {"generator": self.generator.get_state()}}

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() given."""
        if "policy" in state:
            self.actor.load_state_dict(state["policy"]["actor"])
            self.critic.load_state_dict(state["policy"]["critic"])
        if "shard" in state:
            self.generator.set_state(state["shard"]["generator"])

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """Sample from a stream of the shard's own; MAPPO keeps no per-battle state."""
        self.generator = torch.Generator().manual_seed(seed)

    def prepare_acting(self, step: Step) -> None:
        """Nothing to settle before acting."""

    def diagnostics(self) -> dict:
        """MAPPO has no graph or gates to show."""
        return {}
