#!/usr/bin/env python3
"""Submit a command, or an array of jobs, to Slurm, wait for it and report failed jobs.

Usage: slurm.pl [options] [JOB=a:b] LOGFILE COMMAND...

Our own Python 3 implementation of the command-line interface of Kaldi's slurm.pl (not a
port of the Perl code).  The file is called slurm.pl because espnet2.bin.launch picks its
job backend from the file name of the first word of --cmd (for slurm.pl it runs the
training through `srun` on --num_nodes nodes).  Options, JOB=a:b and COMMAND are parsed
and quoted by utils/run.pl (see there), so both backends accept the same command lines.

Options map to sbatch as follows (a later occurrence wins):
  --gpu N          --gres=gpu:N (none if 0)      --num_threads N  --cpus-per-task=N
  --mem X          --mem=X                       --time X         --time=X
  --num_nodes N    --nodes=N (one task per node: srun starts one launcher per node)
  --max-jobs-run N --array=a-b%N                 --name X         --job-name=X
  --config F       defaults, one "key value" per line ('#' starts a comment line):
      <option> <value>   default of --<option>, e.g. "mem 8G", "time 1-00:00:00"
      sbatch <args>      "#SBATCH <args>" for every job, e.g. "sbatch --partition=cpu"
      sbatch_gpu <args>  only for jobs with --gpu > 0, e.g. "sbatch_gpu --partition=gpu"
      sbatch_cpu <args>  only for jobs with --gpu 0

The batch script is written to <logdir>/q/<name>.sh (name: --name, else the log file name
without ".log" and JOB); Slurm's own output goes to <logdir>/q/<name>[.<task>].out.  Each
task writes LOGFILE in run.pl's format and its exit code to <logdir>/q/<name>[.<task>].done,
which slurm.pl polls; squeue tells it about tasks that Slurm killed before they could
write one (counted as failed once the file is still missing $SLURM_PL_LOST_AFTER_S seconds,
default 120, after squeue stopped listing the job).  SIGINT/SIGTERM cancel the job (scancel).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from importlib.machinery import SourceFileLoader
from pathlib import Path

PROG = "slurm.pl"
SBATCH_KEYS = ("sbatch", "sbatch_gpu", "sbatch_cpu")
POLL_MAX_S = 10.0  # longest pause between two looks at the .done files
SQUEUE_EVERY_S = 30.0  # how often to ask squeue whether the job still exists
# How long a task may lack its .done file after squeue lost the job (file systems such as NFS
# show new files late) before it counts as killed.
LOST_AFTER_S = float(os.environ.get("SLURM_PL_LOST_AFTER_S", "120"))


def load_run_pl():
    """Import the sibling run.pl (a Python file without .py) for the shared parsing code."""
    path = str(Path(__file__).with_name("run.pl"))
    loader = SourceFileLoader("run_pl", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("run_pl", loader))
    sys.modules["run_pl"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


run_pl = load_run_pl()


def read_config(path: str) -> tuple[dict[str, str | int], dict[str, list[str]]]:
    """Read --config: option defaults and extra sbatch arguments (see the module doc)."""
    if not Path(path).is_file():
        sys.exit(f"{PROG}: --config {path}: no such file")
    defaults: dict[str, str | int] = {}
    extra: dict[str, list[str]] = {key: [] for key in SBATCH_KEYS}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}: "
        key, *value = line.split(None, 1)
        if not value:
            sys.exit(f"{PROG}: {where}'{key}' needs a value (expected '<key> <value>')")
        if key in SBATCH_KEYS:
            extra[key].append(value[0].strip())
        elif key.replace("-", "_") in ("config", "name"):
            sys.exit(f"{PROG}: {where}'{key}' cannot be set in a config file")
        else:
            name = key.replace("-", "_")
            defaults[name] = run_pl.check_option(name, value[0].strip(), PROG, where)
    return defaults, extra


def job_name(request) -> str:
    """--name, else the log file name without '.log' and the job variable."""
    name = request.options.get("name")
    if name is None:
        name = Path(request.log).name.removesuffix(".log")
        if request.var:
            name = re.sub(rf"[._-]?{request.var}", "", name) or "job"
    # It becomes a file name and an unquoted #SBATCH value.
    if not re.fullmatch(r"[\w.+-]+", name):
        sys.exit(f"{PROG}: job name '{name}' (from --name or the log file name) may only "
                 "contain letters, digits and . _ + -")
    return name


def array_option(request) -> list[str]:
    """sbatch's --array for JOB=a:b, limited by --max-jobs-run; [] without a job array."""
    if not request.var:
        return []
    limit = request.options.get("max_jobs_run")
    return [f"--array={request.first}-{request.last}" + (f"%{limit}" if limit else "")]


