"""Files that survive faults: atomic writes, the append-only run log, a folder's lock.

What a crash, a power cut or a full disk can do to a file, and what each writer here does about it:

    atomic_write   checkpoints, eval.json, the latent cache's shards and index, a sweep's results: written to
                   <name>.tmp, fsynced, renamed over <name>, and the directory fsynced (the rename is only
                   durable once the directory is). A reader sees the old file or the new one, never a mix; a
                   write the OS refuses half-way removes the .tmp and is one FaultError line naming the file
                   and the OS's reason.
    open_log       log.jsonl, appended one line per record: a crash can tear its last line. Opening it to
                   append cuts a torn tail off first (it holds no whole record) and says so once, so the next
                   record starts on a line of its own instead of merging into the torn one.
    lock_folder    one writer per folder (a sweep): an exclusive flock the kernel drops when its process ends,
                   however it ends, so a killed owner never leaves a stale lock.

Notable choices:
- The order write, fsync(file), rename, fsync(directory) is the one SQLite's and PostgreSQL's docs give; without
  the first fsync, ext4 and XFS may make the rename durable before the data, leaving an empty file after a power
  loss (the "O_PONIES" problem of ext4's delayed allocation).
- torch.save reports a failed write as a RuntimeError about zip positions ("unexpected pos 704 vs 598"), not the
  OS's reason: the file object handed to `write` remembers the OSError it raised, and that is what the one line
  says ("File too large", "No space left on device").
- A log line is torn only at the end (records are appended, one write each); a line that is not JSON elsewhere
  is left for the readers (minidp/scaling.py's read_log skips and counts it, with one warning per file).
"""

import fcntl
import functools
import os
import socket
import sys
from pathlib import Path

from minidp.errors import FaultError, InputError, one_line


# ----------------------------------------------------------------------------------------------------------
# Atomic, durable writes
# ----------------------------------------------------------------------------------------------------------

class _RecordingFile:
    """A binary file that remembers the first OSError its writes raised (torch.save hides it, see above)."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data):
        try:
            return self.handle.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        self.handle.flush()


def fsync_directory(folder):
    """Make a rename (or a new file) in `folder` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Call write(f) on a binary file that becomes `path` only once complete and on disk; FaultError (one line)
    if the OS refuses a write, the previous `path` untouched and no .tmp left behind."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    recorder = None
    try:
        with open(tmp, "wb") as handle:
            recorder = _RecordingFile(handle)
            write(recorder)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException as e:  # also a signal's exception (Ctrl-C, a dead DataLoader worker) mid-write
        tmp.unlink(missing_ok=True)
        os_error = e if isinstance(e, OSError) else getattr(recorder, "error", None)
        if os_error is None:
            raise
        reason = os_error.strerror or one_line(os_error)
        raise FaultError(f"cannot write {path} ({reason}); the previous file, if any, is unchanged") from None


def write_text(path, text):
    """atomic_write of a text file (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode()))


# ----------------------------------------------------------------------------------------------------------
# The run log
# ----------------------------------------------------------------------------------------------------------

def open_log(path, warn=None):
    """`path` (a JSON-lines log) opened to append, its torn last line, if any, cut off first and reported once
    through warn(text) (default: a warning line on stderr)."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size > 0:
        with open(path, "rb+") as f:
            torn = _after_last_newline(f, size)
            if torn:
                f.truncate(size - torn)
                (warn or warning)(f"{path}: its last line was cut off by a crash ({torn} bytes, not a whole record); "
                                "removed it, the resumed run logs those steps again")
    return open(path, "a")


def _after_last_newline(f, size, block=1 << 16):
    """How many bytes of the binary file f (of `size` bytes) follow its last newline, reading from the end."""
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        newline = f.read(end - start).rfind(b"\n")
        if newline >= 0:
            return size - (start + newline + 1)
        end = start
    return size  # no newline at all: the torn line is the only one


def warning(text):
    """A warning line on stderr."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def warn_once(text):
    """A warning line on stderr, once per process for the same text (a log read by several readers)."""
    warning(text)


# ----------------------------------------------------------------------------------------------------------
# One writer per folder
# ----------------------------------------------------------------------------------------------------------

def lock_folder(folder, who, name=".lock", label=None, advice="wait for it to end"):
    """Take an exclusive lock on folder/name for this process (keep the returned file open while it works), or
    raise InputError naming the process that holds it. `who` names this kind of owner in the message, `label`
    what the folder is (default: its path), `advice` what to do."""
    path = Path(folder) / name
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(f"{label or folder} is in use by a running {who} ({holder}); {advice}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle
