#!/usr/bin/env python3
"""Convert a released VideoCrafter .ckpt to .safetensors:  convert_checkpoint.py model.ckpt out.safetensors [--fp16] [--overwrite]"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402  (vc_models builds on ComfyUI's ops)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--fp16", action="store_true", help="store weights in fp16 (schedule buffers stay fp32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args()
    comfy_boot.boot(cpu=True)
    convert = comfy_boot.pack("vc_models.convert")
    try:
        info = convert.convert_checkpoint(args.src, args.dst, fp16=args.fp16, overwrite=args.overwrite)
    except FileExistsError as e:
        raise SystemExit(str(e).replace("enable 'overwrite'", "pass --overwrite"))
    print(f"{info.description}: wrote {args.dst} ({os.path.getsize(args.dst) / 1024 ** 2:.1f} MiB)")


if __name__ == "__main__":
    main()