def batch_script(request, name: str, qdir: Path, extra: dict[str, list[str]]) -> str:
    """The sbatch script: #SBATCH lines, then one task that writes its log and .done file."""
    opts = request.options
    gpu = opts.get("gpu", 0)
    task = ".%a" if request.var else ""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --output={qdir}/{name}{task}.out",
        f"#SBATCH --nodes={opts.get('num_nodes', 1)}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={opts.get('num_threads', 1)}",
    ]
    lines += [f"#SBATCH --gres=gpu:{gpu}"] if gpu else []
    lines += [f"#SBATCH --{key}={opts[key]}" for key in ("mem", "time") if key in opts]
    lines += [f"#SBATCH {args}" for args in extra["sbatch"] + extra["sbatch_gpu" if gpu else "sbatch_cpu"]]
    submitted = shlex.join(["sbatch", *array_option(request), str(qdir / f"{name}.sh")])
    lines += [
        f"# Submitted by utils/slurm.pl as: {submitted}",
        f"cd {shlex.quote(os.getcwd())}",
        "if [ -f path.sh ]; then . ./path.sh; fi",
        f"cmd={shlex.quote(request.command)}",
        f"log={shlex.quote(request.log)}",
        f"done_file={shlex.quote(str(qdir / name))}",
    ]
    if request.var:
        lines += [
            f"cmd=${{cmd//{request.var}/$SLURM_ARRAY_TASK_ID}}",
            f"log=${{log//{request.var}/$SLURM_ARRAY_TASK_ID}}",
            "done_file=$done_file.$SLURM_ARRAY_TASK_ID",
        ]
    lines += [
        'mkdir -p "$(dirname "$log")"',
        "# A trap (unlike no trap) lets this script outlive scancel's or the time limit's SIGTERM",
        "# to the job, so that the log footer and the .done file are still written.",
        "trap : TERM",
        'start=$(date +%s)',
        'printf "# %s\\n# Started at %s\\n" "$cmd" "$(date)" > "$log"',
        'bash -c "set -o pipefail; $cmd" < /dev/null >> "$log" 2>&1',
        "rc=$?",
        'printf "# Accounting: time=%s threads=%s\\n# Ended (code %s) at %s\\n" \\',
        f'    "$(( $(date +%s) - start ))" {opts.get("num_threads", 1)} "$rc" "$(date)" >> "$log"',
        'echo "$rc" > "$done_file.tmp" && mv "$done_file.tmp" "$done_file.done"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def submit(request, script: Path) -> str:
    """sbatch the script; returns the job id."""
    cmd = ["sbatch", *array_option(request), str(script)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit(f"{PROG}: sbatch not found on PATH; is this a Slurm login node? "
                 "(use CMD_BACKEND=local to run locally)")
    found = re.search(r"Submitted batch job (\d+)", proc.stdout)
    if proc.returncode != 0 or not found:
        sys.exit(f"{PROG}: '{shlex.join(cmd)}' failed (code {proc.returncode}):\n"
                 f"{proc.stdout}{proc.stderr}")
    return found.group(1)


def in_queue(job_id: str) -> bool | None:
    """Whether Slurm still lists the job (pending or running); None if squeue cannot tell."""
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"],
                              check=False, capture_output=True, text=True)
    except FileNotFoundError:
        return None
    if proc.returncode == 0:
        return bool(proc.stdout.strip())
    # squeue fails this way for jobs that ended long enough ago to be forgotten.
    return False if "Invalid job id" in proc.stderr else None


def wait_for(job_id: str, done_files: dict[int | None, Path]) -> dict[int | None, int | None]:
    """Exit code of every task from its .done file; None for tasks Slurm lost or killed."""
    codes: dict[int | None, int | None] = {}
    delay, last_squeue, gone_since = 0.1, -SQUEUE_EVERY_S, None
    while len(codes) < len(done_files):
        time.sleep(delay)
        delay = min(2 * delay, POLL_MAX_S)
        for task, path in done_files.items():
            if task not in codes and path.exists():
                codes[task] = int(path.read_text().strip())
        if len(codes) == len(done_files):
            break
        now = time.monotonic()
        if now - last_squeue >= SQUEUE_EVERY_S:
            last_squeue = now
            queued = in_queue(job_id)
            if queued:
                gone_since = None
            elif queued is False and gone_since is None:
                gone_since = now
        if gone_since is not None and now - gone_since > LOST_AFTER_S:
            codes.update({task: None for task in done_files if task not in codes})
    return codes


def main(argv: list[str]) -> int:
    request = run_pl.parse_command_line(argv, PROG)
    extra: dict[str, list[str]] = {key: [] for key in SBATCH_KEYS}
    if "config" in request.options:
        defaults, extra = read_config(str(request.options["config"]))
        request.options = {**defaults, **request.options}
    name = job_name(request)
    qdir = Path(request.log).parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    script = qdir / f"{name}.sh"
    script.write_text(batch_script(request, name, qdir, extra), encoding="utf-8")
    tasks = request.tasks()
    done_files = {t: qdir / (f"{name}.done" if t is None else f"{name}.{t}.done") for t in tasks}
    for path in done_files.values():
        path.unlink(missing_ok=True)  # left by an earlier run of the same job

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, run_pl.interrupt)  # KeyboardInterrupt(signum): cancel the job
    job_id = None
    try:
        job_id = submit(request, script)
        codes = wait_for(job_id, done_files)
    except KeyboardInterrupt as e:
        if job_id is None:
            print(f"{PROG}: interrupted while submitting {script}", file=sys.stderr)
        else:
            subprocess.run(["scancel", job_id], check=False)
            print(f"{PROG}: interrupted, cancelled job {job_id}, logs in {request.log}", file=sys.stderr)
        return 128 + e.args[0]

    failed = {task: code for task, code in codes.items() if code != 0}
    if not failed:
        return 0
    for task, code in failed.items():
        job = job_id if task is None else f"{job_id}_{task}"
        log = request.expand(request.log, task)
        if code is None:
            print(f"{PROG}: job {job} ended without an exit code (killed by Slurm, e.g. for its "
                  f"time or memory limit?), see {log} and {qdir}/", file=sys.stderr)
        else:
            print(f"{PROG}: job {job} failed with code {code}, log is in {log}", file=sys.stderr)
    print(f"{PROG}: {len(failed)} / {len(codes)} failed, log is in {request.log}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
