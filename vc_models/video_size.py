"""The one rule on video sizes: the VAE downsamples by 8 and the UNet halves the latent three times (four levels),
so widths and heights are multiples of 8 * 2**3 pixels. The nodes, the sampler's check and the trainer's config
ask here."""
SIZE_MULTIPLE = 64


def multiple_error(name, value):
    """The message for a width/height in pixels that is not a multiple of SIZE_MULTIPLE, naming the two nearest
    sizes that are; None when it is one."""
    if value % SIZE_MULTIPLE == 0:
        return None
    lower = max(SIZE_MULTIPLE, value // SIZE_MULTIPLE * SIZE_MULTIPLE)
    return (f"{name} {value} is not a multiple of {SIZE_MULTIPLE}: the VideoCrafter UNet halves the latent three "
            f"times: use {lower} or {lower + SIZE_MULTIPLE}.")
