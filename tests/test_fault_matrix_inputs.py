"""Fault matrix, part 2 (issue 14 B): bad inputs refused at the stage that receives them.

6. configs: every KD yaml (names, types, ranges, weights) checked before stage 1, and by enh_kd_train;
7. a given teacher is loaded at stage 4 (truncated checkpoint named there, not at stage 10);
8. audio at the door (stage 2): channels, float peaks above full scale, Kaldi segments, ark/pipe
   entries, non-UTF-8 lists, a dump made at another rate.
"""
from pathlib import Path

import pytest
import yaml
from test_enh_kd_script import enh_kd, recipe  # noqa: F401  (recipe: the tmp recipe fixture)
from test_fault_matrix import STUDENT, make_teacher, refused_training

from dispatch.bin import check_kd_configs

GOOD_KD = {"kd_loss": "dispatch", "kd_loss_conf": {"distance": "mag_l2", "topk": 0.8}, "kd_weight": 10.0}


def write_yaml(path: Path, conf: dict) -> Path:
    path.write_text(yaml.safe_dump(conf))
    return path


# ----------------------------------------------------------------------- 6. configs before stage 1
BAD_KD = [  # (name, KD yaml, what the message must say)
    ("top_k", {**GOOD_KD, "kd_loss_conf": {"top_k": 0.5}},
     "kd_loss=dispatch: kd_loss_conf has unknown option(s) ['top_k']"),
    ("topk-string", {**GOOD_KD, "kd_loss_conf": {"topk": "0.5"}},
     "kd_loss=dispatch: kd_loss_conf: topk='0.5': expected a number"),
    ("topk-bool", {**GOOD_KD, "kd_loss_conf": {"topk": True}}, "kd_loss_conf: topk=True: expected a number"),
    ("n_fft-float", {**GOOD_KD, "kd_loss_conf": {"n_fft": 512.0}}, "kd_loss_conf: n_fft=512.0: expected an integer"),
    ("topk-range", {**GOOD_KD, "kd_loss_conf": {"topk": 1.5}}, "topk=1.5: the selected fraction must lie in (0, 1]"),
    ("kd_weight-negative", {**GOOD_KD, "kd_weight": -1}, "kd_weight=-1: a loss weight must be a finite number >= 0"),
    ("kd_weight-string", {**GOOD_KD, "kd_weight": "1.0"}, "kd_weight='1.0': expected a number"),
    ("weights-zero", {**GOOD_KD, "kd_weight": 0, "task_weight": 0.0},
     "kd_weight=0 and task_weight=0: the total loss would be 0"),
    ("key-typo", {**GOOD_KD, "kd_wieght": 1.0},
     "unknown key 'kd_wieght' (not an option of enh_kd_train); did you mean 'kd_weight'?"),
    ("no-kd_loss", {"kd_weight": 1.0}, "no kd_loss: a KD config must name its KD loss"),
]


def test_6a_every_kd_yaml_is_checked_and_each_problem_names_its_file_and_key(tmp_path, capsys):
    student = write_yaml(tmp_path / "student.yaml", {"fs": 16000, "separator": "rnn"})
    good = write_yaml(tmp_path / "good.yaml", GOOD_KD)
    bad = [write_yaml(tmp_path / f"{name}.yaml", conf) for name, conf, _ in BAD_KD]
    assert check_kd_configs.main(["--student_config", str(student), str(good)]) == 0
    capsys.readouterr()
    assert check_kd_configs.main(["--student_config", str(student), str(good), *map(str, bad)]) == 1
    err = capsys.readouterr().err
    for path, (_, _, message) in zip(bad, BAD_KD):
        assert f"check_kd_configs: {path}: " in err and message in err, (path, err)
    assert f"{good}:" not in err
    assert f"check_kd_configs: {len(BAD_KD)} problem(s)" in err


def test_6a_a_broken_yaml_or_student_config_key_is_named(tmp_path, capsys):
    student = write_yaml(tmp_path / "student.yaml", {"seperator": "rnn"})
    broken = tmp_path / "broken.yaml"
    broken.write_text("kd_loss: dispatch\nkd_loss_conf: {topk: 0.8\n")
    assert check_kd_configs.main(["--student_config", str(student), str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{student}: unknown key 'seperator' (not an option of enh_kd_train); did you mean 'separator'?" in err
    assert f"{broken}: cannot be read as yaml" in err


def test_6b_enh_kd_sh_stops_before_stage_1_on_a_bad_kd_yaml(recipe):  # noqa: F811
    write_yaml(recipe / "conf" / "kd_good.yaml", GOOD_KD)
    write_yaml(recipe / "conf" / "kd_bad.yaml", {**GOOD_KD, "kd_loss_conf": {"top_k": 0.5}})
    proc = enh_kd(recipe, "--kd_configs", "conf/kd_good.yaml conf/kd_bad.yaml")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2, log
    assert "check_kd_configs: conf/kd_bad.yaml: kd_loss=dispatch: kd_loss_conf has unknown option(s) ['top_k']" in log
    assert "Error: fix the configs above (nothing was run)" in log
    assert not (recipe / "calls.txt").exists() and "Stage 1" not in log


@pytest.mark.parametrize("changes, message", [
    ({"kd_weight": -1.0}, "kd_weight=-1.0: a loss weight must be a finite number >= 0"),
    ({"kd_weight": 0.0, "task_weight": 0.0}, "kd_weight=0 and task_weight=0: the total loss would be 0"),
    ({"kd_loss_conf": {"topk": "0.5"}}, "kd_loss=dispatch: kd_loss_conf: topk='0.5': expected a number"),
], ids=["kd_weight-negative", "weights-zero", "topk-string"])
def test_6c_enh_kd_train_itself_refuses_the_same_configs(tmp_path, data_root, changes, message):
    assert message in refused_training(tmp_path, data_root, {**STUDENT, **changes})


# ------------------------------------------------------------ 7. a given teacher loaded at stage 4
def test_7_a_truncated_teacher_checkpoint_stops_stage_4_naming_the_file(tmp_path, capsys):
    from dispatch.bin import resolve_teacher

    teacher = make_teacher(tmp_path / "teacher")
    weights = teacher / "valid.loss.best.pth"
    assert resolve_teacher.main([str(teacher), "--check"]) == 0
    assert capsys.readouterr().out.split() == [str(teacher / "config.yaml"), str(weights)]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert resolve_teacher.main([str(teacher)]) == 0  # found: without --check nothing is loaded
    capsys.readouterr()
    assert resolve_teacher.main([str(teacher), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"resolve_teacher: teacher_model={teacher}: the weights {weights} cannot be loaded" in err
    assert "truncated" in err and "Traceback" not in err
