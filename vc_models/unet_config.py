"""The UNet's configuration: what the checkpoint format code infers and the layers are built from.

No torch.nn or ComfyUI imports, so checkpoint reading/detection (and the trainer and command-line
tools that use it) never pull in the layers. One configuration serves every model of the family:
VideoCrafter1/2, VideoCrafter1 I2V, DynamiCrafter and T2V-Turbo differ by these switches only.
"""
from dataclasses import dataclass, asdict

HEAD_DIM = 64  # every attention of every released model


# The tokens the UNet's feed-forwards and the initial temporal attention process at once (tokens are independent
# there, so bounded groups keep those activations from dominating peak memory); the memory model counts by it
TOKENS_PER_CHUNK = 8192


@dataclass
class UNetConfig:
    """Everything that shapes the UNet; inferred from a checkpoint by `checkpoint.infer_unet_config`."""
    in_channels: int = 4  # 8 for DynamiCrafter: noisy latent + concatenated image latent
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple = (0, 1, 2)  # levels (downsample count) that carry transformers
    context_dim: int = 1024
    transformer_depth: int = 1
    temporal_transformer_depth: int = 1
    use_linear: bool = True
    temporal_conv: bool = False
    temporal_attention: bool = True
    relative_position: bool = False
    max_relative_position: int = 16
    init_attn_heads: int = 0  # 0: no initial temporal attention after the input convolution
    fps_cond: bool = False
    image_cross_attention: bool = False
    image_context_dim: int = 1024
    # DynamiCrafter: a learned per-layer `alpha` scales the image cross-attention by tanh(alpha) + 1
    image_attention_alpha: bool = False
    # DynamiCrafter: image tokens per frame (16) when the context carries one group per frame
    image_tokens_per_frame: int = 0
    # T2V-Turbo: width of the guidance-scale embedding fed to `time_cond_proj` (0: none)
    guidance_embed_dim: int = 0
    # T2V-Turbo-v2 MG: a motion-guidance embedding through `motion_cond_proj` + `combine_proj`
    motion_guidance: bool = False
    # MotionCtrl (vc_models/motionctrl.py reads these from the tensors): width of the per-frame camera pose
    # (12, a 3x4 RT matrix) every temporal transformer block's `cc_projection` takes (0: no camera control)
    camera_pose_dim: int = 0
    # MotionCtrl's object-motion adapter (OMCM, a T2I-Adapter): channels per level (empty: none), residual blocks
    # per level, input channels (the flow after PixelUnshuffle(8): 2 x 64), kernel size, whether its residual
    # blocks carry a skip convolution (`skep`, the adapter's sk=False) and downsample by convolution (use_conv)
    omcm_channels: tuple = ()
    omcm_res_blocks: int = 0
    omcm_in_channels: int = 0
    omcm_kernel: int = 3
    omcm_skip_conv: bool = False
    omcm_conv_downsample: bool = False
    head_dim: int = HEAD_DIM

    def as_dict(self):
        return asdict(self)
