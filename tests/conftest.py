import json
import os
import shutil
import tempfile

import pytest

# Without the reference data (../shared/reference or $VIDEOCRAFTER_REFERENCE) the tests that need it skip
# naming the file they need (require_reference) and the others run on smoke checkpoints generated for this session (see comfy_boot.GOLDEN).
_OWN_SMOKE_DIR = None
if not os.environ.get("VIDEOCRAFTER_SMOKE_DIR"):
    _OWN_SMOKE_DIR = os.path.join(tempfile.gettempdir(), f"videocrafter-smoke-{os.getpid()}")
    os.environ["VIDEOCRAFTER_SMOKE_DIR"] = _OWN_SMOKE_DIR

import comfy_host  # noqa: E402  (after VIDEOCRAFTER_SMOKE_DIR is set)

VARIANTS = ["tiny_t2v_v1", "tiny_t2v_v2", "tiny_i2v_v1"]
# CI sets this: a missing reference, or a test skipped for want of it, fails the run.
REQUIRE_REFERENCE = os.environ.get("VIDEOCRAFTER_REQUIRE_REFERENCE") == "1"
REFERENCE_MISSING = comfy_host.REFERENCE_MISSING


def require_reference(*files):
    """The full paths of reference files (`files` relative to the reference folder, e.g. "keys/t2v_512_v2.0.keys.tsv",
    "golden/tiny_t2v_v2.safetensors"); without one of them the calling test (or fixture) is skipped with a reason
    naming the file, and fails on CI (VIDEOCRAFTER_REQUIRE_REFERENCE=1). A test whose expectation comes from the
    reference calls this before it reads or relies on those files, so it never runs on the smoke models against a
    tolerance set on the reference ones (the smoke models take the reference models' names in GOLDEN)."""
    paths = [os.path.join(comfy_host.REFERENCE, *name.split("/")) for name in files or ("golden",)]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        message = f"needs {missing[0]}" + (f" and {len(missing) - 1} more reference files" if len(missing) > 1 else "")
        message += f" ({REFERENCE_MISSING})" if not comfy_host.HAVE_REFERENCE else " (not in the reference data)"
        if REQUIRE_REFERENCE:
            pytest.fail(message)
        pytest.skip(message)
    return paths


def reference_path(name):
    """The full path of one reference file (see require_reference)."""
    return require_reference(name)[0]


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped without it (scripts/gpu_check.sh runs them where a GPU is lent)."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these where one is lent)")
    for item in gpu_tests:
        item.add_marker(skip)


def pytest_sessionstart(session):
    if comfy_host.HAVE_REFERENCE:
        return
    if REQUIRE_REFERENCE:
        pytest.exit(f"{REFERENCE_MISSING}; VIDEOCRAFTER_REQUIRE_REFERENCE=1 (CI) needs it", returncode=1)
    comfy_host.comfy_boot.ensure_smoke_models(comfy_host.SMOKE_DIR)


