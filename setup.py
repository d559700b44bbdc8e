"""DISPatch: selective-patch knowledge distillation for speech enhancement, on espnet2."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent


def requirements(path: str) -> list:
    lines = (here / path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


version = {}
exec((here / "dispatch" / "version.py").read_text(), version)

setup(
    name="dispatch-enh",
    version=version["__version__"],
    description="DISPatch / MSSP / DFKD knowledge distillation for speech enhancement as espnet2 recipes",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["dispatch", "dispatch.*"]),
    package_data={"dispatch.report": ["templates/*.j2"]},
    # torch and espnet are installed by tools/install.sh first (see README: espnet's pins fight torch>=2.13);
    # listed here so that a plain `pip install .` into a ready environment checks for them.
    install_requires=[
        "torch>=2.1",
        "espnet>=202412",
        "espnet_model_zoo",
        "kaldiio",
        "soundfile",
        "pesq",
        "pystoi",
        "numpy",
        "scipy",
        "pyyaml",
        "typeguard",
        "fast_bss_eval",
        "soxr",
        "tqdm",
        "huggingface_hub",
        "jinja2",
        "markupsafe",
        "markdown",
        "matplotlib",
        "onnxruntime",  # DNSMOS, part of the default scoring (espnet2's DNSMOS_local) ...
        "speechmos",  # ... with the ONNX models this package ships
        "onnx>=1.17",  # ONNX export of the students (dispatch.export): torch.onnx's exporters ...
        "onnxscript>=0.5",  # ... the dynamo one translates through onnxscript
        "torch_complex",  # spectra as real pairs in the export graph (an espnet2 dependency too)
    ],
    extras_require={"test": requirements("tools/requirements-test.txt")},
    entry_points={
        "console_scripts": [
            "dispatch-enh-kd-train=dispatch.bin.enh_kd_train:main",
        ],
    },
)
