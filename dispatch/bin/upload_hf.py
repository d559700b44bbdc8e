#!/usr/bin/env python3
"""Upload a packed espnet2 model zip to the Hugging Face hub in espnet_model_zoo's layout.

    python -m dispatch.bin.upload_hf --zip exp/enh_kd/packed_kd.zip --repo user/dispatch_mini_kd

The zip is unpacked into a folder (exp/, meta.yaml, README.md model card with the results) and pushed
with huggingface_hub; `SeparateSpeech.from_pretrained("user/dispatch_mini_kd")` then finds it. Needs a
token (`huggingface-cli login` or HF_TOKEN) and the network.
"""
import argparse
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional


def model_card(repo: str, results: Optional[Path]) -> str:
    body = results.read_text() if results and results.is_file() else "No results table was given."
    return (
        "---\ntags:\n- espnet\n- audio\n- speech-enhancement\n- knowledge-distillation\nlicense: cc-by-4.0\n---\n\n"
        f"# {repo}\n\nAn espnet2 enhancement model trained with the DISPatch recipes "
        "(knowledge distillation, arXiv 2509.15922).\n\n```python\n"
        "from espnet2.bin.enh_inference import SeparateSpeech\n"
        f'model = SeparateSpeech.from_pretrained("{repo}")\n```\n\n## Results\n\n{body}\n'
    )


def main(cmd: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, required=True, help="packed model (dispatch.bin.pack_student)")
    parser.add_argument("--repo", required=True, help="Hugging Face repo id, e.g. user/model")
    parser.add_argument("--results", type=Path, default=None, help="RESULTS.md for the model card")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(cmd)
    if not zipfile.is_zipfile(args.zip):
        print(f"upload_hf: {args.zip} is not a zip file", file=sys.stderr)
        return 1
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.zip) as z:
            z.extractall(tmp)
        (Path(tmp) / "README.md").write_text(model_card(args.repo, args.results))
        api = HfApi()
        api.create_repo(args.repo, exist_ok=True, private=args.private)
        api.upload_folder(repo_id=args.repo, folder_path=tmp, commit_message="Upload espnet2 enhancement model")
    print(f"https://huggingface.co/{args.repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
