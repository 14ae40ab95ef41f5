"""A MODEL that core can rebuild from its files (`cached_patcher_init`): deep clones and dynamic-VRAM delegates."""
import comfy.patcher_extension

RELOAD_CALLBACK_KEY = "videocrafter_cached_patcher_init"


def set_reload(patcher, factory, args):
    """Give a MODEL the `cached_patcher_init` core's loaders give theirs: `factory(*args, disable_dynamic=False)`
    builds the same MODEL afresh from its file(s). Newer ComfyUI calls it for a deep clone (device selection,
    MultiGPU: `deepclone_multigpu`) and, with `disable_dynamic=True`, for the non-dynamic delegate that hook
    conditioning samples on when the MODEL is a dynamic-VRAM patcher. ComfyUI 0.33's clone carries the attribute;
    on older hosts, whose clone does not, a clone callback carries it, so the MODEL out of a LoRA or patch node
    still has it."""
    carried_by_host = hasattr(patcher, "cached_patcher_init")  # set to None by the constructor of hosts that use it
    patcher.cached_patcher_init = (factory, tuple(args))
    if not carried_by_host:
        patcher.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_CLONE, RELOAD_CALLBACK_KEY, _carry_reload)
    return patcher


def _carry_reload(original, clone):
    if getattr(clone, "cached_patcher_init", None) is None:
        clone.cached_patcher_init = getattr(original, "cached_patcher_init", None)
