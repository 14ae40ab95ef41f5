"""Start and stop a real ComfyUI server (the host of the running venv, see comfy_boot.comfyui_path) and talk to it
over HTTP: the launcher `make demo`, scripts/gpu_check.py and the tests (tests/server_util.py) share.

Usage:
    srv = ComfyServer(tmp_path).start()      # free port, temp input/output dirs, tiny checkpoints
    srv.url                                  # http://127.0.0.1:<port>
    entry = run_prompt(srv, workflow)        # POST /prompt, then its /history entry once finished
    srv.stop()                               # SIGTERM, then SIGKILL; srv.start() again on the same port

The server runs `main.py --cpu` from the host tree (so this pack, symlinked into its
custom_nodes, is loaded) with an extra_model_paths yaml that points `checkpoints` (and a
few other folders) at a temp folder holding symlinks to the tiny reference checkpoints.
No ComfyUI import happens in the calling process.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from comfy_boot import REPO, GOLDEN, comfyui_path  # noqa: E402,F401  (no ComfyUI import: paths only)

TINY_CHECKPOINTS = ("tiny_t2v_v2.safetensors", "tiny_t2v_v1.safetensors", "tiny_i2v_v1.safetensors",
                    "tiny_dc_256.safetensors", "tiny_dc_512.safetensors")


def venv_python():
    """The running interpreter: its environment is the host's (each host has its own venv)."""
    return sys.executable


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, data=None, timeout=10):
    """GET (data None) or POST json; returns the decoded body (raises urllib errors)."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


class ComfyServer:
    def __init__(self, root, port=None, checkpoints=TINY_CHECKPOINTS, extra_args=(), env=None, extra_folders=None):
        """env: added to the server's environment. extra_folders: {ComfyUI folder name: path} added to the
        server's extra_model_paths yaml (a path relative to `models_dir`, or absolute), e.g. {"loras": "loras",
        "custom_nodes": "/abs/test_nodes"}."""
        self.root = str(root)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.input_dir = os.path.join(self.root, "comfy_input")
        self.output_dir = os.path.join(self.root, "comfy_output")
        self.temp_dir = os.path.join(self.root, "comfy_temp")
        self.user_dir = os.path.join(self.root, "comfy_user")
        self.models_dir = os.path.join(self.root, "comfy_models")
        self.log_path = os.path.join(self.root, "comfy_server.log")
        self.extra_args = list(extra_args)
        self.env = dict(env or {})  # added to the server's environment
        self.extra_folders = dict(extra_folders or {})
        self.proc = None
        self._log = None
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir):
            os.makedirs(d, exist_ok=True)
        self._link_checkpoints(checkpoints)

    def _link_checkpoints(self, names):
        ckpt = os.path.join(self.models_dir, "checkpoints")
        os.makedirs(ckpt, exist_ok=True)
        for name in names:
            src = os.path.join(GOLDEN, name)
            dst = os.path.join(ckpt, name)
            if os.path.exists(src) and not os.path.lexists(dst):
                os.symlink(src, dst)
        self.yaml_path = os.path.join(self.root, "extra_model_paths.yaml")
        with open(self.yaml_path, "w") as f:
            f.write("vc_test:\n"
                    f"    base_path: {self.models_dir}\n"
                    "    checkpoints: checkpoints\n"
                    "    videocrafter: checkpoints\n"
                    "    controlnet: controlnet\n"
                    "    clip_vision: clip_vision\n"
                    "    vae: vae\n")
            for name, path in self.extra_folders.items():
                f.write(f"    {name}: {path}\n")

    def command(self):
        return [venv_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--output-directory", self.output_dir,
                "--input-directory", self.input_dir, "--temp-directory", self.temp_dir,
                "--user-directory", self.user_dir,
                "--extra-model-paths-config", self.yaml_path] + self.extra_args

    def start(self, timeout=180):
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._log = open(self.log_path, "ab")
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(self.command(), cwd=comfyui_path(), stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def alive(self):
        try:
            http_json(self.url + "/system_stats", timeout=2)
            return True
        except Exception:
            return False

    def wait_ready(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            if self.alive():
                return
            time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer /system_stats in {timeout}s; log:\n{self.log_tail()}")

    def stop(self, kill=False, timeout=20):
        """Stop the server (kill=True: SIGKILL at once, as a crash would)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def restart(self, kill=True, timeout=180):
        self.stop(kill=kill)
        return self.start(timeout)

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def object_info(self):
        return http_json(self.url + "/object_info", timeout=30)

    def queue(self):
        return http_json(self.url + "/queue")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def submit(server, workflow):
    """(the /prompt answer, None) when queued, (None, the error body) when validation refused it."""
    try:
        return http_json(server.url + "/prompt", {"prompt": workflow, "client_id": uuid.uuid4().hex}), None
    except urllib.error.HTTPError as e:
        return None, json.loads(e.read())


def wait_history(server, prompt_id, timeout=240):
    """The /history entry of a prompt once it finished (status "success" or "error")."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = http_json(f"{server.url}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None \
                and entry["status"]["status_str"] in ("success", "error"):
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish; log:\n{server.log_tail()}")


def run_prompt(server, workflow, timeout=240):
    """Queue a workflow validation accepts and return its finished /history entry."""
    result, refused = submit(server, workflow)
    if refused is not None:
        raise AssertionError(f"the server refused the prompt: {refused}")
    return wait_history(server, result["prompt_id"], timeout)


def output_files(server, entry):
    """Full paths of the files a finished prompt's nodes saved."""
    return [os.path.join(server.output_dir, f["subfolder"], f["filename"])
            for out in entry["outputs"].values() for f in out.get("images", [])]


def fill_inputs(workflow, values):
    """Set every widget input (not a link) named in `values`, in every node of an API workflow; returns it."""
    for node in workflow.values():
        for key in list(node["inputs"]):
            if key in values and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = values[key]
    return workflow


def load_workflow(name, api=True):
    """A shipped workflow: workflows/api/<name>.json (API format) or its UI graph, the template
    example_workflows/<title>.json (scripts/build_workflows.py ui_path)."""
    import build_workflows  # scripts/, beside this module
    with open(build_workflows.api_path(name) if api else build_workflows.ui_path(name)) as f:
        return json.load(f)
