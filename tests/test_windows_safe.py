"""Windows: the pack loads without Unix-only modules, the path checks follow Windows path rules
(drive letters, UNC shares, backslashes, case), and the batch manifest lock works across processes.

The import test runs the real ComfyUI in a child process where `resource`, `fcntl`, `termios`, `pwd`,
... cannot be imported (as on Windows), then imports every module of the pack and asks every node for
its inputs. The path cases run the pack's checks with `ntpath` (Windows) and `posixpath` semantics.
"""
import json
import ntpath
import os
import posixpath
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import comfy_host  # noqa: E402

REPO = comfy_host.REPO
UNIX_ONLY = ("resource", "fcntl", "termios", "tty", "pty", "pwd", "grp", "crypt", "syslog", "posix_ipc")

# The child: core ComfyUI first (core itself may use Unix modules here; on Windows it has its own paths),
# then the Unix-only modules are made unimportable and the pack is loaded as ComfyUI loads it.
BLOCKED_IMPORT_SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, os, pkgutil, sys
    sys.path.insert(0, {tests!r})
    import comfy_host
    from comfy_boot import boot, comfyui_path, PACK_MODULE
    sys.path.insert(0, comfyui_path())
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.cli_args, comfy.model_management, comfy.samplers, nodes  # noqa: F401  core, before the block

    BLOCKED = set({blocked!r})

    class WindowsHasNoSuchModule(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: Unix only)", name=name)
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, WindowsHasNoSuchModule())

    pack = boot(cpu=True)
    modules = []
    for sub in ("vc_nodes", "vc_models", "vc_train", "vc_batch"):
        package = importlib.import_module(f"{{PACK_MODULE}}.{{sub}}")
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(".__main__"):  # runs the command line when imported
                continue
            importlib.import_module(info.name)
            modules.append(info.name)
    inputs = {{name: sorted(cls.INPUT_TYPES().get("required", {{}})) for name, cls in pack.vc_nodes.NODE_CLASSES.items()}}
    print("RESULT " + json.dumps({{"modules": modules, "nodes": inputs,
                                   "blocked_loaded": sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)}}))
""")


def test_pack_loads_without_unix_only_modules():
    script = BLOCKED_IMPORT_SCRIPT.format(tests=HERE, blocked=UNIX_ONLY)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COMFYUI_PATH": comfy_host.comfyui_path()})
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["blocked_loaded"] == []
    for name in ("vc_train.trainer", "vc_batch.manifest", "vc_nodes.train", "vc_nodes.safe_paths"):
        assert f"{comfy_host.PACK_MODULE}.{name}" in result["modules"]
    # every node the pack registers answered INPUT_TYPES (what ComfyUI's /object_info asks)
    assert len(result["nodes"]) >= 16 and "VideoCrafterTrainI2V" in result["nodes"], sorted(result["nodes"])
    assert "ckpt_name" in result["nodes"]["VideoCrafterCheckpointLoader"]


@pytest.fixture(scope="module")
def safe_paths(pack):
    return comfy_host.pack("vc_nodes.safe_paths")


WINDOWS_ROOT = r"C:\ComfyUI\input"
# (value, the path it resolves to, or None for refused)
WINDOWS_CASES = [
    ("clips", r"C:\ComfyUI\input\clips"),
    (r"sub\clip.mp4", r"C:\ComfyUI\input\sub\clip.mp4"),
    ("sub/clip.mp4", r"C:\ComfyUI\input\sub\clip.mp4"),  # forward slashes are separators too
    (r"sub\..\clip.mp4", r"C:\ComfyUI\input\clip.mp4"),
    (r"C:\ComfyUI\input\clips", r"C:\ComfyUI\input\clips"),
    (r"c:\comfyui\INPUT\clips", r"c:\comfyui\INPUT\clips"),  # Windows paths ignore case
    ("C:/ComfyUI/input/clips", r"C:\ComfyUI\input\clips"),
    (r"..\secret", None),
    (r"sub\..\..\secret", None),
    (r"C:\ComfyUI\input2\clips", None),  # a sibling sharing the prefix
    (r"C:\ComfyUI\input\..\models", None),
    (r"D:\data\clips", None),  # another drive
    ("D:/data", None),
    (r"D:clips", None),  # relative to drive D's current folder
    (r"\Windows\System32", None),  # rooted on the current drive
    (r"\\server\share\clips", None),  # a UNC share
    (r"\\?\C:\Windows", None),
]
POSIX_ROOT = "/srv/comfy/input"
POSIX_CASES = [
    ("clips", "/srv/comfy/input/clips"),
    ("sub/clip.mp4", "/srv/comfy/input/sub/clip.mp4"),
    ("/srv/comfy/input/clips", "/srv/comfy/input/clips"),
    ("../secret", None),
    ("sub/../../secret", None),
    ("/srv/comfy/input2/clips", None),
    ("/etc/passwd", None),
]


@pytest.mark.parametrize("paths,root,value,expected",
                         [(ntpath, WINDOWS_ROOT, v, e) for v, e in WINDOWS_CASES]
                         + [(posixpath, POSIX_ROOT, v, e) for v, e in POSIX_CASES],
                         ids=[f"nt:{v}" for v, _ in WINDOWS_CASES] + [f"posix:{v}" for v, _ in POSIX_CASES])
def test_input_path_check(safe_paths, monkeypatch, paths, root, value, expected):
    monkeypatch.delenv(safe_paths.ALLOW_ABSOLUTE_ENV, raising=False)
    if expected is None:
        with pytest.raises(ValueError, match="'data'.*(outside|climbs out)"):
            safe_paths.resolve_input_path(value, [root], "data", paths=paths)
    else:
        assert safe_paths.resolve_input_path(value, [root], "data", paths=paths) == expected


def test_unc_root_and_owner_permission(safe_paths, monkeypatch):
    """ComfyUI itself on a network share: paths inside that share's input folder are fine, others are not;
    the server owner's permission opens other drives."""
    root = r"\\nas\comfy\input"
    monkeypatch.delenv(safe_paths.ALLOW_ABSOLUTE_ENV, raising=False)
    assert safe_paths.resolve_input_path(r"clips\a.mp4", [root], "data", paths=ntpath) == r"\\nas\comfy\input\clips\a.mp4"
    assert safe_paths.resolve_input_path(r"\\NAS\Comfy\input\clips", [root], "data", paths=ntpath) == r"\\NAS\Comfy\input\clips"
    for outside in (r"\\nas\other\clips", r"\\nas\comfy\input2", r"..\x", r"C:\data"):
        with pytest.raises(ValueError):
            safe_paths.resolve_input_path(outside, [root], "data", paths=ntpath)
    monkeypatch.setenv(safe_paths.ALLOW_ABSOLUTE_ENV, "1")
    assert safe_paths.resolve_input_path(r"D:\data", [root], "data", paths=ntpath) == r"D:\data"
    with pytest.raises(ValueError, match="climbs out"):  # permission covers absolute paths, never '..'
        safe_paths.resolve_input_path(r"..\x", [root], "data", paths=ntpath)


