#!/usr/bin/env python3
"""Write the shipped graphs' example inputs into a folder (the pack writes the missing ones into ComfyUI's input
folder by itself at start-up; this is for another folder, e.g. a remote server's input folder):

    python scripts/make_example_inputs.py FOLDER

Files already in FOLDER are kept. Needs no ComfyUI: numpy, Pillow and av (ComfyUI's own requirements).
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the pack's `vc_models` package; no ComfyUI is imported in this process
from vc_models import example_inputs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="where to write them (created if missing)")
    args = parser.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    written = example_inputs.write_missing(args.folder)
    for name in example_inputs.NAMES:
        print(f"{os.path.join(args.folder, name)}: {'written' if name in written else 'kept (already there)'}")


if __name__ == "__main__":
    main()
