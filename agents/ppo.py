"""PPO machinery the on-policy learners share: the rollout-to-targets step (value denormalisation,
bootstrap and final-state values, GAE, value normalisation and advantage normalisation over living
agents), clipped losses, the masked entropy, per-minibatch statistics, value normalisation, MLPs and the
learning-rate schedule (`algo.lr_decay`).

A learner calls `ppo_targets` once per update, then runs its own epochs over the tensors it returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from marl.spec import Rollout

ValuesOf = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""A learner's values in return units [n, A] of observations [n, A, obs_dim], states [n, state_dim] and
alive masks [n, A]; each learner reads the inputs its critic takes."""


class ValueNorm(nn.Module):
    """Running mean and variance of value targets (debiased exponential average, as MAPPO uses).

    With a `shape` (e.g. (P, K): a population's policies by objectives) it keeps one set of statistics
    per entry; `update` then takes targets [n, *shape] and a 0/1 mask of the same shape (or broadcastable),
    and an entry that no target of the batch touches keeps its statistics.
    """

    def __init__(self, beta: float = 0.99999, eps: float = 1e-5, shape: tuple[int, ...] = ()):
        super().__init__()
        self.beta, self.eps = beta, eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("mean_sq", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("debias", torch.zeros(shape, dtype=torch.float64))

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Fold a batch of targets into the running statistics (per entry of `shape`, over the masked ones)."""
        x = x.detach().double()
        w = self.beta
        if mask is None and self.mean.dim() == 0:  # the scalar statistics every single-policy learner uses
            self.mean.mul_(w).add_(x.mean() * (1 - w))
            self.mean_sq.mul_(w).add_((x * x).mean() * (1 - w))
            self.debias.mul_(w).add_(1 - w)
            return
        m = torch.ones_like(x) if mask is None else mask.double().expand_as(x)
        count = m.sum(0)
        seen = count > 0
        mean = (x * m).sum(0) / count.clamp(min=1)
        mean_sq = (x * x * m).sum(0) / count.clamp(min=1)
        keep = torch.where(seen, torch.full_like(count, w), torch.ones_like(count))
        self.mean.mul_(keep).add_(torch.where(seen, mean * (1 - w), torch.zeros_like(mean)))
        self.mean_sq.mul_(keep).add_(torch.where(seen, mean_sq * (1 - w), torch.zeros_like(mean)))
        self.debias.mul_(keep).add_(torch.where(seen, torch.full_like(count, 1 - w), torch.zeros_like(count)))

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The running mean and standard deviation (float32, of `shape`)."""
        return self._stats()

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.debias.clamp(min=self.eps)
        mean = self.mean / d
        var = (self.mean_sq / d - mean * mean).clamp(min=1e-2)
        return mean.float(), var.sqrt().float()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Targets in the critic's normalised space."""
        mean, std = self._stats()
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Critic outputs back in return units."""
        mean, std = self._stats()
        return x * std + mean


def scheduled_lr(base: float, schedule: str, fraction: float) -> float:
    """The learning rate at `fraction` of the step budget: `none` keeps `base`; `linear` falls from `base` at the
    first update to 0 at the budget's end (the MAPPO and C-MORL authors' linear decay, set before each update)."""
    if schedule == "none":
        return base
    if schedule == "linear":
        return base * max(0.0, 1.0 - fraction)
    raise ValueError(f"algo.lr_decay is {schedule!r}; accepted: none, linear")


def follow_lr_schedule(cfg: dict, fraction: float, optimisers: dict[str, torch.optim.Optimizer]) -> None:
    """Set each optimiser's rate to its base rate cfg[key] at `fraction` of the budget (BudgetAware learners call
    it from set_budget_fraction). With `lr_decay: none` (a config without the key too) nothing is touched, so the
    optimisers' bits are those of a learner without a schedule."""
    schedule = cfg.get("lr_decay", "none")
    if schedule == "none":
        return
    for key, optimiser in optimisers.items():
        for group in optimiser.param_groups:
            group["lr"] = scheduled_lr(cfg[key], schedule, fraction)


