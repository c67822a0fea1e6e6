"""Arrays of a VecEnv padded to larger shapes by their layouts, so battles of several team sizes share one batch.

The rules (a learner reads padding as nothing there):

- Observations and states are padded block by block, by `EnvSpec.obs_layout` and `state_layout` (the
  same block names in the same order on both sides). Rows beyond the source block's count are zeros:
  a padded entity reads as absent, as a dead or unseen unit does. A row narrower than the target's is
  padded with zeros at its end; widths may differ only by the difference in `n_actions`, because such
  rows end with an action one-hot whose last part (SMAC's attacks, one per enemy) grows with the team.
  A state block named `agent_obs` holds one observation per agent and is padded as observations are.
- Agents beyond the source's count are never alive; their only available action is 0 (the no-op, as
  for a dead SMAC unit), and 0 is the only action they may be given.
- The action axis is padded at its end; padded actions are never available.

`padded_spec` gives the padded EnvSpec of several specs (the largest count and width of every block),
`PadPlan` writes one source's arrays into padded ones, and `pad_env` wraps a VecEnv so that its Steps
come padded to a given EnvSpec (how `marl eval --scenario` fits battles to a trained learner's shapes,
and how a mixture records a replay of one of its scenarios). `envs/smac/mixture.py` builds its batch of
several scenarios from the same plans.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from marl.spec import EnvSpec, FrameSource, ObsBlock, Resumable, Step, check_actions

AGENT_OBS = "agent_obs"  # a state block of one observation per agent (SMAC's obs_instead_of_state)


class PaddingError(ValueError):
    """Shapes that cannot be padded into one another; the message is one line."""


def _names(layout: tuple[ObsBlock, ...]) -> list[str]:
    return [b.name for b in layout]


def _max_layout(layouts: list[tuple[ObsBlock, ...]], what: str, agent_obs_width: int = 0) -> tuple[ObsBlock, ...]:
    """Every block's largest count and width over layouts of the same block names (agent_obs: the padded obs)."""
    first = _names(layouts[0])
    for other in layouts[1:]:
        if _names(other) != first:
            raise PaddingError(f"their {what} blocks differ ({', '.join(first)} against {', '.join(_names(other))})")
    out = []
    for k, name in enumerate(first):
        width = agent_obs_width if name == AGENT_OBS else max(lay[k].width for lay in layouts)
        out.append(ObsBlock(name, max(lay[k].count for lay in layouts), width))
    return tuple(out)


def _common_prefix_names(specs: list[EnvSpec], field: str, fallback: tuple[str, ...]) -> tuple[str, ...]:
    """The longest spec's names when every other spec's are a prefix of them, else the fallback."""
    longest = max(specs, key=lambda s: len(getattr(s, field)))
    names = tuple(getattr(longest, field))
    if all(tuple(getattr(s, field)) == names[:len(getattr(s, field))] for s in specs):
        return names
    return fallback


def padded_spec(specs: Sequence[EnvSpec], like: EnvSpec | None = None, *, name: str = "",
                scenarios: tuple[EnvSpec, ...] = ()) -> EnvSpec:
    """The EnvSpec every one of `specs` (and `like`, when given) pads into: each block at its largest count
    and width, the most agents and actions, the longest episode limit; `scenarios` as given.

    Agent names are the largest team's when the others' are a prefix of them (agent_0, ... otherwise), and
    so are unit types (none otherwise). Raises PaddingError when the rewards or the blocks differ.
    """
    every = [*specs, *([like] if like is not None else [])]
    first = every[0]
    for s in every[1:]:
        if (s.reward_dim, s.reward_names) != (first.reward_dim, first.reward_names):
            raise PaddingError(f"their rewards differ ({', '.join(first.reward_names)} against "
                               f"{', '.join(s.reward_names)})")
    n_agents = max(s.n_agents for s in every)
    n_actions = max(s.n_actions for s in every)
    if all(s.obs_layout for s in every):
        obs_layout = _max_layout([s.obs_layout for s in every], "observation")
        obs_dim = sum(b.size for b in obs_layout)
    elif len({s.obs_dim for s in every}) == 1:
        obs_layout, obs_dim = (), first.obs_dim
    else:
        raise PaddingError("their observations differ in size and have no obs_layout to pad them by")
    if all(s.state_layout for s in every):
        state_layout = _max_layout([s.state_layout for s in every], "state", obs_dim)
        state_dim = sum(b.size for b in state_layout)
    elif len({s.state_dim for s in every}) == 1:
        state_layout, state_dim = (), first.state_dim
    else:
        raise PaddingError("their states differ in size and have no state_layout to pad them by")
    unit_types = _common_prefix_names(every, "unit_types", ())
    return EnvSpec(
        n_agents=n_agents, obs_dim=obs_dim, state_dim=state_dim, n_actions=n_actions,
        episode_limit=max(s.episode_limit for s in every),
        agent_names=_common_prefix_names(every, "agent_names", tuple(f"agent_{a}" for a in range(n_agents))),
        unit_types=unit_types if len(unit_types) == n_agents else (), reward_dim=first.reward_dim,
        reward_names=first.reward_names, obs_layout=obs_layout, name=name, can_win=all(s.can_win for s in every),
        state_layout=state_layout, scenarios=tuple(scenarios))


