"""Ablation runner: grid expansion, statistics on a known table, seeds, k = 1 vs plain KD, table and shell runner."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from test_plots import write_checkpoint

from dispatch import build_kd_loss
from dispatch.ablation import (
    AblationError,
    Estimate,
    difference_table,
    exceeds_noise,
    interval,
    load_spec,
    paired_over_seeds,
    paired_over_utterances,
    parse_spec,
    seed_summary,
    set_table,
    training_budget,
)
from dispatch.bin.ablation import main as ablation_main
from dispatch.exptree import load_experiment

TEMPLATE = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "enh_kd1"
MINI = Path(__file__).resolve().parents[1] / "egs2" / "mini_flite" / "enh_kd1"


def spec(name: str):
    return load_spec(TEMPLATE / "conf" / "ablation" / f"{name}.yaml", root=TEMPLATE)


def conf_of(s, name: str) -> dict:
    return next(v.kd_config for v in s.variants if v.name == name)


# ------------------------------------------------------------------ the shipped grids


def test_method_grid_has_every_method_and_a_baseline():
    s = spec("method")
    assert [v.name for v in s.variants] == ["none", "kd_l2", "kd_dispatch_l2", "kd_dispatch_l2_mssp", "kd_dfkd",
                                            "kd_dfkd_dispatch", "kd_dfkd_dispatch_mssp"]
    assert s.baseline.name == "none" and s.reference == "kd_l2" and s.seeds == (0, 1, 2)
    dfkd_dispatch = conf_of(s, "kd_dfkd_dispatch")
    assert dfkd_dispatch["kd_loss"] == "dfkd" and dfkd_dispatch["kd_loss_conf"]["bands"] == [[20, 1], [20, 1]]
    assert conf_of(s, "kd_dfkd_dispatch_mssp")["kd_loss_conf"]["bands"] == [[10, 1], [40, 1]]  # base untouched


def test_every_shipped_spec_parses():
    names = sorted(p.stem for p in (TEMPLATE / "conf" / "ablation").glob("*.yaml"))
    assert names == ["baseline", "method", "mssp", "patch", "topk"]
    assert [v.name for v in spec("baseline").variants] == ["none"] and spec("baseline").reference == "none"


def test_value_grids_expand_to_every_combination():
    topk = spec("topk")
    assert [v.name for v in topk.variants][1:] == [f"kd_dispatch_l2_topk{k}" for k in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert [conf_of(topk, v.name)["kd_loss_conf"]["topk"] for v in topk.kd_variants[1:]] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert topk.baseline is None

    patches = [conf_of(spec("patch"), v.name)["kd_loss_conf"]["patch"] for v in spec("patch").kd_variants[1:]]
    assert patches == [[f, t] for f in (5, 10, 20, 40) for t in (1, 2, 4)]

    mssp = spec("mssp")
    grid = {v.name: v.kd_config["kd_loss_conf"] for v in mssp.kd_variants[1:]}
    assert list(grid) == [f"kd_mssp_{b}_{e}" for b in ("10-40", "20-20", "40-10") for e in ("xover", "2k")]
    assert grid["kd_mssp_40-10_2k"]["bands"] == [[40, 1], [10, 1]] and grid["kd_mssp_40-10_2k"]["band_edges"] == [2000]
    assert grid["kd_mssp_10-40_xover"]["band_edges"] == "crossover"


def test_topk_one_equals_plain_kd_through_the_expanded_configs():
    s = spec("topk")
    plain, k1, k08 = (conf_of(s, n) for n in ("kd_l2", "kd_dispatch_l2_topk1.0", "kd_dispatch_l2_topk0.8"))
    assert k1["kd_weight"] == plain["kd_weight"]
    torch.manual_seed(0)
    student, teacher, clean = torch.randn(3, 2, 16000).unbind(0)

    def total(conf, with_clean=True):
        loss = build_kd_loss(conf["kd_loss"], **conf["kd_loss_conf"])
        return conf["kd_weight"] * loss(student, teacher, clean if with_clean else None)

    assert total(k1).item() == pytest.approx(total(plain, with_clean=False).item(), rel=1e-6)
    assert total(k08).item() != pytest.approx(total(plain, with_clean=False).item(), rel=1e-3)


@pytest.mark.parametrize("raw, message", [
    ({"seeds": [0], "reference": "a", "variants": {"a": "conf/kd/kd_l2.yaml"}, "grids": {}}, "unknown key"),
    ({"seeds": [0, 0], "reference": "a", "variants": {"a": "conf/kd/kd_l2.yaml"}}, "distinct"),
    ({"seeds": [0], "reference": "b", "variants": {"a": "conf/kd/kd_l2.yaml"}}, "reference 'b'"),
    ({"seeds": [0], "reference": "a", "variants": {"a": "conf/kd/missing.yaml"}}, "missing.yaml"),
    ({"seeds": [0], "reference": "a", "variants": {"a": None, "b": None}}, "only one variant"),
    ({"seeds": [0], "reference": "a", "also_compare": ["a"], "variants": {"a": None}}, "also_compare must list"),
    ({"seeds": [0], "reference": "a", "also_compare": "b", "variants": {"a": None}}, "also_compare must list"),
    ({"seeds": [0], "reference": "a", "variants": {"train_a": None}}, "train_"),
    ({"seeds": [0], "reference": "a",
      "variants": {"a": {"base": "conf/kd/kd_l2.yaml", "set": {"kd_loss_conf.topk": 2}}}}, "variants.a: .*topk"),
    ({"seeds": [0], "reference": "a", "variants": {"a": "conf/kd/kd_l2.yaml"},
      "grid": {"base": "conf/kd/kd_dispatch_l2.yaml", "vary": {"kd_loss_conf.patchh": [[5, 1]]}}}, "grid .*patchh"),
])
def test_bad_specs_fail_naming_the_entry(raw, message):
    with pytest.raises(AblationError, match=message) as err:
        parse_spec(raw, "x", root=TEMPLATE, where="conf/ablation/x.yaml")
    assert "conf/ablation/x.yaml" in str(err.value)


# ------------------------------------------------------------------ statistics on a known table

# seed -> utterance -> value. Seed means: reference 2, 3, 4; variant 3, 4, 6.
REFERENCE = {0: {"a": 1.0, "b": 3.0}, 1: {"a": 2.0, "b": 4.0}, 2: {"a": 4.0, "b": 4.0}}
VARIANT = {0: {"a": 2.0, "b": 4.0}, 1: {"a": 2.0, "b": 6.0}, 2: {"a": 5.0, "b": 7.0}}


def test_statistics_on_a_known_table():
    ref, var = seed_summary(REFERENCE), seed_summary(VARIANT)
    assert (ref.mean, ref.spread, ref.n) == pytest.approx((3.0, 1.0, 3))
    assert (var.mean, var.spread) == pytest.approx((13 / 3, (7 / 3) ** 0.5))
    # per-seed differences 1, 1, 2: mean 4/3, std 1/sqrt(3), standard error 1/3
    by_seed = paired_over_seeds(VARIANT, REFERENCE)
    assert (by_seed.mean, by_seed.spread, by_seed.n) == pytest.approx((4 / 3, 1 / 3, 3))
    # per-utterance differences averaged over seeds: a 2/3, b 2; standard error |2 - 2/3| / 2 = 2/3
    by_utt = paired_over_utterances(VARIANT, REFERENCE)
    assert (by_utt.mean, by_utt.spread, by_utt.n) == pytest.approx((4 / 3, 2 / 3, 2))
    # only the seeds finished for both are paired
    assert paired_over_seeds({0: VARIANT[0], 1: VARIANT[1]}, REFERENCE).n == 2


def test_table_cells_and_unpaired_utterances():
    s = parse_spec({"seeds": [0, 1, 2], "reference": "ref", "variants": {"ref": "conf/kd/kd_l2.yaml", "var": None}},
                   "x", root=TEMPLATE)
    table = set_table(s, {"SI_SDR": {"ref": REFERENCE, "var": VARIANT}}, ["SI_SDR"], {"noisy": {"SI_SDR": 0.5}}, 3)
    assert "| noisy | - | 0.500 |" in table
    assert "| ref (reference) | 3/3 | 3.000 ± 1.000 |" in table
    assert "| var | 3/3 | 4.333 ± 1.528 (+1.333 ± 0.333) |" in table
    with pytest.raises(AblationError, match="different utterances"):
        paired_over_seeds({0: {"a": 1.0}}, {0: {"a": 1.0, "c": 2.0}})


def test_a_difference_exceeds_the_noise_when_its_t_interval_excludes_zero():
    # 3 seeds: t(0.975, 2) = 4.303, so the bound is 4.303 x SE
    assert not exceeds_noise(Estimate(4 / 3, 1 / 3, 3))  # 1.333 < 1.434
    assert exceeds_noise(Estimate(-1.5, 1 / 3, 3))  # 1.5 > 1.434, either sign
    assert exceeds_noise(Estimate(0.3, 0.1, 30)) and not exceeds_noise(Estimate(0.3, 0.2, 30))  # t(0.975, 29) = 2.045
    assert not exceeds_noise(Estimate(5.0, float("nan"), 1))  # one seed: no spread, no claim
    assert interval(Estimate(4 / 3, 1 / 3, 3)) == pytest.approx((4 / 3 - 4.3027 / 3, 4 / 3 + 4.3027 / 3), abs=1e-4)
    strong = {s: {u: v + 2.0 for u, v in REFERENCE[s].items()} for s in REFERENCE}
    strong[2] = {u: v + 0.5 for u, v in strong[2].items()}  # per-seed differences 2, 2, 2.5
    s = parse_spec({"seeds": [0, 1, 2], "reference": "ref", "also_compare": ["none"],
                    "variants": {"none": None, "ref": "conf/kd/kd_l2.yaml", "var": "conf/kd/kd_l2.yaml"}},
                   "x", root=TEMPLATE)
    scores = {"SI_SDR": {"ref": REFERENCE, "var": strong, "none": VARIANT}}
    assert "| var | 3/3 | 5.167 ± 1.258 (+2.167 ± 0.167 †) |" in set_table(s, scores, ["SI_SDR"], {}, 3)
    diffs = difference_table(s, scores, ["SI_SDR"], "none")
    assert diffs.splitlines()[0] == "| variant - none | pairs | SI_SDR |"
    assert "| ref | 3 | -1.333 ± 0.333 |" in diffs  # REFERENCE - VARIANT: -1, -1, -2
    # per-seed differences 1, 1, 0.5: mean 5/6, SE 1/6, beyond 4.303 x 1/6 = 0.717
    assert "| var | 3 | +0.833 ± 0.167 † |" in diffs and "| none |" not in diffs


def test_training_budget_is_read_from_the_configs_and_mixed_budgets_are_named(tmp_path):
    for name, epochs in (("a_seed0", 32), ("b_seed0", 32), ("c_seed0", 10)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(
            {"max_epoch": epochs, "batch_size": 8, "optim": "adam", "optim_conf": {"lr": 0.002}, "patience": None}))
    runs = {name: load_experiment(name, tmp_path / name) for name in ("a_seed0", "b_seed0", "c_seed0", "missing")}
    same = training_budget([runs["a_seed0"], runs["b_seed0"], runs["missing"]])
    assert same == 'max_epoch 32, batch_size 8, optim adam, optim_conf {"lr": 0.002}'
    mixed = training_budget([runs[n] for n in ("a_seed0", "b_seed0", "c_seed0")])
    assert "max_epoch 32" in mixed and "(a_seed0, b_seed0)" in mixed and "max_epoch 10" in mixed and "(c_seed0)" in mixed


# ------------------------------------------------------------------ seeds change the initialisation


def test_seed_option_changes_the_student_initialisation(tmp_path):
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    from dispatch.bin.merge_configs import main as merge
    from dispatch.task import EnhancementKDTask

    merged = tmp_path / "train_config.yaml"  # what stage 6 trains: student + an expanded KD variant
    kd = tmp_path / "kd.yaml"
    kd.write_text(yaml.safe_dump(conf_of(spec("topk"), "kd_dispatch_l2_topk0.2")))
    merge([str(merged), str(MINI / "conf" / "train_student.yaml"), str(kd)])

    def init(seed: int) -> dict:
        # As run_ablation.sh passes it; espnet2's main_worker seeds before build_model.
        args = EnhancementKDTask.get_parser().parse_args(["--config", str(merged), "--seed", str(seed)])
        assert args.seed == seed  # the command line wins over the config's `seed: 0`
        set_all_random_seed(args.seed)
        return EnhancementKDTask.build_model(args).state_dict()

    first, again, other = init(0), init(0), init(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    changed = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], other[k])]
    assert any("separator" in k for k in changed)

    # Pairing by seed compares like with like: another KD variant starts from the very same student.
    kd.write_text(yaml.safe_dump(conf_of(spec("method"), "kd_dfkd_dispatch_mssp")))
    merge([str(merged), str(MINI / "conf" / "train_student.yaml"), str(kd)])
    dfkd = init(0)
    assert first.keys() == dfkd.keys() and all(torch.equal(first[k], dfkd[k]) for k in first)


# ------------------------------------------------------------------ the command line and the runner


def write_recipe(root: Path) -> Path:
    """A recipe folder with one KD config and a spec of a baseline, plain KD and a 2-value grid."""
    (root / "conf" / "kd").mkdir(parents=True)
    (root / "conf" / "ablation").mkdir()
    for name in ("kd_l2.yaml", "kd_dispatch_l2.yaml"):
        (root / "conf" / "kd" / name).write_text((TEMPLATE / "conf" / "kd" / name).read_text())
    (root / "conf" / "train_student.yaml").write_text("separator: tcn\n")
    (root / "conf" / "ablation" / "tiny.yaml").write_text(yaml.safe_dump({
        "seeds": [0, 1, 2], "reference": "kd_l2",
        "variants": {"none": None, "kd_l2": "conf/kd/kd_l2.yaml"},
        "grid": {"base": "conf/kd/kd_dispatch_l2.yaml", "prefix": "k", "vary": {"kd_loss_conf.topk": [0.5, 1.0]}},
    }))
    return root


def write_scores(exp: Path, values: dict) -> None:
    scoring = exp / "enhanced_test" / "scoring"
    scoring.mkdir(parents=True)
    (scoring / "SI_SDR").write_text("".join(f"{u} {v}\n" for u, v in values.items()))
    summary = {"SI_SDR": {"mean": sum(values.values()) / len(values), "count": len(values)}}
    (scoring / "summary.json").write_text(json.dumps({"enhanced": summary}))


def test_expand_and_table_commands_on_a_fake_experiment_tree(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path)
    monkeypatch.chdir(recipe)
    spec_path = "conf/ablation/tiny.yaml"
    assert ablation_main(["expand", spec_path, "--outdir", "exp/ablation/tiny/conf"]) == 0
    paths = capsys.readouterr().out.split()
    assert paths == [f"exp/ablation/tiny/conf/{n}.yaml" for n in ("kd_l2", "k_topk0.5", "k_topk1.0")]
    assert yaml.safe_load(Path(paths[1]).read_text())["kd_loss_conf"]["topk"] == 0.5
    assert ablation_main(["expand", spec_path, "--outdir", "exp/ablation/tiny/conf"]) == 0  # rerun: same files

    for seed in (0, 1, 2):
        write_scores(Path(f"exp/student_x_kd_l2_seed{seed}"), REFERENCE[seed])
        write_scores(Path(f"exp/student_x_k_topk0.5_seed{seed}"), VARIANT[seed])
    write_scores(Path("exp/student_x_seed0"), {"a": 0.0, "b": 1.0})  # baseline: one seed finished
    write_scores(Path("exp/noisy"), {"a": -1.0, "b": 0.0})
    Path("exp/student_x_k_topk1.0_seed0/enhanced_test/scoring").mkdir(parents=True)  # scoring unfinished

    out = Path("RESULTS_ablation_tiny.md")
    assert ablation_main(["table", spec_path, "--student_tag", "student_x", "--output", str(out),
                          "--extra", "noisy=exp/noisy"]) == 0
    text = out.read_text()
    assert "## test" in text and "| noisy | - | -0.500 |" in text
    assert "| none | 1/3 | 0.500 (-1.500) |" in text
    assert "| kd_l2 (reference) | 3/3 | 3.000 ± 1.000 |" in text
    assert "| k_topk0.5 | 3/3 | 4.333 ± 1.528 (+1.333 ± 0.333) |" in text
    assert "| k_topk1.0 | 0/3 | - |" in text
    assert "`conf/kd/kd_dispatch_l2.yaml + kd_loss_conf.topk=0.5`" in text
    # The listening page's picture: each KD variant minus the student alone (one common seed: no interval).
    figure = json.loads(Path("exp/ablation/tiny/paired_differences.json").read_text())
    assert (figure["reference"], figure["pairing"], figure["level"]) == ("none", "seed", 0.95)
    assert figure["sets"]["test"]["SI_SDR"] == {"kd_l2": {"mean": 1.5, "low": None, "high": None, "n": 1},
                                                "k_topk0.5": {"mean": 2.5, "low": None, "high": None, "n": 1}}

    assert "## Convergence" not in text  # no training logs in this tree

    # With training logs: the model-selection criterion's best epoch and the gain of the last quarter.
    for seed, tail in enumerate((-3.0, -3.2, -3.1)):  # valid si_snr_loss per epoch, min is best
        exp = Path(f"exp/student_x_kd_l2_seed{seed}")
        curve = [-1.0, -2.0, -2.5, -2.8, -2.9, tail, -3.0, -3.0]
        write_checkpoint(exp, {e + 1: {"valid": {"si_snr_loss": v}} for e, v in enumerate(curve)})
        (exp / "config.yaml").write_text(yaml.safe_dump({"best_model_criterion": [["valid", "si_snr_loss", "min"]]}))
    assert ablation_main(["table", spec_path, "--student_tag", "student_x", "--output", str(out)]) == 0
    block = out.read_text().split("## Convergence", 1)[1]
    # best epochs 6 (tail -3.0 ties epoch 7: the first wins), 6, 6; best -3.0, -3.2, -3.1;
    # last quarter (epochs 7-8) -3.0 against epochs 5-6: (-2.9 + tail) / 2 -> gains 0.05, -0.05, 0.0
    assert "| variant | runs | epochs | best epoch | best valid si_snr_loss (min) | gain of the last quarter |" in block
    assert "| kd_l2 | 3 | 8 | 6.0 | -3.100 | +0.000 |" in block

    # A config.yaml that is not yaml is named, not a traceback.
    Path("exp/student_x_kd_l2_seed2/config.yaml").write_text("best_model_criterion: [unclosed\n")
    assert ablation_main(["table", spec_path, "--student_tag", "student_x", "--output", str(out)]) == 2
    assert "exp/student_x_kd_l2_seed2/config.yaml: not valid yaml" in capsys.readouterr().err

    # A variant whose options changed under trained experiments is refused, naming the file.
    Path("conf/kd/kd_l2.yaml").write_text(Path("conf/kd/kd_l2.yaml").read_text().replace("10.0", "5.0"))
    assert ablation_main(["expand", spec_path, "--outdir", "exp/ablation/tiny/conf"]) == 2
    assert "exp/ablation/tiny/conf/kd_l2.yaml holds other options" in capsys.readouterr().err


def test_runner_calls_run_sh_once_per_seed(tmp_path):
    """Stage 1 only: the table stage is the `table` command tested above (each python start costs seconds)."""
    recipe = write_recipe(tmp_path / "enh_kd1")
    for name in ("run_ablation.sh", "path.sh", "utils"):
        (recipe / name).symlink_to(TEMPLATE / name)
    run_sh = recipe / "run.sh"  # records its arguments, one call per line, '|'-separated
    run_sh.write_text("#!/usr/bin/env bash\nprintf '%s|' \"$@\" >> calls.txt\necho >> calls.txt\n")
    run_sh.chmod(0o755)
    proc = subprocess.run(
        ["./run_ablation.sh", "--stop_stage", "1", "--seeds", "3 4", "--teacher_model", "exp/teacher_t",
         "--student_args", "--max_epoch 1", "conf/ablation/tiny.yaml", "--ci", "true"],
        cwd=recipe, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [line.rstrip("|").split("|") for line in (recipe / "calls.txt").read_text().splitlines()]
    assert len(calls) == 2
    for seed, call in zip((3, 4), calls, strict=True):
        assert call[:2] == ["--ci", "true"]  # the recipe's own options come first
        opts = dict(zip(call[2::2], call[3::2]))
        assert opts["--stage"] == "5" and opts["--stop_stage"] == "8"
        assert opts["--tag_suffix"] == f"_seed{seed}" and opts["--student_args"] == f"--seed {seed} --max_epoch 1"
        assert opts["--skip_baseline"] == "false" and opts["--student_tag"] == "student_student"
        assert opts["--teacher_model"] == "exp/teacher_t"
        assert opts["--kd_configs"].split() == [
            f"exp/ablation/tiny/conf/{n}.yaml" for n in ("kd_l2", "k_topk0.5", "k_topk1.0")]