def mlp(inputs: int, hidden: int, layers: int, outputs: int, out_gain: float, input_norm: bool = True
        ) -> nn.Sequential:
    """ReLU MLP with orthogonal initialisation (sqrt 2 hidden, out_gain on the head) and LayerNorm input.

    input_norm=False leaves the LayerNorm out: over a few raw features it maps inputs that differ by a shift
    and a scale to one vector (a grid position (r, c) with an id 1: every (r, c) on a ray from (1, 1)).
    """
    mods: list[nn.Module] = [nn.LayerNorm(inputs)] if input_norm else []
    width = inputs
    for _ in range(layers):
        lin = nn.Linear(width, hidden)
        nn.init.orthogonal_(lin.weight, math.sqrt(2))
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.ReLU()]
        width = hidden
    head = nn.Linear(width, outputs)
    nn.init.orthogonal_(head.weight, out_gain)
    nn.init.zeros_(head.bias)
    mods.append(head)
    return nn.Sequential(*mods)


class RecurrentNet(nn.Module):
    """The MAPPO authors' recurrent network (rMAPPO): `mlp`'s layers, a GRU cell, LayerNorm, then the head.

    Its hidden state h [N, hidden] is the GRU's output, carried from one step of an episode to the next and
    zeroed where an episode starts. The GRU's weights are orthogonal and its biases zero, as theirs.
    """

    def __init__(self, inputs: int, hidden: int, layers: int, outputs: int, out_gain: float, input_norm: bool = True):
        super().__init__()
        body = mlp(inputs, hidden, layers, outputs, out_gain, input_norm)
        self.trunk, self.head = body[:-1], body[-1]
        self.gru = nn.GRUCell(hidden, hidden)
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
        self.norm = nn.LayerNorm(hidden)

    def step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: inputs [N, D] and the hidden state before it [N, H] -> outputs [N, out] and the state after."""
        h = self.gru(self.trunk(x), h)
        return self.head(self.norm(h)), h

    def unroll(self, x: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Outputs [L, N, out] of sequences x [L, N, D] from hidden states h0 [N, H]; starts [L, N] (0/1) zeroes
        the state before a step where an episode starts."""
        feats, h, out = self.trunk(x), h0, []
        for t in range(x.shape[0]):
            h = self.gru(feats[t], h * (1.0 - starts[t]).unsqueeze(-1))
            out.append(h)
        return self.head(self.norm(torch.stack(out)))


