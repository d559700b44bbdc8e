"""Noise generators and SNR mixing for synthetic enhancement corpora.

Every generator is pure: it draws only from the ``numpy.random.Generator`` it is given, so a seed
reproduces the noise exactly. Generators return float64 arrays of shape (num_samples,) with unit RMS;
the level is set afterwards by :func:`mix_at_snr`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np


def rms(x: np.ndarray) -> float:
    """Root mean square of ``x`` (any shape)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def audible_rms(x: np.ndarray, what: str) -> float:
    """RMS of ``x``; raise ValueError naming ``what`` if ``x`` is empty, silent or not finite."""
    level = rms(x) if np.size(x) else 0.0
    if not np.isfinite(level) or level == 0.0:
        raise ValueError(f"{what} is empty, silent (all zeros) or not finite (RMS {level})")
    return level


def normalize_rms(x: np.ndarray, what: str = "signal") -> np.ndarray:
    """Scale ``x`` to unit RMS; raise ValueError (naming ``what``) if it is silent."""
    return x / audible_rms(x, what)


def white(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise: flat spectrum. Returns (num_samples,), unit RMS."""
    return normalize_rms(rng.standard_normal(num_samples), "white noise")


def colored(
    num_samples: int, rng: np.random.Generator, exponent: float, fs: int, f_min: float = 20.0
) -> np.ndarray:
    """Gaussian noise with power spectral density proportional to ``1 / f**exponent``.

    White noise is shaped in the frequency domain. Below ``f_min`` (Hz) the spectrum is held flat, and
    DC is removed, so that brown noise is not all sub-audio drift.

    Args:
        num_samples: output length.
        rng: random source.
        exponent: 0 white, 1 pink (-3 dB/octave), 2 brown (-6 dB/octave).
        fs: sampling rate in Hz.
        f_min: corner frequency in Hz.

    Returns:
        (num_samples,) unit-RMS noise.
    """
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.fft.rfftfreq(num_samples, d=1.0 / fs)
    gain = np.maximum(freqs, f_min) ** (-exponent / 2.0)
    gain[0] = 0.0
    return normalize_rms(np.fft.irfft(spectrum * gain, n=num_samples), f"1/f^{exponent} noise")


def pink(num_samples: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    """Pink (1/f) noise: -3 dB per octave. Returns (num_samples,), unit RMS."""
    return colored(num_samples, rng, 1.0, fs)


def brown(num_samples: int, rng: np.random.Generator, fs: int) -> np.ndarray:
    """Brown (1/f^2) noise: -6 dB per octave. Returns (num_samples,), unit RMS."""
    return colored(num_samples, rng, 2.0, fs)


def babble(sources: Sequence[np.ndarray], num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Babble: a sum of other talkers' utterances.

    Each source is normalized, rolled by a random offset and repeated to ``num_samples`` so every talker
    covers the whole output; per-talker gains vary by up to 6 dB so no single talker is constant.

    Args:
        sources: 1-D waveforms (any lengths), none silent; the caller keeps the target's sentence out.
        num_samples: output length.
        rng: random source.

    Returns:
        (num_samples,) unit-RMS babble.
    """
    if not sources:
        raise ValueError("babble needs at least one source utterance")
    out = np.zeros(num_samples)
    for k, source in enumerate(sources):
        talker = normalize_rms(np.asarray(source, dtype=np.float64), f"babble source {k}")
        talker = np.resize(np.roll(talker, rng.integers(len(talker))), num_samples)
        out += talker * 10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)
    return normalize_rms(out, "babble")


def hum(
    num_samples: int,
    rng: np.random.Generator,
    fs: int,
    base_hz: Optional[float] = None,
    max_harmonics: int = 8,
) -> np.ndarray:
    """Mains hum: a 50 or 60 Hz fundamental with harmonics of random, decaying amplitude and phase.

    Args:
        num_samples: output length.
        rng: random source.
        fs: sampling rate in Hz.
        base_hz: mains frequency; drawn from {50, 60} when None.
        max_harmonics: highest harmonic number (harmonics at or above fs/2 are dropped).

    Returns:
        (num_samples,) unit-RMS hum.
    """
    base = float(rng.choice([50.0, 60.0])) if base_hz is None else float(base_hz)
    t = np.arange(num_samples) / fs
    out = np.zeros(num_samples)
    for k in range(1, max_harmonics + 1):
        if k * base >= fs / 2:
            break
        amplitude = rng.uniform(0.3, 1.0) / k
        out += amplitude * np.sin(2 * np.pi * k * base * t + rng.uniform(0, 2 * np.pi))
    return normalize_rms(out, "hum")


