"""DISPatch, MSSP and DFKD against plain loop implementations written from the definitions."""
import math

import pytest
import torch

from dispatch import DFKDLoss, DISPatchLoss, SISNRKDLoss, build_kd_loss
from dispatch.losses import dfkd_crossover

EPS = 1e-8


pytestmark = pytest.mark.usefixtures("float64")  # loop references agree to 1e-6 only in double precision


# ---------------------------------------------------------------- plain reference implementations
def ref_patches(n_freq, n_frames, bands, edges_of_frame):
    """List of patches, each a list of (f, t) bins, for one utterance.

    bands: [(pf, pt)] per band; edges_of_frame(t) -> list of band start bins (first is 0).
    """
    patches = {}
    for t in range(n_frames):
        starts = edges_of_frame(t) + [n_freq]
        for b, (pf, pt) in enumerate(bands):
            for f in range(starts[b], starts[b + 1]):
                key = (b, (f - starts[b]) // pf, t // pt)
                patches.setdefault(key, []).append((f, t))
    return patches


def ref_mag_l2(a, b, bins):
    return sum((abs(a[f, t]) - abs(b[f, t])) ** 2 for f, t in bins) / len(bins)


def ref_cosine(a, b, bins):
    inner = sum((a[f, t] * b[f, t].conj()).real for f, t in bins)
    na = math.sqrt(sum(abs(a[f, t]) ** 2 for f, t in bins))
    nb = math.sqrt(sum(abs(b[f, t]) ** 2 for f, t in bins))
    return 1 - inner / max(na * nb, EPS * EPS)


def ref_select(scores, k, mode):
    keys = list(scores)
    if mode == "all":
        return set(keys)
    if mode == "positive":
        return {p for p in keys if scores[p] > 0}
    m = max(1, int(k * len(keys)))
    thr = sorted(scores.values(), reverse=True)[m - 1]
    chosen = {p for p in keys if scores[p] >= thr}
    if mode == "topk_positive":
        chosen = {p for p in chosen if scores[p] > 0}
    return chosen


def ref_loss(S, T, Y, bands, edges_of_frame, dists, k, mode, per_band_terms, n_frames_valid=None):
    """Loop DISPatch over a batch; returns (loss, selection mask (B, F, T))."""
    B, F, TT = S.shape
    num = [0.0] * len(bands)
    den = [0] * len(bands)
    mask = torch.zeros(B, F, TT, dtype=torch.bool)
    for b in range(B):
        n_valid = TT if n_frames_valid is None else n_frames_valid[b]
        patches = ref_patches(F, n_valid, bands, lambda t: edges_of_frame(b, t))
        for band in range(len(bands)):
            mine = {p: bins for p, bins in patches.items() if p[0] == band}
            d = dists[band]
            scores = {p: 0.0 if Y is None else d(S[b], Y[b], bins) - d(T[b], Y[b], bins) for p, bins in mine.items()}
            for p in ref_select(scores, k, mode):
                num[band] += d(S[b], T[b], mine[p]) * len(mine[p])
                den[band] += len(mine[p])
                for f, t in mine[p]:
                    mask[b, f, t] = True
    if per_band_terms:
        loss = sum(n / max(d, 1) for n, d in zip(num, den))
    else:
        loss = sum(num) / max(sum(den), 1)
    return float(loss), mask


def ref_crossover(mag, floor=0):
    """Per frame: argmax of the relative first difference of the running maximum over frequency,
    both taken from bin ``floor`` up (0: DFKD's reference definition)."""
    F, TT = mag.shape
    out = []
    for t in range(TT):
        cm, run = [], -1.0
        for f in range(floor, F):
            run = max(run, float(mag[f, t]))
            cm.append(run)
        rel = [(cm[i + 1] - cm[i]) / (cm[i] + EPS) for i in range(len(cm) - 1)]
        out.append(floor + max(range(len(rel)), key=lambda i: (rel[i], -i)))
    return out


def specs(B=2, F=33, TT=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.complex(torch.randn(B, F, TT, generator=g), torch.randn(B, F, TT, generator=g)) for _ in range(3)]


def loss_on_specs(loss, S, T, Y, frame_valid=None):
    return loss.forward_spec(S, T, Y, frame_valid).item()


# ---------------------------------------------------------------- single scale
@pytest.mark.parametrize("patch", [(20, 1), (8, 3), (1, 1), (33, 9)])
@pytest.mark.parametrize("k", [0.2, 0.8, 1.0])
@pytest.mark.parametrize("mode", ["topk", "positive", "topk_positive", "all"])
def test_single_scale_matches_loop(patch, k, mode):
    S, T, Y = specs()
    loss = DISPatchLoss(distance="mag_l2", patch=patch, topk=k, selection=mode, n_fft=64)
    got = loss_on_specs(loss, S, T, Y)
    want, mask = ref_loss(S, T, Y, [patch], lambda b, t: [0], [ref_mag_l2], k, mode, False)
    assert got == pytest.approx(want, abs=1e-6, rel=1e-6)
    assert torch.equal(loss.last_selection, mask)


def test_frames_past_length_take_no_part():
    S, T, Y = specs()
    valid_frames = [9, 5]
    frame_valid = torch.arange(9) < torch.tensor(valid_frames).unsqueeze(1)
    loss = DISPatchLoss(patch=(10, 2), topk=0.5, n_fft=64)
    got = loss_on_specs(loss, S, T, Y, frame_valid)
    want, mask = ref_loss(S, T, Y, [(10, 2)], lambda b, t: [0], [ref_mag_l2], 0.5, "topk", False, valid_frames)
    assert got == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)
    assert not loss.last_selection[1, :, 5:].any()


