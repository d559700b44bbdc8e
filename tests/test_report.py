"""Listening page (dispatch.report, python -m dispatch.bin.make_report), checked in headless Chromium.

A small experiment tree is generated: a test set of 5 utterances, a teacher (flac output), a baseline
(float wav output: converted for browsers), a plain-KD and a DFKD+DISPatch student (16-bit wav: linked),
score files with known per-utterance gains and espnet2-style training logs.
"""
import json
import math
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List

import matplotlib.pyplot as plt
import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import FS, write_data_dir
from PIL import Image

from dispatch.bin.make_report import main as make_report
from dispatch.exptree import read_grid_differences
from dispatch.report.choose import choose_utterances
from dispatch.report.page import grid_pictures, render_page

UTTS = [f"test_{i:03d}" for i in range(5)]
BASELINE_PESQ = 2.0
DISPATCH_GAINS = [0.3, -0.2, 0.1, 0.0, 0.5]  # best test_004, median test_002, worst test_001
FIXED = "test_002"  # also the median: shown once, with both reasons
OUTPUT_FORMAT = {  # model -> (extension, soundfile subtype) of its enhanced files
    "teacher": ("flac", "PCM_16"),
    "baseline": ("wav", "FLOAT"),
    "kd_l2": ("wav", "PCM_16"),
    "kd_dispatch": ("wav", "PCM_16"),
}
KD_CONFIGS = {
    "kd_l2": {"kd_loss": "dispatch", "kd_loss_conf": {"distance": "mag_l2", "selection": "all"}},
    "kd_dispatch": {"kd_loss": "dfkd", "kd_loss_conf": {"bands": [[10, 1], [40, 1]], "topk": 0.8, "selection": "topk"}},
}
LOG_LINE = (
    "[vm] 2026-11-25 17:20:{sec:02d},530 (trainer:394) INFO: {epoch}epoch results: [train] iter_time=0.003, "
    "si_snr_loss={loss:.3f}, loss={loss:.3f}, task_loss={loss:.3f}{kd}, train_time=0.154, time=3.55 seconds, "
    "total_count=23, [valid] si_snr_loss={loss:.3f}, loss={loss:.3f}, task_loss={loss:.3f}{kd}, "
    "time=1.73 seconds, total_count=18, [att_plot] time=0.38 seconds, total_count=0"
)


def write_scores(folder: Path, metric: str, values: Dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / metric).write_text("".join(f"{u} {v!r}\n" for u, v in sorted(values.items())))


def write_experiment(exp: Path, name: str, data: Path, pesq: List[float], rng: np.random.Generator) -> None:
    """Enhanced audio (clean plus a little noise), scores, config.yaml and train.log of one model."""
    ext, subtype = OUTPUT_FORMAT[name]
    out = exp / "enhanced_test"
    (out / "wavs").mkdir(parents=True)
    scp = []
    for line in (data / "spk1.scp").read_text().splitlines():
        utt, clean_path = line.split()
        clean, _ = sf.read(clean_path)
        path = out / "wavs" / f"{utt}.{ext}"
        sf.write(path, clean + 0.01 * rng.standard_normal(len(clean)), FS, subtype=subtype)
        scp.append(f"{utt} {path}")
    (out / "spk1.scp").write_text("\n".join(scp) + "\n")
    write_scores(out / "scoring", "PESQ_WB", dict(zip(UTTS, pesq, strict=True)))
    write_scores(out / "scoring", "SI_SDR", {u: 10.0 + i for i, u in enumerate(UTTS)})
    config = {"encoder": "stft", **KD_CONFIGS.get(name, {})}
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    kd = ", kd_loss=0.200, kd_selected=0.800" if name in KD_CONFIGS else ""
    (exp / "log").mkdir()
    (exp / "log" / "train.log").write_text("\n".join(
        LOG_LINE.format(sec=e, epoch=e, loss=-1.0 - e, kd=kd) for e in range(1, 4)) + "\n")


