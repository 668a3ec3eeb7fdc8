"""Durable files (minidp/files.py): the atomic write, the torn-line-safe log, the folder lock. Checked on the
functions themselves; tests/test_faults.py checks the same guarantees end to end, on real processes.

Run: pytest -q tests/test_files.py
"""

import errno

import pytest

from minidp import files
from minidp.errors import FaultError, InputError


def test_atomic_write_publishes_a_complete_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "eval.json"
    files.write_text(path, "first\n")
    files.atomic_write(path, lambda f: f.write(b"second\n"))
    assert path.read_text() == "second\n" and sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_a_write_the_os_refuses_is_one_fault_line_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    files.write_text(path, "previous")

    def full_disk(f):
        f.write(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(FaultError) as info:
        files.atomic_write(path, full_disk)
    assert str(info.value) == f"cannot write {path} (No space left on device); the previous file, if any, is unchanged"
    assert path.read_text() == "previous" and not (tmp_path / "ckpt.pt.tmp").exists()


def test_a_bug_inside_the_write_is_raised_as_it_is_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(KeyError):
        files.atomic_write(path, lambda f: {}["missing"])  # not a fault: the traceback is the right report
    assert list(tmp_path.iterdir()) == []


def test_open_log_cuts_a_torn_last_line_once_and_keeps_whole_records(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2}\n{"ste')
    said = []
    with files.open_log(log, warn=said.append) as f:
        f.write('{"step": 3}\n')
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n{"step": 3}\n' and len(said) == 1 and "5 bytes" in said[0]
    with files.open_log(log, warn=said.append):
        pass
    assert len(said) == 1  # a whole log: nothing to say
    torn_only = tmp_path / "torn.jsonl"
    torn_only.write_bytes(b'{"st')  # a crash during the very first record
    files.open_log(torn_only, warn=said.append).close()
    assert torn_only.read_bytes() == b""


def test_a_folder_has_one_lock_holder_and_the_second_is_named_in_one_line(tmp_path):
    first = files.lock_folder(tmp_path, "fit_scaling.py sweep")
    with pytest.raises(InputError, match=r"is in use by a running fit_scaling.py sweep \(pid \d+ on .*\); wait"):
        files.lock_folder(tmp_path, "fit_scaling.py sweep")
    first.close()  # released: the next one gets it
    files.lock_folder(tmp_path, "fit_scaling.py sweep").close()
