"""Run one ComfyUI process for a Ray worker and end it when that worker ends.

    python comfy_process.py PARENT_PID COMFYUI_DIR PYTHON main.py ARGS...

A Ray actor process that dies (killed, node lost, the batch stopped) cannot clean up its
children; this small watcher, started by the actor, ends ComfyUI as soon as its parent is
gone, and exits with ComfyUI's exit code when ComfyUI ends.  It polls the parent pid (any OS).
Ray itself SIGKILLs the processes an ended worker leaves, the watcher among them: on Linux
ComfyUI therefore also gets a parent-death signal, so it never outlives the watcher.
"""
import os
import signal
import subprocess
import sys


def _quit(*_):
    raise SystemExit(1)  # runs the `finally` below: ComfyUI ends with its watcher


def _die_with_parent():
    """Linux: SIGKILL this process when the (single-threaded) watcher ends."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv):
    parent, cwd, cmd = int(argv[0]), argv[1], argv[2:]
    signal.signal(signal.SIGTERM, _quit)
    child = subprocess.Popen(cmd, cwd=cwd, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    try:
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if os.getppid() != parent:  # the actor is gone: this process was re-parented
                return 1
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