def test_topk_one_equals_plain_kd():
    s, t, y = torch.randn(3, 2, 4000).unbind(0)
    dispatch = DISPatchLoss(topk=1.0, n_fft=256, hop_length=64)(s, t, y)
    plain = DISPatchLoss(selection="all", n_fft=256, hop_length=64)(s, t)
    spec = DISPatchLoss(n_fft=256, hop_length=64).spectrogram
    direct = (spec(s).abs() - spec(t).abs()).pow(2).mean()
    assert dispatch.item() == pytest.approx(plain.item(), rel=1e-12)
    assert plain.item() == pytest.approx(direct.item(), rel=1e-12)


@pytest.mark.parametrize("name", ["mag_l1", "complex_l1", "log_mag_l1"])
def test_elementwise_distances_match_per_bin_definitions(name):
    S, T, Y = specs()
    per_bin = {
        "mag_l1": lambda a, b: (a.abs() - b.abs()).abs(),
        "complex_l1": lambda a, b: (a.real - b.real).abs() + (a.imag - b.imag).abs(),
        "log_mag_l1": lambda a, b: (torch.log(a.abs() + EPS) - torch.log(b.abs() + EPS)).abs(),
    }[name]

    def ref(a, b, bins):
        return sum(float(per_bin(a[f, t], b[f, t])) for f, t in bins) / len(bins)

    loss = DISPatchLoss(distance=name, patch=(5, 2), topk=0.6, n_fft=64)
    want, mask = ref_loss(S, T, Y, [(5, 2)], lambda b, t: [0], [ref], 0.6, "topk", False)
    assert loss_on_specs(loss, S, T, Y) == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)


def test_complex_cosine_matches_loop():
    S, T, Y = specs()
    loss = DISPatchLoss(distance="complex_cosine", patch=(7, 1), topk=0.5, n_fft=64)
    want, mask = ref_loss(S, T, Y, [(7, 1)], lambda b, t: [0], [ref_cosine], 0.5, "topk", False)
    assert loss_on_specs(loss, S, T, Y) == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)