@pytest.mark.parametrize("name", ["run1", "my run.safetensors", "vc2-é", "a.b.c"])
def test_plain_file_name_accepts(safe_paths, name):
    assert safe_paths.plain_file_name(name, "name") == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", r"a\b", "C:run", "run:stream", r"\\srv\x", "NUL", "nul.txt",
                                  "COM1.safetensors", "con", "LPT9", "run.", "a*b", "a?b", 'a"b', "a|b", "a<b", "a\0b"])
def test_plain_file_name_refuses(safe_paths, name):
    with pytest.raises(ValueError, match="plain file name"):
        safe_paths.plain_file_name(name, "name")


def _vc_batch_child(code, block_filelock=False):
    """Run `code` in a plain Python (no ComfyUI on the path), vc_batch importable from the repository."""
    prelude = f"import sys\nsys.path.insert(0, {REPO!r})\n"
    if block_filelock:
        prelude += "sys.modules['filelock'] = None\n"  # an interpreter without the package
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60)


def test_manifest_lock_holds_across_processes(pack, tmp_path):
    Manifest = comfy_host.pack("vc_batch.manifest").Manifest  # REPO on sys.path here would shadow ComfyUI's `nodes`
    path = str(tmp_path / "runs" / "manifest.jsonl")
    held = Manifest(path).lock()
    try:
        proc = _vc_batch_child(f"""
            from vc_batch.manifest import Manifest, ManifestLocked
            try:
                Manifest({path!r}).lock()
            except ManifestLocked as e:
                print("LOCKED", e)
        """)
        assert "LOCKED" in proc.stdout and "in use by another vc_batch process" in proc.stdout, proc.stderr
    finally:
        held.unlock()
    proc = _vc_batch_child(f"""
        from vc_batch.manifest import Manifest
        Manifest({path!r}).lock().unlock()
        print("FREE")
    """)
    assert "FREE" in proc.stdout, proc.stderr


def test_vc_batch_without_filelock_says_how_to_install(tmp_path):
    proc = _vc_batch_child(f"""
        import vc_batch.cli, vc_batch.manifest  # importable: the lock is needed only to run a batch
        try:
            vc_batch.manifest.Manifest({str(tmp_path / "m.jsonl")!r}).lock()
        except RuntimeError as e:
            print("ERROR", e)
    """, block_filelock=True)
    assert "ERROR" in proc.stdout, proc.stderr
    assert "pip install filelock" in proc.stdout
