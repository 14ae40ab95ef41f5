"""MotionCtrl: the camera path and the object trajectory, set on the conditioning the samplers take.

Both nodes read the video's frame count (and the trajectory its size) from the LATENT the sampler will fill, so the
path and the flow always fit the video; what they set is read by the MotionCtrl family (`vc_models.families.MotionCtrl`)
when the sampler builds the UNet's inputs, so the pack's KSampler, core KSampler and SamplerCustom all take it.
"""
import os

import torch

import folder_paths
import node_helpers
from comfy_api.latest import io

from ..vc_models import camera_path, trajectory
from ..vc_models.families import (MOTION_CAMERA_KEY, MOTION_TRAJECTORY_KEY, MOTION_COND_T_KEY, MOTIONCTRL_COND_T,
                                   MOTIONCTRL_CAMERA_NODE, MOTIONCTRL_TRAJECTORY_NODE)
from ..vc_models.video_size import SIZE_MULTIPLE
from .safe_paths import resolve_input_path

NONE = "none"
POSE_EXTENSIONS = (".json",)
TRAJECTORY_EXTENSIONS = (".txt", ".npy")
COMBINE = ("both", "then")


def input_files(extensions):
    """The files in ComfyUI's input folder (and its sub-folders) with these extensions, as relative names."""
    root = folder_paths.get_input_directory()
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names += [os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/") for f in files
                  if f.lower().endswith(extensions)]
    return sorted(names)


def input_path(name, what):
    return resolve_input_path(name, [folder_paths.get_input_directory()], what)


