"""Checkpoints that survive a crash: atomic writes, tensors-only loading, checksums, one-line errors.

A checkpoint is a `torch.save` of plain containers (dicts, lists, numbers, strings) and tensors, so
it loads with `torch.load(weights_only=True)`: a file from elsewhere cannot run code. Writes go to a
temporary file in the same folder, are flushed to disk, then renamed over the old file, so a process
killed at any moment leaves the previous complete checkpoint in place.

Version 2 seals the file with a sha256 of every byte before the seal, so a flipped byte anywhere gives
a "corrupt checkpoint" error instead of loading silently (torch does not check the zip's CRCs). The
seal is the zip archive's end comment, which zip readers (torch.load too) skip: the file stays an
ordinary torch file. Version-1 files have no seal; they load unverified, with a one-line warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "marl-checkpoint"
VERSION = 2
READS = (1, 2)  # versions load() accepts; 1 has no checksum

SEAL = b"marl-sha256:"  # the zip comment of a version-2 file: SEAL and the hex sha256 of every byte before it
_SEAL_LEN = len(SEAL) + 64
_END = b"PK\x05\x06"  # the zip's end-of-central-directory record: 22 bytes, the comment's length in the last 2


class CheckpointError(ValueError):
    """A missing, truncated, corrupt or foreign checkpoint; the message is one line."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# read once: os.umask can only be read by setting it, which is not safe once threads run
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write data to path through a flushed temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp's 0600 would make replays and configs unreadable to others
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path, text: str) -> None:
    """Write text to path atomically (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def to_tensors(obj: Any) -> Any:
    """Numpy arrays (and numpy scalars) inside obj turned into tensors, so weights_only can load them."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == np.uint64:
            return {"__uint64__": torch.from_numpy(obj.view(np.int64).copy())}
        return torch.from_numpy(np.array(obj, copy=True, order="C"))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_tensors(v) for v in obj]
    return obj


def to_numpy(obj: Any) -> Any:
    """The inverse of to_tensors for the arrays a VecEnv saved."""
    if isinstance(obj, dict) and set(obj) == {"__uint64__"}:
        return obj["__uint64__"].numpy().view(np.uint64).copy()
    if isinstance(obj, torch.Tensor):
        return obj.numpy().copy()
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_numpy(v) for v in obj]
    return obj


def seal(data: bytes) -> bytes:
    """A torch.save zip with the version-2 seal as its end comment: SEAL + sha256 of every byte before it."""
    if data[-22:-18] != _END or data[-2:] != b"\0\0":
        raise RuntimeError("torch.save did not end its file with a comment-free zip end record; cannot seal it")
    head = data[:-2] + _SEAL_LEN.to_bytes(2, "little") + SEAL  # the comment's length is sealed too
    return head + hashlib.sha256(head).hexdigest().encode()


def _seal_holds(data: bytes) -> bool | None:
    """True when data ends with a seal that matches it, False when with one that does not, None without one."""
    if len(data) < _SEAL_LEN or data[-_SEAL_LEN:-64] != SEAL:
        return None
    return hashlib.sha256(data[:-64]).hexdigest().encode() == data[-64:]


def save(path, payload: dict) -> None:
    """Atomically write a sealed checkpoint holding payload (tensors and plain containers only)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buf)
    atomic_write_bytes(path, seal(buf.getvalue()))


def restore(target, state: dict, path, what: str = "learner") -> None:
    """target.load_state_dict(state), with a one-line CheckpointError when it does not fit."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} does not fit this run's {what} (another map or other settings?): "
                              f"{first[:160]}") from None


def load(path) -> dict:
    """Read a checkpoint written by save() (or a version-1 one); anything else raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    sealed = _seal_holds(raw)
    if sealed is False:
        raise CheckpointError(f"{path} is a corrupt checkpoint: its bytes do not match their sha256 (damaged on "
                              "disk or in a copy)")
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler raises many kinds on foreign bytes
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable marl checkpoint (truncated or foreign file: {first[:120]})"
                              ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a marl checkpoint")
    version = data.get("version")
    if version not in READS:
        raise CheckpointError(f"{path} has checkpoint version {version}; this marl reads "
                              f"{', '.join(map(str, READS))}")
    if version >= 2 and not sealed:  # the zip reads, but its comment (the seal) was damaged or cut off
        raise CheckpointError(f"{path} is a corrupt checkpoint: its sha256 seal is damaged or cut off")
    if version == 1:
        # on stderr, not warnings.warn: one line in the form of marl's errors, every time the file is read
        print(f"marl: warning: {path} is a version-1 checkpoint without a checksum; loaded unverified",
              file=sys.stderr)
    return data
