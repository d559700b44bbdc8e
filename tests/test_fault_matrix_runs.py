"""Fault matrix, part 2 (issue 14 A): no stale results, one run per experiment, stage order, missing sets.

1. stale results: every output records what it was made from (dispatch.fingerprint) and is redone, or
   refused, when that changed: enhancement (model weights), scoring (the audio behind the lists),
   formatting (source audio rebuilt under the same ids), RESULTS.md (scores of audio changed since);
2. one run per experiment folder: a second run is refused naming the holder's pid, a killed run's lock
   is taken over, run.pl jobs end with a killed process group (or when run.pl gets SIGHUP/SIGTERM);
3. stage order and missing sets: one clear line before any work; --score_metrics without pesq_wb
   still gives RESULTS.md and the listening page (--rank_metric defaults to a scored metric).
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FS, write_data_dir
from test_enh_kd_script import TEMPLATE, make_recipe
from test_fault_matrix import make_teacher

from dispatch import fingerprint
from dispatch.bin import enh_score, format_data
from dispatch.data.datadir import read_scp
from dispatch.exptree import TreeError
from dispatch.results import make_results

RUN_PL = TEMPLATE / "utils" / "run.pl"
TESTS = Path(__file__).resolve().parent


def rewrite(path: Path, data: np.ndarray, subtype: str = "PCM_16") -> None:
    """Write new audio under an existing name; its mtime moves on even on a coarse-clock file system."""
    before = path.stat().st_mtime_ns
    sf.write(path, data, FS, subtype=subtype)
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 10**9, before + 10**9))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ------------------------------------------------------------------ 1. fingerprints (unit)
def test_1a_a_file_is_fingerprinted_by_content_and_audio_by_size_and_time(tmp_path):
    model = tmp_path / "a.pth"
    model.write_bytes(b"weights-1")
    data = write_data_dir(tmp_path, "set", 3, seed=0)
    record = fingerprint.describe(files=[("model", model)], audio=[("wav.scp", data / "wav.scp")],
                                  values=[("fs", "16000")])
    copy = tmp_path / "b.pth"
    copy.write_bytes(b"weights-1")  # the same weights through another path: the same input
    assert fingerprint.differences(record, fingerprint.describe(files=[("model", copy)],
                                                                audio=[("wav.scp", data / "wav.scp")],
                                                                values=[("fs", "16000")])) == []
    model.write_bytes(b"weights-2")  # retrained
    noisy = Path(read_scp(data / "wav.scp")["set_001"])
    rewrite(noisy, 0.5 * sf.read(noisy)[0])  # rebuilt under the same id
    now = fingerprint.describe(files=[("model", model)], audio=[("wav.scp", data / "wav.scp")],
                               values=[("fs", "8000")])
    assert fingerprint.differences(record, now) == [
        f"model {model} changed",
        f"wav.scp {data / 'wav.scp'}: the audio of 1 utterance(s) changed (size or time), e.g. set_001",
        "fs was '16000', now '8000'",
    ]
    (data / "wav.scp").write_text("".join((data / "wav.scp").read_text().splitlines(keepends=True)[:2]))
    assert fingerprint.differences(now, fingerprint.describe(audio=[("wav.scp", data / "wav.scp")])) == [
        "fs is no longer an input", "model is no longer an input",
        f"wav.scp {data / 'wav.scp'}: 1 utterance(s) gone (e.g. set_002)"]


def test_1a_scp_entries_of_archives_and_pipes_are_fingerprinted(tmp_path):
    ark = tmp_path / "feats.ark"
    ark.write_bytes(b"0123456789")
    assert fingerprint.entry_file(f"{ark}:4") == str(ark) and fingerprint.entry_file(f"ark:{ark}:4") == str(ark)
    assert fingerprint.entry_file("sox a.wav -t wav - |") is None
    scp = tmp_path / "wav.scp"
    scp.write_bytes(f"u1 {ark}:0\nu2 {ark}:5\nu3 sox x.wav -t wav - |\nu4 caf\xe9.wav\n".encode("latin-1"))
    fp = fingerprint.audio_fingerprint(scp)  # non-UTF-8 bytes are no reason to fail here
    assert fp["files"]["u1"] == fp["files"]["u2"] == [10, ark.stat().st_mtime_ns]
    assert fp["files"]["u3"] is None and fp["files"]["u4"] is None


def test_1a_the_cli_says_why_an_output_is_stale(tmp_path, capsys):
    model = tmp_path / "m.pth"
    model.write_bytes(b"1")
    stamp = tmp_path / "out" / fingerprint.STAMP
    args = [str(stamp), "--file", f"model={model}", "--value", "inference_args="]
    assert fingerprint.main(["check", *args]) == 1
    assert capsys.readouterr().out == f"no record of its inputs ({stamp} is missing or unreadable)\n"
    assert fingerprint.main(["write", *args]) == 0 and fingerprint.main(["check", *args]) == 0
    assert fingerprint.main(["check", str(stamp), "--file", f"model={model}", "--value", "inference_args=--x 1"]) == 1
    assert capsys.readouterr().out == "inference_args was '', now '--x 1'\n"
    assert fingerprint.main(["check", str(stamp), "--file", f"model={tmp_path / 'gone.pth'}"]) == 2
    assert "gone.pth: no such file" in capsys.readouterr().err


# ------------------------------------------------------------------ 1. scoring, formatting, results
def score(ref_scp: Path, inf_scp: Path, out: Path) -> dict:
    enh_score.main(["--ref_scp", str(ref_scp), "--inf_scp", str(inf_scp), "--output_dir", str(out),
                    "--metrics", "si_sdr", "--nj", "1"])
    return {u: float(v) for u, v in (line.split() for line in (out / "SI_SDR").read_text().splitlines())}


def test_1b_scoring_redoes_estimates_rewritten_under_the_same_names(tmp_path, caplog):
    caplog.set_level("INFO")
    data = write_data_dir(tmp_path, "tt", 2, seed=0)  # wav.scp plays the estimates
    out = tmp_path / "scoring"
    first = score(data / "spk1.scp", data / "wav.scp", out)
    assert score(data / "spk1.scp", data / "wav.scp", out) == first and "nothing to do" in caplog.text
    estimate = Path(read_scp(data / "wav.scp")["tt_001"])
    clean = sf.read(read_scp(data / "spk1.scp")["tt_001"])[0]
    rewrite(estimate, clean + 0.001 * np.random.default_rng(1).standard_normal(len(clean)))  # a better model
    caplog.clear()
    again = score(data / "spk1.scp", data / "wav.scp", out)
    assert "nothing to do" not in caplog.text
    assert again["tt_000"] == first["tt_000"] and again["tt_001"] > first["tt_001"] + 10


def test_1c_formatting_redoes_source_audio_rebuilt_under_the_same_ids(tmp_path, caplog):
    caplog.set_level("INFO")
    src = write_data_dir(tmp_path, "src", 2, seed=0)
    noisy = Path(read_scp(src / "wav.scp")["src_001"])
    clean = Path(read_scp(src / "spk1.scp")["src_001"])
    for path in (noisy, clean):  # float wavs: converted to 16-bit copies under the dump dir
        sf.write(path, sf.read(path)[0], FS, subtype="FLOAT")
    dump = tmp_path / "dump"
    assert format_data.main([str(src), str(dump), "--fs", str(FS)]) == 0
    copy = Path(read_scp(dump / "wav.scp")["src_001"])
    assert copy.parent == dump / "data" / "noisy"
    new = 0.5 * sf.read(noisy)[0][::-1]
    rewrite(noisy, new, "FLOAT")  # the corpus rebuilt: same ids, same length, other audio
    caplog.clear()
    assert format_data.main([str(src), str(dump), "--fs", str(FS)]) == 0
    assert "formatted already" not in caplog.text and "the source audio or the rate changed" in caplog.text
    np.testing.assert_allclose(sf.read(read_scp(dump / "wav.scp")["src_001"])[0], new, atol=1e-4)
    caplog.clear()
    assert format_data.main([str(src), str(dump), "--fs", str(FS)]) == 0 and "formatted already" in caplog.text


def test_1d_results_refuse_scores_of_audio_that_changed_after_scoring(tmp_path):
    data = write_data_dir(tmp_path, "tt", 2, seed=0)
    exp = tmp_path / "exp" / "student"
    enhanced = exp / "enhanced_tt"
    enhanced.mkdir(parents=True)
    (enhanced / "spk1.scp").write_text((data / "wav.scp").read_text())
    score(data / "spk1.scp", enhanced / "spk1.scp", enhanced / "scoring")
    assert "| student |" in make_results([("student", exp)], ["tt"], baseline=None)
    estimate = Path(read_scp(enhanced / "spk1.scp")["tt_000"])
    rewrite(estimate, 0.5 * sf.read(estimate)[0])  # stage 7 redone without stage 8
    with pytest.raises(TreeError) as refused:
        make_results([("student", exp)], ["tt"], baseline=None)
    assert str(refused.value) == (
        f"student: the scores in {enhanced / 'scoring'} are stale: audio files listed in "
        f"{(enhanced / 'spk1.scp').resolve()} (its --inf_scp) changed after scoring; rerun the scoring (stage 8)")


def test_1d_the_teacher_cache_redoes_outputs_of_inputs_rebuilt_under_the_same_ids(tmp_path, caplog):
    from dispatch.bin.cache_teacher import cache_teacher

    caplog.set_level("INFO")
    teacher = make_teacher(tmp_path / "teacher")
    data = write_data_dir(tmp_path, "tr", 2, seed=0)
    out = tmp_path / "cache"
    cache_teacher(str(teacher), data, out)
    before = {utt: (out / f"{utt}.wav").read_bytes() for utt in ("tr_000", "tr_001")}
    noisy = Path(read_scp(data / "wav.scp")["tr_001"])
    rewrite(noisy, -sf.read(noisy)[0])  # the data dir rebuilt: same id and length, other audio
    caplog.clear()
    cache_teacher(str(teacher), data, out)
    assert "the input of 1 utterance(s) changed since their output was made (e.g. tr_001)" in caplog.text
    assert (out / "tr_000.wav").read_bytes() == before["tr_000"]
    assert (out / "tr_001.wav").read_bytes() != before["tr_001"]


# ------------------------------------------------------------------ 1, 3. enh_kd.sh stages 7-9
BASE = ["--train_set", "tr", "--valid_set", "cv", "--test_sets", "tt", "--nj", "1", "--inference_nj", "1",
        "--ngpu", "0", "--teacher_config", "conf/train_teacher.yaml", "--student_config", "conf/train_student.yaml"]


def enh_kd(recipe: Path, *args: str, **popen) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TESTS), OMP_NUM_THREADS="1")
    runner = subprocess.Popen if popen else subprocess.run
    extra = popen or {"capture_output": True}
    return runner(["./enh_kd.sh", *BASE, *args], cwd=recipe, text=True, env=env, **extra)


def log_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def stale_model(tmp_path_factory) -> SimpleNamespace:
    """Stages 7-9 with a given teacher, scored without PESQ; the teacher's weights then change (retrained).

    Runs: formatting; --stage 8 before any enhancement; enhancement and scoring; the same again (skips);
    packing; (weights changed) --stage 9 alone; --stage 7 to 9; packing.
    """
    recipe = make_recipe(tmp_path_factory.mktemp("stale"), "")
    teacher = make_teacher(recipe / "teacher_a")
    opts = ["--teacher_model", "teacher_a", "--skip_baseline", "true", "--score_metrics", "si_sdr,stoi"]
    runs = SimpleNamespace(recipe=recipe, teacher=teacher)
    runs.formatted = enh_kd(recipe, "--stage", "1", "--stop_stage", "2", *opts)
    runs.early_scoring = enh_kd(recipe, "--stage", "8", "--stop_stage", "8", *opts)
    runs.first = enh_kd(recipe, "--stage", "7", "--stop_stage", "8", *opts)
    runs.first_scores = (teacher / "enhanced_tt" / "scoring" / "SI_SDR").read_text()
    runs.again = enh_kd(recipe, "--stage", "7", "--stop_stage", "8", *opts)
    runs.packed = enh_kd(recipe, "--stage", "11", "--stop_stage", "11", *opts)
    weights = teacher / "valid.loss.best.pth"
    state = torch.load(weights, map_location="cpu")
    torch.manual_seed(1)
    torch.save({k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}, weights)
    runs.stale_results = enh_kd(recipe, "--stage", "9", "--stop_stage", "9", *opts)
    runs.results_written_when_stale = (recipe / "RESULTS.md").exists()
    runs.redone = enh_kd(recipe, "--stage", "7", "--stop_stage", "9", *opts)
    runs.repacked = enh_kd(recipe, "--stage", "11", "--stop_stage", "11", *opts)
    return runs


def test_3a_scoring_before_enhancement_is_one_clear_line(stale_model):
    assert stale_model.formatted.returncode == 0, log_of(stale_model.formatted)
    run = stale_model.early_scoring
    assert run.returncode == 1
    assert ("Error: stage 8 needs tt enhanced by teacher (teacher_a/enhanced_tt/spk1.scp), which does not "
            "exist: run stage 7 first (--stage 7)") in log_of(run)
    assert "Traceback" not in log_of(run) and "Stage 8: scoring" not in log_of(run)


def test_1e_unchanged_inputs_skip_enhancement_and_scoring(stale_model):
    assert stale_model.first.returncode == 0, log_of(stale_model.first)
    log = log_of(stale_model.again)
    assert stale_model.again.returncode == 0, log
    assert "Stage 7: teacher on tt: done already (teacher_a/enhanced_tt/spk1.scp)" in log
    assert log.count("is complete for these arguments; nothing to do") == 2  # noisy input and teacher


def test_1e_results_of_a_changed_model_are_refused_until_it_is_enhanced_again(stale_model):
    run = stale_model.stale_results
    assert run.returncode == 1
    assert ("Error: stage 9: teacher_a/enhanced_tt was made from other inputs than configured now (model "
            "teacher_a/valid.loss.best.pth changed): rerun stage 7 (--stage 7)") in log_of(run)
    assert not stale_model.results_written_when_stale


def test_1e_a_changed_model_is_enhanced_and_scored_again(stale_model):
    log = log_of(stale_model.redone)
    assert stale_model.redone.returncode == 0, log
    assert ("Stage 7: teacher on tt: redoing, the inputs changed: model teacher_a/valid.loss.best.pth changed"
            in log)
    scoring = stale_model.teacher / "enhanced_tt" / "scoring"
    assert (scoring / "SI_SDR").read_text() != stale_model.first_scores
    mean = json.loads((scoring / "summary.json").read_text())["enhanced"]["SI_SDR"]["mean"]
    table = (stale_model.recipe / "RESULTS.md").read_text().split("\n## tt\n")[1]
    row = next(line for line in table.splitlines() if line.startswith("| teacher |"))
    assert f"| {mean:.3f} |" in row  # RESULTS.md shows the model configured now


def test_1e_a_changed_model_is_packed_again(stale_model):
    assert stale_model.packed.returncode == 0, log_of(stale_model.packed)
    log = log_of(stale_model.repacked)
    assert stale_model.repacked.returncode == 0, log
    assert ("Stage 11: repacking teacher, the inputs changed: model teacher_a/valid.loss.best.pth changed; "
            "results was not recorded") in log


def test_3b_without_pesq_the_pictures_are_ranked_by_a_scored_metric(stale_model):
    log = log_of(stale_model.redone)
    assert "best, median and worst per-utterance SI_SDR gain of teacher" in log
    assert (stale_model.recipe / "exp" / "report" / "index.html").is_file()


def test_1f_a_kd_student_of_another_teacher_is_refused_before_any_work(tmp_path):
    recipe = make_recipe(tmp_path, "")
    write_data_dir(recipe / "dump" / "raw", "tt", 1, seed=0)
    make_teacher(recipe / "teacher_a")
    (recipe / "conf" / "kd_x.yaml").write_text("kd_loss: dispatch\n")
    student = make_teacher(recipe / "exp" / "student_student_kd_x")  # as stage 6 names it
    old_teacher = tmp_path / "old_teacher.pth"
    old_teacher.write_bytes(b"the weights it was trained with")
    fingerprint.write(student / ".teacher.json", fingerprint.describe(files=[("teacher", old_teacher)]))
    run = enh_kd(recipe, "--stage", "7", "--stop_stage", "9", "--teacher_model", "teacher_a",
                 "--skip_baseline", "true", "--kd_configs", "conf/kd_x.yaml")
    assert run.returncode == 1
    assert ("Error: stage 7: exp/student_student_kd_x was trained with another teacher than teacher_a (teacher "
            "teacher_a/valid.loss.best.pth (was " + str(old_teacher) + ") changed): move or remove "
            "exp/student_student_kd_x (or give another --tag_suffix) and run stage 6") in log_of(run)
    assert not list(recipe.glob("**/enhanced_tt"))


def test_1g_an_enhanced_set_without_a_record_of_its_inputs_is_not_reported(tmp_path):
    recipe = make_recipe(tmp_path, "")
    data = write_data_dir(recipe / "dump" / "raw", "tt", 1, seed=0)
    enhanced = make_teacher(recipe / "teacher_a") / "enhanced_tt"  # as an older version left it: no stamp
    (enhanced / "scoring").mkdir(parents=True)
    (enhanced / "spk1.scp").write_text((data / "wav.scp").read_text())
    run = enh_kd(recipe, "--stage", "9", "--stop_stage", "9", "--teacher_model", "teacher_a", "--skip_baseline", "true")
    assert run.returncode == 1
    assert ("Error: stage 9: teacher_a/enhanced_tt has no record of what it was made from (teacher_a/enhanced_tt/"
            ".inputs.json is missing or unreadable): rerun stage 7 (--stage 7)") in log_of(run)
    assert not (recipe / "RESULTS.md").exists()


@pytest.mark.parametrize("stage, stop_stage, message", [
    ("1", "2", "Error: --test_sets nope: data/nope/wav.scp does not exist (stage 1, local/data.sh, writes data/<set>)"),
    ("7", "9", "Error: --test_sets nope: dump/raw/nope/wav.scp does not exist: format it first (--stage 2)"),
])
def test_3c_a_missing_test_set_is_one_line_before_any_work(tmp_path, stage, stop_stage, message):
    recipe = make_recipe(tmp_path, "")
    if stage == "7":  # tt was formatted, nope was not
        write_data_dir(recipe / "dump" / "raw", "tt", 1, seed=0)
    run = enh_kd(recipe, "--stage", stage, "--stop_stage", stop_stage, "--test_sets", "tt nope",
                 "--teacher_model", "exp/teacher")
    assert run.returncode == 1
    assert message in log_of(run) and "Traceback" not in log_of(run) and "awk" not in log_of(run)
    assert not (recipe / "dump" / "raw" / "nope").exists() and not list(recipe.glob("exp/*/enhanced_*"))
    assert (recipe / "dump" / "raw").exists() == (stage == "7")  # stage 2 did not start
    if stage == "7":
        assert not (recipe / "exp").exists()


# ------------------------------------------------------------------ 2. one run per experiment
HOLD = """if [ -f hold ]; then  # run.pl jobs that stand for a long training
    utils/run.pl JOB=1:2 held.JOB.log 'echo $$ > held.JOB.pid; exec sleep 120'