def clicks(
    num_samples: int,
    rng: np.random.Generator,
    fs: int,
    rate_hz: Tuple[float, float] = (2.0, 20.0),
    click_ms: float = 4.0,
) -> np.ndarray:
    """Clicks: impulses at Poisson times, each a short exponentially decaying noise burst.

    Args:
        num_samples: output length.
        rng: random source.
        fs: sampling rate in Hz.
        rate_hz: range of the mean click rate (clicks per second), drawn uniformly.
        click_ms: decay time constant of one click in milliseconds.

    Returns:
        (num_samples,) unit-RMS click train (at least one click).
    """
    rate = rng.uniform(*rate_hz)
    count = max(1, rng.poisson(rate * num_samples / fs))
    length = max(1, int(5 * click_ms * fs / 1000))
    decay = np.exp(-np.arange(length) / (click_ms * fs / 1000))
    out = np.zeros(num_samples + length)
    for start in rng.integers(num_samples, size=count):
        amplitude = 10.0 ** rng.uniform(-1.0, 0.0)
        out[start : start + length] += amplitude * rng.standard_normal(length) * decay
    return normalize_rms(out[:num_samples], "clicks")


def amplitude_modulate(
    noise: np.ndarray,
    rng: np.random.Generator,
    fs: int,
    rate_hz: Tuple[float, float] = (0.5, 4.0),
    floor: float = 0.05,
) -> np.ndarray:
    """Make noise nonstationary with a smooth random envelope (bursts and near-pauses).

    The envelope interpolates uniform random values placed at a random rate, is squared to make pauses
    and bursts more pronounced, and never falls below ``floor``.

    Args:
        noise: (num_samples,) waveform.
        rng: random source.
        fs: sampling rate in Hz.
        rate_hz: range of the envelope rate (control points per second), drawn uniformly.
        floor: minimum envelope value in (0, 1].

    Returns:
        (num_samples,) unit-RMS modulated noise.
    """
    num_samples = len(noise)
    num_points = max(2, int(np.ceil(rng.uniform(*rate_hz) * num_samples / fs)) + 1)
    points = rng.uniform(0.0, 1.0, num_points) ** 2
    envelope = np.interp(np.linspace(0, num_points - 1, num_samples), np.arange(num_points), points)
    return normalize_rms(noise * np.maximum(envelope, floor), "modulated noise")


def music(
    num_samples: int,
    rng: np.random.Generator,
    fs: int,
    voices: Tuple[int, int] = (1, 3),
    note_s: Tuple[float, float] = (0.08, 0.5),
) -> np.ndarray:
    """Music-like tonal sound: melodies of harmonic notes, one to three at once.

    Each voice plays notes of random length from a pentatonic scale on a random key (MIDI 45..84),
    each note a harmonic tone (decaying random harmonic amplitudes) under an attack-decay envelope,
    so the spectrum holds moving harmonic lines that overlap speech's pitch and formant range.

    Args:
        num_samples: output length.
        rng: random source.
        fs: sampling rate in Hz.
        voices: range of the number of simultaneous melodies.
        note_s: range of note durations in seconds.

    Returns:
        (num_samples,) unit-RMS music-like signal.
    """
    scale = np.array([0, 2, 4, 7, 9])
    out = np.zeros(num_samples)
    for _ in range(int(rng.integers(voices[0], voices[1] + 1))):
        key = int(rng.integers(45, 70))
        num_harmonics = int(rng.integers(1, 9))
        amplitudes = rng.uniform(0.2, 1.0, num_harmonics) / np.arange(1, num_harmonics + 1)
        start = 0
        while start < num_samples:
            length = min(num_samples - start, max(1, int(rng.uniform(*note_s) * fs)))
            midi = key + scale[int(rng.integers(len(scale)))] + 12 * int(rng.integers(0, 2))
            f0 = 440.0 * 2.0 ** ((midi - 69) / 12.0)
            t = np.arange(length) / fs
            envelope = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.0, 8.0))
            note = np.zeros(length)
            for k, amplitude in enumerate(amplitudes, start=1):
                if k * f0 < fs / 2:
                    note += amplitude * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
            out[start : start + length] += note * envelope * rng.uniform(0.3, 1.0)
            start += length
    return normalize_rms(out, "music")


