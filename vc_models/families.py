"""What a family of models does beyond its tensors: one object per family, named by its registry entries.

A registry entry (`vc_models.registry.ModelEntry`) is data: how the tensors are recognised, the sampling defaults,
the release. Its `family` is one of these objects, and everything that differs between families is asked of it:
- the conditioning it builds (`DynamiCrafter.image_latent`: the node, the trainer's previews and the training
  objective lay the key frames out with it);
- the UNet's inputs beside x and t (`unet_inputs`: what the ComfyUI model's extra_conds turn the CONDITIONING
  extras into);
- its image inputs (`image_inputs`, and the node that adds them, `image_node`);
- its sampling extras (`last_step_keeps_scale`, the frame-rate condition `frame_rate_condition`);
- its training objective (`objective`, classes in `vc_models.objectives`) and stages (`train_stages`, `stages`,
  `train_refusal`; the gate is `vc_models.training_gate`).

A family is a class; a variant is an instance with parameters (`DynamiCrafter(interpolation=True,
dual_reference=True)` is ToonCrafter). No ComfyUI import, and torch only inside the methods that compute: the
registry, the downloader and the workflow builder import this without torch.
"""
import math
from dataclasses import dataclass

# the images a family's graphs take
NO_IMAGE, START_IMAGE, START_END_IMAGES = (), ("start",), ("start", "end")
# The DynamiCrafter Resampler emits `num_queries x video_length` tokens (16 x 16); frame i of a
# 16-frame latent cross-attends to tokens 16i..16i+15. The split is not visible in the tensors.
DYNAMICRAFTER_TOKENS_PER_FRAME = 16
# DynamiCrafter's conditioning modes, by the option strings saved graphs hold: "i2v" is image animation
ANIMATE, INTERPOLATE, LOOP = "i2v", "interpolate", "loop"
DYNAMICRAFTER_MODES = (ANIMATE, INTERPOLATE, LOOP)

# The CONDITIONING extras the nodes set and `unet_inputs` reads
FPS_KEY = "fps"
IMAGE_TOKENS_KEY = "videocrafter_image_tokens"
# T2V-Turbo: the guidance scale the UNet embeds, and the motion guidance (motion_gs, percentage) or None for off
TURBO_GUIDANCE_KEY = "videocrafter_turbo_guidance"
TURBO_MOTION_KEY = "videocrafter_turbo_motion"
TURBO_DEFAULT_GUIDANCE = 7.5
TURBO_DEFAULT_MOTION = (0.05, 0.5)
# DynamiCrafter's image latent travels as core image-to-video nodes pass theirs: a VAE-space
# latent [B, 4, T, h, w] under this key, scaled into the model's space by `process_latent_in`
CONCAT_LATENT_KEY = "concat_latent_image"
# MotionCtrl: the camera path [1, T, 12] (3x4 RT matrices, row-major), the object trajectory [1, 2, T, H, W] (a flow at
# pixel size; the negative's is all zero) and cond_T (the trajectory applies while t >= it), set by its nodes
MOTION_CAMERA_KEY = "motionctrl_camera_poses"
MOTION_TRAJECTORY_KEY = "motionctrl_trajectory"
MOTION_COND_T_KEY = "motionctrl_cond_t"
MOTION_KEYS = (MOTION_CAMERA_KEY, MOTION_TRAJECTORY_KEY, MOTION_COND_T_KEY)
MOTIONCTRL_COND_T = 800  # the original DDIM's default cond_T
MOTIONCTRL_CAMERA_NODE = "MotionCtrl Camera Path"
MOTIONCTRL_TRAJECTORY_NODE = "MotionCtrl Object Trajectory"


# The kinds of UNet input `unet_inputs` returns; `vc_models.model_base` wraps each in ComfyUI's matching cond.
@dataclass(frozen=True)
class PerVideo:
    """A tensor with one row per video, batched with the latent (core CONDRegular)."""
    value: object  # a torch.Tensor


