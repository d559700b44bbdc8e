"""enh_kd.sh: option parsing, stage selection and skipping of finished work (stages 1-3)."""
import os
import subprocess
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "enh_kd1"


def make_recipe(root: Path, data_sh: str) -> Path:
    """A recipe folder like egs2/<name>/enh_kd1 whose local/data.sh runs ``data_sh``, then writes a tiny corpus."""
    r = root / "enh_kd1"
    (r / "local").mkdir(parents=True)
    (r / "conf").mkdir()
    for name in ("enh_kd.sh", "path.sh", "db.sh", "utils"):
        (r / name).symlink_to(TEMPLATE / name)
    (r / "cmd.sh").write_text("export train_cmd=utils/run.pl cuda_cmd=utils/run.pl decode_cmd=utils/run.pl\n")
    for name in ("train_student.yaml", "train_teacher.yaml"):
        (r / "conf" / name).write_text("separator: rnn\n")
    (r / "local" / "data.sh").write_text("#!/usr/bin/env bash\nset -e\n" + data_sh + "\n"
        "python -c \"from conftest import write_data_dir; from pathlib import Path; "
        "[write_data_dir(Path('data'), n, 3, i) for i, n in enumerate(['tr', 'cv', 'tt'])]\"\n")
    (r / "local" / "data.sh").chmod(0o755)
    return r


@pytest.fixture
def recipe(tmp_path) -> Path:
    """make_recipe whose local/data.sh records its arguments in calls.txt."""
    return make_recipe(tmp_path, 'echo "data.sh called with: $*" >> calls.txt')


def enh_kd(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    base = ["--train_set", "tr", "--valid_set", "cv", "--test_sets", "tt", "--nj", "2",
            "--teacher_config", "conf/train_teacher.yaml", "--student_config", "conf/train_student.yaml"]
    return subprocess.run(["./enh_kd.sh", *base, *args], cwd=recipe, capture_output=True, text=True, env=env)


def test_stages_one_to_three_then_skip_on_rerun(recipe):
    proc = enh_kd(recipe, "--stage", "1", "--stop_stage", "3", "--local_data_opts", "--foo bar")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (recipe / "calls.txt").read_text() == "data.sh called with: --foo bar\n"
    for dset in ("tr", "cv", "tt"):
        d = recipe / "dump" / "raw" / dset
        assert (d / "wav.scp").exists() and (d / "utt2num_samples").exists()
    shape = (recipe / "exp" / "stats_16000" / "train" / "speech_mix_shape").read_text().split()
    assert len(shape) == 6 and int(shape[1]) > 10000
    assert "Stage 4" not in proc.stdout + proc.stderr

    again = enh_kd(recipe, "--stage", "2", "--stop_stage", "2")
    assert again.returncode == 0
    assert "formatted already" in again.stdout + again.stderr
    assert (recipe / "calls.txt").read_text().count("\n") == 1  # stage 1 not rerun


def test_fs_option_resamples(recipe):
    proc = enh_kd(recipe, "--stage", "1", "--stop_stage", "2", "--fs", "8k")
    assert proc.returncode == 0, proc.stderr
    from dispatch.data.audio import probe
    from dispatch.data.datadir import read_scp

    wav = read_scp(recipe / "dump" / "raw" / "tr" / "wav.scp")
    assert {probe(p).samplerate for p in wav.values()} == {8000}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no_such_option", "1"], "invalid option --no_such_option"),
        (["--gpu_inference", "maybe"], "expects true or false"),
        (["--kd_configs", "conf/missing.yaml"], "--kd_configs: conf/missing.yaml: no such file"),
        (["--student_config", "conf/nope.yaml"], "--student_config conf/nope.yaml: no such file"),
        (["extra_positional"], "unexpected arguments: extra_positional"),
    ],
)
def test_bad_options_stop_before_any_stage(recipe, args, message):
    proc = enh_kd(recipe, *args)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (recipe / "calls.txt").exists()


def test_help_lists_the_stages(recipe):
    proc = subprocess.run(["./enh_kd.sh", "--help"], cwd=recipe, capture_output=True, text=True)
    assert proc.returncode == 0
    assert "6: KD student training" in proc.stderr and "--kd_configs" in proc.stderr
