"""The probe game `comm`: a communication game whose right graph is known, batched in numpy.

Each of the N agents holds a private symbol in {0..m-1}, drawn afresh and uniformly at every step.
Agent i's informant inf(i) is another agent (never i); agent i is paid for naming its informant's
symbol, which it cannot see. Symbols are independent, so an agent that does not hear its informant
can only guess. The game thus has a *planted graph*, the edges inf(i) -> i, and the return a policy
earns tells how much of that graph its communication holds.

Observation of agent i (`obs_layout`): `symbol` (one-hot of its own symbol, m floats), `id` (one-hot
of its index, N floats: CommFormer embeds observations only, so without it a receiver cannot tell
senders apart) and, in `intermittent`, `need` (its needed flag, 1 float). The global state is every
agent's symbol one-hot (N*m floats, agent by agent), then in `intermittent` every needed flag (N
floats); the ids are left out, being the same in every state. There are m actions (the symbol
named), all of them always available; no agent dies; episodes end by the time limit only
(`truncated`), after `episode_limit` steps, and have no outcome (`EnvSpec.can_win` is False).

Scenarios:
- `informants`: the team reward of a step is the mean over agents of 1[a_i == symbol of inf(i)].
- `intermittent`: agent i also sees a needed flag, up with probability `need_prob` at each step,
  drawn independently per agent and step. When the flag is up, naming the informant's symbol pays
  1/N; when it is down, action 0 pays 1/N (and the informant's symbol pays only if it happens to be
  0). A policy that listens to its informant only when its flag is up loses nothing.

The informant graph (options in configs/envs/comm.yaml):
- `structure: random`: a uniformly random derangement (a permutation with no fixed point) drawn
  from `structure_seed`, so every agent informs exactly one other; the graph does not depend on
  `seed`, so a run's training and evaluation games share it.
- `structure: ring`: inf(i) = (i + 1) mod N.
- `structure: hub`: agent 0 informs every other agent and itself hears agent 1. Through an
  autoregressive decoder the earlier agents' actions carry the hub's symbol too, so this graph has
  many right answers: keep it out of recall targets.
- `informants: [3, 0, ...]`: an explicit graph, inf(i) the i-th entry; it overrides `structure`.
  Decision: an explicit list must be a derangement of 0..N-1. It has one entry per agent (wrong
  length: error), no entry names its own agent (self-informant: error) and no agent is named twice
  (repeated agent: error), so each agent informs exactly one other, as in `random` and `ring`. A
  shared informant is what `hub` is for; lists are meant as recall targets, which a hub is not.

Known returns (per step; an episode earns `episode_limit` times as much). A policy whose agents see
their own observation and those of some senders (a mask, rows receivers, columns senders) cannot
beat, and the right scripted policy earns, in expectation:
- `informants`: f + (1 - f) / m, where f is the fraction of agents whose mask row holds inf(i):
  those name the symbol, the others guess. The optimum (f = 1) is 1; no communication earns 1/m.
- `intermittent`: p (f + (1 - f) / m) + (1 - p), p = need_prob: the formula holds on the needed
  steps only, and action 0 pays in full on the others. The optimum is again 1.
- A random graph that gives each receiver k of the N-1 other agents as senders holds inf(i) with
  probability k / (N - 1), so it earns f = k / (N - 1) in expectation.
`optimal_return`, `graph_return`, `random_graph_return` and `chance_return` compute these per episode.

Randomness: one numpy Generator (PCG64) for the E games together, seeded by `reset(seed)` (or
`env.seed`); the same seed and E give the same games. `get_state` / `set_state` (marl.spec.Resumable)
save and restore it with the symbols, flags, step counts and returns, so a resumed run continues the
same games exactly. `planted_graph()` (marl.spec.PlantedGraph) reports the informant graph.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import yaml

from marl.spec import EnvSpec, ObsBlock, Step

SCENARIOS = ("informants", "intermittent")
STRUCTURES = ("random", "ring", "hub")
# the options and their defaults, from configs/envs/comm.yaml (one source for the config and direct use)
DEFAULTS: dict = yaml.safe_load(resources.files("marl.configs").joinpath("envs/comm.yaml").read_text())


class CommError(ValueError):
    """A bad scenario, option or saved state of the probe game; the message is one line."""


def _int(name: str, value, low: int) -> int:
    """value as an int, or a one-line error naming env.NAME and the least value it accepts."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise CommError(f"env.{name} must be an integer of at least {low}, got {value!r}")
    return int(value)


