"""utils/run.pl, utils/slurm.pl (with fake sbatch/squeue/scancel/srun), cmd.sh, and espnet2's launcher on them."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "enh_kd1"
RUN_PL = TEMPLATE / "utils" / "run.pl"
SLURM_PL = TEMPLATE / "utils" / "slurm.pl"

FAKE_SBATCH = r"""#!/bin/bash
# Runs the batch script here, every array task in the background in a session of its own.
echo "$@" >> "$FAKE_SLURM/sbatch.args"
array=
for arg in "$@"; do case $arg in --array=*) array=${arg#--array=} ;; esac; done
script=${*: -1}
if [ -n "$array" ]; then
    range=${array%%\%*}
    tasks=$(seq "${range%-*}" "${range#*-}")
else
    tasks=none
fi
for task in $tasks; do
    if [ "$task" = none ]; then unset SLURM_ARRAY_TASK_ID; else export SLURM_ARRAY_TASK_ID=$task; fi
    setsid bash "$script" > /dev/null 2>&1 &
    echo $! >> "$FAKE_SLURM/pids"
done
echo "Submitted batch job 123"
"""
FAKE_SQUEUE = """#!/bin/bash
echo "$@" >> "$FAKE_SLURM/squeue.args"
"""
FAKE_SCANCEL = """#!/bin/bash
echo "$@" >> "$FAKE_SLURM/scancel.args"
for pid in $(cat "$FAKE_SLURM/pids"); do kill -TERM -- "-$pid" 2> /dev/null; done
"""
FAKE_SRUN = """#!/bin/bash
while [[ $1 == -* ]]; do shift; done
exec "$@"
"""


@pytest.fixture
def env(tmp_path) -> dict:
    """Environment with the fake Slurm tools first on PATH and this interpreter's bin dir next."""
    fake = tmp_path / "fake_slurm"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE),
                       ("scancel", FAKE_SCANCEL), ("srun", FAKE_SRUN)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    path = os.pathsep.join([str(fake), str(Path(sys.executable).parent), os.environ["PATH"]])
    return dict(os.environ, PATH=path, FAKE_SLURM=str(fake), PYTHONUNBUFFERED="1")


def run(script: Path, *args, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *map(str, args)], check=False, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def assert_log(log: Path, command: str, output: str, code: int = 0) -> None:
    """A job log: header, output, footer."""
    lines = log.read_text().splitlines()
    assert lines[0] == f"# {command}"
    assert lines[1].startswith("# Started at ")
    assert output in "\n".join(lines[2:-2])
    assert re.fullmatch(r"# Accounting: time=\d+ threads=\d+", lines[-2])
    assert lines[-1].startswith(f"# Ended (code {code}) at ")


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def max_overlap(logs: list) -> int:
    """Most jobs running at once, from the start/end time each job printed."""
    events = []
    for log in logs:
        start, end = map(float, re.findall(r"^\d+\.\d+$", log.read_text(), re.MULTILINE))
        events += [(start, 1), (end, -1)]
    running = peak = 0
    for _, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak


# ---------------------------------------------------------------- run.pl

