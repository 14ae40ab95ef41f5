"""Import the ComfyUI host (from $COMFYUI_PATH or the running venv's comfyui-path) into a plain Python process
and load this pack as the module `comfyui_videocrafter`, as tests/comfy_host.py does for tests.

The repository root is the pack itself (an `__init__.py` whose subpackages import each other relatively), so
it is loaded from that file by location, under one module name, as ComfyUI loads a custom node folder.
"""
import importlib
import importlib.util
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_MODULE = "comfyui_videocrafter"


def _reference_dir():
    """$VIDEOCRAFTER_REFERENCE (the `reference` folder or the folder holding it), else ../shared/reference."""
    env = os.environ.get("VIDEOCRAFTER_REFERENCE")
    candidates = [env, os.path.join(env, "reference")] if env else [os.path.join(os.path.dirname(REPO), "shared", "reference")]
    for path in candidates:
        if os.path.isdir(os.path.join(path, "golden")):
            return os.path.abspath(path)
    return os.path.abspath(candidates[0])


# The reference data (tiny models with golden outputs of the original, released key layouts).
REFERENCE = _reference_dir()
HAVE_REFERENCE = os.path.isdir(os.path.join(REFERENCE, "golden"))
REFERENCE_MISSING = (f"reference data not found at {REFERENCE} "
                     "(set VIDEOCRAFTER_REFERENCE to the folder holding golden/ and keys/)")
# Without the reference, tiny random checkpoints with the same names and architecture (a smoke model,
# scripts/smoke_model.py) stand in for the tiny reference models in $VIDEOCRAFTER_SMOKE_DIR, so GOLDEN
# always holds `tiny_*.safetensors` and the start image; the golden tensors exist only with the reference.
SMOKE_DIR = os.path.abspath(os.environ.get("VIDEOCRAFTER_SMOKE_DIR") or os.path.join(REPO, ".smoke"))
GOLDEN = os.path.join(REFERENCE, "golden") if HAVE_REFERENCE else SMOKE_DIR
KEYS = os.path.join(REFERENCE, "keys")


def ensure_smoke_models(folder=SMOKE_DIR, python=None):
    """Generate the smoke checkpoints into `folder` (in a child process, so this one stays free of ComfyUI)."""
    import subprocess
    if os.path.exists(os.path.join(folder, SMOKE_COMPLETE)):
        return folder
    script = os.path.join(REPO, "scripts", "make_smoke_models.py")
    subprocess.run([python or sys.executable, script, folder], check=True)
    return folder


SMOKE_COMPLETE = ".complete"  # written by scripts/make_smoke_models.py once every smoke file is there


def comfyui_path():
    """$COMFYUI_PATH, else the host scripts/setup_host.sh built for the running venv (each host has its own)."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        marker = os.path.join(sys.prefix, "comfyui-path")
        path = open(marker).read().strip() if os.path.exists(marker) else os.path.join(REPO, ".host", "ComfyUI")
    if not os.path.isfile(os.path.join(path, "main.py")):
        raise SystemExit(f"No ComfyUI at {path}: set COMFYUI_PATH or run scripts/setup_host.sh")
    return path


def boot(cpu=None, extra_args=()):
    """Returns the pack module. `cpu` None: CPU only when torch sees no GPU. `extra_args`: further
    ComfyUI command-line options (e.g. the attention implementation)."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    import torch
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if not cpu and "LOCAL_RANK" in os.environ:
        # ComfyUI's model management takes the current device: one GPU per torchrun rank
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    host = comfyui_path()
    if host not in sys.path:
        sys.path.insert(0, host)
    argv = sys.argv
    sys.argv = [argv[0]] + (["--cpu"] if cpu else []) + list(extra_args)
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parsed before model_management initialises)
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


def object_info(node_types):
    """`node_types`' definitions as the host's /object_info serves them (inputs in order, outputs), read
    in-process from the node classes: core nodes, the built-in extra nodes and this pack's."""
    import asyncio
    module = boot(cpu=True)
    # main.py imports the host's `utils` package first; without it a core module's `import utils` can bind
    # comfy/utils.py under that name and the server module (imported by some extra nodes) fails
    utils = sys.modules.get("utils")
    if utils is None or not hasattr(utils, "__path__"):  # absent, or a module file took the package's name
        folder = os.path.join(comfyui_path(), "utils")
        spec = importlib.util.spec_from_file_location("utils", os.path.join(folder, "__init__.py"),
                                                      submodule_search_locations=[folder])
        sys.modules["utils"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["utils"])
    importlib.import_module("utils.install_util")
    import nodes
    pack_nodes = module.vc_nodes.NODE_CLASSES
    if not set(node_types) <= set(nodes.NODE_CLASS_MAPPINGS) | set(pack_nodes):
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    classes = {**nodes.NODE_CLASS_MAPPINGS, **pack_nodes}
    info = {}
    for name in node_types:
        cls = classes[name]
        if hasattr(cls, "GET_NODE_INFO_V1"):  # a node of the new API (comfy_api)
            info[name] = cls.GET_NODE_INFO_V1()
        else:
            inputs = cls.INPUT_TYPES()
            info[name] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                          "output": list(cls.RETURN_TYPES),
                          "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
    return json.loads(json.dumps(info))  # lists where the classes have tuples, as the server sends them