def make_informants(n_agents: int, structure: str = "random", structure_seed: int = 0,
                    informants=None) -> np.ndarray:
    """inf(i) for every agent i, int64[N], from a structure name or an explicit list (see the module docstring)."""
    N = _int("n_agents", n_agents, 2)
    if structure not in STRUCTURES:  # judged even when a list overrides it, so a typo never passes unseen
        raise CommError(f"unknown env.structure {structure!r}; structures: {', '.join(STRUCTURES)} "
                        f"(or an explicit env.informants=[...] list)")
    seed = _int("structure_seed", structure_seed, 0)
    if informants is not None:
        if not isinstance(informants, (list, tuple, np.ndarray)):
            raise CommError(f"env.informants must be a list of {N} agent indices (a derangement of 0..{N - 1}), "
                            f"got {informants!r}")
        items = list(informants)
        if len(items) != N:
            raise CommError(f"env.informants has {len(items)} entries for env.n_agents={N}; give one informant "
                            f"per agent (a derangement of 0..{N - 1})")
        for i, j in enumerate(items):
            if isinstance(j, bool) or not isinstance(j, (int, np.integer)) or not 0 <= j < N:
                raise CommError(f"env.informants[{i}] is {j!r}; informants are agent indices 0..{N - 1}")
            if j == i:
                raise CommError(f"env.informants[{i}] names agent {i} itself; an agent's informant is another agent")
        seen: dict[int, int] = {}
        for i, j in enumerate(items):
            if int(j) in seen:
                raise CommError(f"env.informants names agent {j} twice (for agents {seen[int(j)]} and {i}); each "
                                f"agent informs exactly one other (a derangement of 0..{N - 1}; use "
                                f"env.structure=hub for a shared informant)")
            seen[int(j)] = i
        return np.asarray(items, np.int64)
    if structure == "ring":
        return (np.arange(N, dtype=np.int64) + 1) % N
    if structure == "hub":
        out = np.zeros(N, np.int64)
        out[0] = 1
        return out
    rng = np.random.default_rng(seed)
    while True:  # rejection: a uniform permutation is a derangement with probability about 1/e
        perm = rng.permutation(N)
        if not np.any(perm == np.arange(N)):
            return perm.astype(np.int64)


def _check_scenario(scenario) -> str:
    """scenario, or a one-line error listing the scenarios."""
    if scenario not in SCENARIOS:
        raise CommError(f"unknown comm scenario {scenario!r}; scenarios: {', '.join(SCENARIOS)} "
                        f"(e.g. `marl train comm informants`)")
    return scenario


def _check_prob(need_prob) -> float:
    """need_prob as a float, or a one-line error when it is not a probability."""
    if isinstance(need_prob, bool) or not isinstance(need_prob, (int, float)) or not 0.0 <= need_prob <= 1.0:
        raise CommError(f"env.need_prob must be a probability between 0 and 1, got {need_prob!r}")
    return float(need_prob)


def step_value(fraction: float, symbols: int, scenario: str = "informants", need_prob: float = 0.25) -> float:
    """Expected reward per step when a fraction of the agents hears its informant and the rest guess."""
    m = _int("symbols", symbols, 2)
    informed = fraction + (1.0 - fraction) / m
    if _check_scenario(scenario) == "intermittent":
        p = _check_prob(need_prob)
        return p * informed + (1.0 - p)
    return informed


