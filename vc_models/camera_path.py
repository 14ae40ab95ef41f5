"""MotionCtrl camera paths: per-frame 3x4 camera matrices [R | T] (row-major, 12 numbers a frame). No ComfyUI imports.

The original (`gradio_utils/camera_utils.py` of TencentARC/MotionCtrl) builds its basic moves as 16 frames, frame i
at `i / 16` of the move: rotation `Rz(c) Ry(b) Rx(a)` of `(i/16) * speed * pi/3 * angle` and translation
`(i/16) * speed * 1.5 * T`; its pose files (`examples/camera_poses/*.json`) are JSON lists of 12 numbers per frame
(RealEstate10K-style). A path is resampled to a video's frame count here (`resample_poses`).
"""
import json
import math

import numpy as np

BASE_TRANSLATION = 1.5  # the original's CAMERA["base_T_norm"]
BASE_ANGLE = math.pi / 3  # CAMERA["base_angle"]
PATH_FRAMES = 16  # the original builds every path for its 16-frame model
POSE_NUMBERS = 12

# move name -> (angle [x, y, z] in units of BASE_ANGLE, translation [x, y, z] in units of BASE_TRANSLATION); the
# original's names in brackets
CAMERA_MOVES = {
    "pan up": ((0, 0, 0), (0, 1, 0)),  # "Pan Up"
    "pan down": ((0, 0, 0), (0, -1, 0)),  # "Pan Down"
    "pan left": ((0, 0, 0), (1, 0, 0)),  # "Pan Left"
    "pan right": ((0, 0, 0), (-1, 0, 0)),  # "Pan Right"
    "zoom in": ((0, 0, 0), (0, 0, -2)),  # "Zoom In"
    "zoom out": ((0, 0, 0), (0, 0, 2)),  # "Zoom Out"
    "rotate anticlockwise": ((0, 0, 1), (0, 0, 0)),  # "ACW"
    "rotate clockwise": ((0, 0, -1), (0, 0, 0)),  # "CW"
    "static": ((0, 0, 0), (0, 0, 0)),  # no move selected
}


class CameraPathError(ValueError):
    """A camera path that cannot be used; the message names the file or move and the fix."""


def rotation(angles):
    """The original's `compute_R_form_rad_angle`: Rz @ Ry @ Rx of angles (radians) about x, y, z."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ (ry @ rx)


def move_matrices(angle, translation, speed, frames=PATH_FRAMES):
    """The original's `get_camera_motion`: [frames, 3, 4], frame i at i / frames of the move."""
    angle = np.asarray(angle, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64).reshape(3, 1)
    out = []
    for i in range(frames):
        r = rotation((i / frames) * speed * BASE_ANGLE * angle)
        t = (i / frames) * speed * BASE_TRANSLATION * translation
        out.append(np.concatenate([r, t], axis=1))
    return np.stack(out)


def _move(name):
    key = name.strip().lower()
    if key not in CAMERA_MOVES:
        raise CameraPathError(f"Unknown camera move {name!r}: choose one of {', '.join(CAMERA_MOVES)}.")
    return CAMERA_MOVES[key]


def chain(first, second):
    """The original's `combine_camera_motion`: `second` continues from the last pose of `first`."""
    last = first[-1]
    r, t = last[:, :3], last[:, 3]
    moved = []
    for pose in second:
        rotated = pose[:, :3] @ r
        # the original rotates first, then adds rotated @ R^T @ T (= the second move's own rotation of T)
        moved.append(np.concatenate([rotated, (pose[:, 3] + rotated @ r.T @ t)[:, None]], axis=1))
    return np.concatenate([first, np.stack(moved)], axis=0)


