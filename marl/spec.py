"""The few types every environment and learner speaks: EnvSpec, ObsBlock, Step and VecEnv."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ObsBlock:
    """A run of `count` entities of `width` features each inside the flat observation."""

    name: str
    count: int
    width: int

    @property
    def size(self) -> int:
        """Number of floats the block takes."""
        return self.count * self.width


@dataclass(frozen=True)
class EnvSpec:
    """Shapes and names of a multi-agent environment, as learners and loggers need them."""

    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int
    agent_names: tuple[str, ...]
    unit_types: tuple[str, ...] = ()
    reward_dim: int = 1
    reward_names: tuple[str, ...] = ("reward",)
    obs_layout: tuple[ObsBlock, ...] = ()
    name: str = ""
    can_win: bool = True  # False: episodes have no outcome, and loggers show returns instead of win rates
    # the flat global state as blocks of entities, as obs_layout is for an observation (empty: not known)
    state_layout: tuple[ObsBlock, ...] = ()
    # a VecEnv that plays several scenarios at once (battles padded to the largest shapes): the member
    # scenarios' own unpadded specs, indexed by Step.scenario; empty for a single scenario
    scenarios: tuple[EnvSpec, ...] = ()

    def __post_init__(self):
        if len(self.agent_names) != self.n_agents:
            raise ValueError(f"{len(self.agent_names)} agent names for {self.n_agents} agents")
        if len(self.reward_names) != self.reward_dim:
            raise ValueError(f"{len(self.reward_names)} reward names for reward_dim {self.reward_dim}")
        if self.obs_layout and sum(b.size for b in self.obs_layout) != self.obs_dim:
            raise ValueError(f"obs_layout covers {sum(b.size for b in self.obs_layout)} of obs_dim {self.obs_dim}")
        if self.state_layout and sum(b.size for b in self.state_layout) != self.state_dim:
            raise ValueError(f"state_layout covers {sum(b.size for b in self.state_layout)} of state_dim "
                             f"{self.state_dim}")

    def block_slices(self, layout: tuple[ObsBlock, ...] | None = None) -> dict[str, slice]:
        """Where each block of `layout` (obs_layout unless given, e.g. state_layout) lies in the flat array."""
        out, start = {}, 0
        for b in self.obs_layout if layout is None else layout:
            out[b.name] = slice(start, start + b.size)
            start += b.size
        return out


@dataclass
class Step:
    """What a VecEnv returns for E environments after reset or step.

    Where `done` is set the environment has been reset already: `obs`, `state`, `avail` and `alive`
    belong to the new episode, `final_obs` and `final_state` to the step the old one ended on, and
    `episode_return`, `episode_length` and `won` describe the finished episode.

    `info` holds what only some environments report. Adapters with worker processes set
    `info["lost"]` (bool[E]: the episode ended because its worker crashed or hung; it is done and truncated
    but not a finished episode, and is not counted as one) and `info["lost_episodes"]` (the count so far).
    """

    obs: np.ndarray  # f32[E, A, obs_dim]
    state: np.ndarray  # f32[E, state_dim]
    avail: np.ndarray  # bool[E, A, n_actions]
    reward: np.ndarray  # f32[E] or f32[E, K]
    done: np.ndarray  # bool[E]: the episode ended (terminated or truncated)
    truncated: np.ndarray  # bool[E]: it ended by the time limit
    alive: np.ndarray  # bool[E, A]
    t: np.ndarray  # int[E]: steps taken in the current episode
    episode_return: np.ndarray  # f32[E], or f32[E, K] as reward
    episode_length: np.ndarray  # int[E]
    won: np.ndarray  # bool[E]
    final_obs: np.ndarray | None = None
    final_state: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    # int[E]: which of EnvSpec.scenarios each battle plays, for a VecEnv of several scenarios; None otherwise
    scenario: np.ndarray | None = None

    @property
    def n_envs(self) -> int:
        """E, the number of environments stepped together."""
        return self.obs.shape[0]


def first_step(obs: np.ndarray, state: np.ndarray, avail: np.ndarray, alive: np.ndarray, t: np.ndarray,
               reward_dim: int = 1, info: dict | None = None) -> Step:
    """The Step of E environments standing at these arrays: no reward, nothing done, final_obs/state a copy of them.

    What reset() (and set_state()) return: the observations of episodes under way, nothing finished.
    """
    E = obs.shape[0]
    shape = (E, reward_dim) if reward_dim > 1 else (E,)
    return Step(obs=obs, state=state, avail=avail, reward=np.zeros(shape, np.float32), done=np.zeros(E, bool),
                truncated=np.zeros(E, bool), alive=alive, t=t, episode_return=np.zeros(shape, np.float32),
                episode_length=np.zeros(E, np.int64), won=np.zeros(E, bool), final_obs=obs.copy(),
                final_state=state.copy(), info={} if info is None else info)


def check_actions(actions, n_envs: int, n_agents: int, error: type[Exception] = ValueError) -> np.ndarray:
    """`actions` as an array; raises `error` in one line unless they are integers of shape (n_envs, n_agents)."""
    actions = np.asarray(actions)
    if actions.shape != (n_envs, n_agents) or not np.issubdtype(actions.dtype, np.integer):
        raise error(f"actions must be integers of shape ({n_envs}, {n_agents}), got {actions.dtype} {actions.shape}")
    return actions


def finished_envs(step: Step) -> np.ndarray:
    """Indices of the environments whose episode finished on this Step: done, and not lost with a crashed worker."""
    lost = step.info.get("lost")  # lost episodes are played again, never counted (see Step)
    return np.flatnonzero(step.done if lost is None else step.done & ~lost)


@runtime_checkable
class VecEnv(Protocol):
    """E environments stepped in lockstep with arrays in and out, resetting themselves."""

    spec: EnvSpec
    n_envs: int

    def reset(self, seed: int | None = None) -> Step:
        """Start every environment afresh; the same seed gives the same episodes."""

    def step(self, actions: np.ndarray) -> Step:
        """Advance every environment one step with int actions[E, A]."""

    def close(self) -> None:
        """Release whatever the environments hold."""


@runtime_checkable
class Resumable(Protocol):
    """Optional VecEnv capability for exact resume: the full state of every environment, and back."""

    def get_state(self) -> dict:
        """Everything needed to continue the same episodes exactly (arrays and plain values)."""

    def set_state(self, state: dict) -> Step:
        """Restore get_state()'s state; returns the Step the environments stood at. ValueError if it does not fit."""


