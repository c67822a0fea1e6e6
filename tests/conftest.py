"""Shared test set-up: headless pygame, helpers to stage SMAC scenarios by hand, and per-machine bit references."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


# ------------------------------------------------------------------------------ per-machine bit references
# Same seed, same bits holds for one torch build on one kind of CPU: an AMD EPYC and the machine of the first
# references, both AVX512, gave different bits from the same code. A reference file keeps one set per machine,
# {"references": [{"machine": {...}, ...}, ...]}; a test reads this machine's set and skips where there is none.


def cpu_model() -> str:
    """The CPU's vendor, family and model from the first processor of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the end of the first processor's block
            continue
        fields.setdefault(key.strip(), value.strip())
    return " ".join(fields.get(k, "?") for k in ("vendor_id", "cpu family", "model"))


def machine() -> dict:
    """What the bits depend on besides the code: the torch build, the CPU's vector instructions and the CPU."""
    import platform

    import torch

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
            "arch": platform.machine(), "cpu_model": cpu_model()}


def matching(references: list[dict], here: dict) -> dict | None:
    """The set written on this machine: the most specific one whose every machine field equals this machine's (the
    first sets, written before the CPU model was recorded, have no cpu_model and so fit any model)."""
    fits = [r for r in references if all(here.get(k) == v for k, v in r["machine"].items())]
    return max(fits, key=lambda r: len(r["machine"]), default=None)


def stored_reference(path) -> dict:
    """This machine's set in the reference file at `path`; skips the test where there is none."""
    import json

    with open(path) as f:
        references = json.load(f)["references"]
    ref = matching(references, machine())
    if ref is None:
        pytest.skip(f"no reference in {os.path.basename(path)} for this machine, {machine()}; they were written "
                    f"on {[r['machine'] for r in references]}")
    return ref


def write_reference(path, entry: dict) -> int:
    """Add this machine's set (`entry` plus its machine) to the reference file at `path`, replacing an older one
    of the same machine; returns how many other sets it keeps."""
    import json

    here = machine()
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [r for r in json.load(f)["references"] if r["machine"] != here]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps({"references": [*kept, {"machine": here, **entry}]}, indent=1) + "\n")
    return len(kept)


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test (modules opt in with pytestmark): tiny networks run fastest on one thread, and
    much slower on two when another process is busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same(a, b, where: str = "") -> None:
    """Identical nested states and rollouts: tensors (torch.equal), arrays (dtype and values), dicts, lists,
    dataclasses and plain values."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            assert_same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    else:
        assert a == b, where


def stage(batch, unit, *, x=None, y=None, health=None, shield=None, alive=None, order=None, e=0):
    """Edit one unit of battle e in place (positions, health, orders), keeping reward bookkeeping exact."""
    from marl.envs.smac import layout

    uf, ui = batch.uf, batch.ui
    if x is not None:
        uf[e, unit, layout.X] = x
    if y is not None:
        uf[e, unit, layout.Y] = y
    if health is not None:
        uf[e, unit, layout.HP] = health
    if shield is not None:
        uf[e, unit, layout.SH] = shield
    if alive is not None:
        ui[e, unit, layout.ALIVE] = int(alive)
        if not alive:
            uf[e, unit, layout.HP] = 0.0
            uf[e, unit, layout.SH] = 0.0
            ui[e, unit, layout.DEATH_SEEN] = 1
    if order is not None:
        ui[e, unit, layout.ORDER] = order
        ui[e, unit, layout.TARGET] = -1
    uf[e, unit, layout.PREV_HS] = uf[e, unit, layout.HP] + uf[e, unit, layout.SH]


def freeze_enemies(batch, e=0):
    """Make every enemy stand idle (no attack-move), so a test controls who fights."""
    from marl.envs.smac import layout

    batch.ui[e, batch.n_agents:, layout.ORDER] = layout.ORD_IDLE
    batch.ui[e, batch.n_agents:, layout.TARGET] = -1


def set_type(batch, unit, type_name, e=0):
    """Turn unit into another unit type (full health and shields of that type)."""
    from marl.envs.smac import layout
    from marl.envs.smac.units import TYPE_INDEX, UNIT_TYPES

    batch.utype[e, unit] = TYPE_INDEX[type_name]
    u = UNIT_TYPES[type_name]
    batch.uf[e, unit, layout.HP] = u.hp
    batch.uf[e, unit, layout.SH] = u.shield
    batch.uf[e, unit, layout.PREV_HS] = u.hp + u.shield


def duel(shooter: str, x: float, **options):
    """3m with agent 0 turned into `shooter` at (x, 16), ordered onto enemy 3 (a marine standing idle at (16, 16),
    east of it); every other unit dead. `options` are the battle's env options."""
    from marl.envs.smac import SMACBatch, layout

    b = SMACBatch("3m", 1, **options)
    b.seed(0)
    b.reset()
    freeze_enemies(b)
    set_type(b, 0, shooter)
    stage(b, 0, x=x, y=16.0)
    stage(b, 3, x=16.0, y=16.0)
    for u in (1, 2, 4, 5):
        stage(b, u, alive=False)
    b.ui[0, 0, layout.ORDER], b.ui[0, 0, layout.TARGET] = layout.ORD_ATTACK, 3
    return b


def actions_for(batch, **by_agent):
    """An int[1, A] action array: stop for the living, no-op for the dead, overrides by agent index."""
    acts = np.where(batch.avail[0, :, 1], 1, 0).astype(np.int64)[None]
    for k, v in by_agent.items():
        acts[0, int(k.removeprefix("a"))] = v
    return acts


def whole_and_resumed(cfg: dict, root, updates: int):
    """Two runs of one config: 2 x updates in one go, and updates, a resume from the checkpoint, updates more.

    Returns the two Trainers, for a test to compare what exact resume must make equal.
    """
    from marl.trainer import Trainer

    whole = Trainer(cfg, root / "whole", show_progress=False)
    whole.run(max_updates=2 * updates)
    Trainer(cfg, root / "split", show_progress=False).run(max_updates=updates)
    resumed = Trainer(cfg, root / "split", resume=True, show_progress=False)
    resumed.run(max_updates=updates)
    return whole, resumed
