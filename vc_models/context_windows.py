"""ComfyUI's Context Windows (core's sliding windows over the frame axis) and the pack's per-frame conditioning:
what core's window handling leaves to the model."""


def frames_of_context_window(tensor, num_frames, transformer_options):
    """A per-frame conditioning [B, C, T_full, h, w] cut to the frames of the current ComfyUI context
    window. ComfyUI 0.3.75's context handler slices model conditionings only when they are at most
    1-D on the frame axis, so a latent-shaped concat conditioning arrives whole; cut it here."""
    window = (transformer_options or {}).get("context_window")
    if window is None or tensor is None or tensor.ndim != 5 or tensor.shape[2] == num_frames:
        return tensor
    index = list(window.index_list)
    if len(index) != num_frames or max(index) >= tensor.shape[2]:
        return tensor
    return tensor[:, :, index]
