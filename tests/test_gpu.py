"""CUDA checks: KD losses and a KD training step on the GPU agree with the CPU; the online teacher under
bf16/fp16 autocast stays close to float32. Skipped without CUDA (tools/gpu_check.sh runs them and fails
when they are skipped)."""
from pathlib import Path

import pytest
import torch
import yaml

from dispatch.losses import build_kd_loss
from dispatch.model import ESPnetEnhancementKDModel, teacher_autocast_context
from dispatch.teacher import teacher_enhance

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FS = 16000
KD_DIR = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "enh_kd1" / "conf" / "kd"
# The shipped KD yamls' losses: name -> (kd_loss, kd_loss_conf).
KD_CONFIGS = {p.stem: (c["kd_loss"], c.get("kd_loss_conf") or {})
              for p in sorted(KD_DIR.glob("*.yaml")) for c in [yaml.safe_load(p.read_text())]}


def signals(batch=4, seconds=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(FS * seconds)
    clean = torch.randn(batch, n, generator=g) * 0.1
    teacher = clean + 0.02 * torch.randn(batch, n, generator=g)
    student = clean + 0.05 * torch.randn(batch, n, generator=g)
    return student, teacher, clean


@pytest.mark.parametrize("name", sorted(KD_CONFIGS))
def test_kd_loss_and_gradient_on_cuda_match_cpu(name):
    kind, conf = KD_CONFIGS[name]
    student, teacher, clean = signals()
    lengths = torch.tensor([student.shape[1]] * 3 + [student.shape[1] // 2])
    out = {}
    for device in ("cpu", "cuda"):
        loss = build_kd_loss(kind, **conf).to(device)
        s = student.to(device).requires_grad_(True)
        value = loss(s, teacher.to(device), clean.to(device), lengths.to(device))
        value.backward()
        out[device] = (value.detach().cpu(), s.grad.cpu())
    # cuFFT and CPU FFT round differently; top-k ties can flip a patch, so compare loosely but not trivially.
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], rtol=1e-3, atol=1e-6)
    rel = (out["cuda"][1] - out["cpu"][1]).norm() / out["cpu"][1].norm()
    assert rel < 1e-2, f"{name}: relative gradient difference {rel:.2e}"


def _conv_tasnet(channel=64, layers=4):
    from espnet2.enh.decoder.conv_decoder import ConvDecoder
    from espnet2.enh.encoder.conv_encoder import ConvEncoder
    from espnet2.enh.loss.criterions.time_domain import SISNRLoss
    from espnet2.enh.loss.wrappers.fixed_order import FixedOrderSolver
    from espnet2.enh.separator.tcn_separator import TCNSeparator

    encoder = ConvEncoder(channel=channel, kernel_size=20, stride=10)
    return dict(encoder=encoder, decoder=ConvDecoder(channel=channel, kernel_size=20, stride=10),
                separator=TCNSeparator(input_dim=channel, num_spk=1, layer=layers, stack=1, bottleneck_dim=32,
                                       hidden_dim=64),
                loss_wrappers=[FixedOrderSolver(criterion=SISNRLoss())], mask_module=None)


def _kd_model(teacher_autocast="none"):
    from espnet2.enh.espnet_model import ESPnetEnhancementModel

    torch.manual_seed(0)
    teacher = ESPnetEnhancementModel(**_conv_tasnet(128, 6)).eval()
    kind, conf = KD_CONFIGS["kd_dfkd_dispatch_mssp"]
    return ESPnetEnhancementKDModel(**_conv_tasnet(), kd_loss=build_kd_loss(kind, **conf), teacher=teacher,
                                    kd_weight=1.0, teacher_autocast=teacher_autocast)


def test_kd_training_step_on_cuda_matches_cpu():
    student, _, clean = signals(batch=2, seconds=1.0)
    grads = {}
    for device in ("cpu", "cuda"):
        model = _kd_model().to(device)
        assert next(model.teacher.parameters()).device.type == device  # the teacher follows the student
        loss, stats, _ = model(student.to(device), torch.tensor([student.shape[1]] * 2, device=device),
                               speech_ref1=clean.to(device))
        loss.backward()
        grads[device] = torch.cat([p.grad.flatten().cpu() for p in model.parameters() if p.grad is not None])
        assert torch.isfinite(loss) and "kd_loss" in stats
    rel = (grads["cuda"] - grads["cpu"]).norm() / grads["cpu"].norm()
    assert rel < 1e-2, f"relative gradient difference {rel:.2e}"


@pytest.mark.parametrize("mode,tolerance_db", [("bf16", 25.0), ("fp16", 35.0)])
def test_teacher_autocast_stays_close_to_float32(mode, tolerance_db):
    """The teacher's output under autocast, as SNR against its float32 output (bf16 has an 8-bit mantissa)."""
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = _kd_model().cuda()
    mix, _, _ = signals(batch=2, seconds=2.0)
    mix, lengths = mix.cuda(), torch.tensor([mix.shape[1]] * 2, device="cuda")
    with torch.no_grad():
        ref = teacher_enhance(model.teacher, mix, lengths).float()
        with teacher_autocast_context(mode, mix.device):
            out = teacher_enhance(model.teacher, mix, lengths).float()
    snr = 10 * torch.log10(ref.pow(2).sum() / (ref - out).pow(2).sum())
    assert snr > tolerance_db, f"{mode}: teacher output only {snr:.1f} dB from float32"
