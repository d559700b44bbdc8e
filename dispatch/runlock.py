#!/usr/bin/env python3
"""One run per experiment folder at a time: an flock(2) lock that names its holder.

enh_kd.sh opens the lock file on a file descriptor of its own and asks this tool to lock it:

    exec 9<>exp/.enh_kd.lock
    python -m dispatch.runlock acquire exp/.enh_kd.lock --fd 9 --pid $$ --command "./run.sh ..."

The lock belongs to the open file (not to this short-lived process), so it is held until the shell and
every child that inherited the descriptor have exited: the kernel releases it when they die, even by
SIGKILL, so a lock is never left behind by a dead run. The file also records the holder (pid, host,
command, start time), so that a second run is refused with a message naming it, and a run that ended
without releasing the lock (killed) is reported as taken over. ``release`` marks the record as ended.

Exit status of ``acquire``: 0 locked (one log line on stdout when a killed run's record is taken over),
1 held by another run (the reason on stderr).
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import List, Optional, Sequence


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_holding(path: Path) -> List[int]:
    """Pids of this machine's processes that have ``path`` open (from /proc; empty where unreadable)."""
    target = os.path.realpath(path)
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(found)


def read_record(fd: int) -> Optional[dict]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        record = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_record(fd: int, record: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))


def describe(record: Optional[dict]) -> str:
    if not record:
        return "a run that left no record"
    return (f"pid {record.get('pid')} on {record.get('host')} ({record.get('command')}), "
            f"started {record.get('started')}")


def acquire(path: Path, fd: int, pid: int, command: str) -> int:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record = read_record(fd)
        holder = record.get("pid") if record else None
        message = f"{path.parent} is in use by another run: {describe(record)}"
        if isinstance(holder, int) and record.get("host") == socket.gethostname() and not pid_alive(holder):
            others = [p for p in processes_holding(path) if p != pid]
            message += (f"; that pid has ended but processes it started still hold the lock"
                        f"{' (pids ' + ', '.join(map(str, others)) + ')' if others else ''}: stop them first")
        else:
            message += f"; wait for it to end or stop it (kill {holder})" if holder else ""
        print(f"enh_kd.sh: error: {message}", file=sys.stderr)
        return 1
    record = read_record(fd)
    if record and record.get("state") == "running" and record.get("pid") != pid:
        print(f"taking over the lock {path} of {describe(record)}, which ended without releasing it")
    write_record(fd, {"pid": pid, "host": socket.gethostname(), "command": command, "state": "running",
                      "started": datetime.datetime.now().isoformat(timespec="seconds")})
    return 0


def release(fd: int, pid: int) -> int:
    """Mark the record of ``pid`` as ended (the lock itself goes with the descriptor)."""
    record = read_record(fd)
    if record and record.get("pid") == pid:
        record["state"] = "ended"
        record["ended"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_record(fd, record)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dispatch.runlock", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("acquire", "release"))
    parser.add_argument("lock", type=Path, help="the lock file (opened by the caller on --fd)")
    parser.add_argument("--fd", type=int, required=True, help="the caller's descriptor open on the lock file")
    parser.add_argument("--pid", type=int, required=True, help="pid of the run (the calling shell)")
    parser.add_argument("--command", default="", help="the run's command line, recorded for the message")
    args = parser.parse_args(argv)
    try:
        os.fstat(args.fd)
    except OSError:
        parser.error(f"--fd {args.fd} is not open (open the lock file on it first: exec {args.fd}<>{args.lock})")
    if args.action == "acquire":
        return acquire(args.lock, args.fd, args.pid, args.command)
    return release(args.fd, args.pid)


if __name__ == "__main__":
    sys.exit(main())