# ---------------------------------------------------------------- MSSP
def test_mssp_fixed_edge_matches_loop_and_covers_every_bin_once():
    S, T, Y = specs()
    # n_fft 64 at 16 kHz: 250 Hz per bin; 3000 Hz -> bin 12
    loss = DISPatchLoss(bands=[(4, 1), (10, 1)], band_edges=[3000], topk=0.7, n_fft=64)
    want, mask = ref_loss(S, T, Y, [(4, 1), (10, 1)], lambda b, t: [0, 12], [ref_mag_l2] * 2, 0.7, "topk", False)
    assert loss_on_specs(loss, S, T, Y) == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)

    layout = loss.layout(T, None)
    assert layout.counts.sum(1).tolist() == [33 * 9] * 2  # every bin counted once
    band_of_bin = layout.index // layout.slots_per_band
    assert (band_of_bin[:, :12] == 0).all() and (band_of_bin[:, 12:] == 1).all()
    bins_per_patch = layout.counts[layout.counts > 0]
    assert set(bins_per_patch.tolist()) <= {4.0, 10.0, 1.0}  # 12 = 3x4, 21 = 2x10 + 1


def test_crossover_matches_loop():
    mag = torch.rand(2, 33, 9)
    got = dfkd_crossover(mag)
    for b in range(2):
        assert got[b].tolist() == ref_crossover(mag[b])


@pytest.mark.parametrize("floor", [1, 5, 31])
def test_crossover_with_floor_matches_loop_and_never_goes_below(floor):
    mag = torch.rand(2, 33, 9, generator=torch.Generator().manual_seed(0))  # unseeded, a tiny bin 1 moved it
    mag[:, 0] = 1e-6  # a near-silent DC bin: the reference crossover sits on it in every frame
    assert (dfkd_crossover(mag) == 0).all()
    got = dfkd_crossover(mag, floor_bin=floor)
    assert (got >= floor).all() and (got <= 31).all()
    for b in range(2):
        assert got[b].tolist() == ref_crossover(mag[b], floor)
    with pytest.raises(ValueError, match="floor_bin=32: expected 0..31 for 33 frequency bins"):
        dfkd_crossover(mag, floor_bin=32)


def test_dfkd_crossover_floor_hz_matches_loop():
    S, T, Y = specs(seed=4)
    # n_fft 64 at 16 kHz: 250 Hz per bin; a 1000 Hz floor is bin 4.
    cross = [ref_crossover(T[b].abs(), floor=4) for b in range(2)]
    loss = DFKDLoss(bands=[(3, 1), (8, 1)], selection="topk", topk=0.6, n_fft=64, crossover_floor_hz=1000)
    assert loss.crossover_floor_bin == 4
    want, mask = ref_loss(
        S, T, Y, [(3, 1), (8, 1)], lambda b, t: [0, cross[b][t] + 1], [ref_cosine, ref_high(0.5)], 0.6, "topk", True
    )
    assert loss_on_specs(loss, S, T, Y) == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)
    reference = DFKDLoss(bands=[(3, 1), (8, 1)], selection="topk", topk=0.6, n_fft=64)
    assert DFKDLoss(bands=[(3, 1), (8, 1)], n_fft=64, crossover_floor_hz=0).crossover_floor_bin == 0
    assert loss_on_specs(reference, S, T, Y) != pytest.approx(want, abs=1e-6)
    assert isinstance(build_kd_loss("dfkd", crossover_floor_hz=250.0), DFKDLoss)
    with pytest.raises(ValueError, match=r"crossover_floor_hz=8000: expected 0 Hz up to below fs/2 = 8000 Hz"):
        DFKDLoss(n_fft=64, crossover_floor_hz=8000)


def test_mssp_crossover_matches_loop():
    S, T, Y = specs(seed=3)
    cross = [ref_crossover(T[b].abs()) for b in range(2)]
    loss = DISPatchLoss(bands=[(3, 1), (8, 1)], band_edges="crossover", topk=0.8, n_fft=64)
    want, mask = ref_loss(
        S, T, Y, [(3, 1), (8, 1)], lambda b, t: [0, cross[b][t] + 1], [ref_mag_l2] * 2, 0.8, "topk", False
    )
    assert loss_on_specs(loss, S, T, Y) == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)
    layout = loss.layout(T, None)
    assert layout.counts.sum(1).tolist() == [33 * 9] * 2


