"""MotionCtrl object trajectories: points -> the dense flow its adapter takes. numpy only, no ComfyUI imports.

As the original's app (`gradio_utils/traj_utils.py` of TencentARC/MotionCtrl): the user's points on a 1024x1024
canvas become 16 points (`process_points`: subsampled, or lines filled in), scaled to 256 (`int(256 x / 1024)`);
frame i+1 of a [16, 256, 256, 2] flow holds the displacement p_{i+1} - p_i (x, y) at pixel p_i; frames 1..15 are
filtered by a normalised 99x99 isotropic Gaussian (sigma 10, `cv2.filter2D`, reflect-101 borders); frame 0 stays 0.
The original's provided trajectories (`examples/trajectories/*.txt`) are "x, y" lines on a 256 canvas.
"""
import os

import numpy as np

CANVAS = 1024  # the app's drawing canvas
FLOW_SIZE = 256  # the flow's side before it is sized to the video
TRAJECTORY_FRAMES = 16
BLUR_SIZE, BLUR_SIGMA = 99, 10.0
PROVIDED_CANVAS = 256  # the canvas of the original's provided .txt trajectories
# the Object Trajectory node's default points (on the canvas): an arc from the left to the right
EXAMPLE_POINTS = "256, 640\n448, 448\n640, 384\n832, 448"


class TrajectoryError(ValueError):
    """A trajectory that cannot be used; the message names the input and the fix."""


def blur_kernel(size=BLUR_SIZE, sigma=BLUR_SIGMA):
    """The original's `bivariate_Gaussian(99, 10, 10, 0, isotropic=True)`: exp(-(x² + y²) / 2σ²) over -49..49,
    normalised to sum 1 (float64)."""
    axis = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    kernel = np.exp(-0.5 * (xx ** 2 + yy ** 2) / sigma ** 2)
    return kernel / kernel.sum()


