"""The bottom of the stack (minidp/errors.py): one-line messages from any exception, the argument parser whose
errors are one line, the device choice, and which failures during a run are faults (exit status 3).

Run: pytest -q tests/test_errors.py
"""

import pytest
import torch

from minidp import errors


def test_one_line_keeps_the_first_line_of_an_os_or_torch_message_without_escapes_and_at_most_200_chars():
    assert errors.one_line(OSError("\n  \x1b[1mfirst\x1b[0m line  \n\tsecond line")) == "first line"
    long = errors.one_line(RuntimeError("x" * 500 + "\nadvice"))
    assert len(long) == 200 and long == "x" * 197 + "..."
    assert errors.one_line(KeyError()) == "KeyError"  # an exception with no text: its type


def test_argument_parser_errors_are_one_line_with_exit_status_2(capsys):
    parser = errors.ArgumentParser(prog="prog")
    parser.add_argument("--n", type=errors.int_in(1, 9))
    for argv, named in ((["--n", "0"], "argument --n: must be an integer in 1..9, got '0'"),
                        (["--n", "one"], "--n"), (["--bogus"], "unrecognized arguments: --bogus")):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and named in err, err
    assert parser.parse_args(["--n", "9"]).n == 9


def test_choose_device_takes_the_cpu_unless_cuda_is_there_and_asked_for():
    assert errors.choose_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert errors.choose_device("auto", local_rank=0) == torch.device("cuda", 0)
        return
    assert errors.choose_device("auto") == torch.device("cpu")  # auto without a GPU: the CPU, no error
    with pytest.raises(errors.InputError, match="train.device = cuda but 1 local rank"):
        errors.choose_device("cuda")


def test_faults_are_told_apart_from_bugs_and_read_as_one_line():
    disk = errors.fault_of(OSError(27, "File too large", "runs/depth/log.jsonl"))
    assert str(disk).startswith("the OS refused a file operation (runs/depth/log.jsonl): File too large; ")
    worker = errors.fault_of(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "))
    assert "a data loader worker died (DataLoader worker (pid 4242) is killed by signal: Killed.)" in str(worker)
    # gloo prefixes its source file and follows with advice: the one line keeps the reason between the two
    peer = errors.fault_of(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by "
                                        "peer [127.0.0.1]:3108. Check the other rank's log\nmore"))
    assert str(peer).startswith("another rank stopped answering (Connection closed by peer [127.0.0.1]:3108); ")
    assert all(str(f).endswith(errors.RESUME) and "\n" not in str(f) for f in (disk, worker, peer))
    assert errors.fault_of(ValueError("a bug")) is None and errors.fault_of(RuntimeError("shape mismatch")) is None