@runtime_checkable
class FrameSource(Protocol):
    """Optional VecEnv capability for replay recording: the units of every battle, and whom actions aim at."""

    keep_final_frames: bool  # when set, frames() shows a battle that just ended as it ended, not after its reset

    # frame_info(): map, map_x, map_y, walkable bool[X, Y], level uint8[X, Y], cliff bool[X, Y] (cliff faces
    # between levels, which only cliff walkers cross), unit_type str[U],
    # team int8[U] (0 = the agents, who come first), health_max and shield_max f32[U], n_agents, episode_limit
    def frame_info(self) -> dict:
        """The map and the roster a replay viewer draws the units on."""

    def frames(self) -> dict:
        """x, y, health, shield f32[E, U], alive bool[E, U] and target int[E, U] (unit aimed at, -1) now."""

    def action_targets(self, actions: np.ndarray) -> np.ndarray:
        """Unit index each action in int[E, A] attacks or heals, -1 for none."""


# How a field of Rollout is joined from shards of the environments (marl.collectors.join_rollouts), in its
# dataclass field's metadata "join": a field added later declares its own, so the join never lists fields.
PER_STEP = {"join": "step"}  # [T, E, ...] (a dict: each of its arrays): along axis 1
PER_ENV = {"join": "env"}  # [E, ...]: along axis 0
EVENTS = {"join": "events"}  # [n, ...] events of the shards, one after the other
EVENT_ENV = {"join": "event_env"}  # int[n] environment indices of events: shifted by each shard's offset