def optimal_return(episode_limit: int) -> float:
    """The best return of an episode, in either scenario: every agent paid at every step."""
    return float(_int("episode_limit", episode_limit, 1))


def held_fraction(mask: np.ndarray, informants: np.ndarray) -> float:
    """Fraction of receivers i whose mask row (senders) holds inf(i); mask is bool[N, N], rows receivers."""
    inf = np.asarray(informants, np.int64)
    mask = np.asarray(mask, bool)
    if mask.shape != (len(inf), len(inf)):
        raise CommError(f"a mask for {len(inf)} agents is bool[{len(inf)}, {len(inf)}], got shape {mask.shape}")
    return float(np.mean(mask[np.arange(len(inf)), inf]))


def graph_return(mask: np.ndarray, informants: np.ndarray, symbols: int, episode_limit: int,
                 scenario: str = "informants", need_prob: float = 0.25) -> float:
    """Expected return per episode of the best policy whose agents hear the senders in their mask row."""
    f = held_fraction(mask, informants)
    return optimal_return(episode_limit) * step_value(f, symbols, scenario, need_prob)


def random_graph_return(k: int, n_agents: int, symbols: int, episode_limit: int, scenario: str = "informants",
                        need_prob: float = 0.25) -> float:
    """Expected return per episode when each receiver hears k senders drawn at random among the N-1 others."""
    N = _int("n_agents", n_agents, 2)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= N - 1:
        raise CommError(f"k must be a number of senders between 0 and {N - 1}, got {k!r}")
    return optimal_return(episode_limit) * step_value(k / (N - 1), symbols, scenario, need_prob)


def chance_return(n_agents: int, symbols: int, episode_limit: int, scenario: str = "informants",
                  need_prob: float = 0.25) -> float:
    """Expected return per episode with no communication: every agent guesses its informant's symbol."""
    return random_graph_return(0, n_agents, symbols, episode_limit, scenario, need_prob)


def _rng_words(rng: np.random.Generator) -> np.ndarray:
    """PCG64's state as uint64[6] (128-bit state and increment split in words), so checkpoints hold arrays only."""
    s = rng.bit_generator.state
    mask = (1 << 64) - 1
    st, inc = s["state"]["state"], s["state"]["inc"]
    return np.array([st & mask, st >> 64, inc & mask, inc >> 64, s["has_uint32"], s["uinteger"]], np.uint64)


def _rng_from_words(words: np.ndarray) -> np.random.Generator:
    """The generator _rng_words saved."""
    w = [int(x) for x in words]
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64", "state": {"state": w[0] | (w[1] << 64), "inc": w[2] | (w[3] << 64)},
                "has_uint32": w[4], "uinteger": w[5]}
    return np.random.Generator(bg)