def process_points(points, frames=TRAJECTORY_FRAMES):
    """The original's `process_points`: exactly 16 points. Fewer than 2: the canvas centre held still; at least
    16: every (n // 16)-th of the first 15 and the last; otherwise points filled in along each segment (the first
    segments get one more when they do not share evenly), truncated to integers."""
    points = [[x, y] for x, y in points]
    if len(points) < 2:
        return [[CANVAS // 2, CANVAS // 2]] * frames
    if len(points) >= frames:
        skip = len(points) // frames
        return points[::skip][:frames - 1] + points[-1:]
    missing = frames - len(points)
    segments = len(points) - 1
    per_segment = [missing // segments + (1 if i < missing % segments else 0) for i in range(segments)]
    out = []
    for i in range(segments):
        (x0, y0), (x1, y1) = points[i], points[i + 1]
        count = per_segment[i]
        filled = [[int(x0 + (j + 1) / (count + 1) * (x1 - x0)), int(y0 + (j + 1) / (count + 1) * (y1 - y0))]
                  for j in range(count)]
        out += points[i:i + 1] + filled
    return out + points[-1:]


def _reflect101(index, size):
    """cv2's BORDER_REFLECT_101 index: ... 2 1 | 0 1 2 ... n-1 | n-2 ... (period 2n - 2)."""
    period = 2 * size - 2
    index = np.mod(index, period)
    return np.where(index < size, index, period - index)


def _impulse_response(py, px, kernel, size):
    """cv2.filter2D (correlation, anchor at the centre, reflect-101 borders) of a unit impulse at (py, px) on a
    size x size image, exactly: dst(y, x) = sum of K(i, j) over the taps whose reflected source is (py, px)."""
    half = kernel.shape[0] // 2
    taps = np.arange(kernel.shape[0]) - half
    rows = (_reflect101(np.arange(size)[:, None] + taps[None, :], size) == py).astype(np.float64)
    cols = (_reflect101(np.arange(size)[:, None] + taps[None, :], size) == px).astype(np.float64)
    return rows @ kernel @ cols.T


def points_flow(points, size=FLOW_SIZE, frames=TRAJECTORY_FRAMES):
    """The original's `get_flow` on 16 points already on the size x size grid: [frames, size, size, 2] float32."""
    kernel = blur_kernel()
    flow = np.zeros((frames, size, size, 2), dtype=np.float32)
    for i in range(frames - 1):
        (x0, y0), (x1, y1) = points[i], points[i + 1]
        if not (0 <= x0 < size and 0 <= y0 < size):
            raise TrajectoryError(f"Trajectory point {i} ({x0}, {y0}) is outside the {size}x{size} flow.")
        response = _impulse_response(y0, x0, kernel, size)
        # the impulse is float32 in the original, as is the filtered frame
        flow[i + 1, :, :, 0] = (response * np.float32(x1 - x0)).astype(np.float32)
        flow[i + 1, :, :, 1] = (response * np.float32(y1 - y0)).astype(np.float32)
    return flow


def process_traj(points, canvas=CANVAS):
    """The original's `process_traj`: the user's points on a canvas x canvas drawing -> [16, 256, 256, 2] flow."""
    if canvas <= 0:
        raise TrajectoryError(f"Canvas size {canvas}: it must be positive.")
    for index, (x, y) in enumerate(points):
        if not (0 <= x < canvas and 0 <= y < canvas):
            raise TrajectoryError(f"Trajectory point {index} ({x}, {y}) is outside the {canvas}x{canvas} canvas: "
                                  "give x and y from 0 to the canvas size.")
    scaled = [[int(FLOW_SIZE * x / canvas), int(FLOW_SIZE * y / canvas)] for x, y in process_points(points)]
    return points_flow(scaled)


def sized_flow(flow, frames, height, width):
    """[16, 256, 256, 2] -> [2, frames, height, width] for a video: frames and pixels taken by nearest sampling
    (frames as `camera_path.nearest_frames`, or repeated when lengthening; pixel rows floor(i * 256 / height), as
    torch's nearest interpolation), values unchanged. The UNet's `trajectory` input is this with a batch axis."""
    from .camera_path import frame_positions
    source_frames, size_y, size_x, _ = flow.shape
    t_index = np.floor(frame_positions(source_frames, frames) + 0.5).astype(np.int64)
    y_index = np.floor(np.arange(height) * (size_y / height)).astype(np.int64)
    x_index = np.floor(np.arange(width) * (size_x / width)).astype(np.int64)
    picked = flow[t_index][:, y_index][:, :, x_index]
    return np.ascontiguousarray(picked.transpose(3, 0, 1, 2))


def parse_points(text, name="trajectory"):
    """Points from "x, y" lines (the original's provided .txt files; blank lines skipped). TrajectoryError naming
    the line otherwise."""
    points = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(";", ",").split(",")
        try:
            x, y = (float(p) for p in parts)
        except ValueError:
            raise TrajectoryError(f"{name}, line {number}: {line.strip()[:60]!r} is not 'x, y' (two numbers).") from None
        points.append([int(x) if x.is_integer() else x, int(y) if y.is_integer() else y])
    if not points:
        raise TrajectoryError(f"{name} holds no points: write one 'x, y' per line.")
    return points


def read_provided_trajectory(path, frames=TRAJECTORY_FRAMES):
    """A provided trajectory file as the original's app reads it (`read_points` + `get_provided_traj`): "x, y"
    lines on a 256 canvas, every (n // 16)-th kept when longer, the first 16, scaled to the 1024 canvas
    (integers). Returns points for `process_traj`."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            points = parse_points(f.read(), name)
    except OSError as e:
        raise TrajectoryError(f"Could not read the trajectory file {path}: {e}.") from e
    if len(points) > frames:
        points = points[::len(points) // frames]
    points = points[:frames]
    return [[int(CANVAS * x / PROVIDED_CANVAS), int(CANVAS * y / PROVIDED_CANVAS)] for x, y in points]


def read_flow_file(path):
    """A provided dense flow (`examples/trajectories/*.npy`: [frames, 256, 256, 2] float, as the original's
    evaluation script loads them), read without pickles."""
    name = os.path.basename(path)
    try:
        flow = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise TrajectoryError(f"Could not read the flow file {name}: {e}. Expected a .npy of [frames, height, "
                              "width, 2] numbers, as MotionCtrl's examples/trajectories/*.npy.") from e
    if flow.ndim != 4 or flow.shape[-1] != 2 or not np.issubdtype(flow.dtype, np.number):
        raise TrajectoryError(f"The flow file {name} holds {flow.dtype} {list(flow.shape)}; expected [frames, "
                              "height, width, 2] numbers, as MotionCtrl's examples/trajectories/*.npy.")
    flow = flow.astype(np.float32)
    if not np.isfinite(flow).all():
        raise TrajectoryError(f"The flow file {name} holds values that are not finite.")
    return flow
