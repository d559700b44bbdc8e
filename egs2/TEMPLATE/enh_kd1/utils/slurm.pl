#!/usr/bin/env python3
"""Submit a command, or an array of jobs, to Slurm, wait for it and report failed jobs.

Usage: slurm.pl [options] [JOB=a:b] LOGFILE COMMAND...

Our own Python 3 implementation of the command-line interface of Kaldi's slurm.pl (not a
port of the Perl code).  The file is called slurm.pl because espnet2.bin.launch picks its
job backend from the file name of the first word of --cmd (for slurm.pl it runs the
training through `srun` on --num_nodes nodes).  Options, JOB=a:b and COMMAND are parsed
and quoted by utils/run.pl (see there), so both backends accept the same command lines.

How options become sbatch arguments is read from --config (default: conf/slurm.conf if it exists,
as in Kaldi), in Kaldi's format (the conf/slurm.conf of ESPnet and Kaldi recipes):

    command sbatch --export=PATH        the submit command and its fixed arguments
    option gpu=* -p gpu --gres=gpu:$0   --gpu N (any N): these arguments, $0 replaced by N
    option gpu=0 -p cpu                 --gpu 0: these arguments (none after "gpu=0": nothing added)
    default time=24:00:00               --time 24:00:00 unless given on the command line
    # comments, here or after a line

A value's own line (gpu=0) wins over the * line; a value an option's lines do not allow is an error.
Options the config does not describe get the built-in rules (also the whole config when there is none):
  --gpu N          --gres=gpu:N (nothing for 0)   --num_threads N  --cpus-per-task=N (default 1)
  --mem X          --mem=X                        --time X         --time=X
  --num_nodes N    --nodes=N (default 1; one task per node: srun starts one launcher per node)
--max-jobs-run N is --array=a-b%N; --name X names the job and the files below (and is mapped too when
the config describes name, as ESPnet's "option name=* --job-name $0"); --config is never mapped.  Any other option
(--queue X, -q X, -V, ...: options of other job backends) is ignored with a note unless the config
describes it.

The older "key value" format is still read (and may be mixed with the above):
    <option> <value>   default of --<option> ("mem 8G" is "default mem=8G")
    sbatch <args>      arguments for every job (added to the command)
    sbatch_gpu <args>  only for jobs with --gpu > 0 (added to the built-in gpu=* rule)
    sbatch_cpu <args>  only for jobs with --gpu 0 (the gpu=0 rule)

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
from dataclasses import dataclass, field
from importlib.machinery import SourceFileLoader
from pathlib import Path

PROG = "slurm.pl"
DEFAULT_CONFIG = "conf/slurm.conf"
LEGACY_SBATCH_KEYS = ("sbatch", "sbatch_gpu", "sbatch_cpu")
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


@dataclass
class Rule:
    """How one option becomes sbatch arguments: per value (Kaldi's "option gpu=0 ...") and for any
    value ("option gpu=* ... $0 ..."), and its default ("default gpu=0")."""

    values: dict[str, str] = field(default_factory=dict)
    star: str | None = None
    default: str | None = None

    def args(self, value: str) -> list[str] | None:
        """The arguments for ``value``; None where the rule does not allow it."""
        if value in self.values:
            return shlex.split(self.values[value])
        if self.star is not None:
            return shlex.split(self.star.replace("$0", value))
        return None


# The rules of options a config does not describe (and of every option without a config).
BUILTIN_RULES = {
    "gpu": Rule(values={"0": ""}, star="--gres=gpu:$0", default="0"),
    "num_threads": Rule(star="--cpus-per-task=$0", default="1"),
    "mem": Rule(star="--mem=$0"),
    "time": Rule(star="--time=$0"),
    "num_nodes": Rule(star="--nodes=$0", default="1"),
}
# Options slurm.pl handles itself unless a config describes them.
SPECIAL = ("config", "max_jobs_run", "name")


@dataclass
class Config:
    """A read --config: the submit command and the rules of the options it describes."""

    path: str = "(built-in rules)"
    command: list[str] = field(default_factory=lambda: ["sbatch"])
    rules: dict[str, Rule] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)  # "default" lines (and legacy "<option> <value>")

    def rule(self, name: str) -> Rule | None:
        """The config's rule of an option, else the built-in one (None: not described anywhere)."""
        return self.rules.get(name) or BUILTIN_RULES.get(name)


def strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*", "", line).strip()


def read_config(path: str) -> Config:
    """Read --config, in Kaldi's format or the older "key value" one (see the module doc)."""
    if not Path(path).is_file():
        sys.exit(f"{PROG}: --config {path}: no such file")
    config = Config(path=path)
    legacy: dict[str, list[str]] = {key: [] for key in LEGACY_SBATCH_KEYS}
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = strip_comment(raw)
        if not line:
            continue
        where = f"{path}:{lineno}: "
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        if key == "command":
            if not rest:
                sys.exit(f"{PROG}: {where}'command' needs the submit command (e.g. 'command sbatch --export=PATH')")
            config.command = shlex.split(rest)
        elif key in ("option", "default"):
            found = re.fullmatch(r"([\w-]+)=(\S+)\s*(.*)", rest)
            if not found:
                sys.exit(f"{PROG}: {where}cannot parse '{raw.strip()}' (expected '{key} name=value ...')")
            name, value, args = found.group(1).replace("-", "_"), found.group(2), found.group(3)
            if name == "config":
                sys.exit(f"{PROG}: {where}'config' cannot be set in a config file")
            if key == "default":
                if args:
                    sys.exit(f"{PROG}: {where}'default {name}={value}' takes no arguments after the value")
                config.defaults[name] = str(run_pl.check_option(name, value, PROG, where))
                continue
            rule = config.rules.setdefault(name, Rule())
            if value == "*":
                if "$0" not in args:
                    print(f"{PROG}: warning: {where}'{raw.strip()}' does not use $0 (the option's value)",
                          file=sys.stderr)
                rule.star = args
            else:
                rule.values[value] = args
        elif key in LEGACY_SBATCH_KEYS:
            if not rest:
                sys.exit(f"{PROG}: {where}'{key}' needs a value (expected '<key> <value>')")
            legacy[key].append(rest)
        else:  # the older format: "<option> <value>" is the option's default
            name = key.replace("-", "_")
            if not rest:
                sys.exit(f"{PROG}: {where}'{key}' needs a value (expected '<key> <value>')")
            if name in ("config", "name"):
                sys.exit(f"{PROG}: {where}'{key}' cannot be set in a config file")
            if name not in run_pl.OPTIONS:
                sys.exit(f"{PROG}: {where}unknown option --{name}; expected 'command', 'option', 'default', "
                         "'sbatch', 'sbatch_gpu', 'sbatch_cpu' or one of: "
                         + ", ".join(f"--{o}" for o in run_pl.OPTIONS if o not in ("config", "name")))
            config.defaults[name] = str(run_pl.check_option(name, rest, PROG, where))
    for args in legacy["sbatch"]:
        config.command += shlex.split(args)
    if legacy["sbatch_gpu"] or legacy["sbatch_cpu"]:
        if "gpu" in config.rules:
            sys.exit(f"{PROG}: {path}: 'sbatch_gpu'/'sbatch_cpu' and 'option gpu=...' lines both describe --gpu; "
                     "keep one of them")
        builtin = BUILTIN_RULES["gpu"]
        config.rules["gpu"] = Rule(values={"0": " ".join(legacy["sbatch_cpu"])},
                                   star=" ".join([builtin.star, *legacy["sbatch_gpu"]]), default=builtin.default)
    return config


def resolve_options(request, config: Config) -> list[str]:
    """Apply the defaults to request.options and return the sbatch arguments of the options
    (in command-line order after the defaults); notes what is ignored, exits on a refused value."""
    given = dict(request.options)
    for name in {**BUILTIN_RULES, **config.rules, **config.defaults}:
        if name in given:
            continue
        if name in config.defaults:
            default = config.defaults[name]
        else:
            default = config.rule(name).default
        if default is not None:
            given[name] = default
    for words in request.other:  # --x v options outside run.pl's OPTIONS, if the config describes them
        name = words[0].lstrip("-").replace("-", "_")
        if words[0].startswith("--") and len(words) == 2 and name in config.rules:
            given[name] = words[1]
        else:
            print(f"{PROG}: ignoring {shlex.join(words)}: not described in {config.path} "
                  "(an option of another job backend?)", file=sys.stderr)
    args: list[str] = []
    for name, value in given.items():
        if name in run_pl.INT_OPTIONS:
            value = run_pl.check_option(name, str(value), PROG, f"{config.path}: ")
            request.options[name] = value
        elif name in run_pl.OPTIONS:
            request.options[name] = value
        if name in SPECIAL and name not in config.rules:
            continue
        rule = config.rule(name)
        if rule is None:
            print(f"{PROG}: ignoring --{name} {value}: not described in {config.path}", file=sys.stderr)
            continue
        mapped = rule.args(str(value))
        if mapped is None:
            allowed = ", ".join(f"{name}={v}" for v in rule.values)
            sys.exit(f"{PROG}: --{name} {value} is not allowed by {config.path} (it describes {allowed})")
        args += mapped
    return args


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


def submit_command(request, config: Config, args: list[str], script: Path) -> list[str]:
    """The submit command: the config's command, the options' arguments, the job array, the script."""
    return [*config.command, *args, *array_option(request), str(script.resolve())]


def batch_script(request, name: str, qdir: Path, submitted: list[str]) -> str:
    """The batch script: its name and output file, then one task that writes its log and .done file."""
    opts = request.options
    task = ".%a" if request.var else ""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --output={qdir}/{name}{task}.out",
        "#SBATCH --ntasks-per-node=1",
        f"# Submitted by utils/slurm.pl as: {shlex.join(submitted)}",
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


def submit(cmd: list[str]) -> str:
    """Run the submit command; returns the job id."""
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit(f"{PROG}: {cmd[0]} not found on PATH; is this a Slurm login node? "
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
    if "config" in request.options:
        config = read_config(str(request.options["config"]))
    elif Path(DEFAULT_CONFIG).is_file():  # as Kaldi's slurm.pl
        config = read_config(DEFAULT_CONFIG)
    else:
        config = Config()
    args = resolve_options(request, config)
    name = job_name(request)
    qdir = Path(request.log).parent / "q"
    qdir.mkdir(parents=True, exist_ok=True)
    script = qdir / f"{name}.sh"
    cmd = submit_command(request, config, args, script)
    script.write_text(batch_script(request, name, qdir, cmd), encoding="utf-8")
    tasks = request.tasks()
    done_files = {t: qdir / (f"{name}.done" if t is None else f"{name}.{t}.done") for t in tasks}
    for path in done_files.values():
        path.unlink(missing_ok=True)  # left by an earlier run of the same job

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, run_pl.interrupt)  # KeyboardInterrupt(signum): cancel the job
    job_id = None
    try:
        job_id = submit(cmd)
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
