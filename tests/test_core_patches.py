"""ComfyUI's core model patches on VideoCrafter MODELs: each takes effect or is refused with its name.

Driven as a user's graph does: the pack's loader and conditioning nodes, the core patch node, the core
KSampler (8 frames, few steps) on the tiny VideoCrafter2 and DynamiCrafter 512 models. The hooks are also
compared with ComfyUI's own SD UNet (comfy.ldm...openaimodel.UNetModel) built at the tiny model's sizes.
"""
import logging
import os
import re

import pytest
import torch

import comfy_host
from conftest import rel_err, require_reference
from model_util import tiny_graph

MODELS = ("tiny_t2v_v2", "tiny_dc_512")
FRAMES, WIDTH, HEIGHT, STEPS = 8, 128, 64, 6
CHANGED = 1e-3  # relative L2 a patch must move the sampled latent by

# node -> inputs other than the MODEL (defaults for the rest); "refused": words of the reason, which the error must
# give together with the node's name
MATRIX = {
    "FreeU": {},
    "FreeU_V2": {},
    "PerturbedAttentionGuidance": {"scale": 3.0},
    "SelfAttentionGuidance": {"refused": "4-D image latents"},
    "TomePatchModel": {"ratio": 0.5},
    "HyperTile": {"tile_size": 32},
    "PatchModelAddDownscale": {"end_percent": 1.0},
    "UNetSelfAttentionMultiply": {"q": 1.5},
    "UNetCrossAttentionMultiply": {"q": 1.5},
    "UNetTemporalAttentionMultiply": {"self_temporal": 0.5, "refused": "'.time_stack.' weights"},
    "EasyCache": {"reuse_threshold": 3.0},
    "LazyCache": {"reuse_threshold": 3.0},
    "ModelSamplingDiscrete": {"refused": "checkpoint's own alphas_cumprod"},
    "ModelSamplingContinuousEDM": {"refused": "checkpoint's own alphas_cumprod"},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """See conftest.one_torch_thread."""


# the comfy_extras modules of the nodes above (the in-process host registers no extras by itself)
EXTRAS = ("nodes_freelunch", "nodes_pag", "nodes_sag", "nodes_tomesd", "nodes_hypertile", "nodes_model_downscale",
          "nodes_attention_multiply", "nodes_easycache", "nodes_model_advanced")


def resolved(value):
    """The value of a call the host's API may make async."""
    import asyncio
    import inspect
    return asyncio.run(value) if inspect.isawaitable(value) else value


def core_node(name):
    """The host's class of core node `name`, or None when this ComfyUI has none."""
    import importlib
    for module_name in EXTRAS:
        try:
            module = importlib.import_module(f"comfy_extras.{module_name}")
        except ImportError:
            continue
        if hasattr(module, "NODE_CLASS_MAPPINGS"):
            classes = dict(module.NODE_CLASS_MAPPINGS)
        else:  # nodes of the newer API come from the module's extension
            extension = resolved(module.comfy_entrypoint())
            classes = {cls.define_schema().node_id: cls for cls in resolved(extension.get_node_list())}
        if name in classes:
            return classes[name]
    return None


def run_node(name, **inputs):
    """A core node called with its defaults for the inputs not given; returns its outputs."""
    cls = core_node(name)
    for key, spec in cls.INPUT_TYPES().get("required", {}).items():
        if key not in inputs:
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            inputs[key] = kind[0] if isinstance(kind, list) else options.get("default", options.get("options", [None])[0])
    result = cls.execute(**inputs) if hasattr(cls, "define_schema") else getattr(cls(), cls.FUNCTION)(**inputs)
    return result.result if hasattr(result, "result") else result


class Lazy(dict):
    """A dict that builds a missing entry with `make(key)` on first use."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = self.make(key)
        return self[key]


def graph(pack, models_dir, name):
    """(MODEL, positive, negative, LATENT) as the pack's nodes make them."""
    return tiny_graph(pack, models_dir, name, FRAMES, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def graphs(pack, models_dir):
    """model name -> its graph up to the sampler (built on first use)."""
    return Lazy(lambda name: graph(pack, models_dir, name))


def sample(model, positive, negative, latent):
    import nodes as core
    (samples,) = core.KSampler().sample(model, 7, STEPS, 7.5, "euler", "normal", positive, negative, latent, denoise=1.0)
    return samples["samples"]


@pytest.fixture(scope="module")
def unpatched(graphs):
    """model name -> the latent sampled without any patch."""
    return Lazy(lambda name: sample(*graphs[name]))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("node", sorted(MATRIX))
def test_core_patch_takes_effect_or_is_refused(graphs, unpatched, model_name, node):
    if core_node(node) is None:
        pytest.skip(f"{node} is not in this ComfyUI")
    inputs = dict(MATRIX[node])
    refused = inputs.pop("refused", False)
    model, positive, negative, latent = graphs[model_name]
    (patched,) = run_node(node, model=model, **inputs)
    if refused:
        with pytest.raises(ValueError, match=node) as error:
            sample(patched, positive, negative, latent)
        assert refused in str(error.value)
        return
    result = sample(patched, positive, negative, latent)
    assert torch.isfinite(result).all()
    change = rel_err(result, unpatched[model_name])
    assert change > CHANGED, f"{node} left the {model_name} latent unchanged (relative L2 {change:.2e})"


@pytest.mark.parametrize("node", ["EasyCache", "LazyCache"])
def test_caches_skip_unet_passes(graphs, node, caplog):
    """The cache wrappers see every UNet pass: the node's own summary reports skipped steps."""
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    (patched,) = run_node(node, model=model, reuse_threshold=3.0)
    with caplog.at_level(logging.INFO):
        sample(patched, positive, negative, latent)
    summary = re.search(rf"{node} - skipped (\d+)/(\d+) steps", caplog.text)
    assert summary and int(summary.group(1)) > 0, caplog.text[-2000:]


def test_model_sampling_refusal_says_why(graphs):
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    (patched,) = run_node("ModelSamplingDiscrete", model=model, sampling="eps", zsnr=False)
    with pytest.raises(ValueError, match="latent-scale schedule"):
        sample(patched, positive, negative, latent)


def test_hook_kinds_the_unet_does_not_apply_are_refused(graphs):
    model, positive, negative, latent = graphs["tiny_t2v_v2"]
    patched = model.clone()
    patched.set_model_patch(lambda *args: args[0], "forward_timestep_embed_patch")
    with pytest.raises(ValueError, match="forward_timestep_embed_patch"):
        sample(patched, positive, negative, latent)


def test_model_sampling_that_describes_the_process_samples(graphs, unpatched):
    """A core ModelSamplingDiscrete (eps) on DynamiCrafter 256's own sigmas (plain eps, no scale_arr) computes the
    model's process: it is kept and samples what the model's schedule samples."""
    import comfy.model_sampling

    class Replacement(comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS):
        pass
    model, positive, negative, latent = graphs["tiny_dc_256"]
    replacement = Replacement(model.model.model_config)
    replacement.set_sigmas(model.model.model_sampling.sigmas.clone())
    patched = model.clone()
    patched.add_object_patch("model_sampling", replacement)
    assert rel_err(sample(patched, positive, negative, latent), unpatched["tiny_dc_256"]) < 1e-4


def test_model_sampling_node_on_another_schedule_is_refused(graphs):
    """Core's default betas differ from the reference tiny DynamiCrafter 256's alphas_cumprod (7 % in sigma), so the
    ModelSamplingDiscrete node (eps) is refused there (the smoke model stores core's default schedule)."""
    require_reference("golden/tiny_dc_256.safetensors")
    model, positive, negative, latent = graphs["tiny_dc_256"]
    (node_patched,) = run_node("ModelSamplingDiscrete", model=model, sampling="eps", zsnr=False)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        sample(node_patched, positive, negative, latent)


def core_unet(config):
    """ComfyUI's own SD UNet at the tiny model's sizes (same blocks, channels, heads, context)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    import comfy.ops
    levels = range(len(config.channel_mult))

    def depths(per_level):
        return [int(level in config.attention_levels) for level in levels for _ in range(per_level)]
    unet = UNetModel(image_size=None, in_channels=config.in_channels, model_channels=config.model_channels,
                     out_channels=config.out_channels, num_res_blocks=config.num_res_blocks,
                     channel_mult=config.channel_mult, num_head_channels=config.head_dim, use_spatial_transformer=True,
                     transformer_depth=depths(config.num_res_blocks), transformer_depth_output=depths(config.num_res_blocks + 1),
                     transformer_depth_middle=1, context_dim=config.context_dim,
                     use_linear_in_transformer=config.use_linear, operations=comfy.ops.disable_weight_init).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in unet.parameters():  # the ops leave weights uninitialised
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return unet


def hook_calls(model_patcher, config, patches, replacements):
    """The calls of `patches` / `replacements` (recording wrappers) on our UNet and on core's, same inputs."""
    ours = model_patcher.model.diffusion_model
    x = torch.randn(1, config.in_channels, 2, 8, 16, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 5, config.context_dim, generator=torch.Generator().manual_seed(2))
    kwargs = {"fps": torch.tensor([8.0])} if config.fps_cond else {}
    seen = {}
    for label, unet, inputs in (
            ("ours", ours, (x, torch.tensor([500.0]), context)),
            ("core", core_unet(config), (x.transpose(1, 2).flatten(0, 1), torch.tensor([500.0, 500.0]),
                                        context.repeat_interleave(2, dim=0)))):
        calls = []
        options = {"patches": {k: [f(calls)] for k, f in patches.items()},
                   "patches_replace": {k: {key: f(calls) for key, f in by_key.items()} for k, by_key in replacements.items()}}
        with torch.no_grad():
            unet(*inputs, transformer_options=options, **(kwargs if label == "ours" else {}))
        seen[label] = calls
    return seen


def test_freeu_v2_acts_on_the_blocks_core_unet_gives_it(graphs):
    """FreeU_V2's output_block_patch is called at the same output blocks with the same channel counts as on
    ComfyUI's own UNet, and it changes what those blocks get (its backbone / skip scaling)."""
    model = graphs["tiny_t2v_v2"][0]
    (patched,) = run_node("FreeU_V2", model=model)
    (freeu,) = patched.model_options["transformer_options"]["patches"]["output_block_patch"]

    def recorder(calls):
        def patch(h, hsp, transformer_options):
            new_h, new_hsp = freeu(h, hsp, transformer_options)
            calls.append((transformer_options["block"], h.shape[1], hsp.shape[1],
                          not torch.equal(new_h, h) or not torch.equal(new_hsp, hsp)))
            return new_h, new_hsp
        return patch
    seen = hook_calls(model, model.model.info.unet, {"output_block_patch": recorder}, {})
    assert seen["ours"] == seen["core"]
    assert any(changed for *_, changed in seen["ours"])


def test_pag_replaces_the_middle_self_attention_as_on_core_unet(graphs):
    """PerturbedAttentionGuidance keys its attn1 replacement ("middle", 0) and replaces the attention by v:
    our UNet looks it up at the same transformer blocks, with the same heads and widths, as core's."""
    model = graphs["tiny_t2v_v2"][0]

    def recorder(calls):
        def perturbed_attention(q, k, v, extra_options, mask=None):
            calls.append((extra_options["block"], extra_options["block_index"], extra_options["n_heads"],
                          extra_options["dim_head"], q.shape[-1], v.shape[-1]))
            return v
        return perturbed_attention
    seen = hook_calls(model, model.model.info.unet, {}, {"attn1": {("middle", 0): recorder}})
    assert seen["ours"] and seen["ours"] == seen["core"]


def test_block_and_attention_hooks_see_core_layout(graphs):
    """Every block patch and spatial attention patch is called where core's UNet calls it, with the same
    block keys and token widths; the temporal transformers see none of them."""
    model = graphs["tiny_t2v_v2"][0]

    def block_recorder(kind):
        def make(calls):
            def patch(h, transformer_options):
                calls.append((kind, transformer_options["block"], h.shape[1]))
                return h
            return patch
        return make

    def attention_recorder(kind):
        def make(calls):
            def patch(n, context, value, extra_options):
                calls.append((kind, extra_options["block"], extra_options["block_index"], n.shape[-1], context.shape[-1]))
                return n, context, value
            return patch
        return make
    patches = {"input_block_patch": block_recorder("input"), "input_block_patch_after_skip": block_recorder("after_skip"),
               "attn1_patch": attention_recorder("attn1"), "attn2_patch": attention_recorder("attn2")}
    seen = hook_calls(model, model.model.info.unet, patches, {})
    assert seen["ours"] == seen["core"]
    assert {call[0] for call in seen["ours"]} == {"input", "after_skip", "attn1", "attn2"}


def test_temporal_options_key_reaches_the_temporal_attention(graphs):
    """transformer_options[TEMPORAL_OPTIONS_KEY] addresses the temporal transformers: queries [pixels, frames, C]."""
    unet_module = comfy_host.pack("vc_models.unet")
    model = graphs["tiny_t2v_v2"][0]
    ours = model.model.diffusion_model
    shapes = []

    def patch(n, context, value, extra_options):
        shapes.append(tuple(n.shape))
        return n, context, value
    x = torch.randn(1, 4, 3, 8, 16)
    with torch.no_grad():
        ours(x, torch.tensor([500.0]), torch.randn(1, 5, ours.config.context_dim), fps=torch.tensor([8.0]),
             transformer_options={unet_module.TEMPORAL_OPTIONS_KEY: {"patches": {"attn1_patch": [patch]}}})
    assert shapes and all(shape[1] == 3 for shape in shapes)


def test_controlnet_residuals(graphs):
    """A ControlNet-style `control` of zeros leaves the output bit-identical; non-zero residuals change it."""
    model = graphs["tiny_t2v_v2"][0]
    ours = model.model.diffusion_model
    x = torch.randn(1, 4, 2, 8, 16, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 5, ours.config.context_dim, generator=torch.Generator().manual_seed(2))
    shapes = {"input": [], "output": [], "middle": []}

    def record(h, transformer_options):
        shapes["output"].append(h.shape)
        return h
    with torch.no_grad():
        plain = ours(x, torch.tensor([500.0]), context, fps=torch.tensor([8.0]),
                     transformer_options={"patches": {"input_block_patch": [record]}})

    def control(value):
        # a 2-D ControlNet's residuals: one per input block (skips, consumed last first) and the middle block
        return {"output": [torch.full(s, value) for s in shapes["output"]],
                "middle": [torch.full(shapes["output"][-1], value)]}
    with torch.no_grad():
        zero = ours(x, torch.tensor([500.0]), context, control=control(0.0), fps=torch.tensor([8.0]))
        changed = ours(x, torch.tensor([500.0]), context, control=control(0.1), fps=torch.tensor([8.0]))
    assert torch.equal(zero, plain)
    assert rel_err(changed, plain) > CHANGED


# ---------------------------------------------------------------- the same graphs in a real server
# A server loads core's extra nodes (and custom nodes) by file path, under module names an in-process import never
# gives: each refusal must hold there too. The graphs: pack loader -> conditioning -> core patch node -> core
# KSampler -> core SaveLatent, the sizes above.
PATCH_KIND_NODE = '''
class VideoCrafterTestPatchKind:
    """Puts a model patch of a kind VideoCrafter UNets do not apply on the MODEL (as a third-party node could)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "kind": ("STRING", {"default": "forward_timestep_embed_patch"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, model, kind):
        patched = model.clone()
        patched.set_model_patch(lambda *args, **kwargs: args[0], kind)
        return (patched,)


NODE_CLASS_MAPPINGS = {"VideoCrafterTestPatchKind": VideoCrafterTestPatchKind}
'''
# refusals beyond the matrix: (node, model, inputs, words of the reason, the reference file the refusal relies on)
SERVER_REFUSALS = [
    ("ModelSamplingDiscrete", "tiny_t2v_v2", {"sampling": "eps", "zsnr": False}, "latent-scale schedule", None),
    ("ModelSamplingDiscrete", "tiny_dc_256", {"sampling": "eps", "zsnr": False}, "checkpoint's own alphas_cumprod",
     "golden/tiny_dc_256.safetensors"),  # see test_model_sampling_node_on_another_schedule_is_refused
    ("VideoCrafterTestPatchKind", "tiny_t2v_v2", {}, "'forward_timestep_embed_patch'", None),
]
REFUSALS = [(node, name, {k: v for k, v in MATRIX[node].items() if k != "refused"}, MATRIX[node]["refused"], None)
            for node in sorted(MATRIX) if "refused" in MATRIX[node] for name in MODELS] + SERVER_REFUSALS
EFFECTS = [(node, name) for node in sorted(MATRIX) if "refused" not in MATRIX[node] for name in MODELS]


@pytest.fixture(scope="module")
def server(module_tmp):
    """A server with the tiny checkpoints, the example inputs and a custom node adding a hook kind (see above)."""
    from server_util import ComfyServer
    root = module_tmp("patch_server")
    nodes_dir = root / "custom_nodes"
    nodes_dir.mkdir()
    (nodes_dir / "videocrafter_test_patch_kind.py").write_text(PATCH_KIND_NODE)
    yaml = root / "test_nodes.yaml"
    yaml.write_text(f"vc_test_nodes:\n    custom_nodes: {nodes_dir}\n")
    # one torch thread: see conftest.one_torch_thread (4.5 s a prompt instead of 11-30 s on a shared 2-CPU box)
    srv = ComfyServer(root, extra_args=["--extra-model-paths-config", str(yaml)], env={"OMP_NUM_THREADS": "1"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server_info(server):
    return server.object_info()


def node_inputs(info, node, given):
    """A node's required widget inputs: `given`, else this host's default (links are set by the caller)."""
    values = {}
    for key, (kind, *rest) in info[node]["input"]["required"].items():
        options = rest[0] if rest else {}
        if key in given:
            values[key] = given[key]
        elif isinstance(kind, list):
            values[key] = options.get("default", kind[0])
        elif kind == "COMBO":
            values[key] = options.get("default", options["options"][0])
        elif "default" in options:
            values[key] = options["default"]
    return values


def api_graph(info, model_name, node=None, inputs=None):
    """The API graph of `graph()` above with core `node` (given `inputs`) on the MODEL; SaveLatent at the end."""
    from server_util import START_IMAGE
    workflow = {
        "loader": {"class_type": "VideoCrafterCheckpointLoader",
                   "inputs": {"ckpt_name": f"{model_name}.safetensors", "weight_dtype": "default", "projector_file": "none"}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball bouncing on a wooden floor", "clip": ["loader", 1]}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["loader", 1]}},
    }
    if model_name.startswith("tiny_dc"):
        workflow["image"] = {"class_type": "LoadImage", "inputs": {"image": START_IMAGE}}
        workflow["conditioning"] = {"class_type": "DynamiCrafterConditioning", "inputs": {
            "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["loader", 2], "clip_vision": ["loader", 3],
            "projector": ["loader", 4], "start_image": ["image", 0], "mode": "i2v", "width": WIDTH, "height": HEIGHT,
            "length": FRAMES, "batch_size": 1, "fs": 24}}
        conditions, latent = [["conditioning", 0], ["conditioning", 1]], ["conditioning", 2]
    else:
        workflow["conditioning"] = {"class_type": "VideoCrafterFPSConditioning",
                                    "inputs": {"fps": 8, "positive": ["positive", 0], "negative": ["negative", 0]}}
        workflow["latent"] = {"class_type": "EmptyVideoCrafterLatent",
                              "inputs": {"width": WIDTH, "height": HEIGHT, "frames": FRAMES, "batch_size": 1}}
        conditions, latent = [["conditioning", 0], ["conditioning", 1]], ["latent", 0]
    model = ["loader", 0]
    if node is not None:
        workflow["patch"] = {"class_type": node, "inputs": {**node_inputs(info, node, inputs or {}), "model": model}}
        model = ["patch", 0]
    workflow["sampler"] = {"class_type": "KSampler", "inputs": {
        "seed": 7, "steps": STEPS, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": model, "positive": conditions[0], "negative": conditions[1], "latent_image": latent}}
    workflow["save"] = {"class_type": "SaveLatent",
                        "inputs": {"samples": ["sampler", 0], "filename_prefix": f"core_patches/{model_name}_{node}"}}
    return workflow


def server_sample(server, workflow):
    """The latent the server sampled for `workflow` (asserting it ran)."""
    import safetensors.torch
    from server_util import run_prompt
    entry = run_prompt(server, workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (saved,) = entry["outputs"]["save"]["latents"]
    return safetensors.torch.load_file(os.path.join(server.output_dir, saved["subfolder"], saved["filename"]))["latent_tensor"]


@pytest.fixture(scope="module")
def server_unpatched(server, server_info):
    """model name -> the latent the server samples without any patch."""
    return Lazy(lambda name: server_sample(server, api_graph(server_info, name)))


@pytest.mark.parametrize("node,model_name,inputs,reason,reference", REFUSALS, ids=[f"{r[0]}-{r[1]}" for r in REFUSALS])
def test_refused_patch_is_refused_in_a_server(server, server_info, node, model_name, inputs, reason, reference):
    """The core KSampler in a real server stops with the patch node's name and why: no crash inside the sampler."""
    from server_util import run_prompt
    if node not in server_info:
        pytest.skip(f"{node} is not in this ComfyUI")
    if reference:
        require_reference(reference)
    entry = run_prompt(server, api_graph(server_info, model_name, node, inputs))
    assert entry["status"]["status_str"] == "error", entry["status"]
    (error,) = [body for kind, body in entry["status"]["messages"] if kind == "execution_error"]
    assert error["node_id"] == "sampler", error
    assert node in error["exception_message"] and reason in error["exception_message"], error["exception_message"]


@pytest.mark.parametrize("node,model_name", EFFECTS, ids=[f"{node}-{name}" for node, name in EFFECTS])
def test_patch_takes_effect_in_a_server(server, server_info, server_unpatched, node, model_name):
    if node not in server_info:
        pytest.skip(f"{node} is not in this ComfyUI")
    inputs = MATRIX[node]
    result = server_sample(server, api_graph(server_info, model_name, node, inputs))
    assert torch.isfinite(result).all()
    change = rel_err(result, server_unpatched[model_name])
    assert change > CHANGED, f"{node} left the {model_name} latent unchanged in the server (relative L2 {change:.2e})"
