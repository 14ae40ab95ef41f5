"""The shipped graphs' example inputs (vc_models/example_inputs.py): written by scripts/make_example_inputs.py into a
folder and by the pack into ComfyUI's input folder at start-up (never over a user's file), then served by a real
server as a user's Load Image / Load Video nodes read them."""
import hashlib
import io
import os
import subprocess
import time
import urllib.request

import pytest

import comfy_host
from server_util import REPO, START_IMAGE, ComfyServer, choices, http_json, venv_python

SCRIPT = os.path.join(REPO, "scripts", "make_example_inputs.py")
PNGS = ["videocrafter_start.png", "videocrafter_end.png"] + [f"videocrafter_key_{i}.png" for i in range(1, 5)]
SKETCH = "videocrafter_sketch.mp4"
MOTION = ["motionctrl_camera_poses.json", "motionctrl_trajectory.txt"]


def make(folder):
    result = subprocess.run([venv_python(), SCRIPT, str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))}


def pixels(data):
    import numpy as np
    from PIL import Image
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def test_the_script_writes_the_same_files_every_time_and_keeps_a_users_file(tmp_path):
    import av
    make(tmp_path / "a")
    assert sorted(os.listdir(tmp_path / "a")) == sorted(PNGS + [SKETCH] + MOTION)  # no temporary left
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / START_IMAGE).write_bytes(b"mine")
    out = make(tmp_path / "b")
    assert (tmp_path / "b" / START_IMAGE).read_bytes() == b"mine" and "kept" in out
    (tmp_path / "b" / START_IMAGE).unlink()
    make(tmp_path / "b")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    images = {name: pixels((tmp_path / "a" / name).read_bytes()) for name in PNGS}
    assert all(image.shape == (320, 512, 3) for image in images.values())
    # start and end of the motion are clearly different; so is each key frame from the next
    assert abs(images["videocrafter_start.png"] - images["videocrafter_end.png"]).mean() > 0.02
    keys = [images[f"videocrafter_key_{i}.png"] for i in range(1, 5)]
    assert all(abs(a - b).mean() > 0.02 for a, b in zip(keys, keys[1:]))
    with av.open(str(tmp_path / "a" / SKETCH)) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(frames) == 16 and frames[0].shape == (320, 512)
    # line drawings: mostly white paper, some dark strokes, and the drawing moves
    assert all((frame > 200).mean() > 0.9 and (frame < 100).mean() > 0.002 for frame in frames)
    assert abs(frames[0].astype(float) - frames[-1].astype(float)).mean() > 1


def test_motionctrl_examples_read_as_the_originals_files(pack, tmp_path):
    """The camera path parses as a 16-frame pose file that moves; the trajectory as 16 points of a provided .txt
    inside its 256 canvas, which make a flow that is not zero."""
    import numpy as np
    camera, trajectory = comfy_host.pack("vc_models.camera_path"), comfy_host.pack("vc_models.trajectory")
    make(tmp_path)
    poses = camera.read_pose_file(str(tmp_path / MOTION[0]))
    assert poses.shape == (16, 3, 4) and np.allclose(poses[0], np.eye(3, 4)) and abs(poses[-1, :, 3]).sum() > 1
    points = trajectory.read_provided_trajectory(str(tmp_path / MOTION[1]))
    assert len(points) == 16 and len(set(map(tuple, points))) == 16
    assert abs(trajectory.process_traj(points)).sum() > 0


def test_writing_the_missing_inputs_takes_under_a_second(pack, tmp_path):
    """What start-up costs when the input folder lacks every example (the pack writes them while ComfyUI loads)."""
    example_inputs = comfy_host.pack("vc_models.example_inputs")
    example_inputs.write_missing(tmp_path / "warm")  # imports (av, PIL) once, as the pack's own import has
    started = time.perf_counter()
    assert example_inputs.write_missing(tmp_path / "cold") == list(example_inputs.NAMES)
    seconds = time.perf_counter() - started
    print(f"wrote {len(example_inputs.NAMES)} example inputs in {seconds:.3f} s")
    assert seconds < 1.0
    started = time.perf_counter()
    assert example_inputs.write_missing(tmp_path / "cold") == []
    assert time.perf_counter() - started < 0.05  # all there: a few stat calls
    assert example_inputs.START == START_IMAGE


@pytest.fixture(scope="module")
def fresh_server(module_tmp):
    """A server whose input folder is empty when it starts, but for a user's own file under an example's name."""
    srv = ComfyServer(module_tmp("example_inputs_server"), checkpoints=())
    assert os.listdir(srv.input_dir) == []
    with open(os.path.join(srv.input_dir, "videocrafter_end.png"), "wb") as f:
        f.write(b"the user's own end image")
    srv.start()
    yield srv
    srv.stop()


def test_a_fresh_server_serves_the_example_inputs(fresh_server):
    with urllib.request.urlopen(f"{fresh_server.url}/view?filename=videocrafter_key_3.png&type=input", timeout=30) as r:
        assert r.headers["Content-Type"] == "image/png"
        assert pixels(r.read()).shape == (320, 512, 3)
    info = http_json(f"{fresh_server.url}/object_info/LoadVideo")["LoadVideo"]
    assert SKETCH in choices(info["input"]["required"]["file"])
    info = http_json(f"{fresh_server.url}/object_info/LoadImage")["LoadImage"]
    assert set(PNGS) <= set(choices(info["input"]["required"]["image"]))
    with open(os.path.join(fresh_server.input_dir, "videocrafter_end.png"), "rb") as f:
        assert f.read() == b"the user's own end image"
    assert not [name for name in os.listdir(fresh_server.input_dir) if name.endswith(".partial")]
    assert "VideoCrafter: wrote the example inputs" in fresh_server.log_tail(200000)
