"""Checkpoint files (marl.checkpoint): atomic writes, tensors-only loading, one-line errors for bad files."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marl import checkpoint
from marl.checkpoint import CheckpointError

# torch warns about the protocol of the foreign pickles these tests feed it
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text, f"message is not one line: {text!r}"
    return text


def _same(a, b) -> None:
    """Deep equality of plain containers, tensors and arrays (dtype included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert type(a) is type(b) and a == b


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


PAYLOAD = {
    "tensors": {"w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), "i": torch.arange(5),
                "b": torch.tensor([True, False]), "d": torch.zeros(2, dtype=torch.float64)},
    "nested": {"list": [torch.ones(2), 3, "text", None, 1.5, True], "empty": {}},
    "counters": {"update": 7, "env_steps": 1234, "episodes": 5},
    "rng": torch.get_rng_state(),
}


# ------------------------------------------------------------------------------------ round trips
def test_save_load_round_trip(tmp_path):
    path = tmp_path / "ck" / "last.pt"  # the folder is created
    checkpoint.save(path, PAYLOAD)
    data = checkpoint.load(path)
    assert data["format"] == checkpoint.FORMAT and data["version"] == checkpoint.VERSION
    _same({k: data[k] for k in PAYLOAD}, PAYLOAD)


def test_file_loads_with_torch_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    arrays = {"f": np.linspace(0, 1, 5, dtype=np.float32), "u": np.array([2**64 - 1, 1], np.uint64)}
    checkpoint.save(path, {**PAYLOAD, "env": checkpoint.to_tensors(arrays)})
    data = torch.load(path, weights_only=True)
    assert data["format"] == "marl-checkpoint"
    _same(data["tensors"], PAYLOAD["tensors"])
    _same(checkpoint.to_numpy(data["env"]), arrays)


ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "f64": np.array([np.pi, -0.0, np.inf, np.nan]),
    "i64": np.array([[-(2**63), 2**63 - 1]], np.int64),
    "i32": np.array([1, -2], np.int32),
    "u8": np.array([0, 255], np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "u64": np.array([0, 1, 2**63, 2**64 - 1, 0xDEADBEEFCAFEBABE], np.uint64),
    "u64_2d": np.arange(6, dtype=np.uint64).reshape(2, 3) * np.uint64(2**61),
    "empty": np.zeros((0, 3), np.float32),
    "transposed": np.arange(6, dtype=np.float64).reshape(2, 3).T,  # not contiguous
    "strided": np.arange(10, dtype=np.int64)[::3],
    "nested": {"deeper": [np.ones(2, np.float32), {"u": np.array([2**64 - 2], np.uint64)}]},
}


def test_numpy_round_trip_through_a_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"env": checkpoint.to_tensors(ARRAYS)})
    back = checkpoint.to_numpy(checkpoint.load(path)["env"])
    _same(back, ARRAYS)


def test_zero_dimensional_array_keeps_its_shape():
    back = checkpoint.to_numpy(checkpoint.to_tensors({"counter": np.array(3.5), "u": np.array(7, np.uint64)}))
    assert back["counter"].shape == () and back["u"].shape == ()


def test_to_tensors_makes_tensors_only():
    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        else:
            assert isinstance(x, torch.Tensor), type(x)

    walk(checkpoint.to_tensors(ARRAYS))


def test_to_tensors_copies_and_turns_numpy_scalars_into_numbers():
    arr = np.zeros(3, np.float32)
    t = checkpoint.to_tensors(arr)
    arr[0] = 5.0
    assert t[0].item() == 0.0  # a copy, not a view of the live array
    out = checkpoint.to_tensors({"a": np.float32(1.5), "b": np.int64(3), "c": np.bool_(True), "t": (1, 2)})
    assert out == {"a": 1.5, "b": 3, "c": True, "t": [1, 2]}
    assert type(out["a"]) is float and type(out["b"]) is int and type(out["c"]) is bool


def test_uint64_values_survive_exactly():
    values = np.array([2**64 - 1, 2**63, 2**63 - 1, 12345678901234567890], np.uint64)
    back = checkpoint.to_numpy(checkpoint.to_tensors(values))
    assert back.dtype == np.uint64 and [int(v) for v in back] == [int(v) for v in values]


