"""Which parameters each stage trains, by checkpoint name (no module types needed here).

Stage `projector`: the projector (Resampler) and the image key/value matrices `attn2.to_k_ip` /
`attn2.to_v_ip`; stage `finetune`: UNet parameters of the chosen layer group; the projector and the
text encoder stay fixed. Stage `videos`: as `finetune`, plus the projector when every layer
trains (DynamiCrafter's `image_proj_model_trainable`); stage `images`: the spatial layers only
(VideoCrafter2's image stage). Names are prefixed `unet.` / `projector.` (the trainable modules of
`TrainingModels`); `unet_kinds` maps each UNet parameter name to "temporal" or "spatial" and is
built from module types by the glue.
"""

IMAGE_KV = (".attn2.to_k_ip.", ".attn2.to_v_ip.")
# the stages that train the UNet's own layers (or, in a LoRA run, adapters beside them)
UNET_STAGES = ("finetune", "videos", "images")


def is_image_kv(name):
    return any(part in name for part in IMAGE_KV)


def is_cross_attention(name, kind):
    return kind == "spatial" and ".attn2." in name


def trainable_names(stage, unet_kinds, projector_names, finetune_layers="all"):
    """Sorted full names ('unet.…' / 'projector.…') the stage updates."""
    if stage == "projector":
        names = [f"projector.{n}" for n in projector_names]
        names += [f"unet.{n}" for n in unet_kinds if is_image_kv(n)]
        if not any(n.startswith("unet.") for n in names):
            raise ValueError("The model has no image cross-attention (to_k_ip/to_v_ip): not an image-to-video UNet")
        return sorted(names)
    if stage == "images":
        finetune_layers = "spatial"
    elif stage not in UNET_STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    pick = {
        "all": lambda n, k: True,
        "temporal": lambda n, k: k == "temporal",
        "spatial": lambda n, k: k == "spatial",
        "cross_attention": is_cross_attention,
    }[finetune_layers]
    names = sorted(f"unet.{n}" for n, k in unet_kinds.items() if pick(n, k))
    if not names:
        raise ValueError(f"finetune_layers={finetune_layers!r} selects no UNet parameter")
    if stage == "videos" and finetune_layers == "all":
        names = sorted(names + [f"projector.{n}" for n in projector_names])
    return names


def state_names(plan, unet_kinds, projector_names, finetune_layers):
    """Every parameter some stage of the plan may change: what a training state must hold."""
    names = set()
    for stage, _ in plan:
        names.update(trainable_names(stage, unet_kinds, projector_names, finetune_layers))
    # a finetune-only run starts from a checkpoint's projector, but a stage-1 state may precede it
    if any(stage in ("projector", "finetune") for stage, _ in plan):
        names.update(trainable_names("projector", unet_kinds, projector_names))
    return sorted(names)
