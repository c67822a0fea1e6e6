"""Several SMAC scenarios in one VecEnv: `marl train smac 3m,5m,8m` (docs/smac_rules.md section 20).

- **Battles per scenario.** E battles are split among the S scenarios in the order they are named:
  scenario i gets E // S battles, and one more when i < E % S; its battles are contiguous (3m,5m,8m
  with E = 8: 3m plays battles 0-2, 5m 3-5, 8m 6-7). E must be at least S. The split is fixed for the
  run: `Step.scenario` (int[E], an index into `EnvSpec.scenarios`) is the same at every step.
- **Randomness.** Battle e draws the random stream of battle e of a one-scenario `SMACVecEnv`
  (SeedSequence(seed, spawn_key=(e,))): under the same seed and actions, battle e of a mixture plays
  exactly as battle e of `SMACVecEnv(its scenario, E)`, in its real slots.
- **Padding** (marl/padding.py): every battle's arrays are padded to the largest shapes by their
  obs_layout and state_layout blocks; padded entities are zeros, padded agents never alive (their only
  action the no-op), padded attack actions never available. The scenarios must describe their
  entities alike (the same unit-type bits and shields); marine battles of any sizes always do.
- The mixture's `EnvSpec` has the padded shapes and layouts, the longest episode limit, and
  `scenarios`: the members' own unpadded specs.
- It is Resumable (every member's battles and the split, exactly) and not a FrameSource: its battles
  have different rosters, so a replay is recorded on a one-battle env of one scenario (marl.padding.pad_env).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from marl.padding import PaddingError, PadPlan, padded_spec, padded_step
from marl.spec import EnvSpec, Step, check_actions

from . import core
from .env import SMACError, SMACVecEnv


def split_battles(n_envs: int, n_scenarios: int) -> list[int]:
    """Battles per scenario: n_envs // S each, one more for the first n_envs % S scenarios."""
    return [n_envs // n_scenarios + (i < n_envs % n_scenarios) for i in range(n_scenarios)]


class SMACMixture:
    """E embedded SMAC battles of several scenarios, padded to the largest shapes, as one marl VecEnv.

    `like`: an EnvSpec the padded shapes must at least reach (the shapes a trained learner expects).
    `options` are SMAC's options, the same for every scenario.
    """

    def __init__(self, scenarios: Sequence[str], n_envs: int = 1, like: EnvSpec | None = None, **options):
        names = [str(s) for s in scenarios]
        listed = ",".join(names)
        if not names:
            raise SMACError("a mixture needs at least one scenario, e.g. 3m,5m,8m")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SMACError(f"scenario {twice[0]} is named twice in {listed}; name each scenario once")
        if not isinstance(n_envs, (int, np.integer)) or n_envs < len(names):
            raise SMACError(f"{n_envs} battles cannot cover the {len(names)} scenarios {listed}: each needs at least "
                            f"one; accepted: {len(names)} or more (train.envs)")
        self.n_envs = int(n_envs)
        self.scenario_names = tuple(names)
        self.counts = split_battles(self.n_envs, len(names))
        starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(int)
        self.rows = [slice(int(s), int(s) + c) for s, c in zip(starts, self.counts)]
        self.members = [SMACVecEnv(name, c, first_battle=int(s), **options)
                        for name, c, s in zip(names, self.counts, starts)]
        specs = tuple(m.spec for m in self.members)
        try:
            self.spec = padded_spec(specs, like, name=f"smac:{listed}", scenarios=specs)
            self.plans = [PadPlan(s, self.spec) for s in specs]
        except PaddingError as err:
            raise SMACError(f"smac scenarios {listed} cannot share one batch: {err}") from None
        self.scenario = np.repeat(np.arange(len(names)), self.counts).astype(np.int64)
        self._reward_shape = (self.spec.reward_dim,) if self.spec.reward_dim > 1 else ()
        self._avail: np.ndarray | None = None

    def _join(self, steps: list[Step]) -> Step:
        """The members' Steps as one padded Step of all E battles."""
        out = self.plans[0].empty(self.n_envs, self._reward_shape)
        for plan, step, rows in zip(self.plans, steps, self.rows):
            plan.write(step, out, rows)
        self._avail = out["avail"]
        return padded_step(out, {}, self.scenario.copy())

    def reset(self, seed: int | None = None) -> Step:
        """Reset every battle; battle e's randomness derives from (seed, e), whatever scenario it plays."""
        return self._join([m.reset(seed=seed) for m in self.members])

    def step(self, actions: np.ndarray) -> Step:
        """Step every battle with int actions[E, A] (A the padded team); finished battles restart at once."""
        if self._avail is None:
            raise SMACError("step() called before reset()")
        actions = check_actions(actions, self.n_envs, self.spec.n_agents, SMACError).astype(np.int64, copy=False)
        bad = core.first_invalid_action(actions, self._avail)
        if bad >= 0:  # checked on the padded arrays first, so no member steps when one cannot
            e, a = divmod(int(bad), self.spec.n_agents)
            s = int(self.scenario[e])
            real = self.plans[s].source.n_agents
            ok = np.flatnonzero(self._avail[e, a]).tolist()
            what = f"agent {a} (padding: {self.scenario_names[s]} has {real} agents)" if a >= real else f"agent {a}"
            raise SMACError(f"env {e} ({self.scenario_names[s]}), {what} cannot take action {int(actions[e, a])}; "
                            f"available actions: {ok}")
        return self._join([m.step(plan.source_actions(actions[rows], rows.start))
                           for m, plan, rows in zip(self.members, self.plans, self.rows)])

    def get_state(self) -> dict:
        """Every member's battles, and which scenarios with how many battles each (see set_state)."""
        return {"scenarios": list(self.scenario_names), "battles": list(self.counts),
                "members": [m.get_state() for m in self.members]}

    def set_state(self, state: dict) -> Step:
        """Continue from get_state(); SMACError (a ValueError) unless it holds these scenarios and battles."""
        saved = (list(state.get("scenarios", [])), [int(c) for c in state.get("battles", [])])
        if saved != (list(self.scenario_names), list(self.counts)) or len(state.get("members", [])) != len(
                self.members):
            raise SMACError(f"saved battles are scenarios {','.join(saved[0])} with {saved[1]} battles, not "
                            f"{','.join(self.scenario_names)} with {self.counts}")
        return self._join([m.set_state(s) for m, s in zip(self.members, state["members"])])

    def close(self) -> None:
        """Release every member's worker threads."""
        for m in self.members:
            m.close()
