"""The experiment tree (dispatch.exptree): names, the given-teacher rule, the KD loss of a student, the best student."""
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from dispatch.bin.exptree import main as exptree_main
from dispatch.exptree import (
    Experiment,
    Layout,
    TreeError,
    best_student,
    config_name,
    load_experiment,
    read_grid_differences,
    scan_experiments,
    seed_suffix,
)
from dispatch.kd_config import check_kd_options
from dispatch.losses import DFKDLoss, DISPatchLoss

# The names enh_kd.sh derived before dispatch.exptree named the tree, written plainly as the reference.
SED_NAME = "basename \"$(readlink -f \"$1\")\" | sed -e 's/\\.yaml$//' -e 's/^train_//' -e 's/^enh_//'"


def sed_name(path: Path) -> str:
    return subprocess.run(["bash", "-c", SED_NAME, "_", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_config_names_follow_the_symlink_and_drop_the_prefixes(tmp_path):
    tuning = tmp_path / "conf" / "tuning"
    tuning.mkdir(parents=True)
    names = ["train_enh_conv_tasnet.yaml", "enh_train_x.yaml", "train_tcn.yaml", "kd_l2.yaml", "a.b.yaml", "plain"]
    for name in names:
        (tuning / name).write_text("{}\n")
    (tmp_path / "conf" / "train_student.yaml").symlink_to(tuning / "train_enh_conv_tasnet.yaml")
    paths = [tuning / n for n in names] + [tmp_path / "conf" / "train_student.yaml", tmp_path / "given"]
    assert [config_name(p) for p in paths] == [sed_name(p) for p in paths]
    assert config_name(tmp_path / "conf" / "train_student.yaml") == "conv_tasnet"


def test_layout_names_every_experiment_of_a_run(tmp_path):
    tree = Layout.of(tmp_path / "exp", "conf/tuning/train_enh_tcn.yaml", "conf/tuning/train_blstm.yaml", "_seed1")
    assert (tree.teacher_tag, tree.student_tag) == ("teacher_blstm", "student_tcn")
    assert tree.teacher_dir == str(tmp_path / "exp" / "teacher_blstm")  # shared: no tag suffix
    assert tree.student_dir() == tmp_path / "exp" / "student_tcn_seed1"
    assert tree.models(["conf/kd/kd_l2.yaml"]) == {
        "teacher": tree.teacher_dir, "baseline": str(tmp_path / "exp" / "student_tcn_seed1"),
        "kd_l2": str(tmp_path / "exp" / "student_tcn_kd_l2_seed1")}
    assert list(tree.models([], baseline=False)) == ["teacher"]
    # The trained teacher keeps its outputs even before stage 4 made its folder.
    assert tree.outputs_dir(tree.teacher_dir) == Path(tree.teacher_dir)
    assert seed_suffix(3) == "_seed3"


def test_a_teacher_given_packed_puts_its_outputs_in_teacher_given(tmp_path):
    given = Layout.of(tmp_path / "exp", "s.yaml", teacher_model="user/zoo_teacher")
    assert given.teacher_tag == "teacher_given" and given.teacher_dir == "user/zoo_teacher"
    assert given.outputs_dir("user/zoo_teacher") == tmp_path / "exp" / "teacher_given"
    (tmp_path / "other_exp").mkdir()  # a given experiment folder holds its own outputs
    assert Layout.of(tmp_path / "exp", "s.yaml", teacher_model=str(tmp_path / "other_exp")).outputs_dir(
        str(tmp_path / "other_exp")) == tmp_path / "other_exp"


def test_the_cli_layout_is_what_the_shell_evaluates(tmp_path, capsys):
    assert exptree_main(["layout", "--expdir", str(tmp_path / "my exp"), "--student_config", "train_tcn.yaml",
                         "--teacher_model", "t.zip", "--kd_configs", "kd/kd_l2.yaml kd/kd_x.yaml",
                         "--tag_suffix", "_seed0"]) == 0
    script = capsys.readouterr().out + '\nprintf "%s\\n" "$teacher_outputs" "${models[@]}" "${kd_exps[1]}"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    exp = tmp_path / "my exp"
    assert out == [f"{exp}/teacher_given", "teacher=t.zip", f"baseline={exp}/student_tcn_seed0",
                   f"kd_l2={exp}/student_tcn_kd_l2_seed0", f"kd_x={exp}/student_tcn_kd_x_seed0",
                   f"{exp}/student_tcn_kd_x_seed0"]


KD = {
    "plain": {"kd_loss": "dispatch", "kd_loss_conf": {"distance": "mag_l2", "selection": "all"}},
    "dispatch": {"kd_loss": "dispatch", "kd_loss_conf": {"distance": "mag_l2", "patch": [20, 1], "topk": 0.5}},
    "mssp": {"kd_loss": "dispatch", "fs": 8000, "kd_loss_conf": {
        "distance": "mag_l2", "bands": [[10, 1], [40, 1]], "band_edges": [1000], "selection": "topk", "topk": 0.8}},
    "dfkd_mssp": {"kd_loss": "dfkd", "kd_loss_conf": {"bands": [[10, 1], [40, 1]], "selection": "topk"}},
    "dfkd": {"kd_loss": "dfkd", "kd_loss_conf": {"beta": 0.5}},  # DFKD's default selection: every bin
    "si_snr": {"kd_loss": "si_snr"},
    "none": {},
}


def test_the_kd_loss_is_rebuilt_as_training_builds_it():
    exps = {name: Experiment(name, Path(name), conf) for name, conf in KD.items()}
    assert [n for n, e in exps.items() if e.selection_loss(16000) is not None] == ["dispatch", "mssp", "dfkd_mssp"]
    loss = exps["mssp"].selection_loss(16000)
    trained = check_kd_options(KD["mssp"], 8000)  # as EnhancementKDTask builds it: the config's own fs wins
    assert isinstance(loss, DISPatchLoss) and loss.edge_bins == trained.edge_bins
    assert loss.edge_bins != check_kd_options(KD["mssp"], 16000).edge_bins
    assert isinstance(exps["dfkd_mssp"].selection_loss(16000), DFKDLoss)
    assert exps["dispatch"].distance_signature() == exps["plain"].distance_signature()
    assert exps["dfkd"].is_plain_kd and not exps["dfkd"].is_selective
    bad = Experiment("bad", Path("x"), {"kd_loss": "dispatch", "kd_loss_conf": {"topk": 2.0, "selection": "topk"}})
    with pytest.raises(TreeError, match="x/config.yaml: .*topk"):
        bad.selection_loss(16000)


def write_run(exp: Path, config: dict, pesq: list) -> None:
    scoring = exp / "enhanced_test" / "scoring"
    scoring.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    (scoring / "PESQ_WB").write_text("".join(f"u{i} {v}\n" for i, v in enumerate(pesq)))
    (scoring / "summary.json").write_text(json.dumps({"enhanced": {"PESQ_WB": {"mean": sum(pesq) / len(pesq)}}}))


def test_best_student_scan_and_config_errors(tmp_path):
    write_run(tmp_path / "student", {}, [2.0, 2.0])
    write_run(tmp_path / "student_plain", KD["plain"], [2.1, float("nan")])
    write_run(tmp_path / "student_dispatch", KD["dispatch"], [2.2, 1.9])
    write_run(tmp_path / "student_dispatch_seed0", KD["dispatch"], [3.0, 3.0])  # an ablation run
    base = load_experiment("baseline", tmp_path / "student")
    found = scan_experiments(tmp_path, [base], ["test"], base.exp_dir)
    assert [e.name for e in found] == ["dispatch", "plain"]
    assert best_student([base, *found], "test", "PESQ_WB").name == "plain"  # 2.1: a NaN has no score
    assert best_student([base, *found], "test", "PESQ_WB", exclude=["plain"]).name == "dispatch"
    assert best_student([base], "test", "PESQ_WB").name == "baseline"  # no KD student: the best model
    (tmp_path / "student" / "config.yaml").write_text("kd_loss: [unclosed\n")
    with pytest.raises(TreeError, match="student/config.yaml: not valid yaml"):
        load_experiment("baseline", tmp_path / "student")


def test_grid_differences_are_read_by_spec_name_and_a_broken_file_is_named(tmp_path):
    for name, text in (("method", '{"spec": "method"}'), ("a_grid", '{"spec": "a_grid"}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "paired_differences.json").write_text(text)
    (tmp_path / "topk").mkdir()  # a grid without a student alone writes none
    assert [g["spec"] for g in read_grid_differences(tmp_path)] == ["a_grid", "method"]
    (tmp_path / "method" / "paired_differences.json").write_text("{unfinished")
    with pytest.raises(TreeError, match="method/paired_differences.json: cannot read it"):
        read_grid_differences(tmp_path)


def test_the_stage_scripts_ask_the_tree_for_names():
    """enh_kd.sh and run_ablation.sh derive no experiment name themselves (no sed on config names, no
    spelled-out teacher_given or _seed<N>): they ask dispatch.bin.exptree."""
    template = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "enh_kd1"
    for script in ("enh_kd.sh", "run_ablation.sh"):
        text = (template / script).read_text()
        assert "dispatch.bin.exptree" in text
        assert "sed -e 's/^train_//'" not in text and "teacher_given" not in text and "_seed${" not in text, script
