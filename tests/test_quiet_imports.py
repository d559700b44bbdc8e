"""Recipes' python starts without nltk's failed downloads (tools/python_site/sitecustomize.py, via path.sh)."""
import subprocess
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "egs2" / "TEMPLATE" / "enh_kd1"


def in_recipe(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'set -eu; . ./path.sh; python -c "{code}"'], cwd=TEMPLATE,
                          capture_output=True, text=True, timeout=300)


def test_enhancement_task_imports_without_nltk_downloads():
    proc = in_recipe("import sys, espnet2.tasks.enh; print(type(sys.modules['g2p_en']).__name__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "_StandIn" and "nltk" not in proc.stderr


def test_g2p_en_still_imports_when_used():
    proc = in_recipe("import g2p_en, inspect, sys; inspect.getmodule(object); print(g2p_en.G2p.__name__, "
                     "type(sys.modules['g2p_en']).__name__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["G2p", "module"]