# ------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "last.pt"
    for i in range(3):
        checkpoint.save(path, {"i": i})
        assert _files(tmp_path) == ["last.pt"]
    assert checkpoint.load(path)["i"] == 2


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"i": 1})

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint.os, "replace", broken_replace)
    with pytest.raises(OSError):
        checkpoint.save(path, {"i": 2})
    monkeypatch.undo()
    assert _files(tmp_path) == ["last.pt"]  # the temporary file was removed
    assert checkpoint.load(path)["i"] == 1


def test_interrupted_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"i": 1})

    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"i": 2})
    monkeypatch.undo()
    assert _files(tmp_path) == ["last.pt"]
    assert checkpoint.load(path)["i"] == 1


def test_write_goes_through_a_flushed_temp_file_in_the_same_folder(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    seen = []
    real_replace, real_fsync = os.replace, os.fsync

    def fsync(fd):
        seen.append(("fsync", fd))
        return real_fsync(fd)

    def replace(src, dst):
        seen.append(("replace", os.path.dirname(src), os.path.basename(src), os.path.getsize(src), dst))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    checkpoint.atomic_write_bytes(path, b"x" * 1000)
    kinds = [s[0] for s in seen]
    assert kinds.index("fsync") < kinds.index("replace")
    _, folder, name, size, dst = seen[kinds.index("replace")]
    assert folder == str(tmp_path) and name.startswith(".last.pt.") and name.endswith(".tmp")
    assert size == 1000 and str(dst) == str(path)
    assert path.read_bytes() == b"x" * 1000


def test_atomic_write_text(tmp_path):
    checkpoint.atomic_write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"


# ------------------------------------------------------------------------------------ bad files
def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path / "last.pt")
    assert _one_line(err) == f"no checkpoint at {tmp_path / 'last.pt'}"


def test_a_folder_is_not_a_checkpoint(tmp_path):
    (tmp_path / "last.pt").mkdir()
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path / "last.pt")
    _one_line(err)


def _saved(tmp_path) -> bytes:
    path = tmp_path / "good.pt"
    checkpoint.save(path, {**PAYLOAD, "env": checkpoint.to_tensors(ARRAYS)})
    return path.read_bytes()


SEAL_LEN = len(checkpoint.SEAL) + 64  # the zip comment that seals a version-2 file


@pytest.mark.parametrize("cut", [0.5, 1.0, 0.99, 0.1, 0.001, SEAL_LEN + 1, SEAL_LEN, SEAL_LEN - 1, 64, 1])
def test_truncated_file(tmp_path, cut):
    data = _saved(tmp_path)
    n = len(data) - (int(len(data) * cut) if isinstance(cut, float) else cut)  # cut: a fraction, or a byte count
    path = tmp_path / "last.pt"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    if len(data) - n <= SEAL_LEN:  # only the seal was cut: the zip still reads, and says it is version 2
        assert _one_line(err) == f"{path} is a corrupt checkpoint: its sha256 seal is damaged or cut off"
    else:
        assert _one_line(err).startswith(f"{path} is not a readable marl checkpoint (truncated or foreign file")


class Foreign:
    """Some object a foreign pickle could hold."""

    def __init__(self):
        self.x = 1


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


FOREIGN = {
    "pickle_of_an_object": lambda: pickle.dumps(Foreign()),
    "pickle_of_a_dict": lambda: pickle.dumps({"a": 1}),
    "pickle_of_numpy": lambda: pickle.dumps(np.zeros(3)),
    "torch_state_dict": lambda: _torch_bytes({"weight": torch.zeros(3)}),
    "torch_tensor": lambda: _torch_bytes(torch.zeros(2)),
    "torch_list": lambda: _torch_bytes([1, 2, 3]),
    "torch_of_an_object": lambda: _torch_bytes({"obj": Foreign()}),
    "text_not_a_checkpoint": lambda: b"not a checkpoint",
    "yaml_mapping": lambda: b"{}",
    "empty": lambda: b"",
    "zip_without_torch": lambda: _zip_bytes(),
    "random_bytes": lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
}


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.txt", "hello")
    return buf.getvalue()


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_foreign_file(tmp_path, kind):
    path = tmp_path / "last.pt"
    path.write_bytes(FOREIGN[kind]())
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert _one_line(err).startswith(str(path))


