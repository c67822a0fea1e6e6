"""StepMix and EpsMix, the deep multi-agent learner: MAPPO next to a frozen safe baseline (`--algo stepmix`).

Every episode of a battle is played by one mixture of two policies, decided once at its first step
(Step.t == 0) for the whole team, so the episode's value stays linear in the mixing parameter:

- EpsMix (`algo.mix=epsmix`): one coin per episode; the learner plays the episode with probability eps,
  else the baseline.
- StepMix (`algo.mix=stepmix`): one switch step per episode; member kappa = h + rho plays the learner for
  the first h steps, at step h the learner with probability rho, and the baseline after (the tabular
  reference's order: the learner first). The draw is made at the episode's first step; the result, the
  step `switch` from which the baseline acts, is held per battle in the learner's state.

The mapping from the tabular algorithm (agents/stepmix/tabular.py) to this one:

- UCB-VI's greedy policy -> MAPPO's sampled policy (agents/mappo.py, the same networks and updates).
- V_b known -> V_b ESTIMATED, as the tabular offline variant does: before training the baseline plays
  `algo.vb_episodes` episodes the way it plays in training (sampled, not argmax) on the Evaluator's
  battles (EvaluatesPolicies), outside the budget; a normal 95% interval [lo, hi] on their mean. Every
  training episode the baseline played alone adds to it. The decision guards against hi, the threshold
  being (1 - alpha) hi, and credits the baseline with lo (the offline variant's choice).
- The pessimistic value of the learner -> an ensemble lower bound: `algo.ensemble` critics of the
  learner's undiscounted return (the constraint is on the episode's return, so gamma = 1 there) trained
  on the learner's own steps, each from its own initialisation on its own bootstrap half of the steps;
  L = mean - bound_z * std over the ensemble of the mean value of the rollout's start states. This is a
  heuristic, not a proven bound: `algo.calibration_interval` checks it against Monte-Carlo returns of
  the learner's sampled policy on the Evaluator's battles and logs how often L lies below them.
- EpsMix's eps = tabular.epsmix_eps(L, lo, (1 - alpha) hi), the same function.
- StepMix's member bounds: member h's value is E[R_<h + V_B(s_h)], the reward of the learner's first
  h steps plus the baseline's value from the state it reached (the whole return where the episode
  ended first), read from the rollout's episodes whose switch came at or after h (`member_values`),
  with a second ensemble of critics V_B trained on the baseline's steps. Its bound is the mean minus
  bound_z times the root of the heads' variance plus the episodes' squared standard error. V_B has only
  seen the baseline's own states, and a state the learner led it to can be worth far less than V_B says
  (on 3s5z one untrained first step cuts a half-trained baseline's return from 17.7 to 13.7, which V_B
  does not see; BENCHMARKS.md), so this bound alone is not trusted: member h is also bounded by the
  Monte-Carlo returns of the last `algo.member_window` episodes that were played as member h (switch h:
  the learner for h steps, the baseline to the end), mean - bound_z standard errors, and is credited the
  lower of the two. A member with fewer than MIN_MEMBER_EPISODES such episodes is credited min(L, lo), so
  kappa's interpolation plays a few episodes of the next member before trusting it. Member 0 is the
  baseline (credited lo), member H = episode_limit the learner (L). kappa =
  tabular.stepmix_kappa(lowers, (1 - alpha) hi), the same function.
- Data: steps the baseline took do not enter MAPPO's policy loss (extras "learn_mask"), and GAE is cut
  where the baseline takes over (extras "cut"): the learner's last step bootstraps from its own critic's
  value of the state the baseline starts from (agents/ppo.py `gae`). So that value means something, the
  critic learns from every step of the episodes the learner took part in, the baseline's continuation
  included (extras "value_mask": the episode's switch is past 0), as the tabular reference's model learns
  from every transition, the baseline's too; episodes the baseline played alone stay out. Under StepMix
  the critic's value of s_h is then the baseline's continuation from there, and the learner's step
  before it gets the advantage of a one-step improvement on the baseline. Under EpsMix the learner's
  episodes are all its own, so this changes nothing there.

`algo.init=baseline` starts the learner from a copy of a run baseline's MAPPO actor and critic (its own
optimisers): every member is then worth about V_b at the start. `scratch` is the paper's learner. The
default, `auto`, copies a MAPPO run baseline whose networks have this learner's shapes and starts any other
(a scripted policy, another learner's run) from scratch. On 3s5z under StepMix the copy alone, trained on a
battle's first steps only, forgot the rest of the baseline's policy within 64k steps (BENCHMARKS.md, StepMix
part 6); with imitation (below) it kept it.

`algo.imitation_coef` > 0 adds behaviour cloning of the baseline to the learner's actor: on the steps the
baseline took, the negative log-likelihood of the baseline's actions under the learner's policy, with that
weight (extras "imitate_weight", agents/ppo.py `imitation_loss`). The learner then keeps a policy for the
states it does not play yet, near the baseline's, instead of whatever its untrained (or, with
`algo.init=baseline`, forgotten) outputs are there; its own steps still learn by PPO alone. This departs from
the paper, whose learner learns from its own episodes only (0 is the paper's). The default is 1 with
`algo.init=auto`: on 3s5z that pair met the issue's safety and learner targets on three seeds of StepMix and
of EpsMix, where the paper's learner under StepMix never won (BENCHMARKS.md, StepMix parts 6-8);
`algo.init=scratch algo.imitation_coef=0` gives the paper's learner back.

`act(step, deterministic=True)` is the learner's own argmax policy: the trainer's evaluation reports it.
The mixing parameter is decided after each update (and once before the first, from the untrained
ensemble). The baseline's config and weights and V_b's statistics are in `state_dict`, so a resumed run
and `marl eval` never need the baseline's directory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from marl.spec import ActingState, EnvSpec, Evaluator, Rollout, Step

from ..mappo import MAPPO
from ..ppo import bootstrap_values, gae, masked_logits, mlp, next_values_of, team_reward, value_loss
from .baseline import RUN, Baseline, BaselineError, ReturnStats, kind_of
from .tabular import epsmix_eps, stepmix_kappa

MIN_MEMBER_EPISODES = 8  # a StepMix member's own episodes needed before its Monte-Carlo bound counts


def member_values(reward: np.ndarray, baseline_values: np.ndarray, t: np.ndarray, switch: np.ndarray,
                  done: np.ndarray, H: int, relative: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """StepMix's members from the rollout: per member h, the mean over episodes of R_<h + V_B(s_h) [H + 1, M],
    the variance over episodes of that sum (the heads' mean) [H + 1], and the episodes counted [H + 1].

    Member h plays the learner for h steps, then the baseline: its return is the reward of the learner's
    first h steps plus the baseline's value V_B (each of M heads, baseline_values [T, E, M]) from the
    state s_h the learner reached, or the whole return where the episode ended first. Counted are the
    episodes that began in the rollout (t, the episode step of each row, is 0), each for every
    h <= its switch whose step h lies inside the rollout, so the learner played all of its first h steps.
    The mean is NaN where no episode counts, the variance where fewer than two do.

    relative: each episode's sum less the baseline's value of its own first state, V_B(s_0) (per head), so
    member h's figure is its gain over the baseline, E[R_<h + V_B(s_h) - V_B(s_0)]: the error the critic
    shares at s_0 and s_h, and the episodes' spread in V_B(s_0), cancel in each episode's difference.
    """
    T, E = t.shape
    M = baseline_values.shape[-1]
    first = np.zeros_like(baseline_values)  # V_B(s_0) of each row's episode (rows whose s_0 is in the rollout)
    if relative:
        rows = np.arange(T)[:, None] - t
        inside = rows >= 0
        first[inside] = baseline_values[rows[inside], np.nonzero(inside)[1]]
    sums, sq = np.zeros((H + 1, M)), np.zeros(H + 1)
    count, ended, ended_sq = np.zeros(H + 2), np.zeros((H + 2, M)), np.zeros(H + 2)
    before = np.zeros((T, E))  # R_<h: the episode's reward before each row
    running = np.zeros(E)
    for i in range(T):
        running = np.where(t[i] == 0, 0.0, running)
        before[i] = running
        running = running + reward[i]
        for e in np.flatnonzero(done[i]):  # an episode that ends here counts its return for the h past its end
            ts = i - int(t[i, e])
            top = min(int(switch[i, e]), T - 1 - ts, H)
            length = int(t[i, e]) + 1
            if ts >= 0 and length <= top:
                gain = running[e] - first[i, e]  # [M]; the return itself where not relative
                ended[length] += gain
                ended[top + 1] -= gain
                ended_sq[length] += gain.mean() ** 2
                ended_sq[top + 1] -= gain.mean() ** 2
    ts, es = np.nonzero(t == 0)
    top = np.minimum(np.minimum(switch[ts, es], T - 1 - ts), H)  # the last h episode (ts, es) counts for
    count[0] += len(ts)
    np.add.at(count, top + 1, -1)
    count = np.cumsum(count)[: H + 1]
    sel = (np.arange(T)[:, None] - t >= 0) & (t <= switch) & (t <= H)
    value = before[sel][:, None] + baseline_values[sel] - first[sel]
    np.add.at(sums, t[sel], value)
    np.add.at(sq, t[sel], value.mean(-1) ** 2)
    sums += np.cumsum(ended, 0)[: H + 1]
    sq += np.cumsum(ended_sq)[: H + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count[:, None] > 0, sums / count[:, None], np.nan)
        var = np.where(count > 1, (sq - count * mean.mean(-1) ** 2) / (count - 1), np.nan)
    return mean, np.maximum(var, 0.0), count


def lower_bound(heads: np.ndarray, targets: np.ndarray, z: float, floor: float = float("-inf")) -> float:
    """A lower confidence bound on a policy's expected return from an ensemble of critics.

    heads [M]: each critic's mean value over the start states; targets [n]: the critics' training targets
    at the start states of the policy's own episodes (TD(lambda) returns, gamma 1). Two errors, taken as
    independent: the critics' disagreement (the variance over heads: fitting and generalisation) and the
    sampling error of the returns they were fitted to (the targets' variance over n, the standard error
    of their mean squared). L = mean(heads) - z sqrt(var(heads) + var(targets) / n), never below floor
    (the lowest return possible); the floor itself where fewer than two episodes give targets, since
    then nothing measures the sampling error.
    """
    targets = np.asarray(targets, np.float64).ravel()
    if targets.size < 2:
        return float(floor)
    heads = np.asarray(heads, np.float64)
    spread = heads.var() + targets.var(ddof=1) / targets.size
    return float(max(heads.mean() - z * np.sqrt(spread), floor))


class StepMix:
    """The StepMix / EpsMix learner (marl's Learner, EvaluatesPolicies)."""

    def __init__(self, spec: EnvSpec, cfg: dict, seed: int = 0, device: str = "cpu"):
        if spec.reward_dim != 1:
            raise ValueError(f"stepmix keeps one return above its baseline's; this environment has "
                             f"{spec.reward_dim} objectives ({', '.join(spec.reward_names)})")
        self.spec, self.cfg, self.seed = spec, cfg, seed
        self.mappo = MAPPO(spec, cfg, seed=seed, device=device)
        self.device = self.mappo.device
        M = cfg["ensemble"]
        ids = spec.n_agents if cfg["agent_id"] else 0
        # heads 0..M-1: the learner's undiscounted value; M..2M-1: the baseline's (StepMix's members)
        self.bound = nn.ModuleList(mlp(spec.state_dim + ids, cfg["hidden"], cfg["layers"], 1, 1.0)
                                   for _ in range(2 * M)).to(self.device)
        self.bound_opt = torch.optim.Adam(self.bound.parameters(), lr=cfg["critic_lr"], eps=cfg["adam_eps"])
        self.coins = torch.Generator().manual_seed(seed + 1)  # the episodes' coins and switch draws
        self.boot = torch.Generator().manual_seed(seed + 2)  # the ensemble's bootstrap halves
        self.H = spec.episode_limit
        self.evaluator: Evaluator | None = None
        self.baseline: Baseline | None = None
        self.started_from_baseline = False  # algo.init: the learner's networks began as the baseline's copy
        self._baseline_error: BaselineError | None = None
        try:
            kind_of(cfg["baseline"])
        except BaselineError as err:  # a resumed run's baseline may have moved: its checkpoint carries a copy
            self._baseline_error = err
        else:  # a baseline that is there is loaded now, so one that does not fit stops the run before it starts
            self.baseline = Baseline(cfg["baseline"], spec, seed, device)
            # a resumed run's checkpoint then overwrites the copy
            base = self._mappo_run()
            self.started_from_baseline = cfg["init"] == "baseline" or (
                cfg["init"] == "auto" and base is not None and self._same_networks(base))
            if self.started_from_baseline:
                self._start_from_baseline()
        self.ready = False  # V_b estimated and the first mixing parameter chosen
        self.switch: np.ndarray | None = None  # per battle: the episode step from which the baseline acts
        self.mixing = 0.0
        self.vb = ReturnStats()
        self.vb_initial: dict = {}
        self.lower = float("-inf")
        self.learner_value = 0.0
        self.updates = 0
        self.calibration = {"checks": 0, "covered": 0, "last_mc": float("nan"), "last_lower": float("nan"),
                            "last_value": float("nan"), "last_mc_se": float("nan")}
        self.window = {"returns": 0.0, "episodes": 0, "learner_steps": 0, "steps": 0}
        self.running: np.ndarray | None = None  # each battle's return so far (float64)
        # StepMix: the returns of the last member_window episodes played as each member h (switch h), [H + 1]
        self.member_returns: list[list[float]] = [[] for _ in range(self.H + 1)]
        self._shard: tuple[int, int, int] | None = None  # a shard's copy: (offset, total, seed of its streams)

    def _mappo_run(self) -> MAPPO | None:
        """The baseline's MAPPO learner when the baseline is a MAPPO run (what algo.init can copy), else None."""
        base = self.baseline.policy
        return base if self.baseline.kind == RUN and isinstance(base, MAPPO) else None

    def _same_networks(self, base: MAPPO) -> bool:
        """Whether a MAPPO baseline's actor and critic have this learner's parameter names and shapes."""
        def shapes(net: nn.Module) -> dict:
            return {k: tuple(v.shape) for k, v in net.state_dict().items()}

        return shapes(base.actor) == shapes(self.mappo.actor) and shapes(base.critic) == shapes(self.mappo.critic)

    def _start_from_baseline(self) -> None:
        """algo.init=baseline (or auto, where it fits): the learner's actor and critic (with its value
        normalisation) become copies of a run baseline's MAPPO networks; its optimisers and generators stay its own."""
        base = self._mappo_run()
        if base is None:
            what = "a scripted policy" if self.baseline.kind != RUN else f"a {self.baseline.config['run']['algo']} run"
            raise BaselineError(f"algo.init=baseline copies a mappo baseline's networks, but algo.baseline "
                                f"{self.baseline.source!r} is {what}; give a mappo run or algo.init=scratch")
        if not self._same_networks(base):
            raise BaselineError(f"algo.init=baseline: the baseline {self.baseline.source!r} has other networks than "
                                f"this learner's (algo.hidden, algo.layers, algo.agent_id, algo.input_norm); give "
                                f"the same settings or algo.init=scratch")
        self.mappo.actor.load_state_dict(base.actor.state_dict())
        self.mappo.critic.load_state_dict(base.critic.state_dict())
        self.mappo.value_norm.load_state_dict(base.value_norm.state_dict())

    # ------------------------------------------------------------------ capability
    def attach_evaluator(self, evaluator: Evaluator) -> None:
        """Keep the trainer's Evaluator: V_b's episodes and the calibration episodes are played on it."""
        self.evaluator = evaluator

    # ------------------------------------------------------------------ values
    def _heads(self, state: np.ndarray) -> torch.Tensor:
        """The 2M ensemble values [..., A, 2M] of global states [..., state_dim] (return units)."""
        x = self.mappo._critic_in(state)
        return torch.cat([h(x) for h in self.bound], -1)

    def _heads_np(self, state: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self._heads(state).cpu().numpy()

    def threshold(self) -> float:
        """(1 - alpha) times V_b's upper end: the level every decision guards against."""
        return (1 - self.cfg["alpha"]) * self.vb.interval()[1]

    # ------------------------------------------------------------------ deciding
    def _floor(self) -> float:
        """algo.return_floor, the lowest return an episode can have (-inf where none is given)."""
        floor = self.cfg["return_floor"]
        return float("-inf") if floor is None else float(floor)

    def _lower(self, heads: np.ndarray, targets: np.ndarray) -> float:
        """lower_bound() of the learner's heads at start states [M] and its critic's targets there [n]."""
        return lower_bound(heads, targets, self.cfg["bound_z"], self._floor())

    def _decide(self, start_values: np.ndarray, targets: np.ndarray, members: tuple | None) -> None:
        """The mixing parameter from the learner's heads at start states [M] and its targets there [n] (the
        learner's episodes), and for StepMix member_values(relative=True)."""
        lo = self.vb.interval()[0]
        thr = self.threshold()
        self.learner_value = float(start_values.mean())
        self.lower = self._lower(start_values, targets)
        if self.cfg["mix"] == "epsmix":
            self.mixing = epsmix_eps(self.lower, lo, thr)
            return
        lowers = np.full(self.H + 1, max(min(self.lower, lo), self._floor()))
        if members is not None:  # member h: V_b's lower end plus a lower bound on its gain over the baseline,
            gains, var, count = members  # and never above what its own episodes returned
            z = self.cfg["bound_z"]
            for h in range(1, self.H):
                played = np.asarray(self.member_returns[h], np.float64)
                if played.size < MIN_MEMBER_EPISODES:
                    continue  # not yet measured: min(L, lo), whatever V_B says
                bound = played.mean() - z * played.std(ddof=1) / np.sqrt(played.size)
                if count[h] > 1:  # the heads' spread and the episodes' standard error, together
                    spread = gains[h].var() + var[h] / count[h]
                    bound = min(bound, lo + gains[h].mean() - z * np.sqrt(spread))
                lowers[h] = max(float(bound), self._floor())
        lowers[0], lowers[self.H] = lo, self.lower
        self.mixing = stepmix_kappa(lowers, thr)

    def _draw(self, new: np.ndarray) -> None:
        """Each new episode's switch step, from one uniform per battle (drawn for every battle each step)."""
        u = torch.rand(len(new), generator=self.coins).numpy()
        if self.cfg["mix"] == "epsmix":
            switch = np.where(u < self.mixing, self.H, 0)
        else:
            h = int(self.mixing)
            switch = np.where(u < self.mixing - h, h + 1, h)
        self.switch = np.where(new, switch, self.switch)

    def _start(self, step: Step) -> None:
        """Before the first training step: the baseline, V_b's episodes, and the first decision."""
        if self.baseline is None:
            raise self._baseline_error or BaselineError("stepmix has no baseline")
        if self.evaluator is None:
            raise RuntimeError("stepmix estimates V_b on the trainer's Evaluator; attach_evaluator first")
        cfg = self.cfg
        envs = min(cfg["vb_envs"], cfg["vb_episodes"])
        per = -(-cfg["vb_episodes"] // envs)
        played = self.evaluator(lambda s: self.baseline.act(s, shadow=True), envs, per, self.seed + 3_000_017)
        self.vb.add(played["return"])
        lo, hi = self.vb.interval()
        self.vb_initial = {"mean": self.vb.mean, "low": lo, "high": hi, "episodes": self.vb.n,
                           "win_rate": float(np.mean(played["won"]))}
        starts = step.t == 0
        heads = self._heads_np(step.state[starts] if starts.any() else step.state).mean(-2)
        self._decide(heads[:, : cfg["ensemble"]].mean(0), np.zeros(0), None)  # no episodes yet: L is the floor
        self.switch = np.zeros(step.n_envs, np.int64)
        self.ready = True

    # ------------------------------------------------------------------ acting
    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Deterministic: the learner's own argmax. Else each battle's episode mixture acts (one decision a team)."""
        if deterministic:
            return self.mappo.act(step, deterministic=True)
        if not self.ready:
            self._start(step)
        if self.switch is None:  # a shard's copy, ready from the driver's decision: its battles start here
            self.switch = np.zeros(step.n_envs, np.int64)
        self._draw(step.t == 0)
        learner = step.t < self.switch
        actions, extras = self.mappo.act(step)
        base = self.baseline.act(step)  # every step, so a scripted baseline with a memory sees them all
        actions = np.where(learner[:, None], actions, base)
        joined = self.switch > 0  # the learner plays part of this episode: the critic learns all of it
        extras.update(learn_mask=learner, value_mask=joined, cut=(step.t == self.switch) & joined, t=step.t.copy(),
                      switch=self.switch.copy())
        if self.cfg["imitation_coef"] > 0:  # the baseline's steps: the actor learns its actions there too
            extras["imitate_weight"] = np.where(learner, 0.0, self.cfg["imitation_coef"]).astype(np.float32)
        return actions, extras

    # ------------------------------------------------------------------ learning
    def set_budget_fraction(self, fraction: float) -> None:
        """BudgetAware: the MAPPO learner's rates follow `lr_decay`; the lower bound's ensembles keep critic_lr."""
        self.mappo.set_budget_fraction(fraction)

    def update(self, rollout: Rollout) -> dict:
        """MAPPO on the learner's steps, the ensembles on each policy's, then the next mixing parameter."""
        learn = rollout.extras["learn_mask"]
        self._count_episodes(rollout)
        metrics: dict = {}
        # no step to learn from (its own, or the baseline's to imitate): Adam's momentum must not move it
        imitating = self.cfg["imitation_coef"] > 0 and (rollout.alive & ~learn[..., None]).any()
        if (rollout.alive & learn[..., None]).any() or imitating:
            metrics.update(self.mappo.update(rollout))
        values, targets, metrics["bound_loss"] = self._update_bound(rollout)
        self._decide_from(rollout, values, targets)
        self.updates += 1
        interval = self.cfg["calibration_interval"]
        if interval and self.updates % interval == 0:
            self._calibrate()
        metrics["learner_step_fraction"] = float(learn.mean())
        return metrics

    def _count_episodes(self, rollout: Rollout) -> None:
        """The rollout's finished episodes: their returns into the behaviour window, the baseline's alone into V_b.

        Each battle's return so far is summed here from the rewards (restarting where Step.t is 0), so an
        episode that ends on a rollout's last step is counted once, in this update, on a resumed run too.
        """
        if self.running is None:
            self.running = np.zeros(rollout.n_envs)
        t, sw, done = rollout.extras["t"], rollout.extras["switch"], rollout.done
        for i in range(rollout.steps):
            self.running = np.where(t[i] == 0, 0.0, self.running) + rollout.reward[i]
            for e in np.flatnonzero(done[i]):
                ret = float(self.running[e])  # a plain float: the checkpoint holds no numpy scalars
                self.window["returns"] += ret
                self.window["episodes"] += 1
                if sw[i, e] == 0:  # the baseline alone: one more episode of V_b
                    self.vb.add([ret])
                member = self.member_returns[min(int(sw[i, e]), self.H)]  # the member this episode played
                member.append(ret)
                del member[: -self.cfg["member_window"]]
        learn = rollout.extras["learn_mask"]
        self.window["learner_steps"] += int(learn.sum())
        self.window["steps"] += learn.size

    def _update_bound(self, rollout: Rollout) -> tuple[np.ndarray, np.ndarray, float]:
        """Ensemble epochs on undiscounted TD(lambda) targets, cut at the switch; the new values and the targets
        (both [T, E, A, 2M]) and the mean loss."""
        cfg, M = self.cfg, self.cfg["ensemble"]
        old = self._heads_np(rollout.state)
        boot, final = bootstrap_values(rollout, lambda obs, state, alive: self._heads_np(state))
        nxt = next_values_of(old, boot, rollout, final)
        reward = np.broadcast_to(team_reward(rollout, self.spec.n_agents)[..., None], old.shape)
        terminated = (rollout.done & ~rollout.truncated).astype(np.float32)
        _, returns = gae(old, nxt, reward, terminated, rollout.done.astype(np.float32), 1.0, cfg["gae_lambda"],
                         rollout.extras["cut"])
        learn = rollout.extras["learn_mask"].astype(bool)
        own = np.concatenate([np.repeat(learn[..., None], M, -1), np.repeat(~learn[..., None], M, -1)], -1)
        mask = rollout.alive[..., None] & own[:, :, None, :]
        half = torch.rand(mask.shape, generator=self.boot) < 0.5  # each head's bootstrap half
        n = int(np.prod(mask.shape[:3]))
        mask_t = (torch.as_tensor(mask) & half).float().reshape(n, 2 * M).to(self.device)
        x = self.mappo._critic_in(rollout.state).reshape(n, -1)
        target = torch.as_tensor(np.ascontiguousarray(returns), dtype=torch.float32, device=self.device).reshape(n, -1)
        old_t = torch.as_tensor(old, device=self.device).reshape(n, -1)
        losses = []
        for _ in range(cfg["bound_epochs"]):
            perm = torch.randperm(n, generator=self.boot).to(self.device)
            for idx in perm.chunk(cfg["minibatches"]):
                pred = torch.cat([h(x[idx]) for h in self.bound], -1)
                loss = value_loss(pred, old_t[idx], target[idx], cfg["clip"], cfg["huber_delta"], False, mask_t[idx])
                self.bound_opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.bound.parameters(), cfg["max_grad_norm"])
                self.bound_opt.step()
                losses.append(loss.item())
        return self._heads_np(rollout.state), returns, float(np.mean(losses)) if losses else 0.0

    def _decide_from(self, rollout: Rollout, values: np.ndarray, targets: np.ndarray) -> None:
        """The next mixing parameter from the rollout's start states and, for StepMix, its members' gains."""
        M, H = self.cfg["ensemble"], self.H
        team = values.mean(2)  # [T, E, 2M]: the team's value, the agents' mean
        tt, sw = rollout.extras["t"], rollout.extras["switch"]
        starts = tt == 0
        if not starts.any():  # no episode began in this rollout: keep the last decision
            return
        start_values = team[starts][:, :M].mean(0)
        own = starts & (sw > 0)  # episodes the learner began: its critic's targets there, the heads' mean
        start_targets = targets.mean(2)[own][:, :M].mean(-1)
        members = None
        if self.cfg["mix"] == "stepmix":
            members = member_values(rollout.reward, team[..., M:], tt, sw, rollout.done, H, relative=True)
        self._decide(start_values, start_targets, members)

    def _calibrate(self) -> None:
        """Monte-Carlo returns of the learner's sampled policy on the Evaluator's battles against its lower bound."""
        if self.evaluator is None:
            return
        cfg = self.cfg
        gen = torch.Generator().manual_seed(self.seed + 7 * self.updates)
        actor = self.mappo

        def sample(step: Step) -> np.ndarray:
            with torch.no_grad():
                logits = masked_logits(actor.actor(actor._actor_in(step.obs)), torch.as_tensor(step.avail))
                probs = torch.softmax(logits, -1).reshape(-1, logits.shape[-1])
                return torch.multinomial(probs, 1, generator=gen).reshape(logits.shape[:-1]).numpy()

        envs = min(cfg["vb_envs"], cfg["calibration_episodes"])
        played = self.evaluator(sample, envs, -(-cfg["calibration_episodes"] // envs), self.seed + 5_000_011 +
                                self.updates)
        mc = float(np.mean(played["return"]))
        c = self.calibration
        c["checks"] += 1
        c["covered"] += int(self.lower <= mc)
        c["last_mc"], c["last_lower"], c["last_value"] = mc, self.lower, self.learner_value
        n = len(played["return"])
        c["last_mc_se"] = float(np.std(played["return"], ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """MAPPO, the ensembles, the generators, each battle's switch, V_b's statistics and the baseline."""
        return {"mappo": self.mappo.state_dict(), "bound": self.bound.state_dict(),
                "bound_opt": self.bound_opt.state_dict(), "coins": self.coins.get_state(),
                "boot": self.boot.get_state(), "ready": self.ready,
                "switch": None if self.switch is None else torch.as_tensor(self.switch),
                "mixing": self.mixing, "lower": self.lower, "learner_value": self.learner_value,
                "vb": self.vb.state_dict(), "vb_initial": dict(self.vb_initial), "updates": self.updates,
                "calibration": dict(self.calibration), "window": dict(self.window),
                "running": None if self.running is None else torch.as_tensor(self.running),
                "member_returns": [list(m) for m in self.member_returns],
                "baseline": None if self.baseline is None else self.baseline.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict(); the baseline is rebuilt from the copy it holds."""
        self.mappo.load_state_dict(state["mappo"])
        self.bound.load_state_dict(state["bound"])
        self.bound_opt.load_state_dict(state["bound_opt"])
        self.coins.set_state(state["coins"])
        self.boot.set_state(state["boot"])
        self.ready = bool(state["ready"])
        self.switch = None if state["switch"] is None else state["switch"].numpy().copy()
        self.mixing, self.lower = float(state["mixing"]), float(state["lower"])
        self.learner_value, self.updates = float(state["learner_value"]), int(state["updates"])
        self.vb.load_state_dict(state["vb"])
        self.vb_initial = dict(state["vb_initial"])
        self.calibration, self.window = dict(state["calibration"]), dict(state["window"])
        self.running = None if state["running"] is None else state["running"].numpy().copy()
        # checkpoints written before the Monte-Carlo member bounds have none: the members are measured again
        self.member_returns = [list(m) for m in state.get("member_returns", [[] for _ in range(self.H + 1)])]
        if state["baseline"] is not None:
            self.baseline = Baseline(self.cfg["baseline"], self.spec, self.seed, str(self.device), state["baseline"])
            self._baseline_error = None

    # ------------------------------------------------------------------ acting in shards (ActingState)
    def acting_state(self) -> dict:
        """What act() reads: MAPPO's acting networks, the baseline, the decision (ready, mixing); per shard the
        generators (MAPPO's, the coins, a run baseline's) and each battle's switch step."""
        base = self.baseline
        policy = {"mappo": self.mappo.acting_state()["policy"], "ready": self.ready, "mixing": self.mixing,
                  "baseline": None if base is None else base.state_dict()}
        shard = {"mappo": self.mappo.acting_state()["shard"], "coins": self.coins.get_state(),
                 "switch": None if self.switch is None else torch.as_tensor(self.switch),
                 "baseline": (base.policy.acting_state()["shard"]
                              if base is not None and isinstance(base.policy, ActingState) else None)}
        return {"policy": policy, "shard": shard}

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() given; a baseline missing here is rebuilt from the copy sent."""
        if "policy" in state:
            p = state["policy"]
            self.mappo.load_acting_state({"policy": p["mappo"]})
            self.ready, self.mixing = bool(p["ready"]), float(p["mixing"])
            if self.baseline is None and p["baseline"] is not None:
                self.baseline = Baseline(self.cfg["baseline"], self.spec, self.seed, str(self.device), p["baseline"])
                self._baseline_error = None
                self._shard_baseline()
        if "shard" in state:
            sh = state["shard"]
            self.mappo.load_acting_state({"shard": sh["mappo"]})
            self.coins.set_state(sh["coins"])
            self.switch = None if sh["switch"] is None else sh["switch"].numpy().copy()
            if sh["baseline"] is not None and self.baseline is not None:
                self.baseline.policy.load_acting_state({"shard": sh["baseline"]})

    def _shard_baseline(self) -> None:
        if self._shard is not None and self.baseline is not None and isinstance(self.baseline.policy, ActingState):
            offset, total, seed = self._shard
            self.baseline.policy.set_shard(offset, total, seed + 2)

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """Coins, switches and samples from streams of the shard's own; each battle's switch is the shard's."""
        self._shard = (int(offset), int(total), int(seed))
        self.mappo.set_shard(offset, total, seed)
        self.coins = torch.Generator().manual_seed(seed + 1)
        self._shard_baseline()

    def prepare_acting(self, step: Step) -> None:
        """Before the first rollout: V_b's episodes and the first decision, on the driver (which has the Evaluator)."""
        if not self.ready:
            self._start(step)

    def diagnostics(self) -> dict:
        """stepmix/* scalars: the mixing parameter, V_b and its interval, the threshold, the lower bound,
        the behaviour return since the last call and the calibration of the bound."""
        if not self.ready:
            return {}
        lo, hi = self.vb.interval()
        w, c = self.window, self.calibration
        scalars = {"stepmix/mixing": self.mixing, "stepmix/v_b": self.vb.mean, "stepmix/v_b_low": lo,
                   "stepmix/v_b_high": hi, "stepmix/v_b_episodes": self.vb.n,
                   "stepmix/threshold": (1 - self.cfg["alpha"]) * self.vb.mean,
                   "stepmix/decision_threshold": self.threshold(), "stepmix/lower_bound": self.lower,
                   "stepmix/learner_value": self.learner_value}
        scalars.update({f"stepmix/v_b_initial_{k}" if k != "mean" else "stepmix/v_b_initial": v
                        for k, v in self.vb_initial.items()})  # before training: the baseline's own episodes
        if w["steps"]:
            scalars["stepmix/learner_step_fraction"] = w["learner_steps"] / w["steps"]
        if w["episodes"]:
            scalars["stepmix/behaviour_return"] = w["returns"] / w["episodes"]
            scalars["stepmix/behaviour_margin"] = scalars["stepmix/behaviour_return"] - scalars["stepmix/threshold"]
        if c["checks"]:
            scalars.update({"stepmix/calibration_coverage": c["covered"] / c["checks"],
                            "stepmix/calibration_mc_return": c["last_mc"],
                            "stepmix/calibration_lower_bound": c["last_lower"],
                            "stepmix/calibration_value": c["last_value"],
                            "stepmix/calibration_mc_se": c.get("last_mc_se", float("nan"))})
        self.window = {"returns": 0.0, "episodes": 0, "learner_steps": 0, "steps": 0}
        return {"scalars": scalars}
