"""Throughput benchmark for JaxMARL's SMAX (a JAX re-implementation of SMAC).

Steps a batch of SMAX environments (``HeuristicEnemySMAX``: our team is driven
by uniformly random valid actions, the enemy team by SMAX's built-in heuristic)
with ``jax.jit`` + ``jax.vmap`` + ``jax.lax.scan`` and reports env steps per
second.  jax / jaxmarl are optional dependencies (the ``bench`` extra) and are
imported lazily, so importing this module never requires them.

Usage::

    python -m benchmarks.smax --map 3s5z --envs 1 64 256 1024 --steps 200
"""

from __future__ import annotations

import argparse
import time

__all__ = ["smax_throughput", "main"]

_INSTALL_HINT = 'jax/jaxmarl are not installed; run: pip install -e ".[bench]"'


def _import_jaxmarl():
    """Import jax and jaxmarl lazily; raise RuntimeError with an install hint if missing."""
    try:
        import jax
        import jax.numpy as jnp
        import jaxmarl  # prints two "submoduled environments" notice lines on import
        from jaxmarl import make
        from jaxmarl.environments.smax import map_name_to_scenario
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc
    return jax, jnp, jaxmarl, make, map_name_to_scenario


def smax_throughput(
    map_name: str = "3s5z", num_envs: int = 256, steps: int = 200, seed: int = 0
) -> dict:
    """Time ``steps`` jitted, vmapped SMAX steps of ``num_envs`` envs on random valid actions."""
    if num_envs < 1 or steps < 1:
        raise ValueError("num_envs and steps must be >= 1")
    jax, jnp, jaxmarl, make, map_name_to_scenario = _import_jaxmarl()
    from importlib.metadata import PackageNotFoundError, version

    try:
        jaxmarl_version = version("jaxmarl")
    except PackageNotFoundError:  # pragma: no cover - e.g. source checkout
        jaxmarl_version = getattr(jaxmarl, "__version__", "unknown")

    env = make("HeuristicEnemySMAX", scenario=map_name_to_scenario(map_name))
    agents = list(env.agents)

    def sample_actions(key, state):
        # Uniform over each agent's available actions: categorical on masked logits.
        avail = env.get_avail_actions(state)
        keys = jax.random.split(key, len(agents))
        return {
            a: jax.random.categorical(k, jnp.where(avail[a] > 0, 0.0, -jnp.inf))
            for k, a in zip(keys, agents)
        }

    def one_step(carry, _):
        key, states, checksum, episodes = carry
        key, k_act, k_step = jax.random.split(key, 3)
        actions = jax.vmap(sample_actions)(jax.random.split(k_act, num_envs), states)
        # env.step = step_env (world update + obs building) + auto-reset on done.
        obs, states, rewards, dones, _ = jax.vmap(env.step)(
            jax.random.split(k_step, num_envs), states, actions
        )
        # Fold obs/rewards into a scalar so XLA cannot dead-code-eliminate them.
        checksum = checksum + sum(jnp.sum(o) for o in obs.values())
        checksum = checksum + sum(jnp.sum(r) for r in rewards.values())
        episodes = episodes + jnp.sum(dones["__all__"].astype(jnp.int32))
        return (key, states, checksum, episodes), None

    def rollout(carry):
        return jax.lax.scan(one_step, carry, None, length=steps)[0]

    key = jax.random.PRNGKey(seed)
    key, reset_key = jax.random.split(key)
    reset = jax.jit(jax.vmap(env.reset))
    _, states = reset(jax.random.split(reset_key, num_envs))
    carry = (key, states, jnp.float32(0.0), jnp.int32(0))
    jax.block_until_ready(carry)

    # Compile ahead of time and do one untimed warm-up run of the same executable.
    compiled = jax.jit(rollout).lower(carry).compile()
    carry = jax.block_until_ready(compiled(carry))

    t0 = time.perf_counter()
    carry = jax.block_until_ready(compiled(carry))
    seconds = time.perf_counter() - t0

    _, _, checksum, episodes = carry
    return {
        "map": map_name,
        "num_envs": num_envs,
        "steps": steps,
        "env_steps_per_s": num_envs * steps / seconds,
        "seconds": seconds,
        "episodes_done": int(episodes),  # over warm-up + timed runs
        "checksum": float(checksum),
        "jax_version": jax.__version__,
        "jaxmarl_version": jaxmarl_version,
    }


def main(argv=None) -> None:
    """CLI: print one throughput line per number of envs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--map", default="3s5z", help="SMAC map name known to SMAX")
    p.add_argument("--envs", type=int, nargs="+", default=[1, 64, 256, 1024])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for e in args.envs:
        r = smax_throughput(args.map, e, args.steps, args.seed)
        print(
            f"map={r['map']} envs={e} steps={r['steps']} "
            f"env_steps/s={r['env_steps_per_s']:.0f} seconds={r['seconds']:.3f} "
            f"jax={r['jax_version']} jaxmarl={r['jaxmarl_version']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
