"""RESULTS.md and its pictures from a small fake experiment tree (dispatch.results, dispatch.bin.make_results)."""
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import FS, write_data_dir
from test_plots import PNG_MAGIC, STATS, write_checkpoint, write_log

from dispatch.bin.make_results import main
from dispatch.exptree import Experiment
from dispatch.results import model_complexity, plain_kd_references

CRITERION = [{"name": "si_snr", "conf": {}, "wrapper": "fixed_order", "wrapper_conf": {"weight": 1.0}}]
STFT = {"encoder": "stft", "encoder_conf": {"n_fft": 256, "hop_length": 64},
        "decoder": "stft", "decoder_conf": {"n_fft": 256, "hop_length": 64}}
MODEL = {"fs": FS, "init": None, "model_conf": {}, "criterions": CRITERION, **STFT}
TEACHER = {**MODEL, "separator": "rnn",
           "separator_conf": {"rnn_type": "blstm", "num_spk": 1, "nonlinear": "relu", "layer": 1, "unit": 16}}
STUDENT = {**MODEL, "separator": "tcn",
           "separator_conf": {"num_spk": 1, "layer": 2, "stack": 1, "bottleneck_dim": 8, "hidden_dim": 16,
                              "kernel": 3, "causal": False, "norm_type": "gLN", "nonlinear": "relu"}}
KD = {  # row name -> KD section of the student config (as conf/kd/*.yaml)
    "kd_l2": {"kd_loss": "dispatch", "kd_loss_conf": {"distance": "mag_l2", "selection": "all"}, "kd_weight": 10.0},
    "kd_dispatch_l2": {"kd_loss": "dispatch", "kd_weight": 10.0, "kd_loss_conf": {
        "distance": "mag_l2", "patch": [20, 1], "topk": 0.8, "selection": "topk"}},
    "kd_dfkd": {"kd_loss": "dfkd", "kd_loss_conf": {"beta": 0.5}},  # DFKD's default selection is "all"
    "kd_dfkd_dispatch_mssp": {"kd_loss": "dfkd", "kd_loss_conf": {
        "beta": 0.5, "bands": [[10, 1], [40, 1]], "topk": 0.8, "selection": "topk"}},
}
# Per system: noise level of its "enhanced" audio, and per-utterance scores of the 4 test utterances.
SYSTEMS = {
    "noisy": (None, {"PESQ_WB": [1.1, 1.2, 1.0, 1.3], "SI_SDR": [0.0, 1.0, -1.0, 2.0]}),
    "teacher": (0.005, {"PESQ_WB": [2.0, 2.1, 1.9, 2.2], "SI_SDR": [9.0, 10.0, 8.0, 11.0]}),
    "baseline": (0.03, {"PESQ_WB": [1.5, 1.6, 1.4, 1.7], "SI_SDR": [5.0, 6.0, 4.0, 7.0]}),
    "kd_l2": (0.03, {"PESQ_WB": [1.4, 1.6, 1.4, 1.7], "SI_SDR": [4.0, 6.0, 4.0, 6.5]}),
    "kd_dispatch_l2": (0.02, {"PESQ_WB": [1.9, 1.5, 1.6, 1.75], "SI_SDR": [6.0, 6.5, 4.5, 7.5]}),
    "kd_dfkd": (0.03, {"PESQ_WB": [1.5, 1.5, 1.4, 1.6], "SI_SDR": [5.0, 5.5, 4.0, 6.0]}),
    "kd_dfkd_dispatch_mssp": (0.03, {"PESQ_WB": [1.6, 1.6, 1.5, 1.7], "SI_SDR": [5.5, 6.0, 4.5, 7.0]}),
}
DIRS = {"teacher": "teacher_rnn", "baseline": "student_tcn", **{k: f"student_tcn_{k}" for k in KD}}


def mean(name: str, metric: str) -> float:
    return float(np.mean(SYSTEMS[name][1][metric]))


