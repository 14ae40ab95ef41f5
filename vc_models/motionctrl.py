"""MotionCtrl (TencentARC/MotionCtrl) in the checkpoint format: what its tensors say. No torch.nn or ComfyUI imports.

MotionCtrl adds two things to the VideoCrafter text-to-video UNet (`motionctrl/motionctrl.py` there):
- camera control (CMCM): a `cc_projection` Linear(C + 12, C) in every temporal transformer block (the 16 of the
  UNet's stages and the initial temporal attention), fed the per-frame 3x4 camera matrices;
- object control (OMCM): a T2I-Adapter (`lvdm/modules/encoders/adapter.py`), released as `omcm.*` beside the UNet,
  whose per-level features are added to the UNet's input blocks.
The pack keeps the adapter inside the UNet (`model.diffusion_model.omcm.*`, renamed at load by
`checkpoint_file.LEGACY_KEY_RENAMES`), so ComfyUI loads, casts and offloads it with the UNet's weights.
"""
from .checkpoint_file import CheckpointError

CC_PROJECTION = "cc_projection.weight"
# the adapter's prefix inside the UNet state dict (and as the released files spell it, at the top level)
OMCM_PREFIX = "omcm."
CAMERA, OBJECT = "camera", "object"


def motion_control_fields(unet_sd, levels):
    """The `UNetConfig` fields of MotionCtrl's additions read from a UNet state dict (prefix stripped; the adapter
    under `omcm.`): {} for a UNet without them, so a plain UNet's configuration is unchanged. `levels`: the UNet's
    levels (len(channel_mult)); the adapter has one feature per level, and its level boundaries are not always
    visible in its tensors (equal widths, pooling downsamples: the tiny models)."""
    fields = {}
    projection = next((unet_sd[k] for k in sorted(unet_sd) if k.endswith(CC_PROJECTION)), None)
    if projection is not None:
        fields["camera_pose_dim"] = projection.shape[1] - projection.shape[0]
    omcm = {k[len(OMCM_PREFIX):]: v for k, v in unet_sd.items() if k.startswith(OMCM_PREFIX)}
    if omcm:
        blocks = sorted({int(k.split(".")[1]) for k in omcm if k.startswith("body.")})
        if not blocks or len(blocks) % levels:
            raise CheckpointError(f"MotionCtrl's object-motion adapter ('omcm.') has {len(blocks)} residual blocks, not a "
                             f"multiple of the UNet's {levels} levels: an incomplete or unknown adapter.")
        per_level = len(blocks) // levels
        fields.update(
            omcm_channels=tuple(omcm[f"body.{level * per_level}.block1.weight"].shape[0] for level in range(levels)),
            omcm_res_blocks=per_level,
            omcm_in_channels=omcm["conv_in.weight"].shape[1],
            omcm_kernel=omcm["body.0.block2.weight"].shape[-1],
            omcm_skip_conv=any(".skep." in k for k in omcm),
            omcm_conv_downsample=any(".down_opt.op." in k for k in omcm),
        )
    return fields


def motion_controls(cfg):
    """The controls a UNet configuration carries: a tuple of CAMERA and/or OBJECT (empty: not MotionCtrl)."""
    return tuple(name for name, present in ((CAMERA, cfg.camera_pose_dim > 0), (OBJECT, bool(cfg.omcm_channels)))
                 if present)
