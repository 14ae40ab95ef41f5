#!/usr/bin/env python3
"""Write the tiny random-weight smoke checkpoints (tiny_t2v_v1/v2, tiny_i2v_v1 .safetensors and a start
image) into a folder:  make_smoke_models.py DIR.  Used by the tests and `make demo` when the reference
data (../shared or $VIDEOCRAFTER_REFERENCE) is not there. Existing files are kept."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402  (the UNet/VAE modules build on ComfyUI's ops)


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    start = time.time()
    comfy_boot.boot(cpu=True)
    import smoke_model as smoke  # scripts/, beside this one
    paths = smoke.write_smoke_models(sys.argv[1])
    open(os.path.join(sys.argv[1], comfy_boot.SMOKE_COMPLETE), "w").close()
    print(f"smoke models (random weights) in {sys.argv[1]}: {', '.join(os.path.basename(p) for p in paths)} "
          f"({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
