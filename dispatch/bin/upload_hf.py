#!/usr/bin/env python3
"""Upload a packed espnet2 model zip to the Hugging Face hub in espnet_model_zoo's layout.

    python -m dispatch.bin.upload_hf --zip exp/enh_kd/packed_kd.zip --repo user/dispatch_mini_kd

The zip is unpacked into a folder (exp/, meta.yaml, README.md: the model card stage 11 packed, see
dispatch.export.card, under Hugging Face front matter; a zip without one gets the results table) and
pushed with huggingface_hub, with the ONNX export (onnx/model.onnx, onnx/export.json) of ``--export_dir``
when stage 12 made one; `SeparateSpeech.from_pretrained("user/dispatch_mini_kd")` then finds it. Needs a
token (`huggingface-cli login` or HF_TOKEN) and the network.
"""
import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

from dispatch.export.report import deployment_section, read_record


def model_card(repo: str, results: Optional[Path], card: Optional[str] = None) -> str:
    """The repo's README.md: front matter, how to load it, then ``card`` (the packed model card) or the results."""
    body = results.read_text() if results and results.is_file() else "No results table was given."
    body = card if card else f"## Results\n\n{body}\n"
    return (
        "---\ntags:\n- espnet\n- audio\n- speech-enhancement\n- knowledge-distillation\nlicense: cc-by-4.0\n---\n\n"
        f"# {repo}\n\nAn espnet2 enhancement model trained with the DISPatch recipes "
        "(knowledge distillation, arXiv 2509.15922).\n\n```python\n"
        "from espnet2.bin.enh_inference import SeparateSpeech\n"
        f'model = SeparateSpeech.from_pretrained("{repo}")\n```\n\n{body}'
    )


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, required=True, help="packed model (dispatch.bin.pack_student)")
    parser.add_argument("--repo", required=True, help="Hugging Face repo id, e.g. user/model")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md for the model card")
    parser.add_argument("--export_dir", type=Path, default=None,
                        help="the model's outputs folder: its onnx/model.onnx and onnx/export.json are uploaded too")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(cmd)
    if not zipfile.is_zipfile(args.zip):
        print(f"upload_hf: {args.zip} is not a zip file", file=sys.stderr)
        return 1
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.zip) as z:
            z.extractall(tmp)
        packed_card = Path(tmp) / "README.md"
        card = packed_card.read_text(encoding="utf-8") if packed_card.is_file() else None
        record = read_record(args.export_dir) if args.export_dir is not None else None
        if card and record and "ONNX export (stage 12" not in card:  # packed before stage 12 ran
            card += "\n" + "\n".join(deployment_section([(record.get("name") or args.repo, args.export_dir)]))
        packed_card.write_text(model_card(args.repo, args.results, card), encoding="utf-8")
        for name in ("model.onnx", "export.json"):
            if args.export_dir is not None and (args.export_dir / "onnx" / name).is_file():
                (Path(tmp) / "onnx").mkdir(exist_ok=True)
                shutil.copy2(args.export_dir / "onnx" / name, Path(tmp) / "onnx" / name)
        api = HfApi()
        api.create_repo(args.repo, exist_ok=True, private=args.private)
        api.upload_folder(repo_id=args.repo, folder_path=tmp, commit_message="Upload espnet2 enhancement model")
    print(f"https://huggingface.co/{args.repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