# ---------------------------------------------------------------- DFKD
def ref_high(beta):
    return lambda a, b, bins: beta * ref_cosine(a, b, bins) + (1 - beta) * ref_mag_l2(a, b, bins)


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_plain_dfkd_matches_loop(beta):
    S, T, Y = specs(seed=1)
    cross = [ref_crossover(T[b].abs()) for b in range(2)]
    loss = DFKDLoss(beta=beta, n_fft=64)
    want, _ = ref_loss(
        S, T, None, [(33, 1), (33, 1)], lambda b, t: [0, cross[b][t] + 1], [ref_cosine, ref_high(beta)], 1.0, "all", True
    )
    assert loss_on_specs(loss, S, T, None) == pytest.approx(want, abs=1e-6)
    assert loss.last_selection.all()


def test_dfkd_dispatch_mssp_matches_loop():
    S, T, Y = specs(seed=2)
    cross = [ref_crossover(T[b].abs()) for b in range(2)]
    loss = DFKDLoss(bands=[(3, 1), (8, 1)], selection="topk", topk=0.6, n_fft=64)
    want, mask = ref_loss(
        S, T, Y, [(3, 1), (8, 1)], lambda b, t: [0, cross[b][t] + 1], [ref_cosine, ref_high(0.5)], 0.6, "topk", True
    )
    assert loss_on_specs(loss, S, T, Y) == pytest.approx(want, abs=1e-6)
    assert torch.equal(loss.last_selection, mask)


# ---------------------------------------------------------------- behaviour
def test_gradient_is_zero_outside_the_selection():
    S, T, Y = specs()
    S = S.clone().requires_grad_(True)
    loss = DISPatchLoss(patch=(5, 1), topk=0.3, n_fft=64)
    loss.forward_spec(S, T, Y).backward()
    grad = S.grad.abs()
    assert (grad[~loss.last_selection] == 0).all()
    assert (grad[loss.last_selection] > 0).float().mean() > 0.99


def test_selection_lies_where_the_teacher_is_better():
    """Teacher = clean in the low band, student = clean in the high band."""
    S, T, Y = specs()
    low = torch.arange(33).view(1, -1, 1) < 16
    T = torch.where(low, Y, T)
    S = torch.where(low, S, Y)
    for mode, k in [("topk", 0.3), ("positive", 1.0), ("topk_positive", 0.9)]:
        loss = DISPatchLoss(patch=(4, 1), topk=k, selection=mode, n_fft=64)
        loss.forward_spec(S, T, Y)
        sel = loss.last_selection
        assert sel.any()
        assert not sel[:, 16:].any(), mode
    loss = DISPatchLoss(patch=(4, 1), selection="positive", n_fft=64)
    loss.forward_spec(S, T, Y)
    assert loss.last_selection[:, :16].all()


def test_utterances_select_independently():
    S, T, Y = specs(B=3)
    loss = DISPatchLoss(patch=(5, 1), topk=0.4, n_fft=64)
    loss.forward_spec(S, T, Y)
    together = loss.last_selection
    for b in range(3):
        loss.forward_spec(S[b : b + 1], T[b : b + 1], Y[b : b + 1])
        assert torch.equal(loss.last_selection[0], together[b])


def test_silent_inputs_and_empty_selection_are_finite_and_differentiable():
    s = torch.zeros(2, 4000, requires_grad=True)
    t, y = torch.zeros(2, 4000), torch.zeros(2, 4000)
    for loss in [DISPatchLoss(), DISPatchLoss(distance="log_mag_l1"), DFKDLoss(bands=[(10, 1), (40, 1)], selection="topk"),
                 DISPatchLoss(distance="complex_cosine"), SISNRKDLoss()]:
        value = loss(s, t, y)
        (grad,) = torch.autograd.grad(value, s)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), type(loss).__name__
    # teacher = student: no patch has KGS > 0, so nothing is distilled; still a differentiable zero
    x = torch.randn(2, 4000, requires_grad=True)
    loss = DISPatchLoss(selection="positive")
    value = loss(x, x.detach(), torch.randn(2, 4000))
    assert value.item() == 0.0 and value.requires_grad
    assert not loss.last_selection.any() and loss.last_stats["selected"] == 0


