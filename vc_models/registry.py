"""Every model the pack runs, described once: how it is recognised, how it samples, where it comes from.

No torch.nn and no ComfyUI imports: the checkpoint detector, the downloader, the workflow builder, the demo,
the trainer and the model class all read these entries, and nothing else names a model by its id.

Detection: `vc_models.checkpoint` reads a `Features` from the tensors and `detect` returns the first entry whose
`matches` holds, trying the entries that refine another first (`refines`: the same tensors told apart by
something more, as DynamiCrafter 512 interpolation by its file name), then the others in `MODELS` order (the
order the downloader lists them). Adding a model is one `ModelEntry` here, with its predicate and its family
(`vc_models.families`: what the model does); a new kind of model is one family object more. Code outside this
module asks an entry's family, never compares families. `register` adds an entry from outside (a test, a plugin).
"""
from dataclasses import dataclass, replace
from typing import Callable, Optional

from . import families
from .families import DYNAMICRAFTER_TOKENS_PER_FRAME

# schedules (`vc_models.model_sampling` has one class per kind)
SCALED_EPS, SCALED_V, CONSISTENCY = "scaled_eps", "scaled_v", "consistency"


@dataclass(frozen=True)
class Features:
    """What the detector reads from a checkpoint's tensors (and its file name)."""
    in_channels: int
    out_channels: int
    image_cross_attention: bool
    temporal_conv: bool
    has_scale_arr: bool
    scale_floor: Optional[float]  # the last scale_arr value; None without scale_arr or stored values
    zero_snr_terminal: bool  # the stored schedule ends at alphas_cumprod == 0
    guidance_embed: bool  # T2V-Turbo's `time_cond_proj`
    motion_guidance: bool  # T2V-Turbo-v2 MG's `motion_cond_proj`
    file_name: str = ""
    dualref_decoder: bool = False  # the VAE decoder looks at the key frames (ToonCrafter's temporal decoder layers)
    # MotionCtrl's controls the tensors carry: "camera" (cc_projection) and / or "object" (the OMCM adapter)
    motion_controls: tuple = ()

    @property
    def concat_latent(self):
        """The image latent rides on the input channels beside the noisy latent (DynamiCrafter)."""
        return self.in_channels > self.out_channels


@dataclass(frozen=True)
class SamplingDefaults:
    """The original inference script's settings."""
    height: int
    width: int
    fps: int  # the frame-rate condition: fps, or DynamiCrafter's fs (frame stride for 256)
    frames: int = 16
    steps: int = 50
    cfg: float = 12.0
    eta: float = 1.0
    sampler: str = "videocrafter_ddim"
    scheduler: str = "videocrafter_uniform"
    guidance_rescale: float = 0.0


@dataclass(frozen=True)
class Release:
    """The released file on Hugging Face and the `.safetensors` the downloader writes from it."""
    repo: str
    file: str  # in the repo
    file_name: str  # in models/videocrafter: what the shipped workflows load
    bare_unet: bool = False  # a UNet state dict alone (T2V-Turbo: used with the VideoCrafter2 checkpoint)
    folder: str = "videocrafter"  # the ComfyUI models folder it goes to (CONTROLNET_FOLDER for a ControlNet)
    # sha256 of the released file, pinned where it is known (the downloader then trusts it over what the hub says);
    # empty: the hub's own LFS sha256 (a strong 64-hex ETag) verifies the download, and without one it is refused
    sha256: str = ""

    @property
    def page(self):
        return f"https://huggingface.co/{self.repo}"

    @property
    def url(self):
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.file}"

    @property
    def pickle_name(self):
        """Name of the released pickle in the downloader's `originals/`: `file_name` with the released extension."""
        return self.file_name.rsplit(".", 1)[0] + "." + self.file.rsplit(".", 1)[1]


@dataclass(frozen=True)
class Workflow:
    """A graph `scripts/build_workflows.py` ships for the model; `variation` names one of its builders."""
    name: str
    prompt: str
    variation: str = ""  # "" (the family's graph), "loop", "freenoise", "keyframes", "sketch", "lora" (+ core Load LoRA)