def tones(
    num_samples: int,
    rng: np.random.Generator,
    fs: int,
    freq_hz: Tuple[float, float] = (300.0, 3000.0),
) -> np.ndarray:
    """Alarm-like tones: beeps (on/off tone bursts) or a siren (a tone sweeping up and down).

    Args:
        num_samples: output length.
        rng: random source.
        fs: sampling rate in Hz.
        freq_hz: range of the tone frequency in Hz.

    Returns:
        (num_samples,) unit-RMS tonal signal.
    """
    t = np.arange(num_samples) / fs
    low, high = np.sort(rng.uniform(*freq_hz, size=2))
    if rng.random() < 0.5:  # beeps: a fixed tone, gated on and off at a random rate and duty cycle
        gate = (t * rng.uniform(1.0, 6.0) + rng.random()) % 1.0 < rng.uniform(0.2, 0.7)
        out = np.sin(2 * np.pi * high * t + rng.uniform(0, 2 * np.pi)) * gate
        out[0] = out[0] or 1e-3  # never silent, even if the gate starts closed on a very short input
    else:  # siren: the frequency swings sinusoidally between low and high
        sweep = low + (high - low) * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(0.2, 2.0) * t))
        out = np.sin(2 * np.pi * np.cumsum(sweep) / fs + rng.uniform(0, 2 * np.pi))
    return normalize_rms(out, "tones")


def speech_shaped(
    num_samples: int,
    rng: np.random.Generator,
    fs: int,
    rate_hz: Tuple[float, float] = (2.0, 6.0),
) -> np.ndarray:
    """Speech-shaped noise under a syllable-rate envelope: speech's long-term spectrum, no words.

    Gaussian noise is shaped to a speech-like long-term spectrum (flat to a random corner of
    300..800 Hz, then falling about 9 dB per octave, with a random formant-like peak) and modulated
    by :func:`amplitude_modulate` at syllabic rates.

    Returns:
        (num_samples,) unit-RMS speech-shaped, modulated noise.
    """
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.maximum(np.fft.rfftfreq(num_samples, d=1.0 / fs), 1.0)
    corner = rng.uniform(300.0, 800.0)
    gain = (1.0 + (freqs / corner) ** 2) ** -0.75
    peak = rng.uniform(500.0, 3000.0)
    gain *= 1.0 + 2.0 * np.exp(-0.5 * (np.log2(freqs / peak) / 0.3) ** 2)
    gain[freqs < 60.0] = 0.0
    shaped = normalize_rms(np.fft.irfft(spectrum * gain, n=num_samples), "speech-shaped noise")
    return amplitude_modulate(shaped, rng, fs, rate_hz=rate_hz, floor=0.02)


def tilt(x: np.ndarray, exponent: float, fs: int, f_ref: float = 50.0) -> np.ndarray:
    """Colour ``x`` by a spectral tilt: power scaled by ``(f / f_ref) ** -exponent`` above ``f_ref`` Hz.

    Environmental noise (traffic, rooms, machines, distant talkers) carries most of its power at low
    frequencies; a positive exponent moves a generated noise toward that (1: -3 dB per octave, 2: -6).
    Below ``f_ref`` the gain is held flat.

    Returns:
        (num_samples,) unit-RMS tilted signal.
    """
    spectrum = np.fft.rfft(np.asarray(x, dtype=np.float64))
    freqs = np.maximum(np.fft.rfftfreq(len(x), d=1.0 / fs), f_ref)
    return normalize_rms(np.fft.irfft(spectrum * (freqs / f_ref) ** (-exponent / 2.0), n=len(x)), "tilted noise")


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> Tuple[np.ndarray, np.ndarray]:
    """Add noise to speech at a given signal-to-noise ratio.

    The SNR is measured over the whole signals: ``10 log10(sum(speech**2) / sum(scaled_noise**2))``.

    Args:
        speech: (num_samples,) clean waveform, any linear unit; not silent.
        noise: (num_samples,) noise waveform, same length; not silent.
        snr_db: target SNR in dB.

    Returns:
        noisy: (num_samples,) ``speech + scaled_noise``, in the unit of ``speech``.
        scaled_noise: (num_samples,) ``noise`` scaled to reach ``snr_db``.
    """
    if speech.shape != noise.shape:
        raise ValueError(f"speech {speech.shape} and noise {noise.shape} must have the same shape")
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    gain = audible_rms(speech, "speech") / audible_rms(noise, "noise") * 10.0 ** (-snr_db / 20.0)
    scaled_noise = noise * gain
    return speech + scaled_noise, scaled_noise