def chunked(x: torch.Tensor, length: int) -> torch.Tensor:
    """[T, E, ...] -> [length, ceil(T / length) * E, ...]: the rollout cut into sequences of `length` steps (the
    last one padded with zeros), sequence index (chunk, env) on axis 1."""
    T = x.shape[0]
    n = -(-T // length)
    if n * length != T:
        x = torch.cat([x, x.new_zeros(n * length - T, *x.shape[1:])])
    x = x.reshape(n, length, *x.shape[1:]).transpose(0, 1)
    return x.reshape(length, n * x.shape[2], *x.shape[3:])


def masked_logits(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Unavailable actions get logits of -1e10, so they are never sampled."""
    return logits.masked_fill(~avail, -1e10)


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Actions drawn from masked logits [..., n_actions] with `generator`, and their log-probabilities [...]."""
    probs = torch.softmax(logits, -1)
    actions = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).reshape(probs.shape[:-1])
    return actions, torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def scalarise(reward: np.ndarray, preference) -> np.ndarray:
    """Linear scalarisation w . r of rewards with a trailing objective axis [..., K]: f32[...].

    A reward without the objective axis (one objective, K = 1) is scaled by the preference's one weight.
    """
    w = np.asarray(preference, np.float32)
    if reward.ndim == 2:  # [T, E]: one objective
        return (reward * w.reshape(())).astype(np.float32)
    return (reward @ w).astype(np.float32)


def team_reward(rollout: Rollout, n_agents: int, preference=None) -> np.ndarray:
    """Team reward f32[T, E] (or f32[T, E, K]) broadcast to every agent: f32[T, E, A] (or f32[T, E, A, K]).

    With a preference (K non-negative weights) the reward is scalarised first, w . r, giving f32[T, E, A].
    """
    reward = rollout.reward if preference is None else scalarise(rollout.reward, preference)
    return np.repeat(reward[:, :, None], n_agents, axis=2)


def gae(values: np.ndarray, next_values: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
        done: np.ndarray, gamma: float, lam: float, cut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and returns, all [T, E, A] (or [T, E, A, ...]; terminated and done are [T, E]).

    next_values[t] is the value of the state after step t (the pre-reset state where an episode was
    cut by the time limit); terminated[t] zeroes it, done[t] stops the trace from crossing episodes.
    cut[t] ([T, E], optional) starts a new segment at step t inside an episode (another policy takes
    over there): the trace of step t - 1 does not pass through step t, so step t - 1 bootstraps from
    the critic's value of step t's state, next_values[t - 1], as at a time limit. None: no cuts.
    """
    T = values.shape[0]
    per_env = (1,) * (values.ndim - 2)  # [E] flags over the axes after the env's: agents (and any more)
    adv = np.zeros_like(values)
    running = np.zeros_like(values[0])
    for t in range(T - 1, -1, -1):
        not_term = 1.0 - terminated[t].reshape(-1, *per_env)
        not_done = 1.0 - done[t].reshape(-1, *per_env)
        if cut is not None and t + 1 < T:  # the trace from step t + 1 stops where a segment starts
            not_done = not_done * (1.0 - cut[t + 1].reshape(-1, *per_env).astype(not_done.dtype))
        delta = rewards[t] + gamma * next_values[t] * not_term - values[t]
        running = delta + gamma * lam * not_done * running
        adv[t] = running
    return adv, adv + values


def next_values_of(values: np.ndarray, bootstrap: np.ndarray, rollout: Rollout, final_values: np.ndarray
                   ) -> np.ndarray:
    """[T, E, A] value of the state after each step: values[t + 1], the bootstrap, or a final state's."""
    nxt = np.empty_like(values)
    nxt[:-1] = values[1:]
    nxt[-1] = bootstrap
    if len(rollout.final_t):
        nxt[rollout.final_t, rollout.final_e] = final_values
    return nxt


def rollout_advantages(rollout: Rollout, values: np.ndarray, bootstrap: np.ndarray, final_values: np.ndarray,
                       gamma: float, lam: float, preference=None, cut: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """GAE advantages and returns [T, E, A] of a rollout from its values (return units), the value of
    the state after the last step, and the values of the pre-reset states of time-limited episodes.

    Values [T, E, A, K] with a reward [T, E, K] give per-objective advantages [T, E, A, K]; with a
    preference the reward is scalarised (w . r) and the values are the scalarised ones [T, E, A]. cut: see `gae`.
    """
    nxt = next_values_of(values, bootstrap, rollout, final_values)
    terminated = rollout.done & ~rollout.truncated
    n_agents = values.shape[2]
    return gae(values, nxt, team_reward(rollout, n_agents, preference), terminated.astype(np.float32),
               rollout.done.astype(np.float32), gamma, lam, cut)


@dataclass
class PPOTargets:
    """What PPO epochs learn from, one entry per (step, env, agent): float tensors [T, E, A] on the device."""

    advantages: torch.Tensor  # GAE, normalised over living agents
    returns: torch.Tensor  # GAE returns in return units
    targets: torch.Tensor  # value targets in the critic's space (normalised returns under a ValueNorm)
    old_values: torch.Tensor  # the critic's outputs while acting, in its own space
    old_log_probs: torch.Tensor  # log-probabilities of the actions taken
    mask: torch.Tensor  # 1 for living agents, 0 for dead ones: losses and statistics count only the living
    value_mask: torch.Tensor  # the entries of the value loss: `mask` itself unless extras "value_mask" widens it
    # the weight of a behaviour-cloning term on the action taken, per living entry (extras "imitate_weight": steps
    # another policy took, whose actions the actor also learns to take); None without it
    imitate_weight: torch.Tensor | None = None

    def reshape(self, *shape: int) -> PPOTargets:
        """The same targets with every tensor reshaped (to [T * E * A], or [T * E, A])."""
        return self.apply(lambda x: x.reshape(*shape))

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> PPOTargets:
        """The same targets with fn applied to every tensor (a recurrent learner's cut into sequences)."""
        return PPOTargets(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name))
                             for f in dataclasses.fields(self)})


