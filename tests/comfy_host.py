"""Bring up the real ComfyUI (the host set up by `make setup`) inside a test process, on the CPU."""
import importlib.util
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(os.path.dirname(REPO), "shared", "reference", "golden")
KEYS = os.path.join(os.path.dirname(REPO), "shared", "reference", "keys")
PACK_MODULE = "comfyui_videocrafter"
CPU_ONLY = True  # tests run on the CPU; the benchmark may switch this off to use a GPU
EXTRA_ARGS = []  # further ComfyUI command-line options (the benchmark passes attention choices)


def comfyui_path():
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        marker = os.path.join(REPO, ".venv", "comfyui-path")
        path = open(marker).read().strip() if os.path.exists(marker) else os.path.join(REPO, ".host", "ComfyUI")
    return path


def boot():
    """Import ComfyUI as its own main.py would, CPU only; returns the pack module (loaded once)."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    host = comfyui_path()
    if host not in sys.path:
        sys.path.insert(0, host)
    argv = sys.argv
    sys.argv = ([argv[0], "--cpu"] if CPU_ONLY else [argv[0]]) + list(EXTRA_ARGS)
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu before model_management initialises)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = argv
    spec = importlib.util.spec_from_file_location(PACK_MODULE, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


def pack(submodule):
    boot()
    return importlib.import_module(f"{PACK_MODULE}.{submodule}")