class CommVecEnv:
    """E probe games in lockstep as a marl VecEnv (Resumable, PlantedGraph); see the module docstring."""

    def __init__(self, scenario: str = "informants", n_envs: int = 1, **options):
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise CommError(f"unknown comm option {unknown[0]!r}; options: {', '.join(DEFAULTS)}")
        o = {**DEFAULTS, **options}
        self.scenario = _check_scenario(scenario)
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise CommError(f"the number of games must be a positive integer, got {n_envs!r}")
        self.n_envs = int(n_envs)
        self.n_agents = _int("n_agents", o["n_agents"], 2)
        self.symbols = _int("symbols", o["symbols"], 2)
        self.episode_limit = _int("episode_limit", o["episode_limit"], 1)
        self.need_prob = _check_prob(o["need_prob"])
        if o["seed"] is not None:
            _int("seed", o["seed"], 0)
        self._seed = o["seed"]
        self.informants = make_informants(self.n_agents, o["structure"], o["structure_seed"], o["informants"])
        self.intermittent = self.scenario == "intermittent"
        N, m, E = self.n_agents, self.symbols, self.n_envs
        blocks = [ObsBlock("symbol", 1, m), ObsBlock("id", 1, N)] + ([ObsBlock("need", 1, 1)] if self.intermittent
                                                                     else [])
        obs_dim = sum(b.size for b in blocks)
        self.spec = EnvSpec(n_agents=N, obs_dim=obs_dim, state_dim=N * m + (N if self.intermittent else 0),
                            n_actions=m, episode_limit=self.episode_limit,
                            agent_names=tuple(f"agent_{i}" for i in range(N)), obs_layout=tuple(blocks),
                            name=f"comm:{self.scenario}", can_win=False)
        # observations are a constant id block plus what changes: built once, copied and filled per step
        self._base_obs = np.zeros((N, obs_dim), np.float32)
        self._base_obs[:, m:m + N] = np.eye(N, dtype=np.float32)
        self._eye = np.eye(m, dtype=np.float32)
        self.rng = np.random.default_rng(0)
        self.symbols_now = np.zeros((E, N), np.int64)
        self.need = np.ones((E, N), bool)
        self.t = np.zeros(E, np.int64)
        self.returns = np.zeros(E, np.float64)

    # ------------------------------------------------------------------ known answers
    def planted_graph(self) -> np.ndarray:
        """bool[N, N], rows receivers and columns senders: True at (i, inf(i)); no self loops."""
        g = np.zeros((self.n_agents, self.n_agents), bool)
        g[np.arange(self.n_agents), self.informants] = True
        return g

    def optimal_return(self) -> float:
        """The best return of an episode of these games."""
        return optimal_return(self.episode_limit)

    def graph_return(self, mask: np.ndarray) -> float:
        """Expected return per episode of the best policy that hears the senders of its mask row."""
        return graph_return(mask, self.informants, self.symbols, self.episode_limit, self.scenario, self.need_prob)

    def random_graph_return(self, k: int) -> float:
        """Expected return per episode of a random graph of k senders per receiver."""
        return random_graph_return(k, self.n_agents, self.symbols, self.episode_limit, self.scenario, self.need_prob)

    def chance_return(self) -> float:
        """Expected return per episode without communication."""
        return chance_return(self.n_agents, self.symbols, self.episode_limit, self.scenario, self.need_prob)

    # ------------------------------------------------------------------ arrays
    def _draw(self, rows: np.ndarray | None = None) -> None:
        """New symbols (then, in intermittent, needed flags) for the games in rows (all when None)."""
        n = self.n_envs if rows is None else len(rows)
        sym = self.rng.integers(0, self.symbols, size=(n, self.n_agents))
        need = self.rng.random((n, self.n_agents)) < self.need_prob if self.intermittent else None
        if rows is None:
            self.symbols_now[:] = sym
            if need is not None:
                self.need[:] = need
        else:
            self.symbols_now[rows] = sym
            if need is not None:
                self.need[rows] = need

    def _obs(self) -> np.ndarray:
        """f32[E, N, obs_dim]: symbol one-hot, id one-hot, needed flag (intermittent)."""
        m = self.symbols
        obs = np.repeat(self._base_obs[None], self.n_envs, axis=0)
        obs[:, :, :m] = self._eye[self.symbols_now]
        if self.intermittent:
            obs[:, :, -1] = self.need
        return obs

    def _state(self) -> np.ndarray:
        """f32[E, state_dim]: every agent's symbol one-hot, then the needed flags (intermittent)."""
        E = self.n_envs
        sym = self._eye[self.symbols_now].reshape(E, -1)
        return np.concatenate([sym, self.need.astype(np.float32)], axis=1) if self.intermittent else sym

    def _step(self, obs, state, reward, done, episode_return, episode_length, final_obs, final_state) -> Step:
        E, N, m = self.n_envs, self.n_agents, self.symbols
        # episodes end by the time limit only, so every ended one is truncated
        return Step(obs=obs, state=state, avail=np.ones((E, N, m), bool), reward=reward, done=done,
                    truncated=done.copy(), alive=np.ones((E, N), bool), t=self.t.copy(),
                    episode_return=episode_return, episode_length=episode_length, won=np.zeros(E, bool),
                    final_obs=final_obs, final_state=final_state)

    # ------------------------------------------------------------------ VecEnv
    def reset(self, seed: int | None = None) -> Step:
        """Start every game afresh; the same seed (and E) gives the same games."""
        seed = self._seed if seed is None else seed
        self.rng = np.random.default_rng(seed)
        self._draw()
        self.t[:] = 0
        self.returns[:] = 0.0
        return self._standing()

    def step(self, actions: np.ndarray) -> Step:
        """Pay int actions[E, N] against the informants' symbols; games at the limit restart at once."""
        a = np.asarray(actions)
        E, N, m = self.n_envs, self.n_agents, self.symbols
        if a.shape != (E, N):
            raise CommError(f"actions must be int[{E}, {N}] (games, agents), got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= m):
            raise CommError(f"actions are symbols 0..{m - 1}, got values from {a.min()} to {a.max()}")
        target = self.symbols_now[:, self.informants]
        if self.intermittent:
            target = np.where(self.need, target, 0)
        reward = np.mean(a == target, axis=1)
        self.returns += reward
        self.t += 1
        self._draw()
        done = self.t >= self.episode_limit
        final_obs, final_state = self._obs(), self._state()
        episode_return, episode_length = self.returns.astype(np.float32), self.t.copy()
        ended = np.flatnonzero(done)
        if len(ended):
            self._draw(ended)  # the new episode's first symbols, apart from those the old one ended on
            self.t[ended] = 0
            self.returns[ended] = 0.0
            obs, state = self._obs(), self._state()
        else:
            obs, state = final_obs.copy(), final_state.copy()
        return self._step(obs, state, reward.astype(np.float32), done, episode_return, episode_length, final_obs,
                          final_state)

    def get_state(self) -> dict:
        """The generator, symbols, flags, step counts and returns of every game (see set_state)."""
        return {"rng": _rng_words(self.rng), "symbols": self.symbols_now.copy(), "need": self.need.copy(),
                "t": self.t.copy(), "returns": self.returns.copy(), "informants": self.informants.copy()}

    def set_state(self, state: dict) -> Step:
        """Continue from get_state() of games like these; returns the Step they stood at."""
        mine = self.get_state()
        for key, value in mine.items():
            saved = state.get(key) if isinstance(state, dict) else None
            if not isinstance(saved, np.ndarray) or saved.shape != value.shape or saved.dtype != value.dtype:
                raise CommError(f"saved games do not match these ({key}: expected {value.dtype} {value.shape})")
        if not np.array_equal(state["informants"], self.informants):
            raise CommError(f"saved games have informants {state['informants'].tolist()}, these "
                            f"{self.informants.tolist()}")
        self.rng = _rng_from_words(state["rng"])
        self.symbols_now[:] = state["symbols"]
        self.need[:] = state["need"]
        self.t[:] = state["t"]
        self.returns[:] = state["returns"]
        return self._standing()

    def _standing(self) -> Step:
        """The Step the games stand at, with nothing paid and nothing ended (after reset or set_state)."""
        E = self.n_envs
        obs, state = self._obs(), self._state()
        return self._step(obs, state, np.zeros(E, np.float32), np.zeros(E, bool), self.returns.astype(np.float32),
                          self.t.copy(), obs.copy(), state.copy())

    def close(self) -> None:
        """Nothing to release: the games are arrays."""


def make_comm(scenario: str | None, n_envs: int, options: dict) -> CommVecEnv:
    """The `comm` kind's factory: `marl train comm informants env.n_agents=8 ...`."""
    if scenario is None:
        raise CommError(f"comm needs a scenario, e.g. `marl train comm informants`; scenarios: {', '.join(SCENARIOS)}")
    return CommVecEnv(scenario, n_envs, **options)