@pytest.mark.parametrize("data", [b"hello", b"abc", b"j", b"hello world\n", b"this is not a checkpoint\n",
                                  b"train:\n  steps: 10\n"])
def test_foreign_short_text_file(tmp_path, data):
    path = tmp_path / "last.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    _one_line(err)


def test_wrong_version(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(_torch_bytes({"format": checkpoint.FORMAT, "version": 99}))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert _one_line(err) == f"{path} has checkpoint version 99; this marl reads 1, 2"


def test_a_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for data in (pickle.dumps(Evil()), _torch_bytes({"format": checkpoint.FORMAT, "x": Evil()})):
        path = tmp_path / "last.pt"
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            checkpoint.load(path)
        _one_line(err)
        assert not marker.exists()


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)  # the CLI turns ValueErrors into one-line errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_during_saves_leaves_the_last_complete_checkpoint(tmp_path):
    import random
    import signal
    import time

    path = tmp_path / "last.pt"
    checkpoint.save(path, {"i": 0, "w": torch.zeros(1)})
    rng = random.Random(7)
    for round_ in range(8):
        start = checkpoint.load(path)["i"]
        pid = os.fork()
        if pid == 0:  # the child writes big checkpoints as fast as it can until it is killed
            try:
                i = start
                while True:
                    i += 1
                    # from numpy: a forked child must not enter torch's thread pool (it may hang after fork)
                    w = torch.from_numpy(np.full(1_000_000, float(i), np.float32))
                    checkpoint.save(path, {"i": i, "w": w})
            finally:
                os._exit(0)
        # the last round kills only after a save completed, so the test saw one whatever the machine's load
        while round_ == 7 and checkpoint.load(path)["i"] == start:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        data = checkpoint.load(path)
        assert data["i"] >= start
        if data["i"]:
            assert data["w"].shape == (1_000_000,) and bool((data["w"] == data["i"]).all())
        assert all(n == "last.pt" or (n.startswith(".last.pt.") and n.endswith(".tmp")) for n in _files(tmp_path))
    assert checkpoint.load(path)["i"] > 0


# ------------------------------------------------------------------------------------ checksums (version 2)
def save_v1(path, payload: dict) -> None:
    """The save() of checkpoint version 1 (every run in BENCHMARKS.md), byte for byte: no seal."""
    buf = io.BytesIO()
    torch.save({"format": checkpoint.FORMAT, "version": 1, **payload}, buf)
    checkpoint.atomic_write_bytes(path, buf.getvalue())


# a tensor whose bytes are easy to find in the file, so flips can be aimed inside tensor data
MARKED = torch.arange(256, dtype=torch.uint8).repeat(4)


def _marked_bytes(tmp_path, save=checkpoint.save) -> tuple[bytes, int]:
    """A checkpoint of PAYLOAD plus MARKED, and where MARKED's data starts in it."""
    path = tmp_path / "marked.pt"
    save(path, {**PAYLOAD, "marked": MARKED})
    data = path.read_bytes()
    at = data.find(MARKED.numpy().tobytes())
    assert at > 0 and data.count(MARKED.numpy().tobytes()) == 1
    return data, at


def _flipped(data: bytes, at: int, mask: int = 0xFF) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


def test_seal_is_the_zip_comment_over_every_byte_before_it(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, PAYLOAD)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # still a well-formed zip: its CRCs hold
        comment = z.comment
    assert comment == data[-SEAL_LEN:] and comment.startswith(checkpoint.SEAL)
    assert comment[len(checkpoint.SEAL):].decode() == hashlib.sha256(data[:-64]).hexdigest()
    assert data[-SEAL_LEN - 2:-SEAL_LEN] == SEAL_LEN.to_bytes(2, "little")  # the comment's length is sealed too