def video_shape(node, latent):
    """(batch, frames, height, width in pixels) of a video LATENT; ValueError naming the node otherwise."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or samples.ndim != 5 or samples.shape[1] != 4:
        shape = None if samples is None else list(samples.shape)
        raise ValueError(f"{node}: 'latent' must be a video latent [batch, 4, frames, height/8, width/8] (Empty "
                         f"VideoCrafter Latent), got {shape}.")
    b, _, t, h, w = samples.shape
    return b, t, h * 8, w * 8


def _set(conditioning, values):
    return node_helpers.conditioning_set_values(conditioning, values)


class MotionCtrlCameraPath(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        moves = list(camera_path.CAMERA_MOVES)
        return io.Schema(
            node_id="MotionCtrlCameraPath",
            display_name=MOTIONCTRL_CAMERA_NODE,
            category="VideoCrafter/MotionCtrl",
            description=("MotionCtrl camera motion: a camera pose per frame. The path (one 3x4 camera matrix per "
                         "frame) goes on the positive and the negative conditioning, resampled to the video's frame "
                         "count: the original's basic moves (one, two at once, or one after the other, with a speed) "
                         "or a pose file. Needs a MotionCtrl model (motionctrl.pth or "
                         "motionctrl_videocrafter2_cmcm.ckpt)."),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning (the prompt)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning: gets the same camera path, as the original."),
                io.Latent.Input("latent", tooltip=(
                    "The video latent the sampler fills (Empty VideoCrafter Latent): the path is resampled to its "
                    "frame count.")),
                io.Combo.Input("move", options=moves, default="pan left", tooltip=(
                    "The original's basic camera move: pan (the camera moves sideways or up/down), zoom (moves "
                    "forwards / back), rotate (rolls around the view axis); 'static' holds still.")),
                io.Combo.Input("second_move", options=[NONE] + moves, default=NONE, tooltip=(
                    "Another basic move, combined with the first as 'combine' says; 'none' for one move.")),
                io.Combo.Input("combine", options=list(COMBINE), default="both", tooltip=(
                    "'both': the two moves at once; 'then': the first over the first half of the video, then the "
                    "second from where it ended (the original's 'First A then B').")),
                io.Float.Input("speed", default=1.0, min=0.0, max=10.0, step=0.1, tooltip=(
                    "How far the basic moves go over the video (the original's speed, 1 as in its app).")),
                io.Combo.Input("pose_file", options=[NONE] + input_files(POSE_EXTENSIONS), default=NONE, tooltip=(
                    "A camera path file in ComfyUI's input folder, used instead of the basic moves: a JSON list "
                    "with one list of 12 numbers (a row-major 3x4 [R | T] camera matrix, RealEstate10K style) "
                    "per frame, as MotionCtrl's examples/camera_poses. 'none': the basic moves.")),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, latent, move, second_move, combine, speed, pose_file=NONE):
        node = MOTIONCTRL_CAMERA_NODE
        _, frames, _, _ = video_shape(node, latent)
        try:
            if pose_file and pose_file != NONE:
                poses = camera_path.read_pose_file(input_path(pose_file, "pose_file"))
            else:
                moves = [move] if second_move == NONE else [move, second_move]
                poses = camera_path.basic_camera_path(moves, speed, combine)
            rows = camera_path.pose_rows(camera_path.resample_poses(poses, frames))
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from e
        values = {MOTION_CAMERA_KEY: torch.from_numpy(rows)[None]}
        return io.NodeOutput(_set(positive, values), _set(negative, values))


class MotionCtrlObjectTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MotionCtrlObjectTrajectory",
            display_name=MOTIONCTRL_TRAJECTORY_NODE,
            category="VideoCrafter/MotionCtrl",
            description=("MotionCtrl object motion: the path an object follows. Its points become the dense flow the "
                         "original makes (16 points, the displacements blurred by a Gaussian at 256x256, sized to "
                         "the video); the positive gets the flow, the negative an all-zero flow, as the original. "
                         "Needs motionctrl.pth (the VideoCrafter2 file controls the camera only)."),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning (the prompt, a camera path)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning: gets the flow of no motion, as the original."),
                io.Latent.Input("latent", tooltip=(
                    "The video latent the sampler fills (Empty VideoCrafter Latent): the flow is sized to its frames, "
                    "width and height.")),
                io.String.Input("points", multiline=True, default=trajectory.EXAMPLE_POINTS, tooltip=(
                    "The path, one 'x, y' point per line on a 1024x1024 canvas over the video (0, 0 top left), as "
                    "drawn in the original's app: made into 16 points (lines filled in between, or every n-th "
                    "kept). Fewer than 2 points: no motion.")),
                io.Combo.Input("trajectory_file", options=[NONE] + input_files(TRAJECTORY_EXTENSIONS), default=NONE,
                               tooltip=(
                    "A trajectory file in ComfyUI's input folder, used instead of 'points': a .txt of 'x, y' lines on "
                    "a 256 canvas or a .npy flow [frames, 256, 256, 2], as MotionCtrl's examples/trajectories. "
                    "'none': the points above.")),
                io.Int.Input("cond_t", default=MOTIONCTRL_COND_T, min=0, max=1000, tooltip=(
                    "The trajectory steers the steps whose timestep t is at least this (of 1000; the original's "
                    "cond_T, 800: the first fifth of the sampling) and is dropped below. 0: every step.")),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, positive, negative, latent, points, trajectory_file=NONE, cond_t=MOTIONCTRL_COND_T):
        node = MOTIONCTRL_TRAJECTORY_NODE
        _, frames, height, width = video_shape(node, latent)
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(f"{node}: the video is {width}x{height}, but MotionCtrl's object-motion adapter needs a "
                             f"width and height that are multiples of {SIZE_MULTIPLE} (its features must meet the "
                             "UNet's at every level): make the latent at such a size (256x256 as trained).")
        try:
            if trajectory_file and trajectory_file != NONE:
                path = input_path(trajectory_file, "trajectory_file")
                flow = trajectory.read_flow_file(path) if path.lower().endswith(".npy") \
                    else trajectory.process_traj(trajectory.read_provided_trajectory(path))
            else:
                flow = trajectory.process_traj(trajectory.parse_points(points, "points") if points.strip() else [])
        except ValueError as e:
            raise ValueError(f"{node}: {e}") from e
        sized = torch.from_numpy(trajectory.sized_flow(flow, frames, height, width))[None]
        return io.NodeOutput(
            _set(positive, {MOTION_TRAJECTORY_KEY: sized, MOTION_COND_T_KEY: int(cond_t)}),
            _set(negative, {MOTION_TRAJECTORY_KEY: torch.zeros_like(sized), MOTION_COND_T_KEY: int(cond_t)}))


NODES = [MotionCtrlCameraPath, MotionCtrlObjectTrajectory]