@dataclass(frozen=True)
class PerFrame:
    """A tensor with one row per video and one entry per frame of the video on axis `frame_axis` (MotionCtrl's camera
    path [B, T, 12]: 1; its flow [B, 2, T, H, W]: 2), batched with the latent; core Context Windows cut it to each
    window's frames (`vc_models.model_base`), as they cut the latent."""
    value: object  # a torch.Tensor
    frame_axis: int


@dataclass(frozen=True)
class NoiseShaped:
    """A tensor shaped like the latent, cut with it (core CONDNoiseShape: a concatenated channel)."""
    value: object  # a torch.Tensor


@dataclass(frozen=True)
class Constant:
    """A Python value every video shares, never cast to the compute dtype (core CONDConstant)."""
    value: object


class Family:
    """Text-to-video (VideoCrafter1 / VideoCrafter2): text and the fps condition; the base every family refines."""
    name = "text-to-video"
    image_inputs = NO_IMAGE
    image_node = ""                 # the node that adds the image conditioning (named when it is missing)
    rate_input = "fps"              # the conditioning node's input that sets the frame-rate condition
    concat_latent = False           # the image latent rides on the UNet's input channels
    dual_reference = False          # the VAE decoder looks at the key frames (ToonCrafter)
    # the faithful DDIM's last step keeps the current step's latent scale (DynamiCrafter's sampler)
    last_step_keeps_scale = False
    # trainer: the stages it runs; `upgrade`: the family a CLIP vision file turns a checkpoint into for training
    # (text-to-video -> VideoCrafter1 I2V); `train_refusal`: why a family without stages is refused
    train_stages = ()
    upgrade = None
    train_refusal = ""
    # the training clip's frame that conditions: "first", or "random" (DynamiCrafter's rand_cond_frame)
    train_cond_frame = "first"
    # the nodes that set a camera path / an object trajectory ("": the family takes none); the original's prompt
    # suffix and negative prompt ("": none)
    camera_node = trajectory_node = ""
    # the UNet inputs (`unet_inputs` names) that hold one entry per frame, and their frame axis: context windows cut them
    frame_axes = {}
    prompt_suffix = negative_prompt = ""

    def __repr__(self):
        return f"<family {self.name}>"

    def shares_graphs_with(self, other):
        """A shipped graph of one family renders a model of the other (another variant of the same family)."""
        return type(self) is type(other)

    # ---------------------------------------------------------------- training
    @property
    def trainable(self):
        return bool(self.train_stages) or self.upgrade is not None

    def stages(self, upgraded=False):
        """The stages the trainer runs; `upgraded`: given a CLIP vision file, the upgraded family's."""
        if upgraded and self.upgrade is not None:
            return self.upgrade.train_stages
        return self.train_stages

    def objective(self, schedule, text_dropout, image_dropout, parameterization):
        """The training objective (`vc_models.objectives`) of a model of this family."""
        from .objectives import LatentScaleEps
        return LatentScaleEps(schedule, text_dropout, image_dropout)

    def frame_rate_condition(self, fps, frame_stride):
        """The UNet's frame-rate condition of training clips from their source fps / stride and frame strides [B]."""
        return fps

    # ---------------------------------------------------------------- sampling
    def unet_inputs(self, info, extras, num_timesteps):
        """The UNet's inputs beside x, t and the text from the CONDITIONING extras (`info`: the CheckpointInfo),
        as {UNet keyword: PerVideo | NoiseShaped | Constant}; ValueError naming the node to add or remove."""
        import torch
        out = {}
        if info.unet.fps_cond:
            out["fps"] = PerVideo(torch.tensor([float(extras.get(FPS_KEY, info.entry.defaults.fps))]))
        if extras.get(TURBO_GUIDANCE_KEY) is not None:
            raise ValueError(f"'VideoCrafter Turbo Conditioning' sets a guidance embedding, but this MODEL "
                             f"({info.description}) has none: load a T2V-Turbo UNet with 'VideoCrafter Turbo UNet "
                             "Loader', or remove the node.")
        for key, node in ((MOTION_CAMERA_KEY, MOTIONCTRL_CAMERA_NODE), (MOTION_TRAJECTORY_KEY, MOTIONCTRL_TRAJECTORY_NODE)):
            if extras.get(key) is not None:
                raise ValueError(f"'{node}' sets a MotionCtrl condition, but this MODEL ({info.description}) has no "
                                 "motion control: load motionctrl.pth (camera and object motion) or "
                                 "motionctrl_videocrafter2_cmcm.ckpt (camera motion), or remove the node.")
        return out