def write_scoring(scoring: Path, utts, scores: dict) -> None:
    scoring.mkdir(parents=True)
    summary = {}
    for metric, values in scores.items():
        (scoring / metric).write_text("".join(f"{u} {v}\n" for u, v in zip(utts, values)))
        summary[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "count": len(values)}
    (scoring / "summary.json").write_text(json.dumps({"config": {}, "enhanced": summary}))


def write_experiment(root: Path, name: str, data: Path) -> Path:
    """config.yaml, enhanced_test/{spk1.scp, wavs, scoring/} and training statistics of one row."""
    exp = root / "exp" / DIRS.get(name, name)
    level, scores = SYSTEMS[name]
    clean = dict(line.split() for line in (data / "spk1.scp").read_text().splitlines())
    utts = sorted(clean)
    if name != "noisy":
        config = TEACHER if name == "teacher" else {**STUDENT, **KD.get(name, {})}
        exp.mkdir(parents=True)
        (exp / "config.yaml").write_text(yaml.safe_dump(config))
        out = exp / "enhanced_test"
        (out / "wavs").mkdir(parents=True)
        rng = np.random.default_rng(len(name))
        lines = []
        for u in utts:
            ref, _ = sf.read(clean[u])
            sf.write(out / "wavs" / f"{u}.wav", ref[:-5] + level * rng.standard_normal(len(ref) - 5), FS)
            lines.append(f"{u} {out / 'wavs' / f'{u}.wav'}\n")
        (out / "spk1.scp").write_text("".join(lines))
        stats = STATS if name in KD else {e: {p: {"loss": s["loss"]} for p, s in ph.items()} for e, ph in STATS.items()}
        (write_checkpoint if name in ("teacher", "kd_dfkd_dispatch_mssp") else write_log)(exp, stats)
    write_scoring(exp / "enhanced_test" / "scoring", utts, scores)
    return exp


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A recipe folder after stages 1-8: dump/raw/test and exp/ with noisy, teacher, baseline, 4 KD rows."""
    root = tmp_path_factory.mktemp("recipe")
    data = write_data_dir(root / "dump" / "raw", "test", 4, seed=3)
    for name in SYSTEMS:
        write_experiment(root, name, data)
    return root


def models_args(root: Path, names) -> list:
    return [f"{n}={root / 'exp' / DIRS[n]}" for n in names]


def table(text: str, dset: str = "test"):
    """Rows of a test set's table: name -> {column: cell}."""
    block = text.split(f"## {dset}\n", 1)[1].strip().split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    header = rows[0]
    return {r[0]: dict(zip(header, r)) for r in rows[2:]}


@pytest.fixture(scope="module")
def results(tree) -> str:
    out = tree / "RESULTS.md"
    rc = main(["--output", str(out), "--test_sets", "test", "--noisy", str(tree / "exp" / "noisy"),
               "--data_dir", str(tree / "dump" / "raw"), "--images_dir", str(tree / "exp" / "results" / "images"),
               "--utts", "test_001", "--command", "./run.sh --stage 9",
               *models_args(tree, ["teacher", "baseline", *KD])])
    assert rc == 0
    return out.read_text()


def test_table_has_every_row_metric_and_both_deltas(results):
    rows = table(results)
    assert list(rows) == ["noisy", "teacher", "baseline", *KD]
    assert list(rows["baseline"])[:5] == ["model", "params (M)", "MMAC/s", "PESQ_WB", "SI_SDR"]
    # KD with selection: change against the baseline, then against plain KD with the same distance.
    for name, plain in (("kd_dispatch_l2", "kd_l2"), ("kd_dfkd_dispatch_mssp", "kd_dfkd")):
        assert rows[name]["plain KD"] == plain
        for metric in ("PESQ_WB", "SI_SDR"):
            m, b, p = mean(name, metric), mean("baseline", metric), mean(plain, metric)
            assert rows[name][metric] == f"{m:.3f} ({m - b:+.3f} / {m - p:+.3f})"
    assert rows["kd_l2"]["SI_SDR"] == f"{mean('kd_l2', 'SI_SDR'):.3f} ({mean('kd_l2', 'SI_SDR') - 5.5:+.3f})"
    assert rows["baseline"]["SI_SDR"] == "5.500" and rows["noisy"]["SI_SDR"] == "0.500"
    assert rows["noisy"]["params (M)"] == "-"


