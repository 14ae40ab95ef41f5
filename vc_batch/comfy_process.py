"""Run one ComfyUI process for a Ray worker and end it when that worker ends.

    python comfy_process.py PARENT_PID COMFYUI_DIR PYTHON main.py ARGS...

A Ray actor process that dies (killed, node lost, the batch stopped) cannot clean up its
children; this small watcher, started by the actor, ends ComfyUI as soon as its parent is
gone, and exits with ComfyUI's exit code when ComfyUI ends.  Portable: it polls the parent pid
instead of using a Linux-only parent-death signal.
"""
import os
import subprocess
import sys


def main(argv):
    parent, cwd, cmd = int(argv[0]), argv[1], argv[2:]
    child = subprocess.Popen(cmd, cwd=cwd)
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