def write_tree(root: Path) -> List[str]:
    """Data, noisy scores, four experiments and RESULTS.md under ``root``; returns the model arguments."""
    data = write_data_dir(root / "dump" / "raw", "test", len(UTTS), seed=3)
    write_scores(root / "exp" / "noisy" / "enhanced_test" / "scoring", "PESQ_WB", dict.fromkeys(UTTS, 1.2))
    rng = np.random.default_rng(0)
    pesq = {
        "teacher": [2.5] * 5,
        "baseline": [BASELINE_PESQ] * 5,
        "kd_l2": [BASELINE_PESQ - 0.1] * 5,
        "kd_dispatch": [BASELINE_PESQ + g for g in DISPATCH_GAINS],
    }
    models = []
    for name in OUTPUT_FORMAT:
        write_experiment(root / "exp" / name, name, data, pesq[name], rng)
        models.append(f"{name}={root / 'exp' / name}")
    # RESULTS.md as dispatch.bin.make_results writes it: a link to the page, a table, pictures shown and linked.
    pictures = root / "exp" / "results" / "images"
    pictures.mkdir(parents=True)
    for name in ("curves.png", "test_004_kd_dispatch.png"):
        plt.imsave(pictures / name, rng.random((20, 30)))
    (root / "RESULTS.md").write_text(
        "# Results\n\n- listening page: [exp/report/index.html](exp/report/index.html)\n\n## test\n\n"
        "| model | PESQ_WB |\n|---|---:|\n| noisy | 1.200 |\n| baseline | 2.000 |\n| kd_dispatch | 2.140 (+0.140) |\n"
        "\n| utterance | kd_dispatch |\n|---|---|\n| test_004 | [png](exp/results/images/test_004_kd_dispatch.png) |\n"
        "\n![training curves](exp/results/images/curves.png)\n"
    )
    # An ablation grid's paired differences to the student alone (dispatch.bin.ablation table writes them).
    grid = root / "exp" / "ablation" / "method"
    grid.mkdir(parents=True)
    (grid / "paired_differences.json").write_text(json.dumps(GRID))
    return models


GRID = {"spec": "method", "reference": "none", "pairing": "seed", "level": 0.95, "sets": {"test": {
    "SI_SDR": {"kd_l2": {"mean": 0.3, "low": -0.1, "high": 0.7, "n": 3},
               "kd_dispatch": {"mean": 0.8, "low": 0.5, "high": 1.1, "n": 3},
               "kd_one_seed": {"mean": 0.2, "low": None, "high": None, "n": 1}},
    "PESQ_WB": {"kd_l2": {"mean": 0.05, "low": -0.02, "high": 0.12, "n": 3},
                "kd_dispatch": {"mean": 0.15, "low": 0.1, "high": 0.2, "n": 3}},
    "STOI": {"kd_l2": {"mean": 0.01, "low": 0.0, "high": 0.02, "n": 3}}}}}


def report_args(root: Path, output_dir: Path, *extra: str) -> List[str]:
    return [
        "--output_dir", str(output_dir), "--results_md", str(root / "RESULTS.md"), "--test_set", "test",
        "--data_dir", str(root / "dump" / "raw" / "test"),
        "--noisy_scoring", str(root / "exp" / "noisy" / "enhanced_test" / "scoring"),
        "--baseline", "baseline", "--utts", FIXED, "--ablation_root", str(root / "exp" / "ablation"), *extra,
    ]