class TextToVideo(Family):
    """VideoCrafter1 / VideoCrafter2 text-to-video: the VideoCrafter2 paper's video-then-image stages, or, upgraded
    with a CLIP vision file, VideoCrafter1 I2V's."""
    train_stages = ("videos", "images")

    def __init__(self, upgrade=None):
        self.upgrade = upgrade


class ImageToVideo(Family):
    """VideoCrafter1 image-to-video: the projected CLIP tokens of the start image in every cross-attention; trained
    in two stages (the projector, then the UNet)."""
    name = "VideoCrafter1 image-to-video"
    image_inputs = START_IMAGE
    image_node = "VideoCrafter Image Encode"
    train_stages = ("projector", "finetune")

    def objective(self, schedule, text_dropout, image_dropout, parameterization):
        from .objectives import VideoCrafterI2V
        return VideoCrafterI2V(schedule, text_dropout, image_dropout)

    def unet_inputs(self, info, extras, num_timesteps):
        out = super().unet_inputs(info, extras, num_timesteps)
        tokens = extras.get(IMAGE_TOKENS_KEY)
        if tokens is None:
            raise ValueError(
                "This image-to-video model needs an image: pass both the positive and the negative "
                f"conditioning through '{self.image_node}' before sampling.")
        out["image_context"] = PerVideo(tokens)
        return out


class DynamiCrafter(ImageToVideo):
    """DynamiCrafter image animation: the image tokens per frame and the start image's latent beside the noise.
    `interpolation`: conditioned on a start and an end frame (the 512 interpolation model); `dual_reference`: its
    VAE decoder looks at the key frames too (ToonCrafter); `fs_is_frame_stride`: the fs condition is the clip's
    frame stride (256) rather than its fps (512/1024)."""
    image_node = "DynamiCrafter Conditioning"
    rate_input = "fs"
    concat_latent = True
    last_step_keeps_scale = True
    train_stages = ("videos",)  # the UNet and the Resampler on videos

    def __init__(self, interpolation=False, dual_reference=False, fs_is_frame_stride=False, train_refusal=""):
        self.interpolation, self.dual_reference = interpolation, dual_reference
        self.fs_is_frame_stride = fs_is_frame_stride
        self.image_inputs = START_END_IMAGES if interpolation else START_IMAGE
        self.name = ("ToonCrafter" if dual_reference else "DynamiCrafter") + (" interpolation" if interpolation else "")
        if train_refusal:
            self.train_stages, self.train_refusal = (), train_refusal

    @property
    def train_cond_frame(self):
        """The original's rand_cond_frame: a random frame for image animation, the first (and last) to interpolate."""
        return "first" if self.interpolation else "random"

    @property
    def mode(self):
        """The conditioning mode of the model's own graph and its training clips."""
        return INTERPOLATE if self.interpolation else ANIMATE

    def objective(self, schedule, text_dropout, image_dropout, parameterization):
        from .objectives import DynamiCrafterObjective
        return DynamiCrafterObjective(schedule, text_dropout, image_dropout, parameterization == "v", self)

    def frame_rate_condition(self, fps, frame_stride):
        """fs: the loader's `fps_ori // frame_stride` (512/1024), or the frame stride itself (256)."""
        return frame_stride.float() if self.fs_is_frame_stride else fps.floor()

    @staticmethod
    def image_latent(start, end, mode, frames):
        """The latent [B, C, T, h, w] DynamiCrafter concatenates to the noise from the key frames' latents
        [B, C, h, w]: for ANIMATE the start frame's latent on every frame; for INTERPOLATE / LOOP the start (and
        end) frame's latent on the first and last frame, zeros between (a loop ends on its start image)."""
        if mode not in DYNAMICRAFTER_MODES:
            raise ValueError(f"mode must be one of {DYNAMICRAFTER_MODES}, got {mode!r}")
        if mode == ANIMATE:
            return start.unsqueeze(2).repeat(1, 1, frames, 1, 1)
        end = start if mode == LOOP else end
        batch = max(start.shape[0], end.shape[0])
        latent = start.new_zeros((batch, start.shape[1], frames, *start.shape[2:]))
        latent[:, :, 0] = start
        if frames > 1:
            latent[:, :, -1] = end
        return latent

    def encode_image_latent(self, vae, start, end, mode, frames):
        """`image_latent` of images [B, H, W, 3] through `vae` (VAE space, the posterior mean): what the
        conditioning node and the trainer's previews pass under CONCAT_LATENT_KEY."""
        if mode not in DYNAMICRAFTER_MODES:
            raise ValueError(f"mode must be one of {DYNAMICRAFTER_MODES}, got {mode!r}")
        z_start = vae.encode(start).float()
        z_end = None if mode != INTERPOLATE else vae.encode(end).float()
        return self.image_latent(z_start, z_end, mode, frames)