@dataclass(frozen=True)
class ModelEntry:
    """One model: data only. What its kind of model does (conditioning, UNet inputs, image inputs, sampling extras,
    training objective and stages) is its `family`'s, a `vc_models.families.Family`."""
    id: str
    description: str
    family: families.Family
    matches: Callable[[Features], bool]
    defaults: SamplingDefaults
    schedule: str = SCALED_EPS
    # UNetConfig switches the tensors do not show, as (field, value) pairs
    unet_switches: tuple = ()
    # the id of an entry whose tensors this one shares: tried before every other entry in detection
    refines: str = ""
    release: Optional[Release] = None
    # a model whose text encoder and VAE come from another entry's checkpoint (T2V-Turbo: VideoCrafter2)
    base_model: str = ""
    # the training graph `scripts/build_train_workflow.py` ships for the model ("" for none)
    train_workflow: str = ""
    workflows: tuple = ()

    @property
    def parameterization(self):
        return "v" if self.schedule == SCALED_V else "eps"

    @property
    def zero_snr(self):
        return self.schedule == SCALED_V

    @property
    def image_inputs(self):
        return self.family.image_inputs


def _video_conditioned(f):
    return not f.concat_latent and not f.guidance_embed and not f.motion_controls


def _motionctrl_camera_only(f):
    """The VideoCrafter2 `cmcm` release: no object-motion adapter, or its released name (the original's app loads it
    with the config that builds the adapter, so its tensors need not tell)."""
    name = f.file_name.lower()
    return bool(f.motion_controls) and ("object" not in f.motion_controls or "cmcm" in name or "videocrafter2" in name)


def _dynamicrafter_v(f):
    """512/1024: v-prediction on a zero-terminal-SNR schedule with scale_arr (without stored values, as in a
    layout check on meta tensors, the released pairing holds: scale_arr <=> v)."""
    return f.concat_latent and f.image_cross_attention and (f.has_scale_arr or f.zero_snr_terminal)


def _dynamicrafter_1024(f):
    return _dynamicrafter_v(f) and f.scale_floor is not None and f.scale_floor < 0.5


def _dynamicrafter_512_unet(f):
    return _dynamicrafter_v(f) and not _dynamicrafter_1024(f)


def _dynamicrafter_512(f):
    return _dynamicrafter_512_unet(f) and not f.dualref_decoder


_T2V_PROMPT = "a corgi running on the beach at sunset, high quality"
_BOAT_PROMPT = "a boat sailing on the sea, waves moving"
# the families: each entry names one (a variant is a family with parameters)
VIDEOCRAFTER_I2V = families.ImageToVideo()
TEXT_TO_VIDEO = families.TextToVideo(upgrade=VIDEOCRAFTER_I2V)
DYNAMICRAFTER = families.DynamiCrafter()
DYNAMICRAFTER_FRAME_STRIDE = families.DynamiCrafter(fs_is_frame_stride=True)
DYNAMICRAFTER_INTERPOLATION = families.DynamiCrafter(interpolation=True)
TOONCRAFTER = families.DynamiCrafter(
    interpolation=True, dual_reference=True,
    train_refusal="the original ToonCrafter code (Doubiiu/ToonCrafter) defines no interpolation training: its "
                  "training config and LatentVisualDiffusion.get_batch_input are DynamiCrafter's image "
                  "animation (no interp_mode), and nothing trains the dual-reference decoder")
TURBO = families.Turbo(
    train_refusal="a T2V-Turbo UNet is consistency-distilled from VideoCrafter2 (a few-step sampler, not a diffusion "
                  "objective the trainer has); train VideoCrafter2 itself")

MOTIONCTRL = families.MotionCtrl()
MOTIONCTRL_CAMERA = families.MotionCtrl(object_motion=False)

_DC_512 = SamplingDefaults(320, 512, 24, cfg=7.5, scheduler="videocrafter_trailing", guidance_rescale=0.7)
_DC = dict(unet_switches=(("image_tokens_per_frame", DYNAMICRAFTER_TOKENS_PER_FRAME),))
# T2V-Turbo-v2: LCM with the original's timesteps, the guidance scale in the UNet's embedding (so cfg 1)
_TURBO_DEFAULTS = SamplingDefaults(320, 512, 16, steps=8, cfg=1.0, eta=0.0, sampler="videocrafter_lcm", scheduler="videocrafter_turbo")


def _hub(repo, file_name, file="model.ckpt", **kw):
    return Release(repo, file, file_name, **kw)


