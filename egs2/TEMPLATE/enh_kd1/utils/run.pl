#!/usr/bin/env python3
"""Run a command, or an array of jobs, on this machine; each job writes a Kaldi-style log.

Usage: run.pl [options] [JOB=a:b] LOGFILE COMMAND...

This is our own Python 3 implementation of the command-line interface of Kaldi's run.pl
(not a port of the Perl code).  The file is called run.pl because espnet2.bin.launch picks
its job backend from the file name of the first word of --cmd.  utils/slurm.pl loads this
file for its option parsing and command quoting, so both accept the same command lines.

Options (each takes a value; '-' and '_' are the same in names; a later occurrence wins,
so callers such as espnet2.bin.launch can append to a preset "${cuda_cmd}"):
  --max-jobs-run N   run at most N jobs at once (also GridEngine's -tc N).  Default, as in
                     Kaldi's run.pl: the number of CPUs this process may use (os.sched_getaffinity),
                     or with --gpu > 0 the number of GPUs (CUDA_VISIBLE_DEVICES if set, else
                     `nvidia-smi -L`; 1 if neither tells)
  --gpu N            accepted but no GPU is assigned: jobs see the caller's
                     CUDA_VISIBLE_DEVICES, so a user's own device selection is respected
  --num_threads N    only reported in the log footer
  --num_nodes N      must be 1 (use slurm.pl for several nodes)
  --mem X, --time X, --name X, --config F
                     accepted and ignored (they matter to slurm.pl)
Any other option (--queue X, -q X, -l X, -V, -pe ENV N, ...: options of other job backends such as
Kaldi's queue.pl) is ignored with a note on stderr, as Kaldi's run.pl ignores them.

JOB=a:b (any upper/lower-case name, or JOB=a for one job) runs jobs a..b; the string JOB
in LOGFILE and COMMAND is replaced by the job index.

COMMAND: a single word is a bash command line used as is ("a | b > c"); several words are
quoted where needed so that the job gets exactly these words (python -c "print(1)"),
except bare shell operators (|, &&, ;, >, 2>&1, ...) which keep their meaning as in Kaldi
(`cmd1 \\| cmd2`).  Jobs run as `bash -c` with pipefail set and stdin from /dev/null.

Each log file gets "# <command>" and "# Started at <date>", the job's stdout and stderr,
"# Accounting: time=<s> threads=<n>" and "# Ended (code <rc>) at <date>".  The exit status
is 0 only if every job succeeds.

Jobs stay in the caller's process group, so that a kill of the recipe's process group (Ctrl-C,
`kill -9 -- -<pgid>`) also ends them and everything they started: nothing keeps running behind a
killed run.sh.  SIGINT/SIGTERM/SIGHUP sent to run.pl alone end every running job with its whole
process tree (SIGTERM, then SIGKILL after KILL_GRACE_S seconds).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

USAGE = "usage: {prog} [options] [JOB=a:b] LOGFILE COMMAND..."

# Options with integer values, and their smallest allowed value.
INT_OPTIONS = {"max_jobs_run": 1, "gpu": 0, "num_threads": 1, "num_nodes": 1}
OPTIONS = (*INT_OPTIONS, "mem", "time", "name", "config")
# GridEngine options without a value, and with two values (qsub -pe smp 4).
FLAG_SWITCHES = ("-V",)
TWO_VALUE_SWITCHES = ("-pe",)

JOB_ARRAY = re.compile(r"^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$")
# Words kept unquoted so that Kaldi-style `a \| b` and `\> file` still work.
SHELL_OPERATOR = re.compile(r"^(\|\|?|&&|;|&|&>>?|[0-9]*(<|>>?|>&[0-9]+|<&[0-9]+))$")
# Seconds between the SIGTERM and the SIGKILL of an interrupted job's processes.
KILL_GRACE_S = 5.0


@dataclass
class Request:
    """A parsed command line: options, job array, log file pattern and bash command."""

    log: str
    command: str
    options: dict[str, str | int] = field(default_factory=dict)
    # Options outside OPTIONS, as given (["--queue", "all.q"], ["-V"], ...): each backend decides.
    other: list[list[str]] = field(default_factory=list)
    var: str | None = None  # name of the job-index variable, e.g. "JOB"
    first: int = 1
    last: int = 1

    def tasks(self) -> list[int | None]:
        """Job indices to run; [None] when no JOB=a:b was given."""
        return list(range(self.first, self.last + 1)) if self.var else [None]

    def expand(self, text: str, task: int | None) -> str:
        """Replace the job variable in `text` by the job index, as Kaldi does (plain text)."""
        return text if task is None else text.replace(self.var, str(task))


def check_option(name: str, value: str, prog: str, where: str = "") -> str | int:
    """Validate the value of one of OPTIONS; integer options are returned as int."""
    if name not in INT_OPTIONS:
        return value
    low = INT_OPTIONS[name]
    if not value.isdigit() or int(value) < low:
        sys.exit(f"{prog}: {where}--{name} expects an integer >= {low}, got '{value}'")
    return int(value)


def shell_join(words: list[str]) -> str:
    """Join command words into one bash command line (see COMMAND in the module doc)."""
    if len(words) == 1:
        return words[0]
    return " ".join(w if SHELL_OPERATOR.match(w) else shlex.quote(w) for w in words)


def parse_command_line(argv: list[str], prog: str) -> Request:
    """Parse `[options] [JOB=a:b] [options] LOGFILE COMMAND...` (options may follow JOB=).

    Options in OPTIONS are validated into Request.options; any other option (``--x v``, ``-x v``, the
    GridEngine forms ``-V`` and ``-pe env n``) is kept as given in Request.other; ``-tc N`` is
    --max-jobs-run."""
    options: dict[str, str | int] = {}
    other: list[list[str]] = []
    array = None
    while argv:
        if argv[0].startswith("-") and argv[0] != "-":
            switch = argv[0]
            if switch in FLAG_SWITCHES:
                other.append([switch])
                argv = argv[1:]
                continue
            size = 3 if switch in TWO_VALUE_SWITCHES else 2
            if len(argv) < size:
                sys.exit(f"{prog}: option {switch} needs a value\n" + USAGE.format(prog=prog))
            name = "max_jobs_run" if switch == "-tc" else switch.lstrip("-").replace("-", "_")
            if switch.startswith("--") or switch == "-tc":
                if name in OPTIONS:
                    options[name] = check_option(name, argv[1], prog)
                else:
                    other.append(argv[:size])
            else:
                other.append(argv[:size])
            argv = argv[size:]
        elif array is None and JOB_ARRAY.match(argv[0]):
            array = JOB_ARRAY.match(argv[0])
            argv = argv[1:]
        else:
            break
    if len(argv) < 2:
        sys.exit(f"{prog}: expected LOGFILE and COMMAND after the options\n" + USAGE.format(prog=prog))
    request = Request(log=argv[0], command=shell_join(argv[1:]), options=options, other=other)
    if array:
        request.var = array.group(1)
        request.first = int(array.group(2))
        request.last = int(array.group(3) or array.group(2))
        if request.first > request.last:
            sys.exit(f"{prog}: empty job range {array.group(0)}")
        if request.first != request.last and request.var not in request.log:
            sys.exit(f"{prog}: {array.group(0)} runs several jobs but the log file "
                     f"'{request.log}' does not contain {request.var}: they would share it")
    return request


def now() -> str:
    """The date as `date` prints it, for log headers."""
    return time.strftime("%a %b %e %H:%M:%S %Z %Y")


class LocalRunner:
    """Runs the jobs of one request in parallel and kills them on request."""

    def __init__(self, request: Request):
        self.request = request
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = False

    def run_job(self, task: int | None) -> int:
        """Run one job with its log header and footer; returns its exit code."""
        command = self.request.expand(self.request.command, task)
        log = Path(self.request.expand(self.request.log, task))
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w", encoding="utf-8") as f:
            f.write(f"# {command}\n# Started at {now()}\n")
            f.flush()
            start = time.time()
            with self.lock:
                if self.stopping:
                    return 1
                # In the caller's process group (no session of its own): a kill of the recipe's
                # group reaches the job and its children; kill_all ends its process tree.
                proc = subprocess.Popen(
                    ["bash", "-c", "set -o pipefail; " + command], stdin=subprocess.DEVNULL,
                    stdout=f, stderr=subprocess.STDOUT,
                )
                self.running.add(proc)
            code = proc.wait()
            with self.lock:
                self.running.discard(proc)
            code = 128 - code if code < 0 else code  # killed by a signal: as bash reports it
            threads = self.request.options.get("num_threads", 1)
            f.write(f"# Accounting: time={int(time.time() - start)} threads={threads}\n"
                    f"# Ended (code {code}) at {now()}\n")
        return code

    def kill_all(self) -> int:
        """Stop starting jobs and end the running ones with every process they started (SIGTERM, then
        SIGKILL for what is left after KILL_GRACE_S); returns how many jobs were running."""
        with self.lock:
            self.stopping = True
            running = list(self.running)
        trees = [process_tree(proc.pid) for proc in running]  # before the kill re-parents the children
        signal_all([pid for tree in trees for pid in tree], signal.SIGTERM)
        deadline = time.time() + KILL_GRACE_S
        while time.time() < deadline and any(alive(pid) for tree in trees for pid in tree):
            time.sleep(0.05)
        signal_all([pid for tree in trees for pid in tree if alive(pid)], signal.SIGKILL)
        return len(running)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, parents first (from /proc; only ``root`` where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [root]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def interrupt(signum: int, _frame) -> None:
    """Turn SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt so that each ends up killing the jobs."""
    raise KeyboardInterrupt(signum)


def count_gpus() -> int:
    """GPUs a job of this machine can see: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`; 0 if unknown."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
        return 0 if devices in ([], ["NoDevFiles"], ["-1"]) else len(devices)
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in proc.stdout.splitlines()) if proc.returncode == 0 else 0


def default_max_jobs(gpu: int) -> int:
    """Kaldi run.pl's default --max-jobs-run: the CPUs this process may use, or the GPUs with --gpu > 0."""
    if gpu > 0:
        found = count_gpus()
        if found == 0:
            print("run.pl: warning: could not count the GPUs (CUDA_VISIBLE_DEVICES, nvidia-smi -L); "
                  "running one job at a time (give --max-jobs-run N)", file=sys.stderr)
        return max(found, 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def main(argv: list[str]) -> int:
    request = parse_command_line(argv, "run.pl")
    if request.other:
        print("run.pl: ignoring " + ", ".join(shlex.join(o) for o in request.other)
              + " (options of other job backends)", file=sys.stderr)
    if request.options.get("num_nodes", 1) > 1:
        sys.exit("run.pl: --num_nodes must be 1 (run.pl runs on this machine); use slurm.pl")
    tasks = request.tasks()
    runner = LocalRunner(request)
    # Also SIGINT: a shell starting us in the background would have it ignored otherwise.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    limit = request.options.get("max_jobs_run") or default_max_jobs(int(request.options.get("gpu", 0)))
    pool = ThreadPoolExecutor(max_workers=max(1, min(limit, len(tasks))))
    try:
        codes = list(pool.map(runner.run_job, tasks))
    except KeyboardInterrupt as e:
        pool.shutdown(wait=False, cancel_futures=True)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        killed = runner.kill_all()
        print(f"run.pl: interrupted, killed {killed} running job(s), logs in {request.log}",
              file=sys.stderr)
        return 128 + e.args[0]
    pool.shutdown()
    failed = sum(code != 0 for code in codes)
    if failed:
        print(f"run.pl: {failed} / {len(codes)} failed, log is in {request.log}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