class Turbo(Family):
    """T2V-Turbo-v2: a consistency-distilled VideoCrafter2 UNet with the guidance scale (and motion guidance) in its
    embedding; the trainer has no consistency objective."""
    name = "T2V-Turbo"

    def __init__(self, train_refusal=""):
        self.train_refusal = train_refusal

    def unet_inputs(self, info, extras, num_timesteps):
        """The guidance / motion-guidance inputs (the original pipeline's defaults when absent); an error for a
        setting the model cannot take."""
        out = super().unet_inputs(info, {k: v for k, v in extras.items() if k != TURBO_GUIDANCE_KEY}, num_timesteps)
        # Python numbers (Constant): ComfyUI casts tensor conds to the compute dtype (fp16/bf16 would round 7.3 to
        # 7.30/7.31, which the x1000 embedding turns into a phase error of up to 12 rad); positive and negative with
        # different values are then run as separate batches
        guidance = extras.get(TURBO_GUIDANCE_KEY)
        out["guidance"] = Constant(float(TURBO_DEFAULT_GUIDANCE if guidance is None else guidance))
        motion = extras.get(TURBO_MOTION_KEY, TURBO_DEFAULT_MOTION if info.unet.motion_guidance else None)
        if motion is None:
            return out
        if not info.unet.motion_guidance:
            raise ValueError("Motion guidance was asked for, but this T2V-Turbo UNet has no motion-guidance projections "
                             "(the no-MG model, unet_no_mg): switch 'motion_guidance' off in 'VideoCrafter Turbo "
                             "Conditioning', or load the MG UNet (unet_mg).")
        motion_gs, percentage = motion
        # the original uses motion_gs while not t < T (1 - percentage), i.e. for integer t >= ceil(that)
        start = math.ceil(num_timesteps * (1.0 - float(percentage)))
        out["motion_guidance"] = Constant((float(motion_gs), start))
        return out


