"""Every setting's type, domain and one-line description: one pydantic model per config section.

The defaults live only in the YAML files a user reads (configs/train.yaml, configs/envs/<env>.yaml,
configs/algos/<algo>.yaml); a model here declares no defaults, so every field is required and a test
checks that each YAML file and its model name the same keys. `marl config` prints both side by side.

Why pydantic v2: it is the well-kept standard for declared, typed settings; its constraints (gt, ge,
le, Literal choices, a pattern) are the domain itself, so the error text and the `marl config` table
are derived from the same declaration and cannot drift from the check. Its core is compiled, so a
whole config validates in well under a millisecond. It is imported only here, and marl.config
imports this module only when it validates, so `marl envs` and `marl replay` never load it.

Why one module, built-in learners included: validating a config and printing `marl config` then need
neither torch nor the learner modules, and a reader finds every built-in key's domain in one place.
Plug-ins declare theirs next to their code (see marl/registry.py): a learner class carries a `schema`
attribute beside its `defaults`, an environment plug-in an `EnvPlugin.schema` (or a factory's
`schema` attribute), either a `Settings` subclass or a "module:Class" path to one, so that a plug-in
that `marl envs` imports need not import pydantic.

Checks that need the built environment, or span sections, are a schema's `check_spec(config, spec)`
classmethod, run by marl.config.check_built after the environment is built and before the run
directory is made (a preference's length against reward_dim, train.envs against a number of
scenarios, CommFormer's team size).

Values are checked strictly: marl.config has already coerced a `key=value` override to its default's
type (an int to a float, a whole float to an int), so a value of another type here is an error rather
than something pydantic would quietly convert (1 for true, "7" for 7).
"""

from __future__ import annotations

import importlib
import re
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from marl.config import ConfigError


def setting(description: str, *, domain: str | None = None, **constraints: Any) -> Any:
    """A required field: its one-line description, its constraints (gt, ge, lt, le, pattern, min_length) and,
    where a validator rather than a constraint decides, the wording of its domain."""
    return Field(description=description, json_schema_extra={"domain": domain} if domain else None, **constraints)


class Settings(BaseModel):
    """A config section's settings: unknown keys and values of another type are errors, nan and inf too."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """Checks against the built environment (marl.spec.EnvSpec) or across sections; raise ConfigError."""


class PassThroughSettings(Settings):
    """Settings of an adapter that hands keys it does not list to the environment's factory."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)


SEED_MAX = 2**32 - 1  # numpy's legacy seeding and most environments take 32-bit seeds