def _fit_problem(source: EnvSpec, target: EnvSpec) -> str | None:
    """Why source's arrays cannot be padded into target's, or None."""
    if (source.reward_dim, source.reward_names) != (target.reward_dim, target.reward_names):
        return f"its rewards ({', '.join(source.reward_names)}) are not {', '.join(target.reward_names)}"
    for field in ("n_agents", "n_actions"):
        if getattr(source, field) > getattr(target, field):
            return f"its {field} {getattr(source, field)} is more than {getattr(target, field)}"
    grow = target.n_actions - source.n_actions
    for what, src, tgt, dim in (("obs", source.obs_layout, target.obs_layout, "obs_dim"),
                                ("state", source.state_layout, target.state_layout, "state_dim")):
        if not src or not tgt:
            if getattr(source, dim) != getattr(target, dim) or src != tgt:
                return f"its {dim} {getattr(source, dim)} is not {getattr(target, dim)} and there is no {what} " \
                       f"layout to pad it by"
            continue
        if _names(src) != _names(tgt):
            return f"its {what} blocks {', '.join(_names(src))} are not {', '.join(_names(tgt))}"
        for bs, bt in zip(src, tgt):
            if bs.count > bt.count:
                return f"its {what} block {bs.name} has {bs.count} rows, more than {bt.count}"
            if bs.name == AGENT_OBS:
                if bs.width != source.obs_dim or bt.width != target.obs_dim:
                    return f"its {what} block {AGENT_OBS} is not one observation per row"
            elif bs.width != bt.width and bt.width - bs.width != grow:
                return (f"its {what} block {bs.name} has rows of {bs.width} features, the target {bt.width}; widths "
                        f"may differ only by the {grow} actions more (rows ending with an action one-hot)")
    return None


def _layout_index(src: tuple[ObsBlock, ...], tgt: tuple[ObsBlock, ...], size: int,
                  obs_index: np.ndarray | None = None) -> np.ndarray:
    """int[size]: where each float of a source array lands in the padded one (rows first, each row's features)."""
    if not src:
        return np.arange(size)
    parts, start = [], 0
    for bs, bt in zip(src, tgt):
        cols = obs_index if bs.name == AGENT_OBS else np.arange(bs.width)
        parts.append((start + np.arange(bs.count)[:, None] * bt.width + cols[None, :]).ravel())
        start += bt.size
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


PADDED_FIELDS = ("obs", "state", "avail", "alive", "final_obs", "final_state")
PLAIN_FIELDS = ("reward", "done", "truncated", "t", "episode_return", "episode_length", "won")


