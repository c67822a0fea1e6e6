"""MAPPO: a shared actor over each agent's observation, a centralised critic over the global state.

Settings follow MAPPO's SMAC configuration (docs/learners.md section 1): GAE, clipped PPO, Huber value loss with
clipping and running value normalisation, advantages normalised over living agents, losses masked
for dead agents, unavailable actions at logits of -1e10. Both networks see the agent's one-hot id,
so the critic gives one value per agent from the shared state. On a vector reward it learns the
scalarised w . r of `algo.preference` (linear scalarisation, the multi-objective baseline).

`algo.recurrent=true` is the authors' rMAPPO: a GRU after each network's layers (agents/ppo.py
`RecurrentNet`). Acting carries each battle's hidden states from step to step (zeroed at its first step,
Step.t == 0) and stores the ones each step started from in the rollout (extras "h_actor", "h_critic"). An
update cuts the rollout into sequences of `algo.chunk_length` steps, each unrolled from its stored hidden
state, with the state zeroed where an episode starts inside it; the minibatches are sets of sequences. The
values bootstrapped from (the state after the rollout, a time-limited episode's last state) are read with
the hidden state the critic reached there, recomputed from the rollout. Two streams keep hidden states:
sampled acting (the training battles: continuous across rollouts, kept in checkpoints and in a shard's
state) and deterministic acting (evaluations and recordings, which start every battle at reset).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from marl.spec import EnvSpec, Rollout, Step

from .ppo import (
    RecurrentNet,
    Stats,
    ValueNorm,
    chunked,
    follow_lr_schedule,
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
        self.recurrent = bool(cfg.get("recurrent", False))  # learners built on MAPPO (StepMix) have no such key
        net = RecurrentNet if self.recurrent else mlp
        self.actor = net(spec.obs_dim + ids, cfg["hidden"], cfg["layers"], spec.n_actions, cfg["actor_gain"],
                         cfg["input_norm"]).to(self.device)
        self.critic = net(spec.state_dim + ids, cfg["hidden"], cfg["layers"], 1, 1.0, cfg["input_norm"]).to(self.device)
        # recurrent: per stream ("sample", "deterministic"), each network's hidden states after the last step [E, A, H]
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
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
        """Denormalised values [..., A] of global states [..., state_dim] (feed-forward critic only)."""
        if self.recurrent:
            raise TypeError("a recurrent critic's value needs its hidden state; MAPPO.values is for feed-forward ones")
        with torch.no_grad():
            v = self.critic(self._critic_in(state)).squeeze(-1)
            if self.cfg["value_norm"]:
                v = self.value_norm.denormalize(v)
        return v.cpu().numpy()

    # ------------------------------------------------------------------ acting
    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Sample (or, deterministic, take the argmax of) masked actions; store log-probs and values."""
        if self.recurrent:
            return self._act_recurrent(step, deterministic)
        with torch.no_grad():
            avail = torch.as_tensor(step.avail, device=self.device)
            logits = masked_logits(self.actor(self._actor_in(step.obs)), avail)
            if deterministic:
                return logits.argmax(-1).cpu().numpy(), {}
            actions, log_prob = sample_actions(logits, self.generator)
            value = self.critic(self._critic_in(step.state)).squeeze(-1)
        return actions.cpu().numpy(), {"log_prob": log_prob.cpu().numpy(), "value": value.cpu().numpy()}

    def _hidden(self, stream: str, step: Step) -> dict[str, torch.Tensor]:
        """The stream's hidden states before this step [E, A, H], zeroed in the battles whose episode starts here."""
        E, A, H = step.n_envs, self.spec.n_agents, self.cfg["hidden"]
        mem = self.memory.get(stream)
        if mem is None or mem["actor"].shape[0] != E:
            mem = {k: torch.zeros(E, A, H, device=self.device) for k in ("actor", "critic")}
        keep = torch.as_tensor(step.t != 0, dtype=torch.float32, device=self.device).view(E, 1, 1)
        return {k: h * keep for k, h in mem.items()}

    def _act_recurrent(self, step: Step, deterministic: bool) -> tuple[np.ndarray, dict]:
        """act() of the recurrent networks: one GRU step per battle and agent from the stream's hidden states."""
        stream = "deterministic" if deterministic else "sample"
        h = self._hidden(stream, step)
        E, A, H = step.n_envs, self.spec.n_agents, self.cfg["hidden"]
        with torch.no_grad():
            avail = torch.as_tensor(step.avail, device=self.device)
            out, h_actor = self.actor.step(self._actor_in(step.obs).reshape(E * A, -1), h["actor"].reshape(E * A, H))
            logits = masked_logits(out.reshape(E, A, -1), avail)
            if deterministic:
                self.memory[stream] = {"actor": h_actor.reshape(E, A, H), "critic": h["critic"]}
                return logits.argmax(-1).cpu().numpy(), {}
            actions, log_prob = sample_actions(logits, self.generator)
            value, h_critic = self.critic.step(self._critic_in(step.state).reshape(E * A, -1),
                                               h["critic"].reshape(E * A, H))
        self.memory[stream] = {"actor": h_actor.reshape(E, A, H), "critic": h_critic.reshape(E, A, H)}
        return actions.cpu().numpy(), {"log_prob": log_prob.cpu().numpy(), "value": value.reshape(E, A).cpu().numpy(),
                                       "h_actor": h["actor"].cpu().numpy(), "h_critic": h["critic"].cpu().numpy()}

    def _recurrent_bootstraps(self, rollout: Rollout) -> tuple[np.ndarray, np.ndarray]:
        """Denormalised values of the state after the last step [E, A] and of time-limited episodes' last states
        [n, A], each read with the critic's hidden state after the step before it (recomputed from the rollout)."""
        A, H = self.spec.n_agents, self.cfg["hidden"]

        def after(t, e) -> torch.Tensor:  # the critic's hidden state after step t of battles e [n * A, H]
            x = self._critic_in(rollout.state[t, e])
            h = torch.as_tensor(rollout.extras["h_critic"][t, e], device=self.device).reshape(-1, H)
            return self.critic.step(x.reshape(-1, x.shape[-1]), h)[1]

        def value(state: np.ndarray, h: torch.Tensor) -> np.ndarray:
            x = self._critic_in(state)
            v = self.critic.step(x.reshape(-1, x.shape[-1]), h)[0].reshape(-1, A)
            if self.cfg["value_norm"]:
                v = self.value_norm.denormalize(v)
            return v.cpu().numpy()

        T, E = rollout.done.shape
        envs = np.arange(E)
        with torch.no_grad():
            keep = torch.as_tensor(~rollout.done[T - 1], dtype=torch.float32, device=self.device)
            h_last = after(np.full(E, T - 1), envs) * keep.repeat_interleave(A).unsqueeze(-1)
            bootstrap = value(rollout.next_state, h_last)
            if not len(rollout.final_t):
                return bootstrap, np.zeros((0, A), bootstrap.dtype)
            return bootstrap, value(rollout.final_state, after(rollout.final_t, rollout.final_e))

    # ------------------------------------------------------------------ learning
    def set_budget_fraction(self, fraction: float) -> None:
        """BudgetAware: the actor's and critic's learning rates follow `lr_decay` (none: constant)."""
        follow_lr_schedule(self.cfg, fraction, {"lr": self.actor_opt, "critic_lr": self.critic_opt})

    def update(self, rollout: Rollout) -> dict:
        """PPO epochs over the rollout; returns mean losses, entropy, KL, clip fraction, grad norms."""
        cfg = self.cfg
        value_norm = self.value_norm if cfg["value_norm"] else None
        if self.recurrent:
            batch, items, actor_out, critic_out, avail, actions = self._sequences(rollout, value_norm)
        else:  # one item per (step, battle, agent)
            batch = ppo_targets(rollout, lambda obs, state, alive: self.values(state), cfg["gamma"], cfg["gae_lambda"],
                                value_norm, self.device, cfg.get("preference")).reshape(-1)
            items = batch.mask.numel()
            actor_in = self._actor_in(rollout.obs).reshape(items, -1)
            critic_in = self._critic_in(rollout.state).reshape(items, -1)
            avail = torch.as_tensor(rollout.avail.reshape(items, -1), device=self.device)
            actions = torch.as_tensor(rollout.actions.reshape(-1), device=self.device)

            def actor_out(idx):
                return self.actor(actor_in[idx])

            def critic_out(idx):
                return self.critic(critic_in[idx]).squeeze(-1)

        stats = Stats()
        for _ in range(cfg["ppo_epochs"]):
            perm = torch.randperm(items, generator=self.generator).to(self.device)
            for idx in perm.chunk(cfg["minibatches"]):
                m = batch.mask[idx]
                logp_all = torch.log_softmax(masked_logits(actor_out(idx), avail[idx]), -1)
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

                v = critic_out(idx)
                v_loss = value_loss(v, batch.old_values[idx], batch.targets[idx], cfg["clip"], cfg["huber_delta"],
                                    cfg["value_clip"], batch.value_mask[idx])
                self.critic_opt.zero_grad()
                (cfg["value_coef"] * v_loss).backward()
                cgn = nn.utils.clip_grad_norm_(self.critic.parameters(), cfg["max_grad_norm"])
                self.critic_opt.step()

                stats.add(policy_loss=p_loss, value_loss=v_loss, entropy=entropy, **info, grad_norm=gn,
                          critic_grad_norm=cgn)
        return stats.means()

    def _sequences(self, rollout: Rollout, value_norm: ValueNorm | None):
        """The recurrent update's items: sequences of chunk_length steps of one battle's agent, [N, L, ...] each
        (the last chunk padded, its padding masked out), and their networks' outputs unrolled from the hidden
        states stored at their first steps, zeroed where an episode starts inside them."""
        cfg = self.cfg
        T, E, A = rollout.alive.shape
        L = cfg["chunk_length"]
        batch = ppo_targets(rollout, None, cfg["gamma"], cfg["gae_lambda"], value_norm, self.device,
                            cfg.get("preference"), bootstraps=self._recurrent_bootstraps(rollout))

        def seq(x) -> torch.Tensor:  # [T, E, A, ...] -> [N, L, ...]
            x = torch.as_tensor(x, device=self.device)
            return chunked(x.reshape(T, E * A, *x.shape[3:]), L).transpose(0, 1)

        batch = batch.apply(seq)
        actor_in, critic_in = seq(self._actor_in(rollout.obs)), seq(self._critic_in(rollout.state))
        begins = np.zeros((T, E, A), np.float32)  # 1 where an episode starts after a step of this rollout
        begins[1:] = rollout.done[:-1, :, None]
        starts = seq(begins)
        h_actor, h_critic = (torch.as_tensor(rollout.extras[k][::L], device=self.device).reshape(-1, cfg["hidden"])
                             for k in ("h_actor", "h_critic"))

        def actor_out(idx):
            return self.actor.unroll(actor_in[idx].transpose(0, 1), h_actor[idx], starts[idx].t()).transpose(0, 1)

        def critic_out(idx):
            out = self.critic.unroll(critic_in[idx].transpose(0, 1), h_critic[idx], starts[idx].t())
            return out.squeeze(-1).t()

        return (batch, batch.mask.shape[0], actor_out, critic_out, seq(rollout.avail), seq(rollout.actions))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Networks, optimisers, value normalisation and the sampling generator (recurrent: and the training
        battles' hidden states)."""
        state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                 "value_norm": self.value_norm.state_dict(), "actor_opt": self.actor_opt.state_dict(),
                 "critic_opt": self.critic_opt.state_dict(), "generator": self.generator.get_state()}
        if self.recurrent:
            state["memory"] = self._sampled_memory()
        return state

    def _sampled_memory(self) -> dict:
        """The sampled stream's hidden states (the training battles'), {} before its first step."""
        return {k: h.clone() for k, h in self.memory.get("sample", {}).items()}

    def _load_memory(self, memory: dict) -> None:
        self.memory = {"sample": {k: h.clone() for k, h in memory.items()}} if memory else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.value_norm.load_state_dict(state["value_norm"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.generator.set_state(state["generator"])
        if self.recurrent:
            self._load_memory(state["memory"])

    # ------------------------------------------------------------------ acting in shards (ActingState)
    def acting_state(self) -> dict:
        """The networks act() reads (the critic gives the stored values) and the sampling generator (recurrent:
        and this copy's battles' hidden states)."""
        shard = {"generator": self.generator.get_state()}
        if self.recurrent:
            shard["memory"] = self._sampled_memory()
        return {"policy": {"actor": self.actor.state_dict(), "critic": self.critic.state_dict()}, "shard": shard}

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() given."""
        if "policy" in state:
            self.actor.load_state_dict(state["policy"]["actor"])
            self.critic.load_state_dict(state["policy"]["critic"])
        if "shard" in state:
            self.generator.set_state(state["shard"]["generator"])
            if self.recurrent:
                self._load_memory(state["shard"]["memory"])

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """Sample from a stream of the shard's own; the only per-battle state, a recurrent copy's hidden states,
        starts empty (its battles start at reset)."""
        self.generator = torch.Generator().manual_seed(seed)
        self.memory = {}

    def prepare_acting(self, step: Step) -> None:
        """Nothing to settle before acting."""

    def diagnostics(self) -> dict:
        """MAPPO has no graph or gates to show."""
        return {}
