"""StepMix and EpsMix: conservative exploration that keeps every episode above (1 - alpha) times a safe baseline.

`tabular` is the reference on finite MDPs (UCB-VI, the pessimistic evaluation, EpsMix, StepMix, the offline
baseline, and a CLI). `learner` is the deep multi-agent learner (`--algo stepmix`): MAPPO mixed with a frozen
baseline (`baseline`: an earlier run or a scripted policy), one decision per episode for the whole team.
"""
