"""Peak resident memory of this process on every platform ComfyUI runs on.

`resource` exists only on Unix; importing it at module level made the whole pack fail to load on
Windows (the trainer is imported when the pack loads), so each platform reads its own counter here.
"""
import sys


def peak_rss_bytes():
    """The most memory this process has held resident so far, in bytes."""
    if sys.platform == "win32":
        import psutil  # a ComfyUI requirement; Windows keeps the peak working set per process
        return psutil.Process().memory_info().peak_wset
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB
