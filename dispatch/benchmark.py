"""Speed and memory of KD for speech enhancement: KD losses, KD training steps, student inference.

What is measured (``python -m dispatch.bin.benchmark`` writes it as a markdown table):

a) forward + backward of each KD loss on a batch of waveforms, against a plain magnitude-L2 KD and a
   re-implementation of the DISPatch reference code's selection (:class:`ReferenceStyleDISPatchL2`);
b) a full training step (forward, backward, gradient clipping, optimizer step) of the Conv-TasNet student
   alone, with plain L2 KD and with DFKD + DISPatch + MSSP on cached teacher outputs, and with the
   teacher run online; and of the mini recipe's student at its recipe's batch, alone and with each of the
   recipe's KD configs on cached teacher outputs (:data:`STEP_SETUPS`);
c) the share of the KD step taken by the KD loss, and the peak memory each step adds;
d) the real-time factor of each model's inference on one CPU thread.

Models are espnet2 models built from the recipe configs with random weights (speed does not depend on
the weights), KD losses from the shared ``conf/kd`` yamls. Timings are medians over repeats after
warm-up; the spread is the interquartile range over the median.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import yaml

from dispatch.losses import build_kd_loss

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CONF = REPO_ROOT / "egs2" / "voicebank_demand" / "enh_kd1" / "conf" / "tuning"
KD_CONF = REPO_ROOT / "egs2" / "TEMPLATE" / "enh_kd1" / "conf" / "kd"
TEACHER_CONFIG = MODEL_CONF / "train_enh_conv_tasnet_teacher.yaml"
STUDENT_CONFIGS = {
    "Conv-TasNet small": MODEL_CONF / "train_enh_conv_tasnet_small.yaml",
    "DCCRN-CL small": MODEL_CONF / "train_enh_dccrn_cl_small.yaml",
}
STEP_STUDENT = "Conv-TasNet small"
MINI_RECIPE = REPO_ROOT / "egs2" / "mini_flite" / "enh_kd1"
MINI_STUDENT_CONFIG = MINI_RECIPE / "conf" / "train_student.yaml"
MINI_KD_CONF = MINI_RECIPE / "conf" / "kd"
# the mini recipe's default kd_configs (run.sh), each with what it is
MINI_KD_CONFIGS = (("kd_l2.yaml", "plain L2"), ("kd_dispatch_l2.yaml", "L2 + DISPatch"),
                   ("kd_dfkd_dispatch_mssp.yaml", "DFKD + DISPatch + MSSP"))
STEP_KD_CONFIG = KD_CONF / "kd_dfkd_dispatch_mssp.yaml"  # the paper's best KD, run inside the KD step
FS = 16000

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Median and interquartile range (seconds) of repeated runs; peak memory added, if measured."""

    median: float
    iqr: float
    peak_bytes: Optional[int] = None
    # loss timings measured interleaved: {other case: (median of per-round ratios, their IQR / median)}
    ratios: Dict[str, Tuple[float, float]] = field(default_factory=dict)

    @property
    def spread(self) -> float:
        return self.iqr / self.median if self.median > 0 else 0.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def _release_free_memory() -> None:
    """Hand freed heap back to the OS, so that the next step's peak starts from what is really in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks may then include memory cached by the allocator
        pass


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Dict[str, Optional[int]]]:
    """Peak memory (bytes) allocated inside the block on top of what was in use when it began.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's resident set high-water mark, reset
    through ``/proc/self/clear_refs`` (Linux); tracemalloc would not see torch's tensor allocations.
    The result is ``None`` where the high-water mark cannot be reset.
    """
    result: Dict[str, Optional[int]] = {"peak_bytes": None}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        synchronize(device)
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - start
        return
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS to the current RSS
        start = _proc_status_kib("VmRSS")
    except OSError:
        yield result
        return
    yield result
    result["peak_bytes"] = (_proc_status_kib("VmHWM") - start) * 1024


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> Timing:
    """Median time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    median, spread = _median_spread(times)
    return Timing(median, spread * median)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------- losses