def test_lengths_keep_only_the_frames_inside_each_utterance():
    s, t, y = torch.randn(3, 2, 8000).unbind(0)
    loss = DISPatchLoss(n_fft=256, hop_length=64, topk=0.5)
    lengths = torch.tensor([8000, 4000])
    with_lengths = loss(s, t, y, lengths=lengths).item()
    n_frames = (1 + lengths // 64).tolist()  # frames whose centre lies inside the utterance
    S, T, Y = (loss.spectrogram(x) for x in (s, t, y))
    want, _ = ref_loss(S, T, Y, [(20, 1)], lambda b, t: [0], [ref_mag_l2], 0.5, "topk", False, n_frames)
    assert with_lengths == pytest.approx(want, rel=1e-9)
    assert not loss.last_selection[1, :, n_frames[1]:].any()


def test_si_snr_kd_matches_definition():
    s, t = torch.randn(2, 2, 8000, generator=torch.Generator().manual_seed(0)).unbind(0)
    got = SISNRKDLoss()(s, t)
    sz, tz = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    proj = (sz * tz).sum(1, keepdim=True) / tz.pow(2).sum(1, keepdim=True) * tz
    want = -(10 * torch.log10(proj.pow(2).sum(1) / (sz - proj).pow(2).sum(1))).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_registry_builds_by_name():
    assert isinstance(build_kd_loss("dispatch", topk=0.5), DISPatchLoss)
    assert isinstance(build_kd_loss("dfkd", beta=0.3), DFKDLoss)
    with pytest.raises(ValueError, match="kd_loss='nope' is unknown; choose one of"):
        build_kd_loss("nope")


# ---------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(topk=0.0), r"topk=0.0: the selected fraction must lie in \(0, 1\]"),
        (dict(topk=1.5), r"topk=1.5"),
        (dict(distance="l3"), r"distance='l3' is unknown; choose one of"),
        (dict(selection="best"), r"selection='best' is not one of"),
        (dict(patch=(0, 1)), r"patch=\(0, 1\): patch sizes must be positive"),
        (dict(bands=[(10, 1), (40, 1)], band_edges=[7500]), r"bands\[1\]=\(40, 1\): 40 bins do not fit band 1"),
        (dict(bands=[(40, 1), (10, 1)], band_edges=[1000]), r"bands\[0\]=\(40, 1\): 40 bins do not fit band 0"),
        (dict(bands=[(10, 1), (40, 1)]), r"band_edges=None: expected 'crossover' or 1 increasing"),
        (dict(band_edges=[1000]), r"band_edges=\[1000\] needs `bands`"),
        (dict(distance=["mag_l2", "mag_l1"]), r"give one distance, or one per band \(1 bands\)"),
    ],
)
def test_bad_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DISPatchLoss(**kwargs)


def test_bad_inputs_fail_with_shapes():
    loss = DISPatchLoss()
    with pytest.raises(ValueError, match=r"teacher shape \(2, 100\) differs from student shape \(2, 8000\)"):
        loss(torch.randn(2, 8000), torch.randn(2, 100), torch.randn(2, 8000))
    with pytest.raises(ValueError, match="clean shape"):
        loss(torch.randn(2, 8000), torch.randn(2, 8000), torch.randn(1, 8000))
    with pytest.raises(ValueError, match="pass `clean`"):
        loss(torch.randn(2, 8000), torch.randn(2, 8000))
    with pytest.raises(ValueError, match="shorter than the KD STFT"):
        loss.spectrogram(torch.randn(2, 100))  # forward() zero-pads such batches
    with pytest.raises(ValueError, match=r"DFKDLoss fixes `distance`"):
        DFKDLoss(distance="mag_l2")