MODELS = [
    ModelEntry("vc2_t2v_512", "VideoCrafter2 text-to-video 320x512", TEXT_TO_VIDEO,
               lambda f: _video_conditioned(f) and not f.image_cross_attention and f.temporal_conv,
               SamplingDefaults(320, 512, 28), release=_hub("VideoCrafter/VideoCrafter2", "videocrafter2_t2v_512.safetensors"),
               workflows=(Workflow("vc2_t2v_512", _T2V_PROMPT), Workflow("vc2_t2v_512_freenoise_64", _T2V_PROMPT, "freenoise"))),
    ModelEntry("vc1_t2v_512", "VideoCrafter1 text-to-video 320x512", TEXT_TO_VIDEO,
               lambda f: _video_conditioned(f) and not f.image_cross_attention and not f.temporal_conv and not f.has_scale_arr,
               SamplingDefaults(320, 512, 28), release=_hub("VideoCrafter/Text2Video-512", "videocrafter1_t2v_512.safetensors")),
    ModelEntry("vc1_t2v_1024", "VideoCrafter1 text-to-video 576x1024", TEXT_TO_VIDEO,
               lambda f: _video_conditioned(f) and not f.image_cross_attention and not f.temporal_conv and f.has_scale_arr,
               SamplingDefaults(576, 1024, 28), release=_hub("VideoCrafter/Text2Video-1024", "videocrafter1_t2v_1024.safetensors"),
               workflows=(Workflow("vc1_t2v_1024", "an astronaut riding a horse on the moon, 4k, detailed"),)),
    ModelEntry("vc1_i2v_512", "VideoCrafter1 image-to-video 320x512", VIDEOCRAFTER_I2V,
               lambda f: _video_conditioned(f) and f.image_cross_attention,
               SamplingDefaults(320, 512, 8), release=_hub("VideoCrafter/Image2Video-512", "videocrafter1_i2v_512.safetensors"),
               train_workflow="train_i2v", workflows=(Workflow("vc1_i2v_512", _BOAT_PROMPT),
                                                      Workflow("vc1_i2v_512_lora", _BOAT_PROMPT, "lora"))),
    ModelEntry("dc_256", "DynamiCrafter image animation 256x256", DYNAMICRAFTER_FRAME_STRIDE,
               matches=lambda f: f.concat_latent and f.image_cross_attention and not _dynamicrafter_v(f),
               defaults=SamplingDefaults(256, 256, 3, cfg=7.5),
               release=_hub("Doubiiu/DynamiCrafter", "dynamicrafter_256.safetensors"), **_DC),
    ModelEntry("dc_512", "DynamiCrafter image animation 320x512", DYNAMICRAFTER,
               matches=_dynamicrafter_512,
               defaults=_DC_512, schedule=SCALED_V, release=_hub("Doubiiu/DynamiCrafter_512", "dynamicrafter_512.safetensors"),
               train_workflow="train_dc_512",
               workflows=(Workflow("dc_512", _BOAT_PROMPT),
                          Workflow("dc_512_freenoise_64", "a boat sailing on the sea, waves moving, gentle camera pan",
                                   "freenoise")),
               **_DC),
    ModelEntry("dc_1024", "DynamiCrafter image animation 576x1024", DYNAMICRAFTER, matches=_dynamicrafter_1024,
               defaults=replace(_DC_512, height=576, width=1024, fps=10),
               schedule=SCALED_V, release=_hub("Doubiiu/DynamiCrafter_1024", "dynamicrafter_1024.safetensors"),
               workflows=(Workflow("dc_1024", _BOAT_PROMPT),), **_DC),
    # the same tensors as dc_512; only the file name and the defaults differ
    ModelEntry("dc_512_interp", "DynamiCrafter interpolation / loops 320x512", DYNAMICRAFTER_INTERPOLATION,
               matches=lambda f: _dynamicrafter_512(f) and "interp" in f.file_name.lower(), refines="dc_512",
               defaults=replace(_DC_512, fps=5),
               schedule=SCALED_V, release=_hub("Doubiiu/DynamiCrafter_512_Interp", "dynamicrafter_512_interp.safetensors"),
               workflows=(Workflow("dc_512_interp", "a smooth transition, natural motion"),
                          Workflow("dc_512_loop", "a seamless looping animation, natural motion", "loop"),
                          Workflow("dc_512_keyframes", "a smooth transition, natural motion", "keyframes")),
               **_DC),
    # DynamiCrafter 512 interpolation's UNet with a VAE decoder that looks at the two key frames; defaults from
    # the original's scripts/run.sh (also its Gradio demo)
    ModelEntry("toon_512", "ToonCrafter cartoon interpolation 320x512 (dual-reference decoder)", TOONCRAFTER,
               matches=lambda f: _dynamicrafter_512_unet(f) and f.dualref_decoder,
               defaults=replace(_DC_512, fps=10),
               schedule=SCALED_V, release=_hub("Doubiiu/ToonCrafter", "tooncrafter_512.safetensors"),
               workflows=(Workflow("toon_512_interp", "an anime scene"),
                          Workflow("toon_512_keyframes", "an anime scene", "keyframes"),
                          Workflow("toon_512_sketch", "an anime scene", "sketch")),
               **_DC),
    ModelEntry("turbo_v2_mg", "T2V-Turbo-v2 (VideoCrafter2 distilled, motion guidance) 320x512", TURBO,
               lambda f: f.guidance_embed and f.motion_guidance,
               _TURBO_DEFAULTS,
               schedule=CONSISTENCY, base_model="vc2_t2v_512",
               release=_hub("jiachenli-ucsb/T2V-Turbo-v2", "t2v_turbo_v2_unet_mg.safetensors", "unet_mg.pt", bare_unet=True),
               workflows=(Workflow("vc2_turbo_v2", _T2V_PROMPT),)),
    ModelEntry("turbo_v2_nomg", "T2V-Turbo-v2 (VideoCrafter2 distilled, no motion guidance) 320x512", TURBO,
               lambda f: f.guidance_embed and not f.motion_guidance,
               _TURBO_DEFAULTS,
               schedule=CONSISTENCY, base_model="vc2_t2v_512",
               release=_hub("jiachenli-ucsb/T2V-Turbo-v2-no-MG", "t2v_turbo_v2_unet_no_mg.safetensors", "unet_no_mg.pt",
                            bare_unet=True)),
    # MotionCtrl (families.MotionCtrl): the original's run.sh / app settings, 16 frames, DDIM 50, eta 1, cfg 7.5 (cond_T
    # 800 is the family's); no fps condition (fps: the saved video's rate, the original's 10)
    ModelEntry("motionctrl_256", "MotionCtrl camera + object motion 256x256", MOTIONCTRL,
               lambda f: bool(f.motion_controls),
               SamplingDefaults(256, 256, 10, cfg=7.5),
               release=_hub("TencentARC/MotionCtrl", "motionctrl_256.safetensors", "motionctrl.pth"),
               workflows=(Workflow("motionctrl_256", "a horse running on the grassland"),)),
    ModelEntry("motionctrl_vc2_512", "MotionCtrl VideoCrafter2 camera motion 320x512", MOTIONCTRL_CAMERA,
               _motionctrl_camera_only, SamplingDefaults(320, 512, 10, cfg=7.5), refines="motionctrl_256",
               release=_hub("TencentARC/MotionCtrl", "motionctrl_videocrafter2_cmcm.safetensors",
                            "motionctrl_videocrafter2_cmcm.ckpt"),
               workflows=(Workflow("motionctrl_vc2_512", "a beautiful lake surrounded by mountains at sunset"),)),
]