fi
if [ -f escape ]; then  # a child that left the process group (it still has the lock's descriptor)
    # It writes its pid itself once it is a session leader: `echo $!` by the parent could come before the
    # child's setsid(), and a kill of the group in between took the child too (seen under load).
    setsid bash -c 'echo $$ > escaped.pid; exec sleep 120' > /dev/null 2>&1 &
    sleep 120
fi"""


def test_2a_a_second_run_is_refused_and_a_killed_run_leaves_nothing_running(tmp_path):
    recipe = make_recipe(tmp_path, HOLD)
    (recipe / "hold").touch()
    first = enh_kd(recipe, "--stage", "1", "--stop_stage", "1", stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        pids = [recipe / f"held.{job}.pid" for job in (1, 2)]
        wait_until(lambda: all(p.exists() and p.read_text().strip() for p in pids), "the run.pl jobs")
        jobs = [int(p.read_text()) for p in pids]
        second = enh_kd(recipe, "--stage", "1", "--stop_stage", "1")
        assert second.returncode == 1
        assert f"enh_kd.sh: error: exp is in use by another run: pid {first.pid} on " in second.stderr
        assert f"wait for it to end or stop it (kill {first.pid})" in second.stderr
        assert not (recipe / "data").exists() and all(map(alive, jobs))  # it ran nothing
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9 of run.sh's process group
        first.wait()
    wait_until(lambda: not any(map(alive, jobs)), "the run.pl jobs to end with their process group", 10)

    (recipe / "hold").unlink()
    third = enh_kd(recipe, "--stage", "1", "--stop_stage", "1")
    assert third.returncode == 0, log_of(third)
    assert f"taking over the lock exp/.enh_kd.lock of pid {first.pid} on " in third.stdout
    assert "which ended without releasing it" in third.stdout
    assert json.loads((recipe / "exp" / ".enh_kd.lock").read_text())["state"] == "ended"


def test_2b_no_rerun_while_a_process_of_a_killed_run_is_alive(tmp_path):
    recipe = make_recipe(tmp_path, HOLD)
    (recipe / "escape").touch()
    first = enh_kd(recipe, "--stage", "1", "--stop_stage", "1", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, start_new_session=True)
    escaped = recipe / "escaped.pid"
    wait_until(lambda: escaped.exists() and escaped.read_text().strip(), "the escaped child")
    pid = int(escaped.read_text())
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    try:
        (recipe / "escape").unlink()
        rerun = enh_kd(recipe, "--stage", "1", "--stop_stage", "1")
        assert rerun.returncode == 1
        assert (f"pid {first.pid} on ") in rerun.stderr
        assert f"that pid has ended but processes it started still hold the lock (pids {pid}): stop them first" \
            in rerun.stderr
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), "the escaped child to end")
    assert enh_kd(recipe, "--stage", "1", "--stop_stage", "1").returncode == 0


def test_2c_run_pl_jobs_end_with_a_killed_callers_process_group(tmp_path):
    caller = subprocess.Popen(["bash", "-c", f"{RUN_PL} JOB=1:2 log/x.JOB.log 'echo $$ > pid.JOB; exec sleep 120'"],
                              cwd=tmp_path, start_new_session=True)
    pids = [tmp_path / f"pid.{job}" for job in (1, 2)]
    wait_until(lambda: all(p.exists() and p.read_text().strip() for p in pids), "the jobs")
    jobs = [int(p.read_text()) for p in pids]
    os.killpg(caller.pid, signal.SIGKILL)
    caller.wait()
    wait_until(lambda: not any(map(alive, jobs)), "the jobs to end", 10)


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_2c_run_pl_ends_the_whole_process_tree_of_its_jobs(tmp_path, signum):
    proc = subprocess.Popen([str(RUN_PL), "log/x.log", "sleep 120 & echo $! > child; wait"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    child = tmp_path / "child"
    wait_until(lambda: child.exists() and child.read_text().strip(), "the job's child")
    proc.send_signal(signum)
    assert proc.wait(timeout=20) == 128 + signum
    assert "killed 1 running job(s)" in proc.stderr.read()
    wait_until(lambda: not alive(int(child.read_text())), "the job's child to end", 10)
