"""What validating the settings adds to `marl train`'s start-up (the issue's budget: at most 0.5 s).

Three numbers:
- cold: in a fresh process, `config.validate` the first time (it imports pydantic and marl.settings,
  builds the schemas and checks the config), measured the way `marl train` meets it: after
  `marl.trainer` (torch) is imported, and also in a bare process. Median over --runs processes.
- warm: in one process, `config.load` (resolve + validate), `config.resolve` alone and
  `config.validate` alone, over --repeats calls: what each further validation costs.
- importtime: `python -X importtime -c "import marl.settings"`: the cumulative import time of
  marl.settings and of pydantic, as Python itself reports it.

    python benchmarks/config_startup.py
    python benchmarks/config_startup.py --runs 10 --repeats 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

RUN = ("smac", "3s5z", "commformer")
COLD = """
import json, sys, time
if {after_trainer}:
    import marl.trainer  # what `marl train` has imported before it loads the config
from marl import config
before = 'pydantic' in sys.modules  # False: validation pays for the import itself
t0 = time.perf_counter()
c, sources = config.resolve(*{run!r})
t1 = time.perf_counter()
config.validate(c, sources)
t2 = time.perf_counter()
print(json.dumps({{"resolve": t1 - t0, "validate": t2 - t1, "pydantic_before": before}}))
"""


def cold(runs: int, after_trainer: bool) -> dict:
    """Median seconds of resolve and of the first validate, over fresh processes."""
    out = []
    for _ in range(runs):
        code = COLD.format(after_trainer=after_trainer, run=RUN)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    medians = {k: statistics.median(o[k] for o in out) for k in ("resolve", "validate")}
    return {**medians, "pydantic_before": any(o["pydantic_before"] for o in out)}


def warm(repeats: int) -> dict:
    """Seconds per call of load (resolve + validate) and of resolve alone, in one warmed-up process: the best
    of 5 interleaved blocks of `repeats` calls each, so that other work on a shared machine counts least."""
    from marl import config

    config.load(*RUN)  # imports and schema building out of the way
    c, sources = config.resolve(*RUN)
    fns = {"load": lambda: config.load(*RUN), "resolve": lambda: config.resolve(*RUN),
           "validate": lambda: config.validate(c, sources)}
    times = {name: float("inf") for name in fns}
    for _ in range(5):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name] = min(times[name], (time.perf_counter() - t0) / repeats)
    return times


def importtime() -> dict:
    """Cumulative import microseconds of marl.settings and pydantic from `python -X importtime`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import marl.settings"], capture_output=True,
                          text=True, check=True)
    found = {}
    for line in proc.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in ("marl.settings", "pydantic"):
            found[parts[2]] = int(parts[1]) / 1e6
    return found


def main() -> None:
    """Print the three measurements."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="fresh processes for the cold numbers")
    p.add_argument("--repeats", type=int, default=300, help="calls for the warm numbers")
    args = p.parse_args()
    for after_trainer in (True, False):
        c = cold(args.runs, after_trainer)
        where = "after importing marl.trainer (as marl train)" if after_trainer else "in a bare process"
        print(f"cold, {where}: first validate {c['validate'] * 1e3:.0f} ms (resolve {c['resolve'] * 1e3:.1f} ms), "
              f"median of {args.runs} processes; pydantic loaded before: {c['pydantic_before']}")
    w = warm(args.repeats)
    print(f"warm: load {w['load'] * 1e3:.2f} ms, resolve {w['resolve'] * 1e3:.2f} ms, validate alone "
          f"{w['validate'] * 1e3:.3f} ms per call (best of 5 blocks of {args.repeats} calls)")
    it = importtime()
    print("python -X importtime: " + ", ".join(f"{k} {v * 1e3:.0f} ms cumulative" for k, v in it.items()))


if __name__ == "__main__":
    main()
