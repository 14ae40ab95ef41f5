#!/usr/bin/env python3
"""Download released VideoCrafter-family models and convert them once to fp16 .safetensors.

    python scripts/download_models.py MODEL [MODEL ...] [--dir ComfyUI/models/videocrafter] [--delete-pickle]
    (ControlNets such as toon_sketch_encoder go to models/controlnet unless --dir says otherwise)
    python scripts/download_models.py --list

Writes <dir>/<name>.safetensors under the names the shipped workflows load (see --list); the released
pickle is kept in <dir>/originals/ unless --delete-pickle. Files already there are not downloaded again;
an interrupted download resumes. Honours HF_ENDPOINT (a mirror), HF_TOKEN and HF_HUB_OFFLINE.
Needs no ComfyUI: torch, safetensors and huggingface_hub only.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the pack's `vc_models` package; no ComfyUI is imported in this process
from vc_models.download import DownloadError, fetch_model, listing_line  # noqa: E402
from vc_models import registry  # noqa: E402


def default_dir(kind):
    """models/<kind> (videocrafter, controlnet) of the ComfyUI this pack is installed in (custom_nodes/<pack>),
    else ./models/<kind>."""
    parent = os.path.dirname(REPO)
    if os.path.basename(parent) == "custom_nodes":
        return os.path.join(os.path.dirname(parent), "models", kind)
    return os.path.join(os.getcwd(), "models", kind)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", metavar="MODEL", help="model ids (see --list)")
    parser.add_argument("--dir", default=None, help="target folder (default: ComfyUI's models/videocrafter, for "
                        "ControlNets models/controlnet, when the pack sits in custom_nodes, else ./models/...)")
    parser.add_argument("--delete-pickle", action="store_true", help="delete the released pickle after conversion")
    parser.add_argument("--list", action="store_true", help="list the model ids and exit")
    args = parser.parse_args(argv)
    downloads = {e.id: e for e in registry.downloads()}
    released = list(downloads)
    if args.list or not args.models:
        for entry in downloads.values():
            print(listing_line(entry))
        return 0 if args.list else 2
    unknown = [m for m in args.models if m not in released]
    if unknown:
        parser.error(f"unknown model id(s) {unknown}; known: {', '.join(released)}")
    for model_id in args.models:
        folder = args.dir or default_dir(downloads[model_id].release.folder)
        try:
            result = fetch_model(model_id, folder, delete_pickle=args.delete_pickle)
        except (DownloadError, OSError) as e:  # OSError: a folder that cannot be made or written
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{model_id}: {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