CONTROLNET_FOLDER = "controlnet"


@dataclass(frozen=True)
class ControlNetEntry:
    """A released ControlNet for a model of the family, loaded by core 'Load ControlNet Model' and applied per
    frame (`vc_models.video_control`); `strength` is the original's control scale."""
    id: str
    description: str
    model: str  # the id of the model entry it guides
    release: Release
    strength: float = 1.0
    base_model: str = ""  # the downloader lists every download alike


CONTROLNETS = [
    # the community sketch guidance (reference README, "Sketch guidance"): an SD 2.1-layout ControlNet with one
    # hint channel, inverted grey sketches, control scale 0.6
    ControlNetEntry("toon_sketch_encoder", "ToonCrafter sketch encoder (ControlNet, 1-channel sketches)", "toon_512",
                    Release("Doubiiu/ToonCrafter", "sketch_encoder.ckpt", "tooncrafter_sketch_encoder.safetensors",
                            folder=CONTROLNET_FOLDER), strength=0.6),
]


def controlnet_for(model_id):
    """The released ControlNet entry that guides model `model_id`."""
    return next(c for c in CONTROLNETS if c.model == model_id)


class UnknownModel(KeyError):
    def __str__(self):
        return self.args[0]


def entry(model_id):
    """The entry of a model id; UnknownModel (naming the known ids) otherwise."""
    for e in MODELS:
        if e.id == model_id:
            return e
    raise UnknownModel(f"Unknown model id {model_id!r}; known: {', '.join(e.id for e in MODELS)}.")


def register(model):
    """Add a model entry (detection, nodes, trainer and tools see it at once); a known id is a ValueError."""
    if any(e.id == model.id for e in MODELS):
        raise ValueError(f"A model with id {model.id!r} is registered already.")
    MODELS.append(model)
    return model


def detect(features):
    """The entry whose predicate holds for `features` (refining entries tried first, then `MODELS` order), or None."""
    order = [e for e in MODELS if e.refines] + [e for e in MODELS if not e.refines]
    return next((e for e in order if e.matches(features)), None)


def released():
    """The entries with a released file, in `MODELS` order."""
    return [e for e in MODELS if e.release is not None]


def downloads():
    """Everything the downloader fetches: the released models, then their ControlNets."""
    return released() + CONTROLNETS
