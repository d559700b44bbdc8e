"""Every model and KD config shipped in the recipes builds and runs one step."""
from pathlib import Path

import pytest
import torch
import yaml

from dispatch import build_kd_loss
from dispatch.task import EnhancementKDTask

EGS = Path(__file__).resolve().parents[1] / "egs2"
MODEL_CONFIGS = sorted({p.resolve() for p in EGS.glob("*/enh_kd1/conf/tuning/train_*.yaml")})
KD_CONFIGS = sorted(EGS.glob("TEMPLATE/enh_kd1/conf/kd/*.yaml"))


def build(config: Path):
    parser = EnhancementKDTask.get_parser()
    args = parser.parse_args(["--config", str(config)])
    return EnhancementKDTask.build_model(args)


def test_configs_are_found():
    assert len(MODEL_CONFIGS) >= 5 and len(KD_CONFIGS) >= 6


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: f"{p.parents[3].name}/{p.name}")
def test_model_config_builds_and_enhances(config):
    model = build(config).eval()
    mix = torch.randn(1, 8000)
    with torch.no_grad():
        speech_pre, *_ = model.forward_enhance(mix, torch.tensor([8000]), {})
    assert speech_pre[0].shape[-1] >= 7900
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    conf = yaml.safe_load(config.read_text())
    assert conf.get("kd_loss") is None  # model configs hold no KD: that comes from conf/kd
    if "teacher" in config.name:
        assert n_params > 1.0
    elif "small" in config.name:
        assert n_params < 1.0


@pytest.mark.parametrize("config", KD_CONFIGS, ids=lambda p: p.name)
def test_kd_config_builds_and_runs(config):
    conf = yaml.safe_load(config.read_text())
    assert set(conf) <= {"kd_loss", "kd_loss_conf", "kd_weight", "task_weight"}, "KD configs hold only KD keys"
    loss = build_kd_loss(conf["kd_loss"], **conf.get("kd_loss_conf", {}))
    s = torch.randn(2, 16000, requires_grad=True)
    value = loss(s, torch.randn(2, 16000), torch.randn(2, 16000))
    value.backward()
    assert torch.isfinite(value) and s.grad.abs().sum() > 0


def test_kd_config_merges_onto_a_student(tmp_path):
    from dispatch.bin.merge_configs import main as merge

    student = EGS / "mini_flite/enh_kd1/conf/train_student.yaml"
    out = tmp_path / "train_config.yaml"
    merge([str(out), str(student), str(EGS / "TEMPLATE/enh_kd1/conf/kd/kd_dfkd_dispatch_mssp.yaml")])
    merged = yaml.safe_load(out.read_text())
    assert merged["kd_loss"] == "dfkd" and merged["separator"] == "tcn"
    args = EnhancementKDTask.get_parser().parse_args(["--config", str(out)])
    assert args.kd_loss_conf["bands"] == [[10, 1], [40, 1]]
    assert args.kd_weight == 1.0