def bootstrap_values(rollout: Rollout, values_of: ValuesOf) -> tuple[np.ndarray, np.ndarray]:
    """Values of the state after the last step [E, A] and of the pre-reset states of time-limited
    episodes [n, A], where every agent of a cut episode counts as alive."""
    bootstrap = values_of(rollout.next_obs, rollout.next_state, rollout.next_alive)
    if not len(rollout.final_t):
        return bootstrap, np.zeros((0, *bootstrap.shape[1:]), bootstrap.dtype)
    return bootstrap, values_of(rollout.final_obs, rollout.final_state, np.ones(rollout.final_obs.shape[:2], bool))


def _reduced(x: torch.Tensor, batch_dims: int) -> tuple[int, ...]:
    """The axes a batched helper reduces: all but the `batch_dims` leading ones (each a separate learner)."""
    return tuple(range(batch_dims, x.dim()))


def normalize_advantages(adv: torch.Tensor, mask: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """Advantages shifted and scaled by the mean and std of the living agents' (unchanged when fewer than 2).

    With `batch_dims` > 0 the leading axes index separate learners (C-MORL's population [P, ...]): each is
    normalised by its own living agents' mean and (unbiased) std.
    """
    if batch_dims:
        live = (mask > 0).to(adv.dtype).expand_as(adv)
        dims = _reduced(adv, batch_dims)
        n = live.sum(dims, keepdim=True)
        mean = (adv * live).sum(dims, keepdim=True) / n.clamp(min=1)
        std = (((adv - mean) * live).pow(2).sum(dims, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        return torch.where(n > 1, (adv - mean) / (std + 1e-5), adv)
    live = adv[mask > 0]
    return (adv - live.mean()) / (live.std() + 1e-5) if live.numel() > 1 else adv


def ppo_targets(rollout: Rollout, values_of: ValuesOf | None, gamma: float, lam: float, value_norm: ValueNorm | None,
                device: torch.device | str = "cpu", preference=None,
                bootstraps: tuple[np.ndarray, np.ndarray] | None = None) -> PPOTargets:
    """Advantages, returns, value targets and masks of a rollout whose extras hold "value" (the critic's
    outputs, normalised under `value_norm`) and "log_prob". With a ValueNorm, the stored values are
    denormalised for GAE, the living agents' returns update its statistics, and the targets are the
    returns normalised after that update; without one the targets are the returns. A preference
    (algo.preference: K weights) makes the learned reward the scalarised w . r of a vector reward.

    Optional extras serve a learner whose rollout mixes in another policy's steps (StepMix's baseline):
    "cut" bool[T, E] cuts GAE where a segment starts (see `gae`), and "learn_mask" bool[T, E] (or [T, E, A])
    keeps only its set steps in the mask, so the other policy's steps enter neither the policy loss nor the
    advantage statistics; by default not the value loss or the value normalisation either. "value_mask"
    (the same shapes) names the steps the critic learns from instead (`value_mask` of the result), for a
    learner whose cut segments bootstrap from its critic at states the other policy plays on. "imitate_weight"
    float[T, E] (or [T, E, A]) weights a behaviour-cloning term on the actions taken at those steps
    (`imitation_loss`), for a learner that should also learn the other policy's actions where it does not act
    itself. Without them nothing changes.

    `bootstraps`, when given, are the values `bootstrap_values` would compute (of the state after the last step
    [E, A], of the final states [n, A]), for a critic that needs more than those states, such as a recurrent
    one's hidden state; `values_of` is then not called."""
    old_values = rollout.extras["value"]
    values = old_values
    if value_norm is not None:
        values = value_norm.denormalize(torch.as_tensor(old_values, device=device)).cpu().numpy()
    if bootstraps is None:
        bootstraps = bootstrap_values(rollout, values_of)  # before the statistics move
    bootstrap, final_values = bootstraps
    adv, returns = rollout_advantages(rollout, values, bootstrap, final_values, gamma, lam, preference,
                                      rollout.extras.get("cut"))

    def kept(steps):
        """The living agents at the set steps (all living agents where steps is None)."""
        if steps is None:
            return rollout.alive
        return rollout.alive & (steps if steps.ndim == rollout.alive.ndim else steps[..., None]).astype(bool)

    learn, critic = rollout.extras.get("learn_mask"), rollout.extras.get("value_mask")
    alive = kept(learn)
    mask = torch.as_tensor(alive, dtype=torch.float32, device=device)
    value_alive = alive if critic is None else kept(critic)
    value_mask = mask if critic is None else torch.as_tensor(value_alive, dtype=torch.float32, device=device)
    returns_t = torch.as_tensor(returns, dtype=torch.float32, device=device)
    targets = returns_t
    if value_norm is not None:
        if (learn is None and critic is None) or value_alive.any():  # no step to learn: the statistics stay
            value_norm.update(returns_t[value_mask > 0])
        targets = value_norm.normalize(returns_t)
    adv_t = normalize_advantages(torch.as_tensor(adv, dtype=torch.float32, device=device), mask)
    imitate = rollout.extras.get("imitate_weight")
    if imitate is not None:
        w = imitate if imitate.ndim == rollout.alive.ndim else imitate[..., None]
        imitate = torch.as_tensor(w * rollout.alive, dtype=torch.float32, device=device)
    return PPOTargets(advantages=adv_t, returns=returns_t, targets=targets,
                      old_values=torch.as_tensor(old_values, device=device),
                      old_log_probs=torch.as_tensor(rollout.extras["log_prob"], device=device), mask=mask,
                      value_mask=value_mask, imitate_weight=imitate)


def imitation_loss(log_prob: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Behaviour cloning: the weighted negative log-likelihood of the actions taken, averaged over the entries
    with a positive weight (0 when there are none)."""
    return -(log_prob * weight).sum() / (weight > 0).sum().clamp(min=1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """Mean of x over the entries where mask is 1 (0 when there are none).

    With `batch_dims` > 0, one mean per index of the leading axes (shape x.shape[:batch_dims]); the mask
    broadcasts to x.
    """
    if batch_dims:
        dims = _reduced(x, batch_dims)
        return (x * mask).sum(dims) / mask.expand_as(x).sum(dims).clamp(min=1)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_entropy(log_probs: torch.Tensor, mask: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """Mean entropy of the policies [..., n_actions] given as log-probabilities, over the masked entries
    (one per index of the `batch_dims` leading axes)."""
    return masked_mean(-(log_probs.exp() * log_probs).sum(-1), mask, batch_dims)


class Stats:
    """Metrics of an update's minibatches, added one minibatch at a time and averaged at the end."""

    def __init__(self):
        self._values: dict[str, list[float]] = {}

    def add(self, **metrics: float | torch.Tensor) -> None:
        """One minibatch's metrics (numbers or one-element tensors)."""
        for k, v in metrics.items():
            self._values.setdefault(k, []).append(v.item() if isinstance(v, torch.Tensor) else float(v))

    def means(self) -> dict[str, float]:
        """Each metric's mean over the minibatches, in the order first added."""
        return {k: float(np.mean(v)) for k, v in self._values.items()}


def policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip: float,
                mask: torch.Tensor, batch_dims: int = 0) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate loss over the masked entries, with approx-KL and clip fraction.

    With `batch_dims` > 0 the loss, approx_kl and clip_frac are per index of the leading axes (detached
    tensors for the last two, instead of floats).
    """
    ratio = torch.exp(log_prob - old_log_prob)
    surr = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv)
    if batch_dims:
        loss = -masked_mean(surr, mask, batch_dims)
        with torch.no_grad():
            kl = masked_mean((ratio - 1) - (log_prob - old_log_prob), mask, batch_dims)
            clip_frac = masked_mean(((ratio - 1).abs() > clip).float(), mask, batch_dims)
        return loss, {"approx_kl": kl, "clip_frac": clip_frac}
    n = mask.sum().clamp(min=1)
    loss = -(surr * mask).sum() / n
    with torch.no_grad():
        kl = (((ratio - 1) - (log_prob - old_log_prob)) * mask).sum() / n
        clip_frac = (((ratio - 1).abs() > clip).float() * mask).sum() / n
    return loss, {"approx_kl": float(kl), "clip_frac": float(clip_frac)}


def value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor, clip: float,
               huber_delta: float, use_clip: bool, mask: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """Huber value loss, with PPO-style clipping around the old predictions, over the masked entries (one
    per index of the `batch_dims` leading axes)."""
    def huber(err):
        a = err.abs()
        return torch.where(a <= huber_delta, 0.5 * err * err, huber_delta * (a - 0.5 * huber_delta))

    loss = huber(targets - values)
    if use_clip:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.max(loss, huber(targets - clipped))
    return masked_mean(loss, mask, batch_dims)