@dataclass
class Rollout:
    """T steps of E environments as contiguous arrays, plus what the learner stored when acting.

    Index [t] holds the Step the learner acted on (`obs`, `state`, `avail`, `alive`), its `actions`,
    and what the environment answered (`reward`, `done`, `truncated`). `extras` holds the learner's
    own per-step arrays (log-probs, values, masks). `next_obs` ... `next_alive` describe the Step
    after the last one, for bootstrapping; `final_t`, `final_e`, `final_obs`, `final_state` are the
    pre-reset observations of episodes cut by the time limit, whose values are bootstrapped too.
    """

    obs: np.ndarray = field(metadata=PER_STEP)  # f32[T, E, A, obs_dim]
    state: np.ndarray = field(metadata=PER_STEP)  # f32[T, E, state_dim]
    avail: np.ndarray = field(metadata=PER_STEP)  # bool[T, E, A, n_actions]
    alive: np.ndarray = field(metadata=PER_STEP)  # bool[T, E, A]
    actions: np.ndarray = field(metadata=PER_STEP)  # int64[T, E, A]
    reward: np.ndarray = field(metadata=PER_STEP)  # f32[T, E] or f32[T, E, K]
    done: np.ndarray = field(metadata=PER_STEP)  # bool[T, E]
    truncated: np.ndarray = field(metadata=PER_STEP)  # bool[T, E]
    extras: dict = field(metadata=PER_STEP)  # every array [T, E, ...]
    next_obs: np.ndarray = field(metadata=PER_ENV)
    next_state: np.ndarray = field(metadata=PER_ENV)
    next_avail: np.ndarray = field(metadata=PER_ENV)
    next_alive: np.ndarray = field(metadata=PER_ENV)
    final_t: np.ndarray = field(metadata=EVENTS)  # int64[n]
    final_e: np.ndarray = field(metadata=EVENT_ENV)  # int64[n]
    final_obs: np.ndarray = field(metadata=EVENTS)  # f32[n, A, obs_dim]
    final_state: np.ndarray = field(metadata=EVENTS)  # f32[n, state_dim]
    # int[T, E]: Step.scenario at each step, for a VecEnv of several scenarios (indices into EnvSpec.scenarios)
    scenario: np.ndarray | None = field(default=None, metadata=PER_STEP)

    @property
    def steps(self) -> int:
        """T, the number of steps per environment."""
        return self.obs.shape[0]

    @property
    def n_envs(self) -> int:
        """E, the number of environments."""
        return self.obs.shape[1]


@runtime_checkable
class Learner(Protocol):
    """What the trainer needs from a learner; it never asks which learner it is."""

    def act(self, step: Step, deterministic: bool = False) -> tuple[np.ndarray, dict]:
        """Actions int[E, A] for a Step, and the per-step extras to store in the Rollout."""

    def update(self, rollout: Rollout) -> dict:
        """Learn from a Rollout; returns scalar metrics for the logger."""

    def state_dict(self) -> dict:
        """Everything needed to resume learning exactly (models, optimisers, statistics)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict()."""

    def diagnostics(self) -> dict:
        """Extra things for the logger (images, histograms); empty when there are none."""


@runtime_checkable
class ActingState(Protocol):
    """Optional Learner capability: copies of it act on shards of the battles (marl.collectors, marl.ray_collector).

    acting_state() holds only what acting needs, never an optimiser: under "policy" what every shard
    shares (weights, the schedules act() reads), which the driver sends once per update; under "shard"
    what belongs to one copy (its acting random generators, per-battle state such as a coin or a latent
    mode), which a checkpoint keeps per shard. A learner without this capability is copied whole with
    state_dict() (its copies then share the driver's random stream and keep no per-battle state).
    """

    def acting_state(self) -> dict:
        """{"policy": what all shards share, "shard": this copy's acting generators and per-battle state}."""

    def load_acting_state(self, state: dict) -> None:
        """Restore the parts of acting_state() that `state` holds ("policy", "shard" or both)."""

    def set_shard(self, offset: int, total: int, seed: int) -> None:
        """From now on act() sees battles offset .. offset + E - 1 of `total` (per-battle state by global index)
        and draws its acting randomness from streams seeded by `seed`."""

    def prepare_acting(self, step: Step) -> None:
        """On the driver, with the Step of all battles, before acting_state() is sent: settle what acting needs
        from the whole run (StepMix's first decision); most learners have nothing to do."""