def basic_camera_path(moves, speed=1.0, combine="both"):
    """16 poses [16, 3, 4] of one or two basic moves as the original's app builds them: one move; two at once
    ("both": their angles and translations summed, the original's "Both A and B"); or one after the other
    ("then": 8 frames of each, the second continuing from the first, "First A then B")."""
    moves = [moves] if isinstance(moves, str) else list(moves)
    if not 1 <= len(moves) <= 2:
        raise CameraPathError(f"A basic camera path takes one or two moves, got {len(moves)}.")
    if not math.isfinite(speed):
        raise CameraPathError(f"Camera speed {speed} is not a number.")
    if len(moves) == 1:
        return move_matrices(*_move(moves[0]), speed)
    (a0, t0), (a1, t1) = _move(moves[0]), _move(moves[1])
    if combine == "both":
        return move_matrices(np.add(a0, a1), np.add(t0, t1), speed)
    if combine == "then":
        half = PATH_FRAMES // 2
        return chain(move_matrices(a0, t0, speed, half), move_matrices(a1, t1, speed, half))
    raise CameraPathError(f"combine must be 'both' or 'then', got {combine!r}.")


def parse_pose_json(text, name="camera pose file"):
    """[frames, 3, 4] from the original's pose JSON: a list with one list of 12 numbers (a row-major 3x4 [R | T])
    per frame (nested 3x4 lists are accepted too). CameraPathError naming the file, the frame and the fix."""
    expected = (f"expected a JSON list with one entry of {POSE_NUMBERS} numbers (a 3x4 camera matrix, row-major) per "
                "frame, as MotionCtrl's examples/camera_poses/*.json")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CameraPathError(f"{name} is not valid JSON ({e}); {expected}.") from e
    if not isinstance(data, list) or not data:
        raise CameraPathError(f"{name} holds {type(data).__name__ if data != [] else 'an empty list'}; {expected}.")
    poses = []
    for index, frame in enumerate(data):
        flat = np.asarray(frame, dtype=object).reshape(-1) if isinstance(frame, list) else None
        if flat is None or flat.size != POSE_NUMBERS or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
            raise CameraPathError(f"{name}: frame {index} is {json.dumps(frame)[:80]}; {expected}.")
        values = np.asarray(flat, dtype=np.float64)
        if not np.isfinite(values).all():
            raise CameraPathError(f"{name}: frame {index} holds a value that is not finite; {expected}.")
        poses.append(values.reshape(3, 4))
    return np.stack(poses)


def read_pose_file(path):
    """`parse_pose_json` of a file."""
    import os
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CameraPathError(f"Could not read the camera pose file {path}: {e}.") from e
    return parse_pose_json(raw.decode("utf-8", errors="strict") if raw else "", name)


def frame_positions(source_frames, frames):
    """Where each of `frames` output frames falls on a path of `source_frames`: evenly from the first to the last."""
    if source_frames == 1 or frames == 1:
        return np.zeros(frames)
    return np.linspace(0.0, source_frames - 1, frames)


def nearest_frames(source_frames, frames):
    """The source frame of each output frame when shortening: the nearest (halves round up), so 16 -> 8 takes
    frames 0, 2, 4, 6, 9, 11, 13, 15 (the frames of the reference goldens)."""
    return np.floor(frame_positions(source_frames, frames) + 0.5).astype(np.int64)


def resample_poses(poses, frames):
    """[N, 3, 4] -> [frames, 3, 4] spanning the same path. Shortening takes the nearest frames (`nearest_frames`);
    lengthening interpolates between neighbours, the rotation projected back onto a rotation (polar
    decomposition), so a 16-frame path drives a longer video smoothly."""
    poses = np.asarray(poses, dtype=np.float64)
    n = poses.shape[0]
    if frames < 1:
        raise CameraPathError(f"A camera path for {frames} frames: the video needs at least one frame.")
    if frames <= n:
        return poses[nearest_frames(n, frames)]
    positions = frame_positions(n, frames)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    w = (positions - low)[:, None, None]
    mixed = poses[low] * (1 - w) + poses[high] * w
    u, _, vt = np.linalg.svd(mixed[:, :, :3])
    mixed[:, :, :3] = u @ vt
    return mixed


def pose_rows(poses):
    """[frames, 3, 4] -> [frames, 12] float32 rows, as the UNet's `camera_poses` take them (one batch entry)."""
    return np.asarray(poses, dtype=np.float32).reshape(len(poses), POSE_NUMBERS)