class MotionCtrl(Family):
    """MotionCtrl (TencentARC/MotionCtrl) on VideoCrafter's text-to-video UNet, without fps condition: the camera path
    through every temporal block's `cc_projection`, the object trajectory through the OMCM adapter's features (added
    while t >= cond_T). Which of the two a checkpoint carries is read from its tensors (`vc_models.motionctrl`);
    `object_motion=False`: a variant whose release controls the camera only, whatever adapter tensors it holds
    (the VideoCrafter2 `cmcm` file). The negative pass gets the same camera path and a zero flow's features, as the
    original; its prompt suffix and negative prompt are the released app's."""
    name = "MotionCtrl"
    rate_input = ""  # no frame-rate condition
    frame_axes = {"camera_poses": 1, "trajectory": 2}  # poses [B, T, 12], flow [B, 2, T, H, W]
    camera_node, trajectory_node = MOTIONCTRL_CAMERA_NODE, MOTIONCTRL_TRAJECTORY_NODE
    # `motionctrl_sample` appends ", " + this to the prompt and samples against this negative prompt
    prompt_suffix = ("Ultra-detail, masterpiece, best quality, cinematic lighting, 8k uhd, dslr, soft lighting, film "
                     "grain, Fujifilm XT3")
    # the original's DEFAULT_NEGATIVE_PROMPT as its OpenCLIP tokenizer keeps it (75 tokens between the start and end
    # tokens; the string goes on " disgusting, amputation"): ComfyUI's CLIPTextEncode would encode the whole string
    # as two chunks of 77 tokens, a context the original never sees
    negative_prompt = ("blur, haze, deformed iris, deformed pupils, semi-realistic, cgi, 3d, render, sketch, cartoon, "
                       "drawing, anime, mutated hands and fingers, deformed, distorted, disfigured, poorly drawn, bad "
                       "anatomy, wrong anatomy, extra limb, missing limb, floating limbs, disconnected limbs, mutation, "
                       "mutated, ugly,")
    train_refusal = ("MotionCtrl's training (camera poses of RealEstate10K clips, object trajectories from "
                     "ParticleSfM) is not one the trainer has; train VideoCrafter itself")

    def __init__(self, object_motion=True):
        self.object_motion = object_motion
        self.trajectory_node = MOTIONCTRL_TRAJECTORY_NODE if object_motion else ""
        self.name = "MotionCtrl" + ("" if object_motion else " (camera motion)")

    def controls(self, unet_config):
        """The controls a model of this family takes: `vc_models.motionctrl.CAMERA` and / or `OBJECT`, from the
        tensors' configuration (`unet_config`, a UNetConfig) and the variant."""
        from .motionctrl import motion_controls, OBJECT
        return tuple(c for c in motion_controls(unet_config) if c != OBJECT or self.object_motion)

    def unet_inputs(self, info, extras, num_timesteps):
        from .motionctrl import CAMERA, OBJECT
        out = super().unet_inputs(info, {k: v for k, v in extras.items() if k not in MOTION_KEYS}, num_timesteps)
        controls = self.controls(info.unet)
        poses, flow = extras.get(MOTION_CAMERA_KEY), extras.get(MOTION_TRAJECTORY_KEY)
        if poses is not None:
            if CAMERA not in controls:
                raise ValueError(f"'{self.camera_node}' sets a camera path, but this MODEL ({info.description}) has no "
                                 "camera control (cc_projection): remove the node, or load a MotionCtrl file with it.")
            out["camera_poses"] = PerFrame(poses, frame_axis=self.frame_axes["camera_poses"])
        if flow is not None:
            if OBJECT not in controls:
                raise ValueError(f"'{MOTIONCTRL_TRAJECTORY_NODE}' sets an object trajectory, but this MODEL ({info.description}) "
                                 "controls the camera only: remove the node, or load motionctrl.pth (VideoCrafter, "
                                 "camera and object motion).")
            out["trajectory"] = PerFrame(flow, frame_axis=self.frame_axes["trajectory"])
            out["trajectory_cond_t"] = Constant(int(extras.get(MOTION_COND_T_KEY, MOTIONCTRL_COND_T)))
        return out
