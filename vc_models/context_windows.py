"""ComfyUI's Context Windows (core's sliding windows over the frame axis) and the pack's per-frame conditioning:
what core's window handling leaves to the model."""


def frames_of_context_window(tensor, num_frames, transformer_options, frame_axis=2):
    """A per-frame conditioning (the full video's frames on `frame_axis`: 2 of a latent-shaped [B, C, T_full, h, w],
    1 of MotionCtrl's camera path [B, T_full, 12]) cut to the frames of the current ComfyUI context window.
    ComfyUI 0.3.75's context handler slices model conditionings only when they are at most 1-D on the frame axis, so
    these arrive whole; cut them here. One already of the window's length (cut by 0.33's handler) is left alone."""
    window = (transformer_options or {}).get("context_window")
    if window is None or tensor is None or tensor.ndim <= frame_axis or tensor.shape[frame_axis] == num_frames:
        return tensor
    index = list(window.index_list)
    if len(index) != num_frames or max(index) >= tensor.shape[frame_axis]:
        return tensor
    return tensor[(slice(None),) * frame_axis + (index,)]