def test_params_and_macs_per_second(tree, results):
    from espnet2.tasks.enh import EnhancementTask

    rows = table(results)
    teacher, _ = EnhancementTask.build_model_from_file(str(tree / "exp" / DIRS["teacher"] / "config.yaml"), None, "cpu")
    # Every weight matrix of a BLSTM-mask model is used once per STFT frame (1 s = 1 + 16000 // 64 frames).
    weights = sum(p.numel() for p in teacher.parameters() if p.dim() == 2)
    assert rows["teacher"]["MMAC/s"] == f"{weights * (1 + FS // 64) / 1e6:.1f}"
    assert rows["teacher"]["params (M)"] == f"{sum(p.numel() for p in teacher.parameters()) / 1e6:.3f}"
    assert float(rows["baseline"]["MMAC/s"]) > 0
    assert float(rows["baseline"]["params (M)"]) < float(rows["teacher"]["params (M)"])


def test_header_names_machine_date_command_and_kd_configs(results):
    assert re.search(r"^- date: \d{4}-\d\d-\d\d \d\d:\d\d", results, re.M)
    assert re.search(r"^- machine: .*CPU\(s\).*torch", results, re.M)
    assert "- command: `./run.sh --stage 9`" in results
    assert "FLOPs / 2" in results
    line = next(row for row in results.splitlines() if row.startswith("| kd_dispatch_l2 |"))
    assert "dispatch(distance=mag_l2, patch=[20, 1], selection=topk, topk=0.8); kd_weight=10.0" in line
    assert "student_tcn_kd_dispatch_l2/config.yaml" in line


def test_pictures_are_written_and_linked(tree, results):
    links = re.findall(r"\]\(([^)]+\.png)\)", results)
    assert "exp/results/images/training_curves.png" in links
    assert "exp/results/images/band_selection.png" in links
    for link in links:
        assert not Path(link).is_absolute()
        assert (tree / link).read_bytes()[:8] == PNG_MAGIC
    # Chosen: best, median and worst PESQ_WB gain of the best KD row (kd_dispatch_l2) over the baseline,
    # then --utts. Gains per utterance: +0.4, -0.1, +0.2, +0.05.
    picked = {m.group(1): m.group(2) for m in re.finditer(r"^\| (test_\d+) \| ([^|]+) \|", results, re.M)}
    assert list(picked) == ["test_000", "test_003", "test_001"]
    assert picked["test_000"] == "best PESQ_WB gain (+0.400)"
    assert "worst per-utterance PESQ_WB gain of kd_dispatch_l2 (the KD student with the highest mean" in results
    assert "median" in picked["test_003"]
    assert "worst" in picked["test_001"] and "chosen by --utts" in picked["test_001"]
    # One figure per KD row that selects patches (as on the listening page): plain KD distils every bin.
    figures = [link for link in links if "test_000" in link]
    assert sorted(Path(f).stem for f in figures) == [f"test_test_000_{k}" for k in ("kd_dfkd_dispatch_mssp",
                                                                                  "kd_dispatch_l2")]


def test_rerun_after_adding_a_variant_adds_a_row(tree, tmp_path):
    new = tree / "exp" / "student_tcn_kd_new"
    shutil.copytree(tree / "exp" / DIRS["kd_dispatch_l2"], new)
    seeded = tree / "exp" / "student_tcn_kd_new_seed1"  # an ablation run: its own table, not a row here
    shutil.copytree(tree / "exp" / DIRS["kd_dispatch_l2"], seeded)
    try:
        out = tmp_path / "RESULTS.md"
        # As stage 9 after `./run.sh --kd_configs conf/kd/kd_new.yaml`: only the new KD row on the command line.
        assert main(["--output", str(out), "--test_sets", "test", "--scan_dir", str(tree / "exp"),
                     *models_args(tree, ["teacher", "baseline"]), f"kd_new={new}"]) == 0
        rows = table(out.read_text())
        assert list(rows) == ["teacher", "baseline", "kd_new", *sorted(KD)]
        assert rows["kd_new"]["plain KD"] == "kd_l2"
    finally:
        shutil.rmtree(new)
        shutil.rmtree(seeded)