@runtime_checkable
class BudgetAware(Protocol):
    """Optional Learner capability: schedules that follow the fraction of the training budget done."""

    def set_budget_fraction(self, fraction: float) -> None:
        """Told before each update: env steps done so far divided by the run's step budget (0 to 1)."""


@runtime_checkable
class GraphReporter(Protocol):
    """Optional Learner capability: the communication graph it deploys (acting, evaluation), for scoring.

    The trainer scores it against an evaluation environment's PlantedGraph (graph/planted_recall).
    CommFormer (marl.agents.commformer) has one: the deterministic top-k of its edge logits.
    """

    def communication_graph(self) -> np.ndarray:
        """bool[N, N], rows receivers and columns senders: True where a message may pass; no self loops."""


@runtime_checkable
class EvalCounters(Protocol):
    """Optional Learner capability: act() extras that evaluation averages over the living agent-steps it plays.

    `eval_counters` maps the name of an extra act() returns, a number per battle and agent ([E, A], e.g. a
    gate's 0 or 1), to the key under which evaluate() reports its mean over the living agents of every step of
    the counted episodes (TensorBoard eval/<key>, `marl eval`). An extra act() leaves out is not reported.
    CommFormer (marl.agents.commformer) has them: messages -> messages_per_agent_step, gates -> gate_open_rate.
    """

    eval_counters: dict[str, str]


@runtime_checkable
class PlantedGraph(Protocol):
    """Optional VecEnv capability: the communication graph the game rewards, known by construction.

    A learner's communication graph can be scored against it (the fraction of planted edges it holds).
    The probe game `comm` (marl.envs.comm) has one: the edge from each agent's informant to the agent.
    """

    def planted_graph(self) -> np.ndarray:
        """bool[N, N], rows receivers and columns senders: True where the right graph has the edge; no self loops."""


# act(step) -> int[E, A] actions: how an Evaluator's caller plays its evaluation battles
ActFn = Callable[[Step], np.ndarray]


@runtime_checkable
class Evaluator(Protocol):
    """Plays deterministic evaluation episodes on battles of the run's own kind, apart from training's."""

    def __call__(self, act: ActFn, n_envs: int, episodes_per_env: int, seed: int, gamma: float = 1.0) -> dict:
        """Each of n_envs battles plays episodes_per_env episodes with `act`, from `seed`.

        Returns "env" int[n] (the battle slot each episode was played in, in order of finishing),
        "return" f32[n, K], "discounted_return" f64[n, K] (sum of gamma^t r_t), "length" int[n],
        "won" bool[n], and "env_steps" (the transitions taken, counted against nothing: the trainer
        logs them as train/eval_env_steps).
        """


@runtime_checkable
class EvaluatesPolicies(Protocol):
    """Optional Learner capability: it evaluates policies of its own (a population's members, a baseline).

    The trainer hands such a learner an Evaluator once, after building it and before any update or resume.
    """

    def attach_evaluator(self, evaluator: Evaluator) -> None:
        """Keep `evaluator` to play episodes on a VecEnv of the run's kind that training does not step."""


@runtime_checkable
class ParetoFront(Protocol):
    """Optional Learner capability: a set of policies with evaluated vector returns, one chosen by preference.

    `marl front RUN_DIR` prints and draws the archive; `marl eval RUN_DIR --preference w` plays the
    policy with the best w . G. C-MORL (marl.agents.cmorl) has one.
    """

    def pareto_archive(self):
        """The marl.pareto.ParetoArchive of evaluated policies (entries' meta says how they were evaluated)."""

    def use_preference(self, preference) -> object:
        """From now on act deterministically with the archived policy of the best w . G; returns its entry."""
