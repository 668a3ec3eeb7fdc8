"""The bottom of the stack: the one-line input error, the argument parser that prints one line, the device choice.

Every module may import this one; it imports nothing of minidp.

Notable choices:
- Every failure a user can fix is an `InputError` with a one-line message; scripts print it and exit with 2.
  A message from torch or the OS keeps only its first line (at most 200 characters, terminal escapes removed)
  next to the file it is about: the first line says what went wrong, the rest is advice for another setting.
- `ArgumentParser` is argparse with that same one-line error (argparse prints the usage too); every script
  and module CLI uses it, so a mistyped flag reads like any other bad input.
- `choose_device` is the one rule for `train.device`, used by train.py (per local rank), sample.py and the
  latent-cache CLI alike.
- A fault is not bad input: a write the OS refused half-way (a full disk, a file-size limit), a DataLoader worker
  or another rank that died. It is a `FaultError`, one line with exit status 3: nothing the user typed was wrong,
  the last checkpoint is intact, and the same command resumes once the cause is gone. torch reports a dead worker
  or rank as a RuntimeError whose text is all there is to tell it by (`fault_of` reads it).
"""

import argparse
import re

import torch


class InputError(Exception):
    """Bad input the user can fix: printed as one line, exit status 2."""


class FaultError(Exception):
    """A fault of the machine during a run (a failed write, a dead worker or rank): one line, exit status 3."""


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # torch bolds part of its weights_only message


def one_line(error, limit=200):
    """The first non-empty line of an exception's text, at most `limit` characters (torch's and the OS's
    messages often span several lines; the first says what went wrong, the rest is advice)."""
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", str(error)).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors (an unknown flag, a value of the wrong type, a missing argument) are
    one line on stderr, `error: <message> (see --help)`, and exit status 2 (argparse's own adds the usage)."""

    def error(self, message):
        self.exit(2, f"error: {one_line(message, 300)} (see --help)\n")


def int_in(low, high):
    """An argparse `type`: an integer in low..high; anything else is the parser's one-line error naming the flag."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {text!r}")
        return value
    return parse


def choose_device(pref, local_rank=0, local_world_size=1):
    """torch.device for `train.device` (auto | cpu | cuda): this local rank's GPU when every local rank has one."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if pref == "cuda" and gpus < local_world_size:
        raise InputError(f"train.device = cuda but {local_world_size} local rank(s) share {gpus} GPU(s); "
                         "use --nproc_per_node <= the number of GPUs, or train.device=cpu")
    if pref == "cuda" or (pref == "auto" and gpus >= local_world_size >= 1 and gpus > 0):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


RESUME = "the last checkpoint is kept; run the same command to resume"


def fault_of(error):
    """The FaultError for an OSError during a run, or for a RuntimeError torch raises when a process the run
    depends on died; None for anything else.

    torch has no exception type for either case on the CPU: a DataLoader worker killed (by the OOM killer, say)
    is "DataLoader worker (pid N) is killed by signal: Killed." raised from its SIGCHLD handler, wherever the
    main thread is; a rank that died closes its gloo connections ("Connection closed by peer") and one that
    hangs makes the process group's timeout expire ("Timed out waiting ..."), both from gloo's sources, which
    the message names. nccl's errors are DistBackendError."""
    if isinstance(error, OSError):  # a write the OS refused (a full disk) outside files.atomic_write: log.jsonl
        where = f" ({error.filename})" if error.filename else ""
        return FaultError(f"the OS refused a file operation{where}: {error.strerror or one_line(error)}; {RESUME}")
    text = str(error)
    if text.startswith("DataLoader worker"):
        return FaultError(f"a data loader worker died ({one_line(error)}); {RESUME}")
    if "/gloo/" in text.split("]", 1)[0] or type(error).__name__ == "DistBackendError":
        reason = text.split("] ", 1)[-1] if text.startswith("[") else text  # drop gloo's source path
        reason = reason.split(". ", 1)[0]  # gloo goes on with advice to read the other rank's log
        return FaultError(f"another rank stopped answering ({one_line(reason, 120)}); {RESUME}")
    return None