class PadPlan:
    """How one source EnvSpec's arrays are written into a target EnvSpec's padded arrays (module docstring)."""

    def __init__(self, source: EnvSpec, target: EnvSpec):
        problem = _fit_problem(source, target)
        if problem:
            raise PaddingError(f"{source.name or 'the environment'} does not fit {target.name or 'the target shapes'}"
                               f": {problem}")
        self.source, self.target = source, target
        self.obs_index = _layout_index(source.obs_layout, target.obs_layout, source.obs_dim)
        self.state_index = _layout_index(source.state_layout, target.state_layout, source.state_dim, self.obs_index)
        self.identity = (source.n_agents, source.n_actions, source.obs_dim, source.state_dim) == (
            target.n_agents, target.n_actions, target.obs_dim, target.state_dim) and (
            np.array_equal(self.obs_index, np.arange(target.obs_dim))
            and np.array_equal(self.state_index, np.arange(target.state_dim)))

    def empty(self, n_envs: int, reward_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Zeroed padded arrays of n_envs battles (the Step's fields), to write sources into."""
        t, E = self.target, n_envs
        return dict(obs=np.zeros((E, t.n_agents, t.obs_dim), np.float32),
                    state=np.zeros((E, t.state_dim), np.float32),
                    avail=np.zeros((E, t.n_agents, t.n_actions), bool), alive=np.zeros((E, t.n_agents), bool),
                    final_obs=np.zeros((E, t.n_agents, t.obs_dim), np.float32),
                    final_state=np.zeros((E, t.state_dim), np.float32),
                    reward=np.zeros((E, *reward_shape), np.float32), done=np.zeros(E, bool),
                    truncated=np.zeros(E, bool), t=np.zeros(E, np.int64),
                    episode_return=np.zeros((E, *reward_shape), np.float32), episode_length=np.zeros(E, np.int64),
                    won=np.zeros(E, bool))

    def write(self, step: Step, out: dict[str, np.ndarray], rows: slice) -> None:
        """Write a source Step's arrays into rows `rows` of empty()'s padded arrays."""
        A, K = self.source.n_agents, self.source.n_actions
        for key in PLAIN_FIELDS:
            out[key][rows] = getattr(step, key)
        for obs_key, state_key in (("obs", "state"), ("final_obs", "final_state")):
            obs = getattr(step, obs_key)
            state = getattr(step, state_key)
            if obs is None:  # a Step without final observations: those of now stand for them
                obs, state = step.obs, step.state
            if self.identity:
                out[obs_key][rows] = obs
                out[state_key][rows] = state
            else:
                out[obs_key][rows][:, :A, self.obs_index] = obs
                out[state_key][rows][:, self.state_index] = state
        out["avail"][rows][:, :A, :K] = step.avail
        out["avail"][rows][:, A:, 0] = True  # a padded agent, like a dead one, may only take the no-op
        out["alive"][rows][:, :A] = step.alive

    def source_actions(self, actions: np.ndarray, first_battle: int = 0) -> np.ndarray:
        """The source's actions int[E, A_source] from padded ones; ValueError unless padded agents take the no-op."""
        A = self.source.n_agents
        extra = actions[:, A:]
        if extra.size and extra.any():
            e, a = np.argwhere(extra != 0)[0]
            raise PaddingError(f"agent {A + a} of env {first_battle + e} is padding (that battle has {A} agents) and "
                               f"may only take action 0, got {int(extra[e, a])}")
        return actions[:, :A]


def padded_step(out: dict[str, np.ndarray], info: dict | None = None, scenario: np.ndarray | None = None) -> Step:
    """A Step from padded arrays that PadPlan.write filled."""
    return Step(info={} if info is None else info, scenario=scenario, **out)


class PaddedVecEnv:
    """A VecEnv whose Steps come padded to `target` (module docstring); made by pad_env.

    Steps carry the inner env's Step.scenario, or `scenario` (an index into target.scenarios) for all battles.
    """

    def __init__(self, env, target: EnvSpec, scenario: int | None = None):
        self.env, self.spec, self.n_envs = env, target, env.n_envs
        self.plan = PadPlan(env.spec, target)
        self._scenario = None if scenario is None else np.full(env.n_envs, int(scenario), np.int64)
        self._reward_shape = (target.reward_dim,) if target.reward_dim > 1 else ()

    def _pad(self, step: Step) -> Step:
        out = self.plan.empty(self.n_envs, self._reward_shape)
        self.plan.write(step, out, slice(0, self.n_envs))
        scenario = step.scenario if step.scenario is not None else self._scenario
        return padded_step(out, dict(step.info), None if scenario is None else scenario.copy())

    def reset(self, seed: int | None = None) -> Step:
        """Reset the inner env; its first Step padded."""
        return self._pad(self.env.reset(seed=seed))

    def step(self, actions: np.ndarray) -> Step:
        """Step the inner env with the real agents' actions; the Step padded."""
        actions = check_actions(actions, self.n_envs, self.spec.n_agents, PaddingError)
        return self._pad(self.env.step(self.plan.source_actions(actions)))

    def close(self) -> None:
        """Close the inner env."""
        self.env.close()


class _PaddedResume:
    """Resumable, when the inner env is: its state, and the padded Step it stood at."""

    def get_state(self) -> dict:
        """The inner env's get_state()."""
        return self.env.get_state()

    def set_state(self, state: dict) -> Step:
        """The inner env's set_state(), padded."""
        return self._pad(self.env.set_state(state))


class _PaddedFrames:
    """FrameSource, when the inner env is: its units and map; action targets of the real agents, -1 for padding."""

    @property
    def keep_final_frames(self) -> bool:
        """The inner env's flag."""
        return self.env.keep_final_frames

    @keep_final_frames.setter
    def keep_final_frames(self, value: bool) -> None:
        self.env.keep_final_frames = value

    def frame_info(self) -> dict:
        """The inner env's map and roster (its n_agents: the real team)."""
        return self.env.frame_info()

    def frames(self) -> dict:
        """The inner env's units now."""
        return self.env.frames()

    def action_targets(self, actions: np.ndarray) -> np.ndarray:
        """int[E, A_target]: the unit each real agent's action aims at, -1 for the padded agents."""
        actions = np.asarray(actions)
        A = self.plan.source.n_agents
        out = np.full(actions.shape, -1, np.int64)
        out[:, :A] = self.env.action_targets(actions[:, :A])
        return out


def pad_env(env, target: EnvSpec, scenario: int | None = None) -> PaddedVecEnv:
    """`env` with its Steps padded to `target`, keeping its Resumable and FrameSource capabilities.

    Raises PaddingError (one line) when env's spec does not fit into target (see padded_spec).
    """
    bases = [PaddedVecEnv]
    if isinstance(env, Resumable):
        bases.insert(0, _PaddedResume)
    if isinstance(env, FrameSource):
        bases.insert(0, _PaddedFrames)
    cls = PaddedVecEnv if len(bases) == 1 else type("PaddedVecEnv", tuple(bases), {})
    return cls(env, target, scenario)