def _reference_skips(terminalreporter):
    return [r for r in terminalreporter.stats.get("skipped", [])
            if isinstance(r.longrepr, tuple) and "reference" in str(r.longrepr[2]).lower()]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = _reference_skips(terminalreporter)
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} skipped: {REFERENCE_MISSING}; the other tests ran on smoke "
                                    f"models generated in {comfy_host.SMOKE_DIR}", yellow=True)
    if REQUIRE_REFERENCE and skipped:
        terminalreporter.write_line("VIDEOCRAFTER_REQUIRE_REFERENCE=1: reference tests must not be skipped", red=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if REQUIRE_REFERENCE and reporter is not None and _reference_skips(reporter):
        session.exitstatus = 1
    if _OWN_SMOKE_DIR:
        shutil.rmtree(_OWN_SMOKE_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def pack():
    """The real ComfyUI imported in-process (CPU) with this pack loaded."""
    return comfy_host.boot()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """mktemp for a module's fixtures: what they write (checkpoints, servers' folders) is removed when the module is
    done, so the suite's disk use stays that of one module at a time (pytest itself keeps those folders to the end
    of the session, and the whole run wrote 7 GB; CI's disk ran out)."""
    made = []

    def mktemp(name):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_model_folder(pack, module_tmp):
    """A new folder ComfyUI lists first for a kind of model ("loras", "controlnet"...) during one module: taken off
    ComfyUI's list (and its file-list cache) before module_tmp removes it, so later modules never list a folder that
    is gone."""
    import folder_paths
    listed = []

    def make(kind):
        folder = module_tmp(kind)
        folder_paths.add_model_folder_path(kind, str(folder), is_default=True)
        listed.append((kind, str(folder)))
        return folder

    yield make
    for kind, folder in listed:
        folder_paths.folder_names_and_paths[kind][0].remove(folder)
        folder_paths.filename_list_cache.pop(kind, None)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ComfyUI server for the tests that only need one (a module needing another setup defines its
    own `server`): the tiny checkpoints; its input folder holds what the pack writes there at start-up (the example
    inputs, server_util.START_IMAGE among them), as a user's does."""
    from server_util import ComfyServer
    srv = ComfyServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def models_dir(pack, tmp_path_factory):
    """A models/videocrafter folder registered with ComfyUI holding the tiny checkpoints (the reference ones,
    or the smoke models without the reference data)."""
    import folder_paths
    folder = tmp_path_factory.mktemp("videocrafter_models")
    for name in VARIANTS:
        src = os.path.join(comfy_host.GOLDEN, name + ".safetensors")
        if os.path.exists(src):
            os.symlink(src, folder / (name + ".safetensors"))
    folder_paths.add_model_folder_path("videocrafter", str(folder), is_default=True)
    return folder


def load_golden(name, case="case1"):
    """The golden tensors and inputs of one reference case (skips without the reference data)."""
    tensors_path, meta_path = require_reference(f"golden/{name}.{case}.golden.safetensors", f"golden/{name}.{case}.json")
    import safetensors.torch
    tensors = safetensors.torch.load_file(tensors_path)
    with open(meta_path) as f:
        meta = json.load(f)
    return tensors, meta


def rel_err(ours, ref):
    ours, ref = ours.detach().float().cpu(), ref.detach().float().cpu()
    assert ours.shape == ref.shape, f"shape {list(ours.shape)} != reference {list(ref.shape)}"
    return ((ours - ref).norm() / ref.norm()).item()


def write_ckpt(sd, path, deepspeed=False):
    """`sd` as a released file would hold it: a Lightning `.ckpt` ({"state_dict"}) or a DeepSpeed dump
    ({"module"} with `_forward_module.` prefixes)."""
    import torch
    if deepspeed:
        torch.save({"module": {"_forward_module." + k: v for k, v in sd.items()}}, path)
    else:
        torch.save({"state_dict": sd}, path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests: on a shared 2-CPU box two OpenMP threads competing
    with other processes ran the tiny UNet calls 4-9x slower (the goldens are met either way)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def core_context_windows(model, **overrides):
    """The MODEL through core 'Context Windows (Manual)' on the frame axis (dim 2), every other input at this
    host's default (0.33 added `freenoise`, `causal_window_fix` and the retain/split inputs; older hosts lack
    them): `overrides` set inputs by name, and one this host does not have is an error."""
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode as node
    spec = node.INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    unknown = set(overrides) - set(inputs)
    assert not unknown, f"Context Windows (Manual) of this host has no input {sorted(unknown)}"
    values = {name: s[1]["default"] if "default" in s[1] else (s[0] if isinstance(s[0], list) else s[1]["options"])[0]
              for name, s in inputs.items() if name != "model"}
    values.update(dim=2, **overrides)
    result = node.execute(model, **values) if hasattr(node, "execute") else getattr(node(), node.FUNCTION)(model, **values)
    return (result.result if hasattr(result, "result") else result)[0]


def has_core_input(node, name):
    """Whether this host's core node class takes input `name` (inputs differ between supported hosts)."""
    spec = node.INPUT_TYPES()
    return name in {**spec["required"], **spec.get("optional", {})}


def tiny_toon_state_dict():
    """The tiny ToonCrafter: with the reference, tiny_dc_512 updated with the decoder delta (as its README
    rebuilds it); without, the smoke model of the same architecture."""
    import smoke_model  # scripts/ (on sys.path via comfy_host): the fixture builds on the booted pack
    return smoke_model.tiny_toon_state_dict(comfy_host.GOLDEN)


def tiny_motionctrl_state_dict(camera_only=False):
    """The tiny MotionCtrl (reference README): the delta's tensors plus tiny_t2v_v2's VAE and text encoder, the
    adapter at the top level (`omcm.*`) as released; `camera_only`: without the adapter (the VideoCrafter2 cmcm
    release's controls). Skips without the reference data."""
    import safetensors.torch
    delta_path, base_path = require_reference("golden/tiny_motionctrl.delta.safetensors", "golden/tiny_t2v_v2.safetensors")
    sd = dict(safetensors.torch.load_file(delta_path))
    base = safetensors.torch.load_file(base_path)
    sd.update({k: v for k, v in base.items() if k.startswith(("first_stage_model.", "cond_stage_model."))})
    return {k: v for k, v in sd.items() if not (camera_only and k.startswith("omcm."))}


@pytest.fixture(scope="session")
def tiny_toon_file(models_dir):
    """The tiny ToonCrafter (see tiny_toon_state_dict) as models/videocrafter/tiny_toon_512.safetensors."""
    import safetensors.torch
    name = "tiny_toon_512.safetensors"
    if not os.path.exists(models_dir / name):
        safetensors.torch.save_file(tiny_toon_state_dict(), models_dir / name)
    return name