def test_every_flipped_byte_of_a_small_checkpoint_is_corrupt(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, {"w": torch.arange(3.0), "n": 7})
    data = path.read_bytes()
    assert len(data) < 2500  # small enough to flip every byte
    fd = os.open(path, os.O_WRONLY)
    try:
        for at in range(len(data)):  # flipped and put back in place: rewriting whole files is slow on some disks
            os.pwrite(fd, bytes([data[at] ^ 0xFF]), at)
            with pytest.raises(CheckpointError) as err:
                checkpoint.load(path)
            assert _one_line(err).startswith(f"{path} is a corrupt checkpoint: "), at
            os.pwrite(fd, data[at:at + 1], at)
    finally:
        os.close(fd)
    assert checkpoint.load(path)["n"] == 7  # every byte was put back


def test_a_flip_inside_tensor_data_loads_silently_without_the_seal(tmp_path):
    # why version 2 exists: torch does not check the zip's CRCs, so a version-1 file takes a flipped weight
    data, at = _marked_bytes(tmp_path, save_v1)
    path = tmp_path / "last.pt"
    path.write_bytes(_flipped(data, at + 5, 0x01))
    loaded = checkpoint.load(path)
    assert loaded["marked"][5].item() == 4 and loaded["marked"][6].item() == 6


@pytest.mark.parametrize("where", ["tensor_start", "tensor_middle", "tensor_end", "first_byte", "pickle",
                                   "zip_directory", "comment_length", "seal_marker", "seal_digest", "last_byte"])
def test_a_flipped_byte_is_a_corrupt_checkpoint(tmp_path, where):
    data, at = _marked_bytes(tmp_path)
    n = len(MARKED)
    offset = {"tensor_start": at, "tensor_middle": at + n // 2, "tensor_end": at + n - 1, "first_byte": 0,
              "pickle": data.find(b"marl-checkpoint"), "zip_directory": data.rfind(b"PK\x01\x02") + 10,
              "comment_length": len(data) - SEAL_LEN - 1, "seal_marker": len(data) - SEAL_LEN + 3,
              "seal_digest": len(data) - 10, "last_byte": len(data) - 1}[where]
    assert 0 <= offset < len(data)
    path = tmp_path / "last.pt"
    path.write_bytes(_flipped(data, offset, 0x01))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    reason = ("its sha256 seal is damaged or cut off" if where == "seal_marker"
              else "its bytes do not match their sha256 (damaged on disk or in a copy)")
    assert _one_line(err) == f"{path} is a corrupt checkpoint: {reason}"


_FLIP_FILE: dict[str, bytes] = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_changed_byte_is_a_corrupt_checkpoint(tmp_path, fraction, mask):
    if "data" not in _FLIP_FILE:
        _FLIP_FILE["data"] = _saved(tmp_path)
    data = _FLIP_FILE["data"]
    path = tmp_path / "flipped.pt"
    path.write_bytes(_flipped(data, int(fraction * len(data)), mask))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert _one_line(err).startswith(f"{path} is a corrupt checkpoint: ")


def test_version_1_loads_unverified_with_a_one_line_warning(tmp_path, capsys):
    path = tmp_path / "last.pt"
    save_v1(path, {**PAYLOAD, "env": checkpoint.to_tensors(ARRAYS)})
    with zipfile.ZipFile(path) as z:
        assert z.comment == b""
    data = checkpoint.load(path)
    assert data["version"] == 1
    _same({k: data[k] for k in PAYLOAD}, PAYLOAD)
    _same(checkpoint.to_numpy(data["env"]), ARRAYS)
    assert capsys.readouterr().err == (f"marl: warning: {path} is a version-1 checkpoint without a checksum; "
                                       "loaded unverified\n")


def test_version_2_loads_without_a_warning(tmp_path, capsys):
    path = tmp_path / "last.pt"
    checkpoint.save(path, PAYLOAD)
    assert checkpoint.load(path)["version"] == checkpoint.VERSION == 2
    assert capsys.readouterr().err == ""


def test_an_unsealed_version_2_file_is_corrupt(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(_torch_bytes({"format": checkpoint.FORMAT, "version": 2, "w": torch.zeros(2)}))
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert _one_line(err) == f"{path} is a corrupt checkpoint: its sha256 seal is damaged or cut off"


def test_seal_refuses_bytes_that_do_not_end_in_a_bare_zip_end_record():
    with pytest.raises(RuntimeError, match="comment-free zip end record"):
        checkpoint.seal(checkpoint.seal(_torch_bytes({"a": 1})))  # already sealed: it ends in a comment
