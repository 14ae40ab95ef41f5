"""The tiny T2V-Turbo-v2 UNets of ../shared/reference (for tests, the benchmark and demos).

As the reference README says: tiny_t2v_v2's UNet with the `model.diffusion_model.` prefix removed,
updated with `tiny_turbo_v2_<case>.delta.safetensors`. Written the way the turbo UNets are released
(`torch.save` of the bare state dict, `.pt`, float32) or converted (`.safetensors`, fp16, the same keys).
No ComfyUI import.
"""
import os

from comfy_boot import GOLDEN

CASES = {"mg": "tiny_turbo_v2_mg", "nomg": "tiny_turbo_v2_nomg"}
UNET_PREFIX = "model.diffusion_model."


def reference_files(case):
    """The reference files (relative to the reference folder) the tiny turbo UNet `case` is made of: there is no
    smoke stand-in for them."""
    return "golden/tiny_t2v_v2.safetensors", f"golden/{CASES[case]}.delta.safetensors"


def tiny_turbo_unet(case):
    """{key: float32 tensor} of the tiny turbo UNet `case` ("mg" or "nomg")."""
    import safetensors.torch
    base = safetensors.torch.load_file(os.path.join(GOLDEN, "tiny_t2v_v2.safetensors"))
    unet = {k[len(UNET_PREFIX):]: v for k, v in base.items() if k.startswith(UNET_PREFIX)}
    unet.update(safetensors.torch.load_file(os.path.join(GOLDEN, f"{CASES[case]}.delta.safetensors")))
    return {k: v.float() for k, v in unet.items()}


def write_tiny_turbo_files(folder):
    """unet_<case>.pt as released and t2v_turbo_v2_unet_<case>.safetensors as converted, in `folder`;
    returns {case: (pt path, safetensors path)}."""
    import safetensors.torch
    import torch
    paths = {}
    for case in CASES:
        unet = tiny_turbo_unet(case)
        pt = os.path.join(folder, f"unet_{case}.pt")
        st = os.path.join(folder, f"t2v_turbo_v2_unet_{case}.safetensors")
        torch.save(unet, pt)
        safetensors.torch.save_file({k: v.half().contiguous() for k, v in unet.items()}, st)
        paths[case] = (pt, st)
    return paths