class PlainL2KD(torch.nn.Module):
    """Conventional KD, written plainly: mean over all bins of ``(|S| - |T|)^2``, no patches.

    The teacher's STFT runs without autograd. Anchor of the "at most 1.5x plain L2 KD" target.

    Shape:
        student, teacher: (batch, time); clean is ignored; output: scalar.
    """

    def __init__(self, n_fft: int = 512, hop_length: int = 128):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.stft(wav, self.n_fft, self.hop_length, window=self.window, return_complex=True).abs()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, clean: Optional[torch.Tensor] = None):
        with torch.no_grad():
            target = self.magnitude(teacher)
        return (self.magnitude(student) - target).pow(2).mean()


class ReferenceStyleDISPatchL2(PlainL2KD):
    """DISPatch with magnitude L2 the way the paper's reference code computes it (written here to time it).

    Three separate STFTs (student, teacher, clean); the frequency axis is zero-padded by concatenation
    to a multiple of the patch height ``patch_bins`` (padded bins count in the patch means); patch
    errors are means of squared magnitude errors; the Knowledge Gap Score is student error minus
    teacher error; per utterance the ``m = max(1, int(topk * patches))``-th largest score, found by a
    batched ``kthvalue``, is the threshold (ties kept); the KD loss is the sum of the student-teacher
    patch errors over selected patches divided by ``batch * patches * topk``. Like the reference, the
    selection is computed with autograd on.

    Shape:
        student, teacher, clean: (batch, time); output: scalar.
    """

    def __init__(self, patch_bins: int = 20, topk: float = 0.8, n_fft: int = 512, hop_length: int = 128):
        super().__init__(n_fft, hop_length)
        self.patch_bins, self.topk = patch_bins, topk

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, clean: Optional[torch.Tensor] = None):
        mags = [self.magnitude(x) for x in (student, teacher, clean)]
        batch, n_freq, n_frames = mags[0].shape
        n_patches = math.ceil(n_freq / self.patch_bins)
        pad = mags[0].new_zeros(batch, n_patches * self.patch_bins - n_freq, n_frames)
        s, t, y = (torch.cat([m, pad], dim=1).view(batch, n_patches, self.patch_bins, n_frames) for m in mags)
        score = (s - y).pow(2).mean(dim=2) - (t - y).pow(2).mean(dim=2)  # (batch, patches, frames)
        flat = score.reshape(batch, -1)
        m = max(int(flat.shape[1] * self.topk), 1)
        threshold = torch.kthvalue(-flat, m, dim=1).values  # m-th largest score, negated
        mask = (flat >= -threshold.unsqueeze(1)).view_as(score).to(s.dtype)
        kd = (s - t).pow(2).mean(dim=2)
        return (kd * mask).sum() / (flat.numel() * self.topk)


def kd_loss_from_yaml(path: Path) -> torch.nn.Module:
    """The KD loss a recipe's ``conf/kd/*.yaml`` configures."""
    conf = yaml.safe_load(path.read_text())
    return build_kd_loss(conf["kd_loss"], **(conf.get("kd_loss_conf") or {}))


@dataclass(frozen=True)
class LossCase:
    key: str
    label: str
    build: Callable[[], torch.nn.Module]


LOSS_CASES = (
    LossCase("plain_l2", "L2 KD, plain (2 STFTs, mean over bins)", PlainL2KD),
    LossCase("l2", "L2 KD (`kd_l2.yaml`: DISPatchLoss, selection all)", lambda: kd_loss_from_yaml(KD_CONF / "kd_l2.yaml")),
    LossCase("l2_dispatch", "L2 + DISPatch 20x1, top 80% (`kd_dispatch_l2.yaml`)",
             lambda: kd_loss_from_yaml(KD_CONF / "kd_dispatch_l2.yaml")),
    LossCase("l2_dispatch_mssp", "L2 + DISPatch + MSSP 10/40 (`kd_dispatch_l2_mssp.yaml`)",
             lambda: kd_loss_from_yaml(KD_CONF / "kd_dispatch_l2_mssp.yaml")),
    LossCase("dfkd", "DFKD (`kd_dfkd.yaml`)", lambda: kd_loss_from_yaml(KD_CONF / "kd_dfkd.yaml")),
    LossCase("dfkd_dispatch_mssp", "DFKD + DISPatch + MSSP (`kd_dfkd_dispatch_mssp.yaml`)",
             lambda: kd_loss_from_yaml(STEP_KD_CONFIG)),
    LossCase("reference", "reference-style L2 + DISPatch 20x1, top 80% (3 STFTs, zero-pad, kthvalue)",
             ReferenceStyleDISPatchL2),
)


