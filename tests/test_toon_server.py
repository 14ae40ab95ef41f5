"""The shipped ToonCrafter and key-frame workflows in a real ComfyUI server, on the tiny models (or their smoke
models): they validate, run, and save a video of the expected length; the UI graphs match the nodes. The sketch
workflow runs on a random 1-hint-channel ControlNet in the sketch encoder's layout, sized to the tiny UNet."""
import json
import os

import pytest

from conftest import tiny_toon_state_dict
from model_util import random_controlnet
from server_util import (START_IMAGE, ComfyServer, assert_widgets_match, fill_inputs, load_workflow, output_files,
                         submit, wait_history)

TINY_FOR = {"toon_512_interp": "tiny_toon_512.safetensors", "toon_512_keyframes": "tiny_toon_512.safetensors",
            "dc_512_keyframes": "tiny_dc_512.safetensors", "toon_512_sketch": "tiny_toon_512.safetensors"}
FRAMES = 4
# saved frames for 4 frames per segment: one pair; or 4 key frames, 3 segments joined without repeating key frames
EXPECTED_FRAMES = {"toon_512_interp": FRAMES, "toon_512_sketch": FRAMES, "toon_512_keyframes": 3 * (FRAMES - 1) + 1,
                   "dc_512_keyframes": 3 * (FRAMES - 1) + 1}


@pytest.fixture(scope="module")
def server(pack, module_tmp):
    """A server with the tiny ToonCrafter written out beside the tiny DynamiCrafter 512."""
    import safetensors.torch
    srv = ComfyServer(module_tmp("toon_server"), checkpoints=["tiny_dc_512.safetensors"])
    safetensors.torch.save_file(tiny_toon_state_dict(), os.path.join(srv.models_dir, "checkpoints", TINY_FOR["toon_512_interp"]))
    write_sketch_encoder(os.path.join(srv.models_dir, "controlnet"))
    write_sketch_video(os.path.join(srv.input_dir, SKETCHES), FRAMES)
    srv.start()
    yield srv
    srv.stop()


def write_sketch_encoder(folder):
    """A random ControlNet in the layout of ToonCrafter's sketch_encoder.ckpt (bare cldm keys, 1 hint channel)
    sized to the tiny ToonCrafter UNet, under the name the downloader gives the real one."""
    import safetensors.torch
    from comfy_boot import pack
    unet_sd = {k[len("model.diffusion_model."):]: v for k, v in tiny_toon_state_dict().items()
               if k.startswith("model.diffusion_model.")}
    config = pack("vc_models.checkpoint").infer_unet_config(unet_sd)
    os.makedirs(folder, exist_ok=True)
    sd = random_controlnet(config, hint_channels=1, prefix="")
    safetensors.torch.save_file(sd, os.path.join(folder, "tooncrafter_sketch_encoder.safetensors"))


def write_sketch_video(path, frames):
    """`frames` sketch frames (dark strokes on white, moving) as an MP4 for core Load Video."""
    import av
    import numpy as np
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for i in range(frames):
            image = np.full((96, 160, 3), 255, dtype=np.uint8)
            image[40:48, 10 + 20 * i:50 + 20 * i] = 0
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


SKETCHES = "sketches.mp4"


def small(name):
    return fill_inputs(load_workflow(name), {"ckpt_name": TINY_FOR[name], "width": 128, "height": 64, "length": FRAMES,
                                             "steps": 2, "image": START_IMAGE, "file": SKETCHES})


def test_ui_workflows_match_the_nodes(server):
    """The new node registers under VideoCrafter/ with tooltips; the UI graphs match the nodes' widgets."""
    info = server.object_info()
    sequence = info["VideoCrafterKeyFrameSequence"]
    assert sequence["category"] == "VideoCrafter/sampling" and sequence["description"]
    assert info["VideoCrafterSketchHint"]["category"] == "VideoCrafter/conditioning"
    inputs = {**sequence["input"]["required"], **info["VideoCrafterVAEDecode"]["input"].get("optional", {}),
              **info["VideoCrafterSketchHint"]["input"]["required"]}
    assert all(len(spec) > 1 and spec[1].get("tooltip") for spec in inputs.values()), inputs
    for name in TINY_FOR:
        ui = load_workflow(name, api=False)
        assert_widgets_match(info, ui, name)
        note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
        assert "https://huggingface.co/Doubiiu/" in note


@pytest.mark.parametrize("name", sorted(TINY_FOR))
def test_workflow_makes_a_video(server, name):
    import av
    result, error = submit(server, small(name))
    assert error is None, error
    entry = wait_history(server, result["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = output_files(server, entry)
    assert len(files) == 1, entry["outputs"]
    with av.open(files[0]) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == EXPECTED_FRAMES[name] and (decoded[0].width, decoded[0].height) == (128, 64)


def test_toon_latent_into_core_vae_decode_explains(server):
    """The ToonCrafter graph with the core VAE Decode in place of VideoCrafter VAE Decode: a clear error."""
    workflow = small("toon_512_interp")
    decode = next(k for k, n in workflow.items() if n["class_type"] == "VideoCrafterVAEDecode")
    workflow[decode] = {"class_type": "VAEDecode", "inputs": {"samples": workflow[decode]["inputs"]["samples"],
                                                             "vae": workflow[decode]["inputs"]["vae"]}}
    result, error = submit(server, workflow)
    assert error is None, error
    entry = wait_history(server, result["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "error"
    message = json.dumps(entry["status"]["messages"])
    assert "needs the two key frames" in message and "VideoCrafter VAE Decode" in message, message