def test_plain_kd_references():
    def exp(name, kd_loss=None, **conf):
        return Experiment(name, Path(name), {"kd_loss": kd_loss, "kd_loss_conf": conf} if kd_loss else {})

    rows = [exp("teacher"), exp("l2", "dispatch", selection="all"),
            exp("log_all", "dispatch", distance="log_mag_l1", selection="all"),
            exp("l2_sel", "dispatch", patch=[20, 1]),  # DISPatchLoss's defaults: mag_l2, top-k selection
            exp("log_sel", "dispatch", distance="log_mag_l1", bands=[[10, 1], [40, 1]], band_edges="crossover"),
            exp("l2_other_stft", "dispatch", n_fft=256), exp("si_snr", "si_snr")]
    assert plain_kd_references(rows) == {"l2_sel": "l2", "log_sel": "log_all"}
    forced = plain_kd_references(rows, plain_kd="l2")
    assert forced["si_snr"] == "l2" and "l2" not in forced and "teacher" not in forced
    with pytest.raises(ValueError, match="--plain_kd nope: no such row"):
        plain_kd_references(rows, plain_kd="nope")


def test_model_complexity_counts_rnn_weights_once_per_frame(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**TEACHER, "separator_conf": {**TEACHER["separator_conf"], "layer": 2}}))
    params, macs = model_complexity(config, 8000)
    from espnet2.tasks.enh import EnhancementTask

    model, _ = EnhancementTask.build_model_from_file(str(config), None, "cpu")
    weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    assert macs == pytest.approx(weights * (1 + 8000 // 64) / 1e6)
    assert params == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)


def test_included_pages_are_appended_one_heading_level_down(tree, tmp_path):
    page = tmp_path / "RESULTS_ablation_x.md"
    page.write_text("# Ablation: x\n\n- seeds: 0 1 2\n\n## test\n\n| variant | SI_SDR |\n|---|---:|\n| a | 1.000 |\n")
    out = tmp_path / "RESULTS.md"
    assert main(["--output", str(out), "--test_sets", "test", "--include", str(page),
                 *models_args(tree, ["teacher", "baseline"])]) == 0
    text = out.read_text()
    assert text.endswith("## Ablation: x\n\n- seeds: 0 1 2\n\n### test\n\n| variant | SI_SDR |\n|---|---:|\n| a | 1.000 |\n")
    assert list(table(text)) == ["teacher", "baseline"]  # the results' own `## test` is still found first


@pytest.mark.parametrize("args, message", [
    (["--include", "nope.md"], "--include nope.md: cannot read it"),
    (["--baseline", "nope"], "--baseline nope: no such row"),
    (["--plain_kd", "nope"], "--plain_kd nope: no such row"),
    (["--utts", "nope", "--images_dir", "IMAGES", "--data_dir", "DATA"], "--utts: nope not in the test sets"),
])
def test_bad_options_are_named(tree, tmp_path, caplog, args, message):
    args = [a.replace("IMAGES", str(tmp_path / "img")).replace("DATA", str(tree / "dump" / "raw")) for a in args]
    with caplog.at_level(logging.ERROR):
        rc = main(["--output", str(tmp_path / "R.md"), "--test_sets", "test", *args,
                   *models_args(tree, ["teacher", "baseline"])])
    assert rc == 1 and message in caplog.text
    assert not (tmp_path / "R.md").exists()


def test_malformed_model_argument(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--output", str(tmp_path / "R.md"), "--test_sets", "test", "exp/x"])
    assert exit_.value.code == 2
    assert "'exp/x' is not name=experiment_dir" in capsys.readouterr().err