def waveforms(batch: int, samples: int, device: torch.device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Noisy input, clean target and a plausible teacher output, (batch, samples) each."""
    g = torch.Generator().manual_seed(seed)
    clean = 0.1 * torch.randn(batch, samples, generator=g)
    noisy = clean + 0.05 * torch.randn(batch, samples, generator=g)
    teacher = clean + 0.01 * torch.randn(batch, samples, generator=g)
    return {k: v.to(device) for k, v in (("noisy", noisy), ("clean", clean), ("teacher", teacher))}


def _median_spread(values: Sequence[float]) -> Tuple[float, float]:
    median = statistics.median(values)
    quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return median, ((quartiles[2] - quartiles[0]) / median if median > 0 else 0.0)


RATIO_BASES = ("plain_l2", "reference")


def involuntary_switches() -> int:
    """How often this process has been switched out for another runnable one (``ru_nivcsw``): a count
    that rises when other processes load the cores it runs on."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


@dataclass
class LossRounds:
    """How the loss timings were sampled: rounds kept, rounds run again because the machine was loaded
    during them, whether loaded rounds had to be kept (too few quiet ones), the largest ratio spread."""

    kept: int
    retried: int
    loaded_kept: bool
    worst_spread: float

    def describe(self, max_switch_rate: float) -> str:
        text = (f"{self.kept} rounds kept, {self.retried} run again because other processes ran during them "
                f"(more than {max_switch_rate:g} involuntary context switches per second)")
        if self.loaded_kept:
            text += "; too few quiet rounds: loaded rounds are included, the figures were measured under load"
        return text + f"; largest ratio spread {100 * self.worst_spread:.0f}%"


def _timed_round(steps: Dict[str, Callable[[], None]], order: Sequence[str], device: torch.device,
                 switches: Callable[[], int]) -> Tuple[Dict[str, float], float]:
    """Every case once in ``order``: ({case: seconds}, involuntary context switches per second of the round)."""
    before, start_round = switches(), time.perf_counter()
    out = {}
    for key in order:
        start = time.perf_counter()
        steps[key]()
        synchronize(device)
        out[key] = time.perf_counter() - start
    return out, (switches() - before) / max(time.perf_counter() - start_round, 1e-9)


def _worst_ratio_spread(rounds: Sequence[Dict[str, float]]) -> float:
    keys = list(rounds[0])
    return max(_median_spread([r[key] / r[base] for r in rounds])[1]
               for key in keys for base in RATIO_BASES if key != base)


def bench_losses(device: torch.device, batch: int, samples: int, warmup: int, repeats: int,
                 max_spread: float = 0.2, retries: int = 2, max_switch_rate: float = 10.0,
                 log: Callable[[str], None] = lambda msg: None,
                 switches: Callable[[], int] = involuntary_switches) -> Tuple[Dict[str, Timing], LossRounds]:
    """(a): forward + backward time of every loss in :data:`LOSS_CASES`, measured interleaved.

    Each round runs every case once (the order rotated from round to round), so that load from other
    processes falls on all cases alike; a case's ratio to plain KD (and to the reference style) is the
    median of its per-round ratios. A round during which this process was switched out for other
    processes more than ``max_switch_rate`` times per second is run again (at most as many times as
    rounds are wanted); when the spread of a ratio still exceeds ``max_spread``, up to ``retries`` more
    sets of ``repeats`` rounds are added. What was retried and the spread are logged and returned.
    """
    wav = waveforms(batch, samples, device)
    student = (wav["clean"] + 0.03 * torch.randn_like(wav["clean"])).requires_grad_()
    steps = {}
    for case in LOSS_CASES:
        loss = case.build().to(device)

        def step(loss=loss):
            loss(student, wav["teacher"], wav["clean"]).backward()
            student.grad = None

        steps[case.key] = step
    keys = list(steps)
    for _ in range(warmup):
        for key in keys:
            steps[key]()
    synchronize(device)
    quiet: List[Dict[str, float]] = []
    loaded: List[Dict[str, float]] = []
    wanted = 0
    for _ in range(1 + retries):
        wanted += repeats
        while len(quiet) < wanted and len(loaded) < wanted:
            n = len(quiet) + len(loaded)
            timing, rate = _timed_round(steps, keys[n % len(keys):] + keys[:n % len(keys)], device, switches)
            (quiet if rate <= max_switch_rate else loaded).append(timing)
        rounds = quiet if len(quiet) >= wanted else quiet + loaded
        worst = _worst_ratio_spread(rounds)
        info = LossRounds(len(rounds), len(loaded), rounds is not quiet, worst)
        log(f"{device}: KD losses: {info.describe(max_switch_rate)}")
        if worst <= max_spread:
            break
    results = {}
    for key in keys:
        median, spread = _median_spread([r[key] for r in rounds])
        ratios = {base: _median_spread([r[key] / r[base] for r in rounds]) for base in RATIO_BASES}
        results[key] = Timing(median, spread * median, ratios=ratios)
    return results, info


def top_ops(case_key: str, device: torch.device, batch: int, samples: int, n: int = 3) -> str:
    """Where a loss's forward + backward spends its time: the ``n`` ops with the most self time."""
    case = next(c for c in LOSS_CASES if c.key == case_key)
    loss = case.build().to(device)
    wav = waveforms(batch, samples, device)
    student = wav["clean"].clone().requires_grad_()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    loss(student, wav["teacher"], wav["clean"]).backward()  # warm-up outside the profile
    with torch.profiler.profile(activities=activities) as prof:
        loss(student, wav["teacher"], wav["clean"]).backward()
        synchronize(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    total = sum(getattr(e, attr) for e in events) or 1
    return ", ".join(f"`{e.key}` {100 * getattr(e, attr) / total:.0f}%" for e in events[:n])


# ------------------------------------------------------------------------------------- training steps
def parse_config(config: Path, **overrides) -> argparse.Namespace:
    """Arguments of ``dispatch.bin.enh_kd_train --config <config>``, with some replaced."""
    from dispatch.task import EnhancementKDTask

    args = EnhancementKDTask.get_parser().parse_args(["--config", str(config)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def build_model(config: Path, **overrides) -> torch.nn.Module:
    """The model ``enh_kd_train`` trains from ``config`` (KD options as overrides), random weights."""
    from dispatch.task import EnhancementKDTask

    return EnhancementKDTask.build_model(parse_config(config, **overrides))


def save_random_teacher(config: Path, exp_dir: Path) -> Path:
    """A teacher experiment dir (config.yaml + weights) with random weights, loaded as KD training does."""
    from dispatch.task import EnhancementKDTask

    args = parse_config(config)
    model = EnhancementKDTask.build_model(args)
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), exp_dir / "valid.loss.best.pth")
    return exp_dir


@dataclass(frozen=True)
class StepMode:
    key: str
    label: str
    kd_config: Optional[Path] = None  # None: the student alone
    online: bool = False
    autocast: str = "none"

    @property
    def kd(self) -> bool:
        return self.kd_config is not None


@dataclass(frozen=True)
class StepSetup:
    """A student and the training steps measured for it; ``recipe_batch``: the batch size and chunk length
    of the student config (the recipe's step) instead of the benchmark's ``--batch`` and ``--seconds``."""

    key: str
    name: str
    title: str
    student_config: Path
    modes: Tuple[StepMode, ...]
    recipe_batch: bool = False


def _cached(config: Path, what: str) -> StepMode:
    return StepMode(f"kd_{config.stem[3:]}", f"KD {what} (`{config.name}`), cached teacher outputs", config)


STEP_SETUPS = (
    StepSetup("conv_tasnet", STEP_STUDENT, f"{STEP_STUDENT} student (VoiceBank+DEMAND config)", STUDENT_CONFIGS[STEP_STUDENT], (
        StepMode("student", "student only (no KD)"),
        _cached(KD_CONF / "kd_l2.yaml", "plain L2"),
        _cached(STEP_KD_CONFIG, "DFKD + DISPatch + MSSP"),
        StepMode("kd_online", f"KD DFKD + DISPatch + MSSP, teacher (`{TEACHER_CONFIG.name}`) run online",
                 STEP_KD_CONFIG, online=True),
    )),
    StepSetup("mini", "mini recipe", f"mini recipe student (`{MINI_STUDENT_CONFIG.relative_to(REPO_ROOT)}`), the recipe's batch",
              MINI_STUDENT_CONFIG, (
                  StepMode("student", "student only (no KD)"),
                  *(_cached(MINI_KD_CONF / name, what) for name, what in MINI_KD_CONFIGS),
              ), recipe_batch=True),
)
STEP_MODES = tuple(mode for setup in STEP_SETUPS for mode in setup.modes)
CUDA_STEP_MODES = (StepMode("kd_online_bf16", "KD DFKD + DISPatch + MSSP, teacher online under bf16 autocast",
                            STEP_KD_CONFIG, online=True, autocast="bf16"),)


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Dict[str, torch.Tensor],
                  grad_clip: float) -> None:
    """One step as espnet2's trainer takes it: forward, backward, gradient clipping, optimizer step."""
    loss, _, _ = model(**batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def step_size(setup: StepSetup, batch: int, samples: int) -> Tuple[int, int]:
    """(utterances, samples) of one training step of ``setup``."""
    if not setup.recipe_batch:
        return batch, samples
    conf = yaml.safe_load(setup.student_config.read_text())
    return int(conf["batch_size"]), int(conf["chunk_length"])


def bench_steps(device: torch.device, setup: StepSetup, batch: int, samples: int, warmup: int, repeats: int,
                modes: Sequence[StepMode]) -> Dict[str, Timing]:
    """(b), (c): time and peak memory of one training step of ``setup``'s student per mode.

    Every mode first takes its ``warmup`` steps (one-time allocations and initialisation fall there, not
    on the first mode measured). Peak memory: one more step of each mode alone. Time: ``repeats`` rounds
    in which every mode takes one step (the order rotated), so that load from other processes falls on
    all alike; ``Timing.ratios["student"]`` is the median of the per-round ratios to the student step.
    """
    wav = waveforms(*step_size(setup, batch, samples), device)
    # The chunk iterator's batches: equal-length chunks, no *_lengths.
    data = {"speech_mix": wav["noisy"], "speech_ref1": wav["clean"]}
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = save_random_teacher(TEACHER_CONFIG, Path(tmp) / "teacher") if any(m.online for m in modes) else None
        steps = {mode.key: _step(setup, mode, data, wav["teacher"], teacher_dir, device) for mode in modes}
    for step in steps.values():
        for _ in range(warmup):
            step()
    peaks = {}
    for key, step in steps.items():
        with peak_memory(device) as mem:
            step()
            synchronize(device)
        peaks[key] = mem["peak_bytes"]
    times: Dict[str, List[float]] = {key: [] for key in steps}
    keys = list(steps)
    for r in range(repeats):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            start = time.perf_counter()
            steps[key]()
            synchronize(device)
            times[key].append(time.perf_counter() - start)
    results = {}
    for key in keys:
        median, spread = _median_spread(times[key])
        ratio = _median_spread([a / b for a, b in zip(times[key], times["student"])])
        results[key] = Timing(median, spread * median, peaks[key], ratios={"student": ratio})
    return results


def _step(setup: StepSetup, mode: StepMode, data: Dict[str, torch.Tensor], teacher_wav: torch.Tensor,
          teacher_dir: Optional[Path], device: torch.device) -> Callable[[], None]:
    """One training step of ``setup``'s student in ``mode``, as a call."""
    from dispatch.task import EnhancementKDTask

    overrides = {}
    if mode.kd:
        kd_conf = yaml.safe_load(mode.kd_config.read_text())
        overrides = dict(kd_loss=kd_conf["kd_loss"], kd_loss_conf=kd_conf.get("kd_loss_conf") or {},
                         kd_weight=kd_conf.get("kd_weight", 1.0), teacher_autocast=mode.autocast,
                         teacher_model=str(teacher_dir) if mode.online else None)
    args = parse_config(setup.student_config, **overrides)
    model = EnhancementKDTask.build_model(args).to(device).train()
    optimizer = EnhancementKDTask.build_optimizers(args, model)[0]
    step_data = dict(data, teacher_ref1=teacher_wav) if mode.kd and not mode.online else data
    return partial(training_step, model, optimizer, step_data, args.grad_clip)


# ------------------------------------------------------------------------------------------- inference
def bench_rtf(samples: int, warmup: int, repeats: int) -> Dict[str, Tuple[float, Timing]]:
    """(d): real-time factor of each model's inference on one CPU thread: {name: (params in M, timing)}."""
    from dispatch.teacher import teacher_enhance

    device = torch.device("cpu")
    mix = waveforms(1, samples, device)["noisy"]
    lengths = torch.tensor([samples])
    results = {}
    with num_threads(1):
        for name, config in {**STUDENT_CONFIGS, "Conv-TasNet teacher (reference)": TEACHER_CONFIG}.items():
            model = build_model(config).eval()
            params = sum(p.numel() for p in model.parameters()) / 1e6
            with torch.inference_mode():
                results[name] = (params, measure(partial(teacher_enhance, model, mix, lengths), device, warmup, repeats))
    return results


# --------------------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """A ratio measured in this run and its limit (pass when ``value <= limit``)."""

    name: str
    value: float
    limit: float
    why: Callable[[], str] = field(repr=False, default=lambda: "")
    percent: bool = False  # a share, shown in percent, rather than a ratio

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    def show(self, x: float) -> str:
        return f"{100 * x:.1f}%" if self.percent else f"{x:.2f}x"

    def verdict(self) -> str:
        if self.passed:
            return "pass"
        return f"**miss** by {self.value / self.limit:.2f}x"


def targets(device: torch.device, losses: Dict[str, Timing], steps: Optional[Dict[str, Dict[str, Timing]]],
            batch: int, samples: int) -> List[Target]:
    """The issue's targets (#16), as ratios of timings of this run on ``device`` (interleaved loss ratios)."""
    def loss_why(key: str) -> Callable[[], str]:
        return lambda: f"time goes to {top_ops(key, device, batch, samples)}"

    def ratio(key: str, base: str = "plain_l2") -> float:
        return losses[key].ratios[base][0]

    goals = [
        Target("L2 + DISPatch loss <= 0.8x plain L2 KD", ratio("l2_dispatch"), 0.8, loss_why("l2_dispatch")),
        Target("L2 + DISPatch at least 1.6x the reference-style speed (time <= 0.625x)",
               ratio("l2_dispatch", "reference"), 1 / 1.6, loss_why("l2_dispatch")),
        Target("L2 + DISPatch + MSSP loss <= 1.2x plain L2 KD", ratio("l2_dispatch_mssp"), 1.2,
               loss_why("l2_dispatch_mssp")),
        Target("DFKD + DISPatch + MSSP loss <= 2.0x plain L2 KD", ratio("dfkd_dispatch_mssp"), 2.0,
               loss_why("dfkd_dispatch_mssp")),
    ]
    if steps:
        goals += step_targets(steps)
    return goals


def step_targets(steps: Dict[str, Dict[str, Timing]]) -> List[Target]:
    """The training-step targets of #16: the mini recipe's KD step with cached teacher outputs (the paper's
    best KD) against its student-only step, and the KD step's peak memory against plain L2 KD's."""
    goals = []
    dfkd, plain = _cached(STEP_KD_CONFIG, "").key, _cached(KD_CONF / "kd_l2.yaml", "").key
    mini = steps.get("mini")
    if mini:
        extra = mini[dfkd].median - mini["student"].median
        goals.append(Target(
            "mini recipe: KD step (DFKD + DISPatch + MSSP, cached teacher) <= 1.25x student step",
            mini[dfkd].ratios["student"][0], 1.25,
            lambda: f"the KD step costs {1e3 * extra:.1f} ms more than the student step"))
    for setup in STEP_SETUPS:
        t = steps.get(setup.key)
        if t and t[dfkd].peak_bytes is not None and t[plain].peak_bytes:
            goals.append(Target(
                f"{setup.name}: peak memory of the DFKD + DISPatch + MSSP KD step <= 1.10x plain L2 KD's",
                t[dfkd].peak_bytes / t[plain].peak_bytes, 1.10,
                lambda t=t: f"{fmt_mib(t[dfkd].peak_bytes)} against {fmt_mib(t[plain].peak_bytes)}"))
    return goals


# --------------------------------------------------------------------------------------------- report
def machine_lines(devices: Sequence[torch.device], threads: int) -> List[str]:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPU(s), "
             f"load average {os.getloadavg()[0]:.2f} at start",
             f"- torch {torch.__version__}, {threads} thread(s)"]
    for device in devices:
        if device.type == "cuda":
            lines.append(f"- GPU: {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}")
    return lines


def fmt_time(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{1e3 * seconds:.1f} ms"


def fmt_mib(n: Optional[int]) -> str:
    return "n/a" if n is None else f"{n / 2 ** 20:.0f} MiB"


def device_section(device: torch.device, batch: int, seconds: float, losses: Dict[str, Timing],
                   steps: Optional[Dict[str, Dict[str, Timing]]], goals: List[Target], rounds: str = "") -> List[str]:
    out = [f"## {device.type.upper()}", "",
           f"### a) KD losses, forward + backward, batch of {batch} x {seconds:g} s at {FS // 1000} kHz", "",
           "Measured interleaved (every loss once per round); the ratios are medians of per-round ratios, "
           "their spread (interquartile range / median) in brackets." + (f" Rounds: {rounds}." if rounds else ""), "",
           "| loss | median | spread | x plain L2 KD | x reference-style |", "|---|---:|---:|---:|---:|"]
    for case in LOSS_CASES:
        t = losses[case.key]
        (plain, plain_spread), (ref, ref_spread) = t.ratios["plain_l2"], t.ratios["reference"]
        out.append(f"| {case.label} | {fmt_time(t.median)} | {100 * t.spread:.0f}% | "
                   f"{plain:.2f} ({100 * plain_spread:.0f}%) | {ref:.2f} ({100 * ref_spread:.0f}%) |")
    if not steps:
        out += ["", "### Targets", "", "| target | measured | limit | result |", "|---|---:|---:|---|"]
        out += [f"| {g.name} | {g.show(g.value)} | {g.show(g.limit)} | {g.verdict()} |" for g in goals]
        return out + [""]
    for setup in STEP_SETUPS:
        out += step_table(setup, steps[setup.key], losses, batch, seconds, modes_for(setup, device))
    out += ["", "### Targets", "", "| target | measured | limit | result |", "|---|---:|---:|---|"]
    for goal in goals:
        out.append(f"| {goal.name} | {goal.show(goal.value)} | {goal.show(goal.limit)} | {goal.verdict()} |")
    return out + [""]


# KD loss case timed in (a) for a KD config, for the "KD loss share" of a step at the benchmark's size
LOSS_CASE_OF_CONFIG = {"kd_l2.yaml": "l2", "kd_dispatch_l2.yaml": "l2_dispatch",
                       "kd_dfkd_dispatch_mssp.yaml": "dfkd_dispatch_mssp"}


def step_table(setup: StepSetup, steps: Dict[str, Timing], losses: Dict[str, Timing], batch: int, seconds: float,
               modes: Sequence[StepMode]) -> List[str]:
    """Markdown rows of one setup's training steps."""
    n, samples = step_size(setup, batch, int(seconds * FS))
    student = steps["student"]
    out = ["", f"### b, c) training step of the {setup.title}: batch of {n} x {samples / FS:g} s", "",
           "Time: every step once per round; x student step = median of the per-round ratios (their spread "
           "in brackets). Peak memory: each step alone.", "",
           "| step | median | spread | x student step | KD loss share | peak memory added | x student |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for mode in modes:
        t = steps[mode.key]
        case = LOSS_CASE_OF_CONFIG.get(mode.kd_config.name) if mode.kd and not setup.recipe_batch else None
        share = f"{100 * losses[case].median / t.median:.1f}%" if case else "-"
        mem_ratio = (f"{t.peak_bytes / student.peak_bytes:.2f}"
                     if t.peak_bytes is not None and student.peak_bytes else "n/a")
        ratio, ratio_spread = t.ratios["student"]
        out.append(f"| {mode.label} | {fmt_time(t.median)} | {100 * t.spread:.0f}% | "
                   f"{ratio:.2f} ({100 * ratio_spread:.0f}%) | {share} | {fmt_mib(t.peak_bytes)} | {mem_ratio} |")
    return out


def modes_for(setup: StepSetup, device: torch.device) -> Tuple[StepMode, ...]:
    """The steps measured for ``setup`` on ``device`` (on CUDA, the Conv-TasNet setup adds a bf16 teacher)."""
    extra = CUDA_STEP_MODES if device.type == "cuda" and not setup.recipe_batch else ()
    return setup.modes + extra


def rtf_section(rtf: Dict[str, Tuple[float, Timing]], seconds: float) -> List[str]:
    out = [f"## d) Inference real-time factor, one CPU thread, one {seconds:g} s utterance", "",
           "| model | params | time | RTF |", "|---|---:|---:|---:|"]
    for name, (params, t) in rtf.items():
        out.append(f"| {name} | {params:.2f} M | {fmt_time(t.median)} | {t.median / seconds:.3f} |")
    return out + [""]


def closing_note(goals_by_device: Dict[str, List[Target]]) -> List[str]:
    missed = [(dev, g) for dev, goals in goals_by_device.items() for g in goals if not g.passed]
    if not missed:
        return ["## Note", "", "Every target is met on every device measured.", ""]
    out = ["## Note on missed targets", ""]
    for dev, goal in missed:
        out.append(f"- {dev}: {goal.name}: {goal.show(goal.value)}; {goal.why()}.")
    return out + [""]


@dataclass
class BenchmarkOptions:
    devices: Sequence[str]
    threads: int
    batch: int
    seconds: float
    warmup: int
    repeats: int
    command: str = ""
    sections: Sequence[str] = ("losses", "steps", "rtf")
    max_spread: float = 0.2
    retries: int = 2
    max_switch_rate: float = 10.0


def run_benchmark(opts: BenchmarkOptions, log: Callable[[str], None] = print) -> str:
    """Run every measurement and return the markdown report."""
    torch.set_num_threads(opts.threads)
    samples = int(opts.seconds * FS)
    devices = [torch.device(d) for d in opts.devices]
    header = ["# Benchmark: KD losses, KD training steps and inference", ""]
    header += machine_lines(devices, opts.threads)
    header += [f"- command: `{opts.command}`" if opts.command else "- command: (library call)",
               f"- sizes: batch {opts.batch} x {opts.seconds:g} s at {FS} Hz; median of {opts.repeats} run(s) "
               f"after {opts.warmup} warm-up run(s); spread = interquartile range / median",
               "- peak memory added: CPU = rise of the process's peak resident set during the step, "
               "CUDA = torch.cuda.max_memory_allocated above what was allocated before", ""]
    body: List[str] = []
    goals_by_device: Dict[str, List[Target]] = {}
    for device in devices:
        log(f"{device}: KD losses")
        losses, rounds = bench_losses(device, opts.batch, samples, opts.warmup, opts.repeats, opts.max_spread,
                                      opts.retries, opts.max_switch_rate, log)
        steps = None
        if "steps" in opts.sections:
            steps = {}
            for setup in STEP_SETUPS:
                log(f"{device}: training steps of the {setup.title}")
                steps[setup.key] = bench_steps(device, setup, opts.batch, samples, opts.warmup, opts.repeats,
                                               modes_for(setup, device))
        goals = targets(device, losses, steps, opts.batch, samples)
        goals_by_device[device.type.upper()] = goals
        body += device_section(device, opts.batch, opts.seconds, losses, steps, goals,
                               rounds.describe(opts.max_switch_rate))
    if "rtf" in opts.sections:
        log("cpu: inference real-time factor")
        body += rtf_section(bench_rtf(samples, opts.warmup, opts.repeats), opts.seconds)
    return "\n".join(header + body + closing_note(goals_by_device))


def default_devices() -> List[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
