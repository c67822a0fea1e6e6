"""StepMix and EpsMix: conservative exploration that keeps every episode above (1 - alpha) times a safe baseline.

`tabular` is the reference on finite MDPs (UCB-VI, the pessimistic evaluation, EpsMix, StepMix, the offline
baseline, and a CLI). The deep multi-agent learner (`--algo stepmix`) is not built yet.
"""
