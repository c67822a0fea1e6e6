"""Meet's settings for marl: each `env.KEY=VALUE` key with its type, domain and description.

marl imports this module only when it checks a run's config (the plug-in names it as a string), so
`marl envs`, which imports the plug-in, does not load pydantic. `marl config mappo --env meet trio`
prints the table; `marl train meet trio env.size=1` stops with one line before anything is built.
"""

from pydantic import ConfigDict

from marl.settings import PettingZooSettings, setting


class MeetSettings(PettingZooSettings):
    """Meet's keyword arguments, besides the PettingZoo adapter's options (workers, seed, ...) it inherits."""

    # Meet takes no other kwargs, so a typo gets marl's "unknown config key" line rather than a TypeError
    model_config = ConfigDict(extra="forbid")

    n_agents: int = setting("walkers on the line", ge=1)
    size: int = setting("cells on the line (positions are scaled by size - 1)", ge=2)
    max_cycles: int = setting("steps per episode", ge=1)