def test_run_pl_job_array(tmp_path, env):
    proc = run(RUN_PL, "JOB=1:3", "log/x.JOB.log", "echo", "job", "JOB", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for job in (1, 2, 3):
        assert_log(tmp_path / f"log/x.{job}.log", f"echo job {job}", f"job {job}")


def one_cpu() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def test_run_pl_max_jobs_run(tmp_path, env):
    timed = ["bash", "-c", "date +%s.%N; sleep 0.4; date +%s.%N"]
    run(RUN_PL, "--max-jobs-run", 2, "JOB=1:4", "lim/x.JOB.log", *timed, env=env, cwd=tmp_path)
    run(RUN_PL, "--max-jobs-run", 4, "JOB=1:4", "all/x.JOB.log", *timed, env=env, cwd=tmp_path)
    run(RUN_PL, "-tc", 3, "JOB=1:4", "tc/x.JOB.log", *timed, env=env, cwd=tmp_path)  # GridEngine's form
    assert max_overlap(sorted((tmp_path / "lim").glob("*.log"))) == 2
    assert max_overlap(sorted((tmp_path / "all").glob("*.log"))) == 4
    assert max_overlap(sorted((tmp_path / "tc").glob("*.log"))) == 3


def test_run_pl_default_max_jobs(tmp_path, env):
    """As Kaldi's run.pl: at most one job per CPU this process may use, or per GPU with --gpu > 0."""
    timed = ["bash", "-c", "date +%s.%N; sleep 0.4; date +%s.%N"]
    for folder, args, extra_env in (("cpu", [], {}), ("gpu", ["--gpu", 1], {"CUDA_VISIBLE_DEVICES": "0,1"})):
        proc = subprocess.run([str(RUN_PL), *map(str, args), "JOB=1:4", f"{folder}/x.JOB.log", *timed],
                              check=False, capture_output=True, text=True, env=dict(env, **extra_env),
                              cwd=tmp_path, timeout=60, preexec_fn=one_cpu)
        assert proc.returncode == 0, proc.stderr
    assert max_overlap(sorted((tmp_path / "cpu").glob("*.log"))) == 1  # one CPU
    assert max_overlap(sorted((tmp_path / "gpu").glob("*.log"))) == 2  # two GPUs


def test_run_pl_ignores_other_backends_options(tmp_path, env):
    proc = run(RUN_PL, "--queue", "all.q", "-q", "g.q", "-V", "-pe", "smp", 4, "--mem", "4G",
               "JOB=1:2", "--time", "1:00:00", "log/x.JOB.log", "echo", "JOB", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "run.pl: ignoring --queue all.q, -q g.q, -V, -pe smp 4 (options of other job backends)" in proc.stderr
    assert "--mem" not in proc.stderr  # an option of run.pl's interface, ignored silently
    assert_log(tmp_path / "log/x.2.log", "echo 2", "2")


def test_run_pl_failure(tmp_path, env):
    proc = run(RUN_PL, "JOB=1:3", "log/x.JOB.log", "bash", "-c", "exit $((JOB % 2))", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "run.pl: 2 / 3 failed, log is in log/x.JOB.log" in proc.stderr
    assert_log(tmp_path / "log/x.3.log", "bash -c 'exit $((3 % 2))'", "", code=1)


@pytest.mark.parametrize("command, output", [
    (["python", "-c", "print('a b')"], "a b"),  # words with shell-special characters are quoted
    (["echo a b c | wc -w"], "3"),  # a single word is a command line
    (["echo", "a b", "|", "wc", "-w"], "2"),  # bare shell operators keep their meaning
])
def test_run_pl_quoting(tmp_path, env, command, output):
    proc = run(RUN_PL, "log/q.log", *command, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "log/q.log").read_text().splitlines()[2].strip() == output


def test_run_pl_interrupt_kills_jobs(tmp_path, env):
    proc = subprocess.Popen([str(RUN_PL), "JOB=1:2", "log/x.JOB.log", "sleep 30 | cat"],
                            env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / "log/x.1.log", tmp_path / "log/x.2.log"]
    wait_until(lambda: all(log.exists() for log in logs), "the job logs")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert "killed 2 running job(s)" in proc.stderr.read()
    for log in logs:
        assert "# Ended (code 143)" in log.read_text()


@pytest.mark.parametrize("args, message", [
    (["--gpu", "two", "log", "true"], "--gpu expects an integer >= 0, got 'two'"),
    (["JOB=1:2", "log", "true"], "does not contain JOB"),
    (["JOB=3:2", "log.JOB", "true"], "empty job range JOB=3:2"),
    (["--num_nodes", "2", "log", "true"], "--num_nodes must be 1"),
    (["log"], "expected LOGFILE and COMMAND"),
])
def test_run_pl_bad_usage(tmp_path, env, args, message):
    proc = run(RUN_PL, *args, env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr


def test_launch_accepts_run_pl(tmp_path, env):
    (tmp_path / "utils").symlink_to(TEMPLATE / "utils")
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.launch", "--cmd", "utils/run.pl --name x",
         "--log", tmp_path / "exp/train.log", "--ngpu", "0", "--num_nodes", "1",
         "--", "python", "-c", "import sys; print(sys.argv)"],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "exp/train.log").read_text()
    assert "['-c', '--ngpu', '0', '--multiprocessing_distributed', 'True']" in log
    assert "# Ended (code 0)" in log


# ---------------------------------------------------------------- slurm.pl

def submitted(tmp_path) -> str:
    """The arguments of the last (fake) sbatch call."""
    return (tmp_path / "fake_slurm/sbatch.args").read_text().splitlines()[-1]


def test_slurm_pl_script_and_array(tmp_path, env):
    conf = tmp_path / "slurm.conf"
    conf.write_text("# cluster defaults, the older 'key value' format\nmem 2G\ntime 1:00:00\n"
                    "sbatch --account=me\nsbatch_gpu --partition=gpu\nsbatch_cpu --partition=cpu\n")
    proc = run(SLURM_PL, "--config", conf, "--gpu", 2, "--num_threads", 4, "--mem", "8G",
               "--num_nodes", 2, "--max-jobs-run", 2, "JOB=1:3", "exp/log/stats.JOB.log",
               "python", "-c", "import sys; print('task', sys.argv[1])", "JOB", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    script = (tmp_path / "exp/log/q/stats.sh").read_text()
    assert "#SBATCH --job-name=stats" in script
    args = submitted(tmp_path).split()
    assert args[0] == "--account=me" and args[-1] == str(tmp_path / "exp/log/q/stats.sh")
    assert {"--gres=gpu:2", "--partition=gpu", "--cpus-per-task=4", "--mem=8G", "--time=1:00:00",
            "--nodes=2", "--array=1-3%2"} <= set(args)
    assert "--partition=cpu" not in args
    assert f"# Submitted by utils/slurm.pl as: sbatch {submitted(tmp_path)}" in script
    for task in (1, 2, 3):
        command = f"python -c 'import sys; print('\"'\"'task'\"'\"', sys.argv[1])' {task}"
        assert_log(tmp_path / f"exp/log/stats.{task}.log", command, f"task {task}")


# ESPnet's egs2/TEMPLATE/*/conf/slurm.conf, in Kaldi's format.
ESPNET_SLURM_CONF = """\
# Default configuration
command sbatch --export=PATH
option name=* --job-name $0
default time=24:00:00
option time=* --time $0
option mem=* --mem-per-cpu $0
option mem=0
option num_threads=* --cpus-per-task $0
option num_threads=1 --cpus-per-task 1
option num_nodes=* --nodes $0
default gpu=0
option gpu=0 -p cpu
option gpu=* -p gpu --gres=gpu:$0 -c $0  # Recommend allocating more CPU than, or equal to the number of GPU
# note: the --max-jobs-run option is supported as a special case
# by slurm.pl and you don't have to handle it in the config file.
"""


@pytest.mark.parametrize("args, expected", [
    (["--gpu", 2, "--mem", "4G"], "--export=PATH -p gpu --gres=gpu:2 -c 2 --mem-per-cpu 4G --time 24:00:00"),
    (["--num_threads", 4, "--time", "2:00:00"], "--export=PATH --cpus-per-task 4 --time 2:00:00 -p cpu"),
    (["--mem", 0, "--name", "train"], "--export=PATH --job-name train -p cpu --time 24:00:00"),
])
def test_slurm_pl_kaldi_config(tmp_path, env, args, expected):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/slurm.conf").write_text(ESPNET_SLURM_CONF)
    # conf/slurm.conf is read without --config, as by Kaldi's slurm.pl
    proc = run(SLURM_PL, *args, "JOB=1:2", "log/x.JOB.log", "echo", "JOB", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    words = submitted(tmp_path).split()
    assert words[:-2] == expected.split() and words[-2] == "--array=1-2"
    assert_log(tmp_path / "log/x.2.log", "echo 2", "2")


def test_slurm_pl_kaldi_config_refuses_and_ignores(tmp_path, env):
    conf = tmp_path / "slurm.conf"
    conf.write_text("command sbatch\noption gpu=0 -p cpu\noption gpu=1 -p gpu --gres=gpu:1\n"
                    "option queue=* --qos $0\n")
    proc = run(SLURM_PL, "--config", conf, "--gpu", 2, "log/x.log", "true", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert f"--gpu 2 is not allowed by {conf} (it describes gpu=0, gpu=1)" in proc.stderr
    # an option the config describes is mapped, one it does not is ignored with a note
    proc = run(SLURM_PL, "--config", conf, "--queue", "long", "-l", "h_rt=1:00:00", "--gpu", 1,
               "log/x.log", "true", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert submitted(tmp_path).startswith("-p gpu --gres=gpu:1 ") and " --qos long " in submitted(tmp_path)
    assert f"ignoring -l h_rt=1:00:00: not described in {conf}" in proc.stderr


def test_slurm_pl_single_cpu_job(tmp_path, env):
    proc = run(SLURM_PL, "--name", "train", "exp/train.log", "echo a b | wc -w", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert submitted(tmp_path).split() == ["--cpus-per-task=1", "--nodes=1", str(tmp_path / "exp/q/train.sh")]
    assert_log(tmp_path / "exp/train.log", "echo a b | wc -w", "2")


def test_slurm_pl_example_config(tmp_path, env):
    conf = TEMPLATE / "conf/slurm.conf"
    for gpu, partition in ((1, "gpu"), (0, "cpu")):
        proc = run(SLURM_PL, "--config", conf, "--gpu", gpu, f"log/{partition}.log", "true", env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        gres = " --gres=gpu:1" if gpu else ""
        # --num_threads and --num_nodes are not described there: the built-in rules and defaults apply
        assert submitted(tmp_path) == (f"--export=PATH -p {partition}{gres} --cpus-per-task=1 --mem 8G "
                                       f"--time 2-00:00:00 --nodes=1 {tmp_path}/log/q/{partition}.sh")


@pytest.mark.parametrize("backend, cuda_cmd", [
    ("local", "utils/run.pl"),
    ("slurm", "utils/slurm.pl --config conf/slurm.conf --gpu 1"),
])
def test_cmd_sh(backend, cuda_cmd):
    proc = subprocess.run(["bash", "-c", "set -eu; . ./cmd.sh; echo $cuda_cmd"], check=False,
                          capture_output=True, text=True, cwd=TEMPLATE, env=dict(os.environ, CMD_BACKEND=backend))
    assert proc.stdout.strip() == cuda_cmd


def test_cmd_sh_unknown_backend():
    proc = subprocess.run(["bash", "-c", "set -e; . ./cmd.sh; echo reached"], check=False, capture_output=True,
                          text=True, cwd=TEMPLATE, env=dict(os.environ, CMD_BACKEND="pbs"))
    assert proc.returncode == 1 and "reached" not in proc.stdout
    assert "unknown cmd_backend 'pbs' (from CMD_BACKEND); expected one of: local, slurm" in proc.stderr


def test_slurm_pl_failure(tmp_path, env):
    proc = run(SLURM_PL, "JOB=1:3", "log/x.JOB.log", "bash", "-c", "exit $((JOB % 2))", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "job 123_1 failed with code 1, log is in log/x.1.log" in proc.stderr
    assert "job 123_3 failed with code 1, log is in log/x.3.log" in proc.stderr
    assert "123_2" not in proc.stderr
    assert "slurm.pl: 2 / 3 failed, log is in log/x.JOB.log" in proc.stderr


def test_slurm_pl_task_killed_without_exit_code(tmp_path, env):
    # The command kills the batch script itself, as Slurm's SIGKILL would: no .done file.
    env = dict(env, SLURM_PL_LOST_AFTER_S="0.3")
    proc = run(SLURM_PL, "log/x.log", "kill -9 $PPID", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "job 123 ended without an exit code" in proc.stderr
    assert "-j 123" in (tmp_path / "fake_slurm/squeue.args").read_text()


def test_slurm_pl_interrupt_cancels(tmp_path, env):
    proc = subprocess.Popen([str(SLURM_PL), "log/x.log", "sleep", "30"], env=env, cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "log/x.log"
    wait_until(log.exists, "the job log")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 128 + signal.SIGINT
    assert "cancelled job 123" in proc.stderr.read()
    assert (tmp_path / "fake_slurm/scancel.args").read_text().split() == ["123"]
    wait_until(lambda: "# Ended" in log.read_text(), "the log footer")
    assert "# Ended (code 143)" in log.read_text()  # the batch script outlived SIGTERM


@pytest.mark.parametrize("conf, message", [
    ("partition gpu\n", "slurm.conf:1: unknown option --partition"),
    ("# x\nmem\n", "slurm.conf:2: 'mem' needs a value"),
    ("gpu one\n", "slurm.conf:1: --gpu expects an integer >= 0, got 'one'"),
    ("command sbatch\noption gpu 1\n", "slurm.conf:2: cannot parse 'option gpu 1'"),
    ("default gpu=x\n", "slurm.conf:1: --gpu expects an integer >= 0, got 'x'"),
    ("option gpu=0\nsbatch_gpu -p gpu\n", "both describe --gpu"),
])
def test_slurm_pl_bad_config(tmp_path, env, conf, message):
    (tmp_path / "slurm.conf").write_text(conf)
    proc = run(SLURM_PL, "--config", "slurm.conf", "log/x.log", "true", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr


def test_slurm_pl_missing_config(tmp_path, env):
    proc = run(SLURM_PL, "--config", "conf/slurm.conf", "log/x.log", "true", env=env, cwd=tmp_path)
    assert proc.returncode == 1
    assert "--config conf/slurm.conf: no such file" in proc.stderr


def test_launch_multi_node_with_slurm_pl(tmp_path, env):
    (tmp_path / "utils").symlink_to(TEMPLATE / "utils")
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.launch", "--cmd", "utils/slurm.pl --name train",
         "--log", "exp/train.log", "--ngpu", "0", "--num_nodes", "2",
         "--", "python", "-c", "import sys; print(sys.argv)"],
        check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--nodes=2" in submitted(tmp_path).split()
    log = (tmp_path / "exp/train.log").read_text()
    assert "'--dist_launcher', 'slurm'" in log and "'--dist_backend', 'gloo'" in log


# ---------------------------------------------------------------- enh_kd.sh on slurm.pl

def test_enh_kd_stage_2_runs_its_conversion_as_slurm_jobs(tmp_path, env):
    """Stage 2 converts through ${decode_cmd} JOB=1:N (here sbatch job arrays), then merges; a rerun submits nothing."""
    recipe = tmp_path / "enh_kd1"
    (recipe / "local").mkdir(parents=True)
    (recipe / "conf").mkdir()
    for name in ("enh_kd.sh", "path.sh", "db.sh", "utils", "cmd.sh"):
        (recipe / name).symlink_to(TEMPLATE / name)
    (recipe / "conf/slurm.conf").write_text((TEMPLATE / "conf/slurm.conf").read_text())
    for name in ("train_student.yaml", "train_teacher.yaml"):
        (recipe / "conf" / name).write_text("separator: rnn\n")
    (recipe / "local/data.sh").write_text(
        "#!/usr/bin/env bash\nset -e\npython -c \"from conftest import write_data_dir; from pathlib import Path; "
        "[write_data_dir(Path('data'), n, 3, i) for i, n in enumerate(['tr', 'cv', 'tt'])]\"\n")
    (recipe / "local/data.sh").chmod(0o755)
    env = dict(env, CMD_BACKEND="slurm", PYTHONPATH=str(Path(__file__).parent))
    args = ["./enh_kd.sh", "--train_set", "tr", "--valid_set", "cv", "--test_sets", "tt", "--nj", "2", "--fs", "8k",
            "--teacher_config", "conf/train_teacher.yaml", "--student_config", "conf/train_student.yaml",
            "--stage", "1", "--stop_stage", "2"]
    proc = subprocess.run(args, cwd=recipe, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "fake_slurm/sbatch.args").read_text().splitlines()
    assert len(calls) == 3 and all("-p cpu" in c and "--array=1-2" in c for c in calls)  # one array per set
    from dispatch.data.datadir import validate_data_dir

    for dset in ("tr", "cv", "tt"):
        dump = recipe / "dump/raw" / dset
        assert validate_data_dir(dump, fs=8000) == 3
        for job in (1, 2):
            assert "# Ended (code 0)" in (dump / f"log/format.{job}.log").read_text()
        assert not (dump / ".format_parts").exists()
    again = subprocess.run([*args[:-4], "--stage", "2", "--stop_stage", "2"], cwd=recipe, capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (again.stdout + again.stderr).count("formatted already") == 3
    assert len((tmp_path / "fake_slurm/sbatch.args").read_text().splitlines()) == 3
