"""Loading a frozen espnet2 enhancement teacher and running it like SeparateSpeech does."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Tuple

import torch
import yaml

# Preference order for the weights of an experiment directory (espnet2 trainer's file names).
_EXP_MODEL_GLOBS = ("valid.*.ave.pth", "valid.*.ave_*best.pth", "valid.*.best.pth", "*epoch.pth", "latest.pth")


class TeacherError(ValueError):
    """A teacher that cannot be found, resolved or used with this student."""


def _pick_model_file(exp_dir: Path) -> Path:
    for pattern in _EXP_MODEL_GLOBS:
        # Numeric order, so that 10epoch.pth comes after 9epoch.pth.
        found = sorted(exp_dir.glob(pattern), key=lambda p: (len(p.name), p.name))
        if found:
            return found[-1]
    raise TeacherError(f"teacher_model={exp_dir}: no weights found (looked for {', '.join(_EXP_MODEL_GLOBS)})")


def resolve_teacher(
    teacher_model: str, teacher_config: Optional[str] = None, teacher_model_file: Optional[str] = None
) -> Tuple[Path, Path]:
    """Find the config.yaml and weights of a teacher.

    Args:
        teacher_model: an espnet2 enhancement experiment dir (config.yaml + *.pth), a packed model zip
            (``espnet2.bin.pack enh``), or an espnet_model_zoo / Hugging Face model name.
        teacher_config, teacher_model_file: explicit paths that override what is found.

    Returns:
        (config.yaml, model file).
    """
    path = Path(teacher_model)
    if path.is_dir():
        config, model_file = path / "config.yaml", None
        if not teacher_model_file:
            model_file = _pick_model_file(path)
    elif path.is_file():
        config, model_file = _unpack_zoo(str(path.resolve()), teacher_model)
    elif path.suffix == ".zip" or teacher_model.startswith((".", "/")):
        raise TeacherError(f"teacher_model={teacher_model}: no such experiment dir or packed zip")
    else:
        config, model_file = _unpack_zoo(teacher_model, teacher_model)
    config = Path(teacher_config) if teacher_config else config
    model_file = Path(teacher_model_file) if teacher_model_file else model_file
    for what, p in (("config", config), ("model file", model_file)):
        if not p.is_file():
            raise TeacherError(f"teacher_model={teacher_model}: {what} {p} does not exist")
    return config, model_file


ZOO_CACHE_ENV = "DISPATCH_ZOO_CACHEDIR"  # espnet_model_zoo's cache dir (its default: inside the package)


def _unpack_zoo(name: str, option: str) -> Tuple[Path, Path]:
    from espnet_model_zoo.downloader import ModelDownloader

    try:
        info = ModelDownloader(os.environ.get(ZOO_CACHE_ENV) or None).download_and_unpack(name, quiet=True)
    except Exception as e:  # the zoo raises many kinds; offline is the common one
        raise TeacherError(
            f"teacher_model={option}: not an experiment dir or zip here, and espnet_model_zoo cannot resolve "
            f"it ({type(e).__name__}: {e}); offline, give an experiment dir or a packed zip"
        ) from e
    try:
        return Path(info["train_config"]), Path(info["model_file"])
    except KeyError as e:
        raise TeacherError(f"teacher_model={option}: the unpacked model has no {e} (keys: {sorted(info)})") from e


def teacher_sample_rate(config: dict) -> Optional[int]:
    """Sampling rate recorded in an espnet2 enhancement config, if any (``fs`` or STFT ``default_fs``)."""
    if config.get("fs"):
        return int(config["fs"])
    fs = (config.get("encoder_conf") or {}).get("default_fs")
    return int(fs) if fs else None


def check_teacher_fits(
    teacher: torch.nn.Module,
    teacher_conf: dict,
    teacher_config: Path,
    student: torch.nn.Module,
    fs: Optional[int],
    student_config: Optional[str],
) -> None:
    """Stop before training when teacher and student disagree on sampling rate, or one has several outputs.

    Args:
        teacher, teacher_conf, teacher_config: the loaded teacher, its config dict and config.yaml path.
        student: the student model (``num_spk`` outputs).
        fs: the student's sampling rate (``--fs`` or its STFT ``default_fs``), None if unknown.
        student_config: the student's ``--config`` file, None if given on the command line only.

    Raises:
        TeacherError: naming both configs and both values.
    """
    student_config = student_config or "command line"
    teacher_fs = teacher_sample_rate(teacher_conf)
    if fs and teacher_fs and teacher_fs != fs:
        raise TeacherError(
            f"teacher {teacher_config} runs at fs={teacher_fs} but the student config has fs={fs} "
            f"({student_config}): they must agree"
        )
    for model, who in ((teacher, f"the teacher {teacher_config}"), (student, f"the student config ({student_config})")):
        why = single_output_error(model, who)
        if why:
            raise TeacherError(why)


def build_teacher(config: Path, model_file: Path, device: str = "cpu") -> Tuple[torch.nn.Module, dict]:
    """Build the teacher with espnet2's EnhancementTask, frozen and in eval mode, without checks
    (:func:`check_teacher_fits` compares it with a student, :func:`load_teacher` checks it alone).

    Returns:
        (model, its config as a dict).
    """
    from espnet2.tasks.enh import EnhancementTask

    try:
        with open(config, encoding="utf-8") as f:
            conf = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise TeacherError(f"the teacher config {config} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(conf, dict):
        raise TeacherError(f"the teacher config {config} holds no mapping of options")
    try:
        model, _ = EnhancementTask.build_model_from_file(str(config), str(model_file), device)
    except Exception as e:  # torch.load and espnet2 raise many kinds; each is named with its file here
        raise _load_error(config, model_file, e) from e
    model.eval()
    model.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    logging.info(f"Teacher: {model_file} ({n_params / 1e6:.2f}M parameters, frozen)")
    return model, conf


def _load_error(config: Path, model_file: Path, error: Exception) -> TeacherError:
    """Which of the two files made building the teacher fail, as a TeacherError naming it."""
    try:
        torch.load(model_file, map_location="cpu", weights_only=False)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        size = Path(model_file).stat().st_size if Path(model_file).is_file() else 0
        return TeacherError(
            f"the weights {model_file} cannot be loaded ({type(e).__name__}: {reason}; {size} bytes): "
            "a truncated or partly copied file, or not a torch checkpoint? Copy it again or retrain the teacher"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return TeacherError(
        f"the teacher {config} cannot be built with the weights {model_file} ({type(error).__name__}: {first})"
    )


def load_teacher(config: Path, model_file: Path, device: str = "cpu") -> Tuple[torch.nn.Module, dict]:
    """:func:`build_teacher`, checked to have the single output that KD uses.

    Returns:
        (model, its config as a dict).
    """
    model, conf = build_teacher(config, model_file, device)
    why = single_output_error(model, f"the teacher {config}")
    if why:
        raise TeacherError(why)
    return model, conf


@torch.no_grad()
def teacher_enhance(teacher: torch.nn.Module, speech_mix: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Enhanced waveform of the teacher, with the same input normalisation as SeparateSpeech.

    Args:
        speech_mix: (batch, samples) noisy input.
        lengths: (batch,) valid samples.

    Returns:
        (batch, samples) enhanced speech, cut or zero-padded to the input length.
    """
    mix = speech_mix
    scale = None
    if getattr(teacher, "normalize_variance", False) or getattr(teacher, "normalize_variance_per_ch", False):
        scale = torch.std(mix, dim=1, keepdim=True)
        mix = mix / scale
    speech_pre, *_ = teacher.forward_enhance(mix, lengths, {})
    out = speech_pre[0]
    if scale is not None:
        out = out * scale
    return fit_length(out, speech_mix.shape[1], "the teacher output")


# Samples by which a model's output may differ in length from what it is compared with (decoders framing
# the signal differently); more is an error rather than a silent cut.
MAX_LENGTH_MISMATCH = 1024


def fit_length(x: torch.Tensor, n: int, what: str) -> torch.Tensor:
    """Cut or zero-pad (batch, samples) to ``n`` samples; raises ValueError naming ``what`` when it differs
    by more than MAX_LENGTH_MISMATCH samples."""
    if abs(x.shape[-1] - n) > MAX_LENGTH_MISMATCH:
        raise ValueError(f"{what} has {x.shape[-1]} samples where {n} are expected")
    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def single_output_error(model: torch.nn.Module, who: str) -> Optional[str]:
    """Why ``model`` cannot take part in KD (several outputs: num_spk > 1), or None. The one rule on the
    number of outputs, for teachers and students alike."""
    num_spk = getattr(model, "num_spk", 1)
    return None if num_spk == 1 else f"KD needs single-output models, but {who} has num_spk={num_spk}"