class _Links(HTMLParser):
    """Every URL of img/audio src and a href in a page."""

    def __init__(self):
        super().__init__()
        self.urls: Dict[str, List[str]] = {"img": [], "audio": [], "a": []}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("img", "audio") and "src" in attrs:
            self.urls[tag].append(attrs["src"])
        elif tag == "a" and "href" in attrs:
            self.urls["a"].append(attrs["href"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(tree root, model arguments, page) after one make_report run."""
    root = tmp_path_factory.mktemp("recipe")
    models = write_tree(root)
    assert make_report(report_args(root, root / "exp" / "report") + models) == 0
    return root, models, root / "exp" / "report" / "index.html"


def test_page_and_assets(built):
    _, _, page = built
    report = page.parent
    links = _Links()
    links.feed(page.read_text(encoding="utf-8"))
    shown = ["test_004", "test_002", "test_001"]
    # One row per chosen utterance, each with a player and a spectrogram per system (noisy, clean, 4 models).
    assert len(links.urls["audio"]) == len(shown) * 6
    # RESULTS.md's picture, spectrograms, a mask per utterance for the DISPatch student (none for
    # selection: all), the ablation grid's differences, 2 training figures.
    assert len(links.urls["img"]) == 1 + len(shown) * 6 + len(shown) + 1 + 2
    for url in links.urls["img"] + links.urls["audio"] + links.urls["a"]:
        assert not os.path.isabs(url) and "://" not in url, url
        assert (report / url).resolve().is_file(), url
        assert (report / url).resolve().is_relative_to(report.resolve()), url
    # RESULTS.md's link to the page, rebased onto the page's folder, leads to the page itself; its
    # pictures are copied into the page's folder; every image of the page opens full size.
    # The page opens on the players; RESULTS.md comes last, folded.
    assert links.urls["a"] == links.urls["img"][:-1] + ["index.html", "assets/results_md/00_test_004_kd_dispatch.png"]
    assert links.urls["img"][-1] == "assets/results_md/01_curves.png"
    html = page.read_text(encoding="utf-8")
    assert "2.140 (+0.140)</td>" in html and "|---" not in html  # RESULTS.md's table rendered
    assert html.index("<audio") < html.index("assets/ablation_method.png") < html.index("Training curves") \
        < html.index('<details class="results">') < html.index("2.140")
    assert "each KD variant minus none (the student trained alone)" in html
    for utt in shown:
        assert utt in html
    assert html.index("test_004") < html.index("test_002") < html.index("test_001") and "test_000" not in html
    assert "best PESQ_WB gain (+0.500)" in html and "worst PESQ_WB gain (-0.200)" in html
    assert html.count("chosen by --utts") == 1


def test_audio_is_the_scored_output(built):
    root, _, page = built
    assets = page.parent / "assets" / "01_test_004"
    src = root / "exp" / "kd_dispatch" / "enhanced_test" / "wavs" / "test_004.wav"
    assert os.path.samefile(assets / "kd_dispatch.wav", src)  # hard link: the very bytes scored
    assert sf.info(assets / "teacher.flac").format == "FLAC"  # played by browsers as is
    converted = sf.info(assets / "baseline.wav")  # float wav: written as 16-bit PCM
    assert converted.subtype == "PCM_16" and converted.frames == sf.info(
        root / "exp" / "baseline" / "enhanced_test" / "wavs" / "test_004.wav").frames


def test_rerun_skips_and_errors_name_the_input(built, caplog):
    root, models, page = built
    before = page.stat().st_mtime_ns
    start = time.monotonic()
    assert make_report(report_args(root, page.parent) + models) == 0
    assert page.stat().st_mtime_ns == before and time.monotonic() - start < 5

    assert make_report(report_args(root, root / "bad", "--utts", "nope") + models) == 1
    assert "--utts" in caplog.text and "nope" in caplog.text
    assert make_report(report_args(root, root / "bad", "--teacher", "oracle") + models) == 1
    assert "--teacher oracle" in caplog.text
    assert not (root / "bad" / "index.html").exists()


def test_the_grid_picture_shows_the_differences_and_is_absent_without_a_grid(built, tmp_path):
    root, _, page = built
    with Image.open(page.parent / "assets" / "ablation_method.png") as picture:
        assert picture.size[0] <= 1000  # fits a 1280-px window beside the page margins
    assert grid_pictures(read_grid_differences(root / "exp" / "ablation"), "other_set", tmp_path) == []
    assert read_grid_differences(tmp_path / "no_ablations") == []
    html = render_page(test_set="test", grids=[], results="", rule="", rows=[], columns=[], masks=[], curves=[],
                       date="")
    assert "Ablation" not in html and "<img" not in html


def test_choose_rule():
    known = {"a", "b", "c", "d", "e"}
    subject = {"a": 1.0, "b": 3.0, "c": 2.0, "d": math.nan, "e": 1.5}
    reference = dict.fromkeys(known, 1.0)
    # Gains a 0, e 0.5, c 1, b 2 (d has no score: not ranked); the median of an even count is the lower one.
    chosen = choose_utterances(subject, reference, ["d", "b"])
    assert chosen == {"b": ["best PESQ_WB gain (+2.000)", "chosen by --utts"], "e": ["median PESQ_WB gain (+0.500)"],
                      "a": ["worst PESQ_WB gain (+0.000)"], "d": ["chosen by --utts"]}
    assert list(chosen) == ["b", "e", "a", "d"]
    assert list(choose_utterances({"a": 2.0}, {"a": 1.0})) == ["a"]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# Geometry of the page in the browser: horizontal overflow of the page and of its scroll boxes, elements
# sticking out of the window (inside folded <details> nothing counts), and where the parts begin.
LAYOUT_JS = """
const de = document.documentElement;
const shown = e => e.closest('details:not([open])') === null || e.tagName === 'SUMMARY' || e.tagName === 'DETAILS';
const wide = [...document.querySelectorAll('body *')].filter(
    e => shown(e) && !e.closest('.scroll') && e.getBoundingClientRect().right > de.clientWidth + 1);
return {overflow: de.scrollWidth - de.clientWidth,
        wide: wide.slice(0, 5).map(e => e.tagName + '.' + e.className),
        scrolls: [...document.querySelectorAll('.scroll')].filter(shown).map(e => e.scrollWidth - e.clientWidth),
        audio: document.querySelector('audio').getBoundingClientRect().top,
        height: window.innerHeight,
        results: document.querySelector('details.results').getBoundingClientRect().top,
        listen: document.querySelector('table.listen').getBoundingClientRect().bottom,
        open: document.querySelector('details.results').open};
"""


@pytest.mark.skipif(not (_chromium() and shutil.which("chromedriver")),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_page_in_headless_chromium(built, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    root, _, page = built
    # Moved away from the experiment tree, which is hidden: the page must only need its own folder.
    moved = tmp_path / "moved_report"
    shutil.copytree(page.parent, moved)
    hidden = root.with_name(root.name + "_hidden")
    root.rename(hidden)
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = _chromium()
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                    f"--user-data-dir={tmp_path / 'chromium_profile'}", "--window-size=1600,1000"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            driver.get((moved / "index.html").as_uri())
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: d.execute_script(
                "return [...document.images].every(i => i.complete)"
                " && [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)"))
            images = driver.execute_script(
                "return [...document.images].map(i => [i.currentSrc, i.naturalWidth])")
            audios = driver.execute_script(
                "return [...document.querySelectorAll('audio')]"
                ".map(a => [a.currentSrc, a.duration, a.error && a.error.code])")
            assert len(images) == 1 + 3 * 7 + 1 + 2 and len(audios) == 3 * 6
            for src, width in images:
                assert src.startswith(moved.as_uri()) and width > 0, src
            for src, duration, error in audios:
                assert src.startswith(moved.as_uri()) and error is None and duration > 0, (src, duration, error)
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []
            # At 1280 px: nothing wider than the window, the players on the first screen, the tables folded after.
            driver.set_window_size(1280, 1000)
            layout = driver.execute_script(LAYOUT_JS)
            assert layout["overflow"] <= 0 and layout["wide"] == [], layout
            assert layout["scrolls"] and max(layout["scrolls"]) <= 0, layout  # the utterance table fits too
            assert layout["audio"] < layout["height"] / 2, layout
            assert layout["results"] > layout["listen"] and not layout["open"], layout
            driver.execute_script("document.querySelector('details.results').open = true")
            opened = driver.execute_script(LAYOUT_JS)
            assert opened["overflow"] <= 0 and opened["wide"] == [], opened  # RESULTS.md's pictures fit
            first = tmp_path / "report_1280.png"
            assert driver.save_screenshot(str(first))
            with Image.open(first) as shot:  # the layout as seen: a 1280-px wide first screen
                assert shot.size[0] <= 1280 and shot.size[1] >= 600
            # Whole page in the screenshot, the wide utterance table included.
            width, height = driver.execute_script(
                "return [Math.max(...[...document.querySelectorAll('.scroll')].map(e => e.scrollWidth)) + 80,"
                " document.documentElement.scrollHeight + 200]")
            driver.set_window_size(max(width, 1600), height)
            screenshot = tmp_path / "report_screenshot.png"
            assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
            print(f"screenshot: {screenshot}")
        finally:
            driver.quit()
    finally:
        hidden.rename(root)