# ------------------------------------------------------------------------------------------- train
class TrainSettings(Settings):
    """configs/train.yaml: the trainer's settings."""

    steps: int = setting("env steps (summed over parallel envs) to train for", ge=1)
    envs: int = setting("parallel environments stepped together", ge=1)
    rollout: int = setting("steps per environment collected per update", ge=1)
    seed: int = setting("seed of the learner, torch and the environments", ge=0, le=SEED_MAX)
    device: str = setting("torch device of the learner", domain="cpu, cuda or cuda:N (cuda needs a GPU)")
    torch_threads: int = setting("torch threads while acting (0: one per core)", ge=0)
    update_threads: int = setting("torch threads during updates (0: one per core)", ge=0)
    eval_interval: int = setting("updates between deterministic evaluations (0: never)", ge=0)
    eval_episodes: int = setting("episodes per evaluation", ge=1)
    record_replays: bool = setting("record one deterministic battle into RUN_DIR/replays/ at each evaluation")
    checkpoint_interval: int = setting("updates between checkpoints (0: only the final one)", ge=0)
    keep_checkpoints: bool = setting("also keep each checkpoint written as checkpoints/step-<env steps>.pt")
    log_episodes: bool = setting("append every finished training episode to RUN_DIR/episodes.csv")
    log_interval: int = setting("updates between TensorBoard scalar writes", ge=1)
    runs_dir: str = setting("folder that holds the run directories (made when missing)",
                            domain="a folder path (not an existing file)")
    act_chunks: int = setting("0: the learner acts on all battles with its own generator (the streams runs always "
                              "had); N: the battles act in N shards, each with a random stream of its own, "
                              "bit-identical to ray_workers N", ge=0)
    ray_workers: int = setting("Ray rollout workers, each collecting a shard of the battles (0: no Ray; needs the "
                               "extra: pip install -e \".[ray]\")", ge=0)
    ray_address: str = setting("Ray cluster to join (empty: RAY_ADDRESS, else a local Ray)",
                               domain="HOST:PORT of a Ray head, or empty", pattern=r"^$|^\S+:\d+$")
    ray_worker_cpus: float = setting("CPUs Ray reserves for each worker (its torch and numba threads: at least 1)",
                                     gt=0)
    ray_worker_timeout: float = setting("seconds a worker may take for a rollout (and to start) before it counts as "
                                        "hung, is replaced and its shard collected again", gt=0)
    ray_start_timeout: float = setting("seconds a new worker may take to start (import torch, build its battles) "
                                       "before it counts as hung and is replaced", gt=0)
    ray_max_failures: int = setting("worker failures a run survives; one more checkpoints and stops it", ge=0)
    ray_connect_timeout: float = setting("seconds ray_address may take to answer", gt=0)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError("")  # the declared domain says what is accepted
        if value.startswith("cuda"):
            import torch  # only for a cuda device: the cpu path never pays for the question

            if not torch.cuda.is_available():
                raise ValueError(f"is {value} but CUDA is not available on this machine (torch "
                                 f"{torch.__version__}, no usable GPU); accepted here: cpu")
            index = int(value.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise ValueError(f"is {value} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                                 f"accepted: cpu, cuda, cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return value

    @field_validator("runs_dir")
    @classmethod
    def _runs_dir(cls, value: str) -> str:
        from pathlib import Path

        if not value or "\x00" in value or Path(value).exists() and not Path(value).is_dir():
            raise ValueError("")
        return value


# ------------------------------------------------------------------------------------------- environments
class SMACSettings(Settings):
    """configs/envs/smac.yaml: the embedded simulator's options (SMAC's StarCraft2Env options)."""

    step_mul: Literal[8] = setting("game loops per step (the simulator implements 8)")
    move_amount: Literal[2] = setting("distance of a move order (the simulator implements 2)")
    difficulty: Literal["7"] = setting("built-in AI level of the real game (the embedded AI is one level)")
    game_version: str | None = setting("real-game only: ignored")
    seed: int | None = setting("seed of the battles when train.seed does not give one (null: from the OS)",
                               ge=0, le=SEED_MAX)
    continuing_episode: bool = setting("real-game only: accepted, no effect")
    obs_all_health: bool = setting("observations show every unit's health (and shield)")
    obs_own_health: bool = setting("observations show the agent's own health (forced on by obs_all_health)")
    obs_last_action: bool = setting("observations show the allies' last actions")
    obs_pathing_grid: bool = setting("observations include the pathing grid around the agent")
    obs_terrain_height: bool = setting("observations include the terrain height around the agent")
    obs_instead_of_state: bool = setting("the state is the agents' observations joined")
    obs_timestep_number: bool = setting("observations include the step number / episode limit")
    obs_own_pos: bool | None = setting("SMACv2: own x/32, y/32 in the own features; null: on for SMACv2 maps only")
    use_unit_ranges: bool | None = setting("SMACv2: per-unit shoot and sight ranges; null: on for SMACv2 maps only")
    min_attack_range: int = setting("SMACv2: shoot range = max(weapon range, this) when unit ranges are on", ge=0)
    weapon_delay: bool = setting("marl's: damage lands after the weapon's damage point and its missile's flight, "
                                 "and the zealot's second blade 0.28 s after its first (the game's values; "
                                 "docs/smac_rules.md section 18); off: at once, as before")
    turning: bool = setting("the game's turning: units turn at 999.84 deg/s (colossus 720) and fire only when facing "
                            "their target (docs/smac_rules.md section 18); off: they face anything at once")
    acceleration: bool = setting("the game's medivac acceleration: a medivac starts from rest and gains 2.25 per "
                                 "game-second squared (ally copy 2.3125) up to full speed; ground units stay at full "
                                 "speed at once (docs/smac_rules.md section 18); off: full speed at once")
    off_creep_decay: bool = setting("the game's: a zerg structure off creep (2s_vs_1sc's spine crawler) loses 1 HP "
                                    "every 0.3332 game-seconds (docs/smac_rules.md section 18); false: never")
    state_last_action: bool = setting("the state includes every agent's last action")
    state_timestep_number: bool = setting("the state includes the step number / episode limit")
    reward_sparse: bool = setting("reward only at the end: +1 win, -1 loss")
    reward_only_positive: bool = setting("dense reward counts only damage and kills dealt")
    reward_death_value: int = setting("reward per enemy killed", ge=0)
    reward_win: int = setting("reward for winning the battle", ge=0)
    reward_defeat: int = setting("reward for losing the battle")
    reward_negative_scale: float = setting("weight of the damage taken when rewards may be negative", ge=0)
    reward_scale: bool = setting("scale rewards so that a won battle sums to about reward_scale_rate")
    reward_scale_rate: int = setting("the scaled reward of a won battle", ge=1)
    objectives: list[Literal["combat", "safety"]] = setting(
        "the reward's objectives, in order: combat (SMAC's reward, episode sum in [0, ~20]), safety (the team's "
        "health and shields kept, episode sum in [-20, 0]); two make a vector reward",
        domain="a list of combat, safety, each at most once (combat,safety or [combat,safety])", min_length=1)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"names an objective twice ({value}); each of combat, safety at most once")
        return value
    replay_dir: str = setting("real-game only: ignored")
    replay_prefix: str = setting("real-game only: ignored")
    window_size_x: int = setting("real-game only: ignored", ge=1)
    window_size_y: int = setting("real-game only: ignored", ge=1)
    heuristic_ai: Literal[False] = setting("not implemented: must stay false")
    heuristic_rest: Literal[False] = setting("not implemented: must stay false")
    debug: bool = setting("real-game only: ignored")


class SC2Settings(PassThroughSettings):
    """configs/envs/sc2.yaml: real StarCraft II; other keys go to StarCraft2Env."""

    seed: int | None = setting("base seed when train.seed does not give one; game e gets seed + e",
                               ge=0, le=SEED_MAX)


class PettingZooSettings(PassThroughSettings):
    """configs/envs/pettingzoo.yaml (and mpe.yaml, gym.yaml): the adapter's options; other keys go to the factory."""

    workers: int = setting("0: the copies run in this process; W > 0: in W worker processes", ge=0)
    worker_timeout: float = setting("seconds a worker may take to answer before it counts as hung and is "
                                    "restarted", gt=0)
    team_reward: Literal["mean", "sum"] = setting("the team's reward from the agents' rewards of a step")
    win_info: str = setting('infos key that marks a won episode (such as battle_won); "": no win')
    seed: int | None = setting("base seed when train.seed does not give one; copy e gets seed + e",
                               ge=0, le=SEED_MAX)


class CommSettings(Settings):
    """configs/envs/comm.yaml: the probe game whose right communication graph is known (envs/comm.py)."""

    n_agents: int = setting("N, the agents", ge=2)
    symbols: int = setting("m, the symbols an agent may hold, and its actions; chance pays 1/m", ge=2)
    episode_limit: int = setting("steps per episode; every episode is cut there", ge=1)
    structure: Literal["random", "ring", "hub"] = setting("the informant graph, unless `informants` gives one")
    structure_seed: int = setting("seed of the random structure, apart from `seed`", ge=0, le=SEED_MAX)
    informants: list[int] | None = setting("an explicit graph [inf(0), inf(1), ...], a derangement of 0..N-1; "
                                           "overrides structure", domain="a list of N agent indices")
    need_prob: float = setting("intermittent: probability that an agent's needed flag is up at a step", ge=0, le=1)
    seed: int | None = setting("base seed of the symbols when train.seed does not give one", ge=0, le=SEED_MAX)


# ------------------------------------------------------------------------------------------- learners
class PPOSettings(Settings):
    """The settings every PPO-based learner has (agents/ppo.py); a learner's schema adds its own."""

    lr: float = setting("learning rate (of the actor, or of the whole network)", gt=0)
    lr_decay: Literal["none", "linear"] = setting("learning-rate schedule over the step budget: none (constant) or "
                                                  "linear (lr and critic_lr fall to 0 at the budget's end, set "
                                                  "before each update)")
    gamma: float = setting("discount", ge=0, le=1)
    gae_lambda: float = setting("GAE lambda", ge=0, le=1)
    clip: float = setting("PPO ratio clip (and value clip); above 1 the lower ratio bound would be negative",
                          gt=0, le=1)
    ppo_epochs: int = setting("passes over each rollout", ge=1)
    minibatches: int = setting("minibatches per pass", ge=1)
    entropy_coef: float = setting("weight of the entropy bonus", ge=0)
    value_coef: float = setting("weight of the value loss", ge=0)
    huber_delta: float = setting("Huber loss threshold of the value loss", gt=0)
    max_grad_norm: float = setting("gradient norm clip", gt=0)
    value_clip: bool = setting("clip the value update around the old values")
    adam_eps: float = setting("Adam's epsilon", gt=0)
    preference: list[Annotated[float, Field(ge=0)]] | None = setting(
        "weights w of a vector reward's objectives: the learner learns w . r (linear scalarisation); null: the "
        "environment's one reward", domain="K numbers >= 0, not all 0, one per objective (0.3,0.7 or [0.3,0.7])")

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """A vector reward needs a preference, and a preference needs one weight >= 0 per objective, not all 0."""
        preference, names = config["algo"].get("preference"), ", ".join(spec.reward_names)
        algo = config.get("run", {}).get("algo", "this learner")
        if preference is None and spec.reward_dim > 1:
            even = ",".join(["1"] * spec.reward_dim)
            raise ConfigError(f"{algo} learns one reward, but {spec.name or 'this environment'} has {spec.reward_dim} "
                              f"objectives ({names}); give their weights with algo.preference, for example "
                              f"algo.preference={even}")
        if preference is not None:
            from marl.pareto import check_preference

            try:
                check_preference(preference, spec.reward_dim, spec.reward_names)
            except ValueError as err:
                raise ConfigError(f"algo.preference: {err}") from None


class MAPPONetSettings(PPOSettings):
    """MAPPO's feed-forward networks and critic settings, shared by MAPPO and the learners built on it (StepMix)."""

    critic_lr: float = setting("critic learning rate", gt=0)
    value_norm: bool = setting("normalise value targets with running statistics")
    hidden: int = setting("width of the actor and critic layers", ge=1)
    layers: int = setting("hidden layers of the actor and critic", ge=1)
    agent_id: bool = setting("append the agent's one-hot id to actor and critic inputs")
    input_norm: bool = setting("LayerNorm over the network inputs (MAPPO's); false for a few raw features, such as "
                               "deep-sea-treasure's grid position, which it would map to one vector along a ray")
    actor_gain: float = setting("orthogonal-init gain of the actor's output layer: 0.01 starts from a near-uniform "
                                "policy; the MAPPO authors use 1 on MMM2 (their --gain)", gt=0)


class MAPPOSettings(MAPPONetSettings):
    """configs/algos/mappo.yaml: MAPPO (shared actor, centralised critic on the global state)."""

    recurrent: bool = setting("a GRU after the actor's and the critic's layers, trained on chunks of the rollout "
                              "(the MAPPO authors' rMAPPO); false: feed-forward networks")
    chunk_length: int = setting("recurrent: steps per training sequence, each started from the hidden state stored "
                                "when it was played (rMAPPO's data_chunk_length)", ge=1)


class CommFormerSettings(PPOSettings):
    """configs/algos/commformer.yaml: CommFormer (graph-masked transformer, learned sparse graph, gates)."""

    graph_lr: float = setting("edge-logit learning rate", gt=0)
    graph_every: int = setting("every graph_every-th PPO epoch steps only the graph optimiser", ge=1)
    graph_tau: float = setting("Gumbel-softmax temperature of the training graph samples", gt=0)
    graph_tau_end: float = setting("the temperature graph_tau is annealed to (geometrically) over the budget", gt=0)
    graph_entropy_coef: float = setting("weight of the edge logits' row entropy on graph steps, falling linearly to 0 "
                                        "at the freeze (post_stable_at; the budget's end without post_stable)", ge=0)
    graph_noise: Literal["batch", "sample"] = setting("one Gumbel draw per minibatch (authors), or one per sample")
    graph_objective: Literal["ppo", "unclipped"] = setting("graph steps follow the clipped PPO loss (authors), or "
                                                           "the loss without the clip")
    graph_value_loss: bool = setting("graph steps follow the whole loss, the critic's included (true, the authors'), "
                                     "or the actors' terms only (false)")
    graph_estimator: Literal["straight_through", "score"] = setting(
        "Gumbel top-k with straight-through gradients (authors), or rollouts' sampled graphs learned by their score")
    warmup: int = setting("first updates use the raw logits as a soft mask", ge=0)
    post_stable: bool = setting("freeze the graph at its top-k once post_stable_at of the budget has passed")
    post_stable_at: float = setting("fraction of the budget after which the graph is frozen", ge=0, le=1)
    sparsity: float = setting("k = max(int(N * sparsity), 1) incoming edges per agent (at most N - 1)", gt=0, le=1)
    graph: Literal["learned", "full", "random"] = setting("the communication graph (full and random: ablations)")
    self_loops: bool = setting("each agent always hears itself")
    gates: bool = setting("temporal gates: each agent decides each step whether to listen")
    gate_cost: float = setting("lambda * mean(P(gate open)) added to the loss; negative would reward listening",
                               ge=0)
    gate_cost_from: float = setting("fraction of the budget from which gate_cost is charged (0: from the start)",
                                    ge=0, le=1)
    gates_from: float = setting("fraction of the budget from which the gates decide; before it every gate is open "
                                "(0: from the start)", ge=0, le=1)
    gate_lr_decay: bool = setting("the gates' learning rate follows lr_decay, as the network's does (true), or "
                                  "stays at lr (false)")
    n_embd: int = setting("embedding width", ge=1)
    n_block: int = setting("transformer blocks", ge=1)
    listen_floor: float = setting("share of each encoder attention row spread evenly over the receiver's edges "
                                  "(0: the softmax alone, the authors')", ge=0, lt=1)

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """A team of one has no one to hear: k = max(int(N * sparsity), 1) edges need N - 1 >= 1 senders.

        For N >= 2 every sparsity in (0, 1] gives 1 <= k <= N; only sparsity 1 reaches k = N, which the
        graph caps at N - 1 (everyone else), its intended meaning, so no sparsity is refused there.
        """
        super().check_spec(config, spec)
        if spec.n_agents < 2:
            raise ConfigError(f"commformer needs a team of at least 2 agents (each hears k = max(int(N * "
                              f"algo.sparsity), 1) of the N - 1 others), but {spec.name or 'this environment'} has "
                              f"{spec.n_agents}; train it with --algo mappo")


class CMORLSettings(PPOSettings):
    """configs/algos/cmorl.yaml: C-MORL (a population on a preference grid, then constrained extension)."""

    critic_lr: float = setting("critic learning rate", gt=0)
    hidden: int = setting("width of the actor and critic layers", ge=1)
    layers: int = setting("hidden layers of the actor and critic", ge=1)
    agent_id: bool = setting("append the agent's one-hot id to actor and critic inputs")
    input_norm: bool = setting("LayerNorm over the network inputs (MAPPO's); false for a few raw features, such as "
                               "deep-sea-treasure's grid position, which it would map to one vector along a ray")
    stage1_preferences: list[list[Annotated[float, Field(ge=0)]]] | None = setting(
        "Stage 1's preferences, one policy each; null: the authors' grid (6 for 2 or 3 objectives, the one-hot "
        "corners for 4 or more)", domain="null, or a list of K-weight lists, each >= 0 and not all 0")
    stage1_fraction: float = setting("fraction of the step budget after which Stage 1 ends and Stage 2 begins",
                                     ge=0, le=1)
    select_every: int = setting("Stage 2: updates between selections of archived policies to extend", ge=1)
    select: int | None = setting("policies selected per Stage-2 round (each branches once per objective); null: "
                                 "the authors' 5 for 2 objectives, 6 otherwise", ge=1)
    barrier_beta: float = setting("Stage 2 constraint G_j >= G_j(r) - (1 - beta) |G_j(r)| (beta G_j(r) for a "
                                  "positive return)", gt=0, le=1)
    barrier_t: float = setting("log-barrier sharpness t: the barrier is (1/t) mean_j -log(margin_j)", gt=0)
    archive_size: int = setting("most policies the Pareto archive keeps (pruned by crowding distance)", ge=4)
    eval_every: int = setting("updates between evaluations of every policy into the archive (0: only at "
                              "selections)", ge=0)
    eval_episodes: int = setting("deterministic episodes per policy and evaluation battle", ge=1)
    eval_envs: int = setting("evaluation battles per policy (all policies play in one batched call)", ge=1)
    hv_ref: list[float] | None = setting(
        "hypervolume reference point, one value per objective; null: the environment's fixed one (smac's "
        "combat 0, safety -20), else no hypervolume", domain="null or K numbers (0,-25 or [0,-25])")

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """A vector reward, no single preference, one environment per Stage-1 policy, K-long vectors."""
        algo, names = config["algo"], ", ".join(spec.reward_names)
        where = spec.name or "this environment"
        if spec.reward_dim < 2:
            raise ConfigError(f"cmorl learns a front of trade-offs, but {where} has one reward; give it objectives "
                              "(smac: env.objectives=combat,safety) or train --algo mappo")
        if algo["preference"] is not None:
            raise ConfigError("cmorl learns a policy per trade-off: algo.preference must stay null; pick a policy "
                              "afterwards with marl eval RUN_DIR --preference w")
        from marl.pareto import check_preference

        prefs = algo["stage1_preferences"]
        for i, w in enumerate(prefs or []):
            try:
                check_preference(w, spec.reward_dim, spec.reward_names)
            except ValueError as err:
                raise ConfigError(f"algo.stage1_preferences[{i}]: {err}") from None
        count = len(prefs) if prefs else (6 if spec.reward_dim <= 3 else spec.reward_dim)
        if not prefs and count == 0:
            raise ConfigError("algo.stage1_preferences is empty; give at least one preference or null")
        if config["train"]["envs"] < max(count, spec.reward_dim):
            raise ConfigError(f"train.envs is {config['train']['envs']}; cmorl gives each of its {count} Stage-1 "
                              f"policies (and each of the {spec.reward_dim} branches of a selected one) an "
                              f"environment of its own: set train.envs >= {max(count, spec.reward_dim)}")
        if algo["hv_ref"] is not None and len(algo["hv_ref"]) != spec.reward_dim:
            raise ConfigError(f"algo.hv_ref has {len(algo['hv_ref'])} values; give one per objective: "
                              f"{spec.reward_dim} ({names})")
        if algo["archive_size"] < 2 * spec.reward_dim:
            raise ConfigError(f"algo.archive_size is {algo['archive_size']}; it must be >= {2 * spec.reward_dim} "
                              "(2 per objective, so every objective's extremes survive pruning)")


class StepMixSettings(MAPPONetSettings):
    """configs/algos/stepmix.yaml: StepMix / EpsMix, MAPPO mixed with a frozen safe baseline (agents/stepmix/)."""

    baseline: str = setting("the safe baseline: RUN_DIR (an earlier marl run on this environment, its last "
                            "checkpoint) or module:factory (factory(spec) -> a policy with act(step, deterministic))",
                            domain="a run directory or module:factory")
    mix: Literal["stepmix", "epsmix"] = setting("one switch step per episode (learner first, then the baseline), "
                                                "or one coin per episode")
    alpha: float = setting("every episode's value is kept at or above (1 - alpha) V_b", ge=0, le=1)
    init: Literal["auto", "scratch", "baseline"] = setting(
        "the learner's first networks: a copy of a run baseline's MAPPO actor and critic (baseline), its own "
        "initialisation (scratch, the paper's learner), or the copy where the baseline is a MAPPO run of the same "
        "networks and scratch otherwise (auto)")
    imitation_coef: float = setting("weight of a behaviour-cloning term that teaches the learner the baseline's "
                                    "actions on the steps the baseline took (0: off, the paper's learner)", ge=0)
    vb_episodes: int = setting("the baseline's sampled episodes that estimate V_b before training", ge=2)
    vb_envs: int = setting("battles V_b's and the calibration's episodes are played on", ge=1)
    ensemble: int = setting("critics per ensemble of the lower bound (the learner's and the baseline's)", ge=2)
    bound_z: float = setting("the lower bound is the ensemble mean minus bound_z ensemble standard deviations", ge=0)
    bound_epochs: int = setting("passes of the ensembles over each rollout", ge=1)
    calibration_interval: int = setting("updates between Monte-Carlo checks of the lower bound (0: never)", ge=0)
    calibration_episodes: int = setting("episodes of the learner's sampled policy per calibration check", ge=1)
    member_window: int = setting("StepMix: each member's last episodes whose returns bound it (Monte Carlo)", ge=2)
    return_floor: float | None = setting("the lowest return an episode can have (SMAC: 0); no lower bound goes "
                                         "below it, and it is the learner's bound before its episodes measure one "
                                         "(null: none, so EpsMix and StepMix start at 0)")

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """A baseline must be named, and the return must be one number (the constraint is on it)."""
        super().check_spec(config, spec)
        if not config["algo"].get("baseline"):
            raise ConfigError("stepmix needs a baseline: algo.baseline=RUN_DIR (an earlier marl run on this "
                              "environment) or algo.baseline=module:factory (a scripted policy)")
        if spec.reward_dim != 1:
            raise ConfigError(f"stepmix keeps one return above its baseline's, but {spec.name or 'this environment'} "
                              f"has {spec.reward_dim} objectives ({', '.join(spec.reward_names)})")


class MRASettings(PPOSettings):
    """configs/algos/mra.yaml: MRA (entity tokens, K latent modes, a game-conditioned prior; one policy, any team)."""

    critic_lr: float = setting("critic learning rate", gt=0)
    value_norm: bool = setting("normalise value targets with running statistics")
    hidden: int = setting("token width d of the relational encoder, the action heads and the critic", ge=1)
    encoder_blocks: int = setting("shared self-attention blocks among all tokens before the K mode heads (0: the "
                                  "mode heads alone, as the authors' encoder)", ge=0)
    attn_heads: int = setting("heads of the shared self-attention blocks (hidden must be a multiple)", ge=1)
    latent_modes: int = setting("K: latent modes, each a relational head; 1 with mi_coef=0 game_id_coef=0 is "
                                "entity-PPO", ge=1)
    mi_coef: float = setting("weight of the mutual information log pi(a|s,z) - log E_z' pi(a|s,z')", ge=0)
    game_id_coef: float = setting("weight of the game-identification cross-entropy over the training scenarios",
                                  ge=0)
    eval_latent: Literal["sample", "mode"] = setting("evaluation's latent z: drawn from the prior, or its most "
                                                     "likely mode")
    prior_temperature: float = setting("T of the prior's logits MLP(sizes/10) / T (the authors': 4)", gt=0)

    @classmethod
    def check_spec(cls, config: dict, spec) -> None:
        """The token width splits among the heads; the env must lay out its observation and state as entities."""
        super().check_spec(config, spec)
        algo = config["algo"]
        if algo["hidden"] % algo["attn_heads"]:
            raise ConfigError(f"algo.hidden ({algo['hidden']}) must be a multiple of algo.attn_heads "
                              f"({algo['attn_heads']})")
        from marl.agents.mra.learner import layout_problem

        problem = layout_problem(spec)
        if problem:
            raise ConfigError(problem)


ENV_SCHEMAS: dict[str, type[Settings]] = {"smac": SMACSettings, "sc2": SC2Settings, "pettingzoo": PettingZooSettings,
                                          "mpe": PettingZooSettings, "gym": PettingZooSettings,
                                          "comm": CommSettings}
LEARNER_SCHEMAS: dict[str, type[Settings]] = {"mappo": MAPPOSettings, "commformer": CommFormerSettings,
                                              "cmorl": CMORLSettings,
                                              "stepmix": StepMixSettings,
                                              "mra": MRASettings}


# ------------------------------------------------------------------------------------------- lookup
def resolve(schema: Any, owner: str) -> type[Settings] | None:
    """A plug-in's declared schema: a Settings subclass, or a "module:Class" path to one (None: none declared)."""
    if schema is None:
        return None
    if isinstance(schema, str):
        module, _, attr = schema.partition(":")
        try:
            schema = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as err:
            raise ConfigError(f"{owner} declares schema {schema!r}, which cannot be imported: "
                              f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                              ) from None
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigError(f"{owner} declares a schema that is not a pydantic model (subclass marl.settings.Settings)")
    return schema


def schema_of(section: str, config: dict) -> type[BaseModel] | None:
    """The schema of a config section of this run (None: a plug-in that declares none)."""
    run = config.get("run", {})
    if section == "train":
        return TrainSettings
    if section == "env":
        name = run.get("env")
        if name in ENV_SCHEMAS:
            return ENV_SCHEMAS[name]
        from marl.registry import ENVS, env_plugins

        plugin = ENVS.get(name) or env_plugins().get(name)
        return resolve(getattr(plugin, "schema", None), f"environment plug-in {name!r}") if plugin else None
    name = run.get("algo")
    if name in LEARNER_SCHEMAS:
        return LEARNER_SCHEMAS[name]
    from marl.registry import learner_plugins

    cls = learner_plugins().get(name)
    return resolve(getattr(cls, "schema", None), f"learner plug-in {name!r}")


def partial(section: str, config: dict) -> bool:
    """Whether only the keys a run sets are checked: an environment plug-in keeps its defaults in its factory."""
    return section == "env" and config.get("run", {}).get("env") not in ENV_SCHEMAS


# ------------------------------------------------------------------------------------------- domains in words
def show(value: Any) -> str:
    """A value as a message shows it: 2.0 as 2, True as true, None as null, a string quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # the user typed 2, which the type check made 2.0
    return repr(value)


def _choice(value: Any) -> str:
    """A choice as YAML would need it written: a string that reads as another type ('7') keeps its quotes."""
    if isinstance(value, str):
        import yaml

        return value if isinstance(yaml.safe_load(value), str) else repr(value)
    return show(value)


def _bounds(metadata: list) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in metadata:
        for name in ("gt", "ge", "lt", "le", "pattern", "min_length"):
            if getattr(m, name, None) is not None:
                out[name] = getattr(m, name)
    return out


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, type(int | None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(get_args(annotation))
    return annotation, False


def type_name(field: FieldInfo) -> str:
    """The field's type in a word or two: int, float, bool, str, with `| null` when null is allowed."""
    base, optional = _split_optional(field.annotation)
    if get_origin(base) is Literal:
        base = type(get_args(base)[0])
    if get_origin(base) is list:  # list[float], list[Literal['a', 'b']] as list[str]: the items' own type
        (item,) = get_args(base)
        item = get_args(item)[0] if get_origin(item) is Annotated else item
        item = type(get_args(item)[0]) if get_origin(item) is Literal else item
        name = f"list[{getattr(item, '__name__', str(item))}]"
    else:
        name = str(base) if get_origin(base) is not None else getattr(base, "__name__", str(base))
    return f"{name} | null" if optional else name


def domain(field: FieldInfo) -> str:
    """What the field accepts, in the words of `must be ...`: "in (0, 1]", "a positive integer", "one of a, b"."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    base, optional = _split_optional(field.annotation)
    b = _bounds(field.metadata)
    if extra.get("domain"):
        text = str(extra["domain"])
    elif get_origin(base) is Literal:
        choices = [_choice(c) for c in get_args(base)]
        text = choices[0] if len(choices) == 1 else "one of " + ", ".join(choices)
    elif base is bool:
        text = "true or false"
    elif base is int:
        low = b["ge"] if "ge" in b else b["gt"] + 1 if "gt" in b else None
        high = b["le"] if "le" in b else b["lt"] - 1 if "lt" in b else None
        if low is not None and high is not None:
            text = f"an integer in [{low}, {high}]"
        elif low == 1:
            text = "a positive integer"
        elif low is not None:
            text = f"an integer >= {low}"
        elif high is not None:
            text = f"an integer <= {high}"
        else:
            text = "an integer"
    elif base is float:
        low = ("(", b["gt"]) if "gt" in b else ("[", b["ge"]) if "ge" in b else None
        high = (")", b["lt"]) if "lt" in b else ("]", b["le"]) if "le" in b else None
        if low and high:
            text = f"in {low[0]}{show(low[1])}, {show(high[1])}{high[0]}"
        elif low:
            text = f"{'>' if low[0] == '(' else '>='} {show(low[1])}"
        elif high:
            text = f"{'<' if high[0] == ')' else '<='} {show(high[1])}"
        else:
            text = "a number"
    elif base is str:
        text = "a string"
    else:
        text = f"a {type_name(field)}"
    if optional:
        return "true, false or null" if text == "true or false" else f"{text} or null"
    return text


# ------------------------------------------------------------------------------------------- validation
def _message(section: str, schema: type[BaseModel], error: dict, values: dict) -> str:
    """One line for pydantic's first error of a section, from the field's declared domain."""
    name = str(error["loc"][0]) if error["loc"] else ""
    key = f"{section}.{name}"
    if error["type"] in ("extra_forbidden", "no_such_attribute"):
        return f"unknown config key {key!r}; valid keys in {section}: {', '.join(sorted(schema.model_fields))}"
    field = schema.model_fields.get(name)
    if field is None:  # a model-level validator of a plug-in: its own words
        return f"{section}: {error['msg']}"
    if error["type"] == "missing":
        return f"{key} is missing; it must be {domain(field)} ({field.description})"
    custom = str((error.get("ctx") or {}).get("error", "")) if error["type"] == "value_error" else ""
    if custom:
        return f"{key} {custom}"
    return f"{key} must be {domain(field)}, got {show(values.get(name, error.get('input')))}"


def problem(section: str, config: dict) -> tuple[str, str] | None:
    """The first bad key of a section and its one-line message, or None when the section is valid."""
    schema = schema_of(section, config)
    if schema is None:
        return None
    values = config[section]
    try:
        if partial(section, config):  # only the keys given: the factory holds the other defaults
            blank = schema.model_construct()
            for name, value in values.items():
                if name in schema.model_fields or schema.model_config.get("extra") != "allow":
                    schema.__pydantic_validator__.validate_assignment(blank, name, value)
        else:
            schema.model_validate(values)
    except ValidationError as err:
        error = err.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        return f"{section}.{name}", _message(section, schema, error, values)
    return None


FACTORY_DEFAULT = "(factory default)"


def describe(config: dict) -> list[dict]:
    """Every key of a resolved config: section, key, type, domain, value and description (for `marl config`)."""
    rows = []
    for section in ("train", "env", "algo"):
        schema = schema_of(section, config)
        fields = dict(schema.model_fields) if schema else {}
        names = list(config[section]) + [k for k in fields if k not in config[section]]  # the YAML file's order
        for name in names:
            field = fields.get(name)
            # an environment plug-in's key the run leaves alone takes the factory's own default
            value = config[section].get(name, FACTORY_DEFAULT)
            rows.append({"key": f"{section}.{name}", "value": value,
                         "type": type_name(field) if field else type(value).__name__ if value is not None else "-",
                         "domain": domain(field) if field else "(not declared)",
                         "description": field.description if field else "passed to the environment's factory"
                         if section == "env" else ""})
    return rows
