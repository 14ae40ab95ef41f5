"""vc_batch: batch generation through ComfyUI's HTTP API.

Unit tests (no server) for the table, role finding, manifest and error formatting; then
end-to-end tests against a REAL ComfyUI server (main.py --cpu with this pack and the tiny
checkpoints), driving the command line as a user would: tiny sizes (128x64, 4 frames,
2 steps) keep them short.
"""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from server_util import REPO, ComfyServer, http_json, venv_python  # noqa: E402
from batch_util import (CLI, COND_IMAGE, T2V_WF, assert_video, history_of, i2v_row, job_files,  # noqa: E402
                        read_manifest, runs_per_job, t2v_row, wait_for, write_table)

sys.path.insert(0, REPO)
from vc_batch import workflow as wfm  # noqa: E402
from vc_batch.client import format_rejection  # noqa: E402
from vc_batch.manifest import Manifest, ManifestLocked  # noqa: E402
from vc_batch.table import TableError, load_jobs  # noqa: E402

I2V_WF = os.path.join(REPO, "workflows", "api", "vc1_i2v_512.json")


# ----------------------------------------------------------------------------------------
# unit tests: no server
# ----------------------------------------------------------------------------------------

def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_table_csv_aliases_blanks_and_names(tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    p = _write(tmp_path / "jobs.csv",
               "Name,Prompt,negative_prompt,image,seed,CFG,Frames,unknown_col\n"
               "first job!,\"a cat, running\",,,7,,16,x\n"
               ",a dog,blurry,imgs/dog.png,,7.5,,\n"
               "\n")
    warnings = []
    jobs = load_jobs(p, warn=warnings.append)
    assert [j.name for j in jobs] == ["first_job", "job_00002"]
    assert jobs[0].values == {"prompt": "a cat, running", "seed": "7", "frames": "16"}
    assert not jobs[0].has_image and jobs[1].has_image
    assert jobs[1].values["image"] == os.path.join(str(tmp_path), "imgs", "dog.png")
    assert jobs[1].values["negative"] == "blurry" and jobs[1].values["cfg"] == "7.5"
    assert any("unknown_col" in w for w in warnings)


def test_table_jsonl_and_duplicate_names(tmp_path):
    p = _write(tmp_path / "jobs.jsonl",
               '{"prompt": "a", "seed": 3, "name": "x"}\n# comment\n\n{"prompt": "b", "steps": null}\n')
    jobs = load_jobs(p)
    assert [j.name for j in jobs] == ["x", "job_00002"]
    assert jobs[0].values == {"prompt": "a", "seed": 3} and jobs[1].values == {"prompt": "b"}
    dup = _write(tmp_path / "dup.jsonl", '{"prompt": "a", "name": "x"}\n{"prompt": "b", "name": "x"}\n')
    with pytest.raises(TableError, match="already used"):
        load_jobs(dup)


def test_csv_quoted_delimiters_and_doubled_quotes(tmp_path):
    # valid RFC 4180: commas, semicolons and doubled quotes inside quoted cells (a delimiter
    # sniffer reads this table as semicolon-separated and shifts every cell)
    p = _write(tmp_path / "jobs.csv",
               'prompt,negative,image,seed,steps\n'
               '"dark; ""noisy""",blurry,"""quoted""",25,"ugly, bad"\n'
               'stills/a.png,"she said ""run"", then; left",25,42,stills/a.png\n'
               'blurry,"she said ""run"", then; left","dark; ""noisy""","a, ""b""; c","she said ""run"", then; left"\n')
    jobs = load_jobs(p)
    assert [j.values for j in jobs] == [
        {"prompt": 'dark; "noisy"', "negative": "blurry", "image": os.path.join(str(tmp_path), '"quoted"'),
         "seed": "25", "steps": "ugly, bad"},
        {"prompt": "stills/a.png", "negative": 'she said "run", then; left', "image": os.path.join(str(tmp_path), "25"),
         "seed": "42", "steps": "stills/a.png"},
        {"prompt": "blurry", "negative": 'she said "run", then; left', "image": os.path.join(str(tmp_path), 'dark; "noisy"'),
         "seed": 'a, "b"; c', "steps": 'she said "run", then; left'}]


def test_csv_delimiter_is_an_option_never_guessed(tmp_path):
    p = _write(tmp_path / "jobs.csv", 'prompt;seed\n"a, b; c";3\n')
    jobs = load_jobs(p, delimiter=";")
    assert jobs[0].values == {"prompt": "a, b; c", "seed": "3"}
    # read comma-separated, the header is one unknown column: an error naming line 1, not
    # a batch of jobs that all run the workflow's default prompt
    with pytest.raises(TableError, match=r"jobs\.csv:1: .*no known column.*--delimiter"):
        load_jobs(p)
    tsv = _write(tmp_path / "jobs.tsv", 'prompt\tseed\n"a\tb"\t4\n')
    r = subprocess.run([venv_python(), CLI, tsv, "--delimiter", "\\t", "--dry-run",
                        "--workflow", T2V_WF], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"text": "a\\tb"' in r.stdout and '"seed": 4' in r.stdout


def test_csv_cells_beyond_the_header_are_errors_naming_the_line(tmp_path):
    p = _write(tmp_path / "jobs.csv",
               'prompt,seed\n'
               '"two\nlines",1\n'          # lines 2-3
               'ok,2,,\n'                  # line 4: blank extra cells lose nothing
               'lost,3,"a cell beyond"\n')  # line 5
    with pytest.raises(TableError, match=r"jobs\.csv:5: 3 cells but the header has 2") as e:
        load_jobs(p)
    assert "a cell beyond" in str(e.value)
    nameless = _write(tmp_path / "nameless.csv", 'prompt,,seed\nok,,1\nx,data,2\n')
    with pytest.raises(TableError, match=r"nameless\.csv:3: cell 2 .*no name"):
        load_jobs(nameless)
    broken = _write(tmp_path / "broken.csv", 'prompt,seed\nok,1\n"bad"x,2\n')
    with pytest.raises(TableError, match=r"broken\.csv:3: broken CSV quoting"):
        load_jobs(broken)
    with pytest.raises(TableError, match=r"none\.jsonl:2: no known key"):
        load_jobs(_write(tmp_path / "none.jsonl", '{"prompt": "a"}\n{"promt": "b"}\n'))


def test_a_huge_cell_is_named_as_such_not_as_broken_quoting(tmp_path):
    """Doubtful case (docs/hardening.md): a 10 MB prompt was reported as 'broken CSV quoting'."""
    table = _write(tmp_path / "jobs.csv", "prompt,seed\nshort,1\n\"" + "a" * 10_000_000 + "\",2\n")
    r = subprocess.run([venv_python(), CLI, table, "--dry-run", "--workflow", T2V_WF], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "jobs.csv:3: a cell is longer than" in r.stderr and "shorten it" in r.stderr, r.stderr


_FUZZ_PIECES = ["a", "Z", "7", " ", "  ", ",", ";", "\t", "|", '"', '""', "'", "\n", "\r\n", "\r",
                "é", "中文", "😀", "\u2028", "\u00a0", "\ufeff", "x y", "-1.5", "random", "\\"]


def _fuzz_cell(rng):
    if rng.random() < 0.2:
        return ""
    return "".join(rng.choice(_FUZZ_PIECES) for _ in range(rng.randint(1, 6)))


def test_fuzz_csv_reader_returns_exact_cells_or_names_the_bad_line(tmp_path):
    """Seeded random tables written by csv.writer (random delimiter, quoting, line ends,
    unicode, empty cells, short rows, extra cells, broken quotes): each table either loads
    with every row's exact cells, or fails naming the first bad row's line."""
    import io
    import random
    import re
    header_choices = [("prompt", "prompt"), ("Positive Prompt", "prompt"), ("negative", "negative"),
                      ("NEG", "negative"), ("seed", "seed"), ("r1", "r1"), ("notes", None)]
    loaded = rejected = 0
    for case in range(1000):
        rng = random.Random(case)
        delimiter = rng.choice([",", ";", "\t", "|"])
        cols = rng.sample(header_choices, rng.randint(1, len(header_choices)))
        if not any(c for _, c in cols):
            cols.append(("prompt", "prompt"))
        canon_seen = set()
        cols = [(h, c) for h, c in cols if not (c in canon_seen or canon_seen.add(c))]
        quoting = rng.choice([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])
        terminator = rng.choice(["\n", "\r\n"])
        def csv_line(cells):
            # the writer quotes a cell only for the characters of its own line terminator: let it
            # see CRLF (so a cell with a lone CR or LF is quoted, as RFC 4180 needs), then end the
            # row with the terminator this table uses
            out = io.StringIO()
            csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator="\r\n").writerow(cells)
            return out.getvalue()[:-2] + terminator

        text = io.StringIO()
        text.write(csv_line([h for h, _ in cols]))
        expected, bad_lines = [], []
        for _ in range(rng.randint(1, 8)):
            line = len(re.findall(r"\r\n|\r|\n", text.getvalue())) + 1
            cells = [_fuzz_cell(rng) for _ in cols]
            if rng.random() < 0.15:
                cells = cells[:rng.randint(0, len(cells))]
            extra = []
            if len(cells) == len(cols) and rng.random() < 0.1:
                extra = [_fuzz_cell(rng) for _ in range(rng.randint(1, 2))]
            if rng.random() < 0.05:
                text.write('"broken"x' + delimiter + "1" + terminator)
                bad_lines.append(line)
                continue
            row = csv_line(cells + extra)
            if row in ('""' + terminator, terminator):  # a lone empty cell is a blank line
                continue
            text.write(row)
            if any(c.strip() for c in extra):
                bad_lines.append(line)
            elif any(c.strip() for c in cells + extra):
                values = {}
                for (_, canon), cell in zip(cols, cells):
                    if canon and cell.strip():
                        values[canon] = cell if canon in ("prompt", "negative") else cell.strip()
                expected.append(values)
        path = str(tmp_path / f"fuzz{case}.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            f.write(text.getvalue())
        if not expected and not bad_lines:
            continue
        try:
            jobs = load_jobs(path, extra_roles={"r1"}, warn=lambda m: None, delimiter=delimiter)
        except TableError as e:
            assert bad_lines, (case, str(e), text.getvalue())
            assert str(e).startswith(f"{path}:{bad_lines[0]}: "), (case, str(e), bad_lines, text.getvalue())
            rejected += 1
            continue
        assert not bad_lines, (case, bad_lines, text.getvalue())
        assert [j.values for j in jobs] == expected, (case, text.getvalue())
        loaded += 1
    assert loaded > 100 and rejected > 20, (loaded, rejected)


def _renumber(wf, prefix="n"):
    """Same graph, different (non-numeric) node ids: roles must not depend on ids."""
    ids = {nid: f"{prefix}{i * 7 + 3}" for i, nid in enumerate(sorted(wf, reverse=True))}
    out = {}
    for nid, node in wf.items():
        inputs = {k: ([ids[str(v[0])], v[1]] if wfm.is_link(v) else v) for k, v in node["inputs"].items()}
        out[ids[nid]] = {"class_type": node["class_type"], "inputs": inputs}
    return out


def _cls(wf, target):
    nid, name = target
    return wf[nid]["class_type"], name


@pytest.mark.parametrize("path", [T2V_WF, I2V_WF])
def test_roles_found_by_structure(path):
    wf = _renumber(wfm.load_workflow(path))
    roles = wfm.find_roles(wf)
    assert _cls(wf, roles["prompt"][0]) == ("CLIPTextEncode", "text")
    assert _cls(wf, roles["negative"][0]) == ("CLIPTextEncode", "text")
    assert roles["prompt"] != roles["negative"]
    # the positive encoder is the one whose output reaches the sampler's positive input
    pos_text = wf[roles["prompt"][0][0]]["inputs"]["text"]
    assert pos_text == wfm.load_workflow(path)["2"]["inputs"]["text"]
    for role in ("seed", "steps", "cfg"):
        assert _cls(wf, roles[role][0]) == ("VideoCrafterKSampler", role)
    for role in ("width", "height", "frames"):
        assert _cls(wf, roles[role][0]) == ("EmptyVideoCrafterLatent", role)
    assert sorted(_cls(wf, t)[0] for t in roles["fps"]) == ["CreateVideo", "VideoCrafterFPSConditioning"]
    assert [_cls(wf, t) for t in roles["output"]] == [("SaveVideo", "filename_prefix")]
    assert [_cls(wf, t) for t in roles["checkpoint"]] == [("VideoCrafterCheckpointLoader", "ckpt_name")]
    if path == I2V_WF:
        assert [_cls(wf, t) for t in roles["image"]] == [("LoadImage", "image")]
    else:
        assert "image" not in roles


def _dc_graph(end_image=True):
    """An API graph shaped like the DynamiCrafter workflows: LoadImage nodes (one through an
    ImageScale) feeding DynamiCrafterConditioning, whose outputs feed the sampler."""
    wf = {
        "1": {"class_type": "VideoCrafterCheckpointLoader", "inputs": {"ckpt_name": "dynamicrafter_512.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "pos", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "neg", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "5": {"class_type": "ImageScale", "inputs": {"image": ["4", 0], "width": 512, "height": 320,
                                                     "upscale_method": "bilinear", "crop": "center"}},
        "6": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "open_clip_vit_h.safetensors"}},
        "7": {"class_type": "DynamiCrafterConditioning", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "clip_vision": ["6", 0],
            "projector": ["1", 3], "start_image": ["5", 0], "mode": "i2v", "width": 512, "height": 320,
            "length": 16, "batch_size": 1, "fs": 24}},
        "8": {"class_type": "VideoCrafterKSampler", "inputs": {
            "model": ["1", 0], "positive": ["7", 0], "negative": ["7", 1], "latent_image": ["7", 2],
            "seed": 0, "steps": 50, "cfg": 7.5, "eta": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "CreateVideo", "inputs": {"images": ["9", 0], "fps": 8.0}},
        "11": {"class_type": "SaveVideo", "inputs": {"video": ["10", 0], "filename_prefix": "dc"}},
    }
    if end_image:
        wf["12"] = {"class_type": "LoadImage", "inputs": {"image": "end.png"}}
        wf["7"]["inputs"].update(mode="interpolate", end_image=["12", 0])
    return wf


@pytest.mark.parametrize("end_image", [False, True])
def test_roles_of_dynamicrafter_graphs(end_image):
    wf = _renumber(_dc_graph(end_image))
    roles = wfm.find_roles(wf)
    assert [_cls(wf, t) for t in roles["image"]] == [("LoadImage", "image")]
    assert wf[roles["image"][0][0]]["inputs"]["image"] == "start.png"
    if end_image:
        assert [wf[n]["inputs"][i] for n, i in roles["end_image"]] == ["end.png"]
    else:
        assert "end_image" not in roles
    for role, name in (("fs", "fs"), ("mode", "mode"), ("frames", "length"), ("width", "width"),
                       ("height", "height"), ("batch_size", "batch_size")):
        assert [_cls(wf, t) for t in roles[role]] == [("DynamiCrafterConditioning", name)], role
    assert [wf[n]["inputs"][i] for n, i in roles["prompt"]] == ["pos"]
    assert [wf[n]["inputs"][i] for n, i in roles["negative"]] == ["neg"]
    assert [_cls(wf, t) for t in roles["fps"]] == [("CreateVideo", "fps")]
    row = {"prompt": "a", "image": "s.png", "fs": "10", "frames": "4", "width": "128", "height": "64",
           "batch_size": "2", "mode": "loop" if not end_image else "interpolate", "fps": "8"}
    if end_image:
        row["end_image"] = "e.png"
    out = wfm.fill(wf, roles, row)
    cond = next(n["inputs"] for n in out.values() if n["class_type"] == "DynamiCrafterConditioning")
    assert (cond["fs"], cond["length"], cond["width"], cond["height"], cond["batch_size"]) == (10, 4, 128, 64, 2)
    assert cond["mode"] == row["mode"]
    loads = sorted(n["inputs"]["image"] for n in out.values() if n["class_type"] == "LoadImage")
    assert loads == (["e.png", "s.png"] if end_image else ["s.png"])
    if not end_image:
        with pytest.raises(wfm.WorkflowError, match="no 'end_image' input"):
            wfm.fill(wf, roles, {"end_image": "e.png"})


def test_roles_of_freenoise_and_turbo_graphs():
    wf = wfm.load_workflow(T2V_WF)
    sampler = wfm.find_sampler(wf)
    loader = wf[sampler]["inputs"]["model"]
    wf["50"] = {"class_type": "VideoCrafterFreeNoise", "inputs": {"model": loader, "window_size": 16,
                                                                 "window_stride": 4, "reschedule_noise": True}}
    wf["51"] = {"class_type": "VideoCrafterTurboUNetLoader", "inputs": {
        "model": ["50", 0], "unet_name": "t2v_turbo_v2_unet_mg.safetensors"}}
    wf[sampler]["inputs"].update(model=["51", 0], cfg=1.0, steps=8)
    wf = _renumber(wf)
    roles = wfm.find_roles(wf)
    assert [_cls(wf, t) for t in roles["window_size"]] == [("VideoCrafterFreeNoise", "window_size")]
    assert [_cls(wf, t) for t in roles["window_stride"]] == [("VideoCrafterFreeNoise", "window_stride")]
    assert [_cls(wf, t) for t in roles["unet"]] == [("VideoCrafterTurboUNetLoader", "unet_name")]
    assert [_cls(wf, t) for t in roles["checkpoint"]] == [("VideoCrafterCheckpointLoader", "ckpt_name")]
    assert [_cls(wf, t) for t in roles["frames"]] == [("EmptyVideoCrafterLatent", "frames")]
    out = wfm.fill(wf, roles, {"frames": "40", "window_size": "16", "window_stride": "8",
                               "unet": "t2v_turbo_v2_unet_no_mg.safetensors", "steps": "4"})
    by_class = {n["class_type"]: n["inputs"] for n in out.values()}
    assert by_class["VideoCrafterFreeNoise"]["window_stride"] == 8
    assert by_class["VideoCrafterTurboUNetLoader"]["unet_name"] == "t2v_turbo_v2_unet_no_mg.safetensors"
    assert by_class["EmptyVideoCrafterLatent"]["frames"] == 40 and by_class["VideoCrafterKSampler"]["steps"] == 4
    assert by_class["VideoCrafterKSampler"]["cfg"] == 1.0


def test_table_columns_are_the_workflow_roles(tmp_path):
    """One vocabulary: every spelling of a column loads to the role name the workflow uses."""
    p = _write(tmp_path / "dc.csv", "Start Image,end-frame,Frame Stride,length,batch,mode,unet_name,window_size\n"
                                    "a.png,b.png,10,16,2,interpolate,u.safetensors,16\n")
    (job,) = load_jobs(p)
    assert set(job.values) == {"image", "end_image", "fs", "frames", "batch_size", "mode", "unet", "window_size"}
    assert set(job.values) <= set(wfm.ROLES)
    assert job.values["end_image"] == os.path.join(str(tmp_path), "b.png")


def test_key_frame_columns_fill_the_batch_in_order(tmp_path):
    """key_frame_N (keyframe_N, key_N) are image columns; on the Key-Frame Sequence workflow they are its key frames
    in batch order, and the start-image column is not one of them."""
    p = _write(tmp_path / "k.csv", "Key Frame 1,keyframe_2,key_3\na.png,b.png,c.png\n")
    (job,) = load_jobs(p)
    assert job.values == {f"key_frame_{i}": os.path.join(str(tmp_path), f"{n}.png") for i, n in ((1, "a"), (2, "b"), (3, "c"))}
    wf = wfm.load_workflow(os.path.join(REPO, "workflows", "api", "dc_512_keyframes.json"))
    roles = wfm.find_roles(wf)
    assert "image" not in roles and "key_frame_5" not in roles
    out = wfm.fill(wf, roles, {f"key_frame_{i}": f"k{i}.png" for i in range(1, 5)})
    assert key_frame_images(out) == ["k1.png", "k2.png", "k3.png", "k4.png"]


def key_frame_images(wf):
    """The image names the Key-Frame Sequence node of an API graph gets, in its order: its `key_frames` batch (an
    Image Batch chain: image1 holds the earlier frames), then key_frame_1 ... key_frame_8."""
    def batch(link):
        node = wf[link[0]]
        if node["class_type"] == "ImageBatch":
            return batch(node["inputs"]["image1"]) + batch(node["inputs"]["image2"])
        return [node["inputs"]["image"]]
    (sequence,) = [n["inputs"] for n in wf.values() if n["class_type"] == "VideoCrafterKeyFrameSequence"]
    names = ["key_frames"] + [f"key_frame_{i}" for i in range(1, 9)]
    return [image for name in names if name in sequence for image in batch(sequence[name])]


def test_key_frame_columns_fill_separate_key_frame_inputs_after_the_batch(tmp_path):
    """A Key-Frame Sequence fed a batch of two and single images on key_frame_1 / key_frame_2 (any order of node
    ids): the key_frame_N columns fill them in the node's order (the batch first)."""
    wf = wfm.load_workflow(os.path.join(REPO, "workflows", "api", "dc_512_keyframes.json"))
    sequence = next(n for n in wf.values() if n["class_type"] == "VideoCrafterKeyFrameSequence")["inputs"]
    for name in ["key_frames"] + [f"key_frame_{i}" for i in range(1, 9)]:
        sequence.pop(name, None)
    wf.update({"90": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
               "80": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
               "70": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
               "60": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
               "50": {"class_type": "ImageBatch", "inputs": {"image1": ["80", 0], "image2": ["90", 0]}}})
    sequence.update(key_frames=["50", 0], key_frame_2=["60", 0], key_frame_1=["70", 0])
    roles = wfm.find_roles(wf)
    assert "key_frame_5" not in roles and "image" not in roles
    out = wfm.fill(wf, roles, {f"key_frame_{i}": f"k{i}.png" for i in range(1, 5)})
    assert key_frame_images(out) == ["k1.png", "k2.png", "k3.png", "k4.png"]


def test_fill_coerces_and_follows_primitive_links():
    wf = wfm.load_workflow(T2V_WF)
    sampler = wfm.find_sampler(wf)
    wf["99"] = {"class_type": "PrimitiveInt", "inputs": {"value": 5}}
    wf[sampler]["inputs"]["seed"] = ["99", 0]
    roles = wfm.find_roles(wf, {"eta": [(sampler, "eta")]})
    assert roles["seed"] == [("99", "value")]
    out = wfm.fill(wf, roles, {"seed": "42", "cfg": "7", "fps": "8", "prompt": "hello", "eta": "0"},
                   output_prefix="vc_batch/j/j")
    assert out["99"]["inputs"]["value"] == 42
    assert out[sampler]["inputs"]["cfg"] == 7.0 and isinstance(out[sampler]["inputs"]["cfg"], float)
    assert out[sampler]["inputs"]["eta"] == 0.0
    fps_vals = [out[n]["inputs"][i] for n, i in roles["fps"]]
    assert 8 in fps_vals and 8.0 in fps_vals and all(float(v) == 8 for v in fps_vals)
    assert out[roles["prompt"][0][0]]["inputs"]["text"] == "hello"
    assert out[roles["output"][0][0]]["inputs"]["filename_prefix"] == "vc_batch/j/j"
    assert wf[roles["prompt"][0][0]]["inputs"]["text"] != "hello"  # the template is not modified
    with pytest.raises(wfm.WorkflowError, match="whole number"):
        wfm.fill(wf, roles, {"steps": "2.5"})
    with pytest.raises(wfm.WorkflowError, match="no 'image' input"):
        wfm.fill(wf, roles, {"image": "x.png"})
    # fingerprint ignores the output prefix but not the values
    a = wfm.fill(wf, roles, {"seed": 1}, output_prefix="a")
    b = wfm.fill(wf, roles, {"seed": 1}, output_prefix="b")
    c = wfm.fill(wf, roles, {"seed": 2}, output_prefix="a")
    assert wfm.fingerprint(a) == wfm.fingerprint(b) != wfm.fingerprint(c)


def test_role_map_file(tmp_path):
    p = _write(tmp_path / "roles.json", json.dumps({"prompt": ["3", "text"], "fps": [["4", "fps"]], "_c": "x"}))
    rm = wfm.load_role_map(p)
    assert rm == {"prompt": [("3", "text")], "fps": [("4", "fps")]}
    roles = wfm.find_roles(wfm.load_workflow(T2V_WF), rm)
    assert roles["prompt"] == [("3", "text")] and roles["fps"] == [("4", "fps")]
    with pytest.raises(wfm.WorkflowError, match="not in the workflow"):
        wfm.find_roles(wfm.load_workflow(T2V_WF), {"prompt": [("nope", "text")]})


def test_rejects_ui_format_workflow(tmp_path):
    p = _write(tmp_path / "ui.json", json.dumps({"nodes": [], "links": []}))
    with pytest.raises(wfm.WorkflowError, match="API"):
        wfm.load_workflow(p)


def test_format_rejection_names_node_and_input():
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
            "node_errors": {"5": {"class_type": "EmptyVideoCrafterLatent", "dependent_outputs": ["9"], "errors": [
                {"type": "value_not_multiple", "message": "bad", "details": "width - width 100 is not a multiple of 64",
                 "extra_info": {"input_name": "width"}},
                {"type": "value_not_multiple", "message": "bad", "details": "height - width 100 is not a multiple of 64",
                 "extra_info": {"input_name": "height"}}]}}}
    wf = {"5": {"class_type": "EmptyVideoCrafterLatent", "inputs": {"width": 100, "height": 64}}}
    text = format_rejection(body, wf)
    assert text == "node 5 (EmptyVideoCrafterLatent) input width=100: width 100 is not a multiple of 64"


def test_manifest_atomic_resume_and_lock(tmp_path):
    path = str(tmp_path / "m" / "manifest.jsonl")
    m = Manifest(path).lock()
    m.load()
    m.ensure("a")
    m.ensure("b")
    m.update("a", status="done", files=["a/a.mp4"], seconds=1.5, prompt_id="p1")
    m.update("b", status="queued", prompt_id="p2")
    lines = open(path).read().splitlines()
    assert [json.loads(x)["job"] for x in lines] == ["a", "b"]
    assert not os.path.exists(path + ".tmp")
    with pytest.raises(ManifestLocked):
        Manifest(path).lock()
    m.unlock()
    # a torn last line (crash while someone appended by hand) never hides finished entries
    with open(path, "a") as f:
        f.write('{"job": "c", "stat')
    warnings = []
    m2 = Manifest(path, warn=warnings.append).lock().load()
    assert m2.status("a") == "done" and m2.get("a")["files"] == ["a/a.mp4"]
    assert m2.status("b") == "queued" and m2.get("b")["prompt_id"] == "p2"
    assert m2.get("c") is None and warnings
    m2.unlock()


def test_several_servers_without_ray_is_an_error_naming_ray(tmp_path):
    """One way to spread a batch: several --server run on Ray, the one-server executor refuses them."""
    table = _write(tmp_path / "jobs.csv", "prompt\na\n")
    r = subprocess.run([venv_python(), CLI, table, "--out", str(tmp_path / "out"), "--server", "127.0.0.1:1",
                        "--server", "127.0.0.1:2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--server given 2 times" in r.stderr and "--ray" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "out" / "manifest.jsonl")


def test_random_seed_is_drawn_into_the_manifest_before_any_submission(tmp_path):
    """Nothing reachable: nothing submitted, yet the drawn seed is on disk, and every later run
    (and --dry-run) uses that same seed."""
    from server_util import free_port
    table = _write(tmp_path / "jobs.csv", "name,prompt,seed\nr,a,random\nf,b,5\n")
    out = str(tmp_path / "out")
    args = [venv_python(), CLI, table, "--out", out, "--server", f"127.0.0.1:{free_port()}", "--retry-timeout", "1",
            "--no-progress", "--workflow", T2V_WF]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "giving up" in r.stderr, r.stderr
    m = read_manifest(out)
    seed = m["r"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2 ** 32 and m["r"]["attempts"] == 0
    assert m["f"].get("seed") is None  # a fixed seed stays in the table
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert read_manifest(out)["r"]["seed"] == seed
    r = subprocess.run(args + ["--dry-run"], capture_output=True, text=True, timeout=60)
    assert f'"seed": {seed}' in r.stdout, r.stdout[-2000:]


def test_client_imports_no_torch_or_comfy():
    code = ("import sys; sys.path.insert(0, %r); import vc_batch.cli, vc_batch.runner; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'comfy', 'nodes', 'folder_paths')]; "
            "print(bad); sys.exit(1 if bad else 0)") % REPO
    r = subprocess.run([venv_python(), "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------------------
# end to end, against a real ComfyUI server
# ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(module_tmp):
    srv = ComfyServer(module_tmp("comfy"))
    srv.start()
    info = http_json(srv.url + "/object_info/VideoCrafterKSampler")
    if "VideoCrafterKSampler" not in info:
        srv.stop()
        pytest.fail("the pack's nodes did not load into ComfyUI:\n" + srv.log_tail())
    yield srv
    srv.stop()


def cli_args(table, out, server, *extra):
    return [venv_python(), CLI, table, "--server", server.url, "--out", out, "--poll-interval", "0.5",
            "--no-progress", *extra]


def run_cli(table, out, server, *extra, timeout=300):
    r = subprocess.run(cli_args(table, out, server, *extra), capture_output=True, text=True, timeout=timeout)
    return r


def test_batch_mixed_t2v_i2v(server, tmp_path):
    shutil.copy(COND_IMAGE, tmp_path / "start.png")
    rows = [t2v_row("t2v_a", 1),
            i2v_row("i2v_a", 2, "start.png"),
            t2v_row("t2v_b", 3, negative="blurry", cfg=7.5, fps=8),
            i2v_row("i2v_b", 4, COND_IMAGE, fps="")]
    table = write_table(tmp_path / "jobs.csv", rows)
    out = str(tmp_path / "out")
    t0 = time.time()
    roots = ("--image-root", str(tmp_path), "--image-root", os.path.dirname(COND_IMAGE))
    r = run_cli(table, out, server, "--max-queued", "2", *roots)
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    assert set(m) == {"t2v_a", "i2v_a", "t2v_b", "i2v_b"}
    for name, e in m.items():
        assert e["status"] == "done" and e["error"] is None and e["prompt_id"], e
        assert e["seconds"] is not None and e["seconds"] >= 0
        assert len(e["files"]) == 1 and job_files(out, name) == [os.path.basename(e["files"][0])]
        assert_video(os.path.join(out, e["files"][0]))
    # the rows' values reached the right nodes of the right workflow on the server
    hist = http_json(f"{server.url}/history/{m['t2v_b']['prompt_id']}")[m["t2v_b"]["prompt_id"]]
    nodes = hist["prompt"][2]
    by_class = {}
    for node in nodes.values():
        by_class.setdefault(node["class_type"], []).append(node["inputs"])
    assert "LoadImage" not in by_class
    assert sorted(n["text"] for n in by_class["CLIPTextEncode"]) == ["a red ball t2v_b", "blurry"]
    assert by_class["VideoCrafterKSampler"][0]["cfg"] == 7.5 and by_class["VideoCrafterKSampler"][0]["seed"] == 3
    assert by_class["VideoCrafterFPSConditioning"][0]["fps"] == 8 and by_class["CreateVideo"][0]["fps"] == 8.0
    assert by_class["EmptyVideoCrafterLatent"][0]["width"] == 128
    hist = http_json(f"{server.url}/history/{m['i2v_a']['prompt_id']}")[m["i2v_a"]["prompt_id"]]
    loads = [n["inputs"]["image"] for n in hist["prompt"][2].values() if n["class_type"] == "LoadImage"]
    assert len(loads) == 1 and os.path.exists(os.path.join(server.input_dir, loads[0]))
    # running the finished batch again does nothing
    before = len(history_of(server))
    r2 = run_cli(table, out, server, *roots)
    assert r2.returncode == 0, r2.stderr
    assert len(history_of(server)) == before
    assert read_manifest(out) == m
    print(f"\n4-job mixed batch: {elapsed:.1f}s; per job (server): "
          + ", ".join(f"{k}={v['seconds']}" for k, v in m.items()))


def test_key_frame_sequence_job(server, tmp_path):
    """A key-frame job (4 key frames, the shipped DynamiCrafter key-frame workflow on the tiny model) runs to a
    video of 3 segments joined on the key frames; a row naming 2 of the 4 key frames fails, saying which."""
    from PIL import Image
    colours = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (250, 250, 20)]
    for i, colour in enumerate(colours, start=1):
        Image.new("RGB", (128, 64), colour).save(tmp_path / f"k{i}.png")
    workflow = os.path.join(REPO, "workflows", "api", "dc_512_keyframes.json")
    tiny = {"width": 128, "height": 64, "frames": 4, "steps": 2}
    rows = [dict(name="keys", prompt="a smooth transition", seed=5, checkpoint="tiny_dc_512.safetensors",
                 workflow=workflow, **tiny, **{f"key_frame_{i}": f"k{i}.png" for i in range(1, 5)}),
            dict(name="two_keys", prompt="a smooth transition", seed=5, checkpoint="tiny_dc_512.safetensors",
                 workflow=workflow, **tiny, key_frame_1="k1.png", key_frame_2="k2.png")]
    table = write_table(tmp_path / "jobs.csv", rows)
    out = str(tmp_path / "out")
    r = run_cli(table, out, server)
    assert r.returncode == 1, r.stdout + r.stderr
    m = read_manifest(out)
    assert m["two_keys"]["status"] == "failed" and "takes 4 key frames" in m["two_keys"]["error"], m["two_keys"]
    assert m["keys"]["status"] == "done", m["keys"]
    import av
    with av.open(os.path.join(out, m["keys"]["files"][0])) as container:
        assert len(list(container.decode(video=0))) == 3 * (4 - 1) + 1
    hist = http_json(f"{server.url}/history/{m['keys']['prompt_id']}")[m["keys"]["prompt_id"]]
    loads = {nid: n["inputs"]["image"] for nid, n in hist["prompt"][2].items() if n["class_type"] == "LoadImage"}
    uploads = [wfm.upload_name(str(tmp_path / f"k{i}.png")) for i in range(1, 5)]
    assert [loads[nid] for nid in ("20", "21", "22", "23")] == uploads


def test_rows_upload_only_images_inside_the_image_roots(server, tmp_path):
    """D3: a row's image outside the table's folder (an absolute path, '../') or a file that is not an image fails
    that row, naming the fix, and nothing of it reaches the server; --image-root names another folder."""
    tables, elsewhere = tmp_path / "tables", tmp_path / "elsewhere"
    tables.mkdir()
    elsewhere.mkdir()
    shutil.copy(COND_IMAGE, elsewhere / "secret.png")
    (tables / "notes.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    rows = [i2v_row("absolute", 1, str(elsewhere / "secret.png")), i2v_row("climbing", 2, "../elsewhere/secret.png"),
            i2v_row("not_an_image", 3, "notes.png")]
    table = write_table(tables / "jobs.csv", rows)
    out = str(tmp_path / "out")
    uploaded = set(os.listdir(server.input_dir))
    r = run_cli(table, out, server)
    assert r.returncode == 1, r.stderr
    m = read_manifest(out)
    for name in ("absolute", "climbing"):
        assert m[name]["status"] == "failed" and "lies outside" in m[name]["error"] and str(tables) in m[name]["error"] \
            and "--image-root" in m[name]["error"], m[name]
    assert m["not_an_image"]["status"] == "failed" and "is not an image" in m["not_an_image"]["error"], m["not_an_image"]
    assert all(job_files(out, name) == [] for name in m)
    assert set(os.listdir(server.input_dir)) == uploaded  # nothing was uploaded
    # the user names the other folder: those rows run
    r = run_cli(table, out, server, "--image-root", str(elsewhere))
    m = read_manifest(out)
    assert m["absolute"]["status"] == "done" and m["climbing"]["status"] == "done", r.stderr
    assert m["not_an_image"]["status"] == "failed"


def test_rejected_row_reported_and_others_run(server, tmp_path):
    # a workflow with a second output that fails validation: ComfyUI queues the prompt with
    # `node_errors` for the bad output; that job is a failure, not done with half its outputs
    partial = wfm.load_workflow(T2V_WF)
    partial["90"] = {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}}
    partial["91"] = {"class_type": "SaveImage", "inputs": {"images": ["90", 0], "filename_prefix": "x"}}
    partial_path = _write(tmp_path / "partial.json", json.dumps(partial))
    rows = [t2v_row("good_1", 11), t2v_row("bad_width", 12), t2v_row("good_2", 13),
            t2v_row("partial", 14, workflow=partial_path)]
    rows[1]["width"] = 100
    rows[3]["steps"] = 30  # still queued or running when the runner drops it
    table = write_table(tmp_path / "jobs.jsonl", rows)
    out = str(tmp_path / "out")
    r = run_cli(table, out, server, "--max-queued", "3")
    assert r.returncode == 1, r.stderr  # some job failed
    m = read_manifest(out)
    assert m["good_1"]["status"] == "done" and m["good_2"]["status"] == "done"
    bad = m["bad_width"]
    assert bad["status"] == "failed" and bad["files"] == []
    assert "EmptyVideoCrafterLatent" in bad["error"] and "width" in bad["error"] and "100" in bad["error"], bad
    assert "bad_width" in r.stderr and "width" in r.stderr
    assert job_files(out, "bad_width") == []
    part = m["partial"]
    assert part["status"] == "failed" and part["files"] == [] and job_files(out, "partial") == [], part
    assert "only part of the workflow" in part["error"] and "EmptyImage" in part["error"] \
        and "width" in part["error"], part
    q = server.queue()
    assert part["prompt_id"] not in {i[1] for i in q["queue_running"] + q["queue_pending"]}


def test_server_killed_mid_batch_then_resume(server, tmp_path):
    names = ["r1", "r2", "r3", "r4"]
    table = write_table(tmp_path / "jobs.csv", [t2v_row(n, 20 + i) for i, n in enumerate(names)])
    out = str(tmp_path / "out")
    log1 = open(tmp_path / "cli1.log", "w")
    proc = subprocess.Popen(cli_args(table, out, server, "--max-queued", "1", "--retry-timeout", "120"),
                            stdout=log1, stderr=subprocess.STDOUT)
    try:
        # 1) the server dies (SIGKILL: history and queue gone) after the first job finished;
        #    the running command keeps retrying and carries on when it is back
        wait_for(lambda: read_manifest(out).get("r1", {}).get("status") == "done", 120, "first job")
        server.stop(kill=True)
        time.sleep(2)
        assert proc.poll() is None, "the command must wait for the server, not exit"
        server.start()
        # 2) the command itself crashes (SIGKILL) once the second job is done, with the
        #    third submitted: the rerun must pick that prompt up, not run it again
        wait_for(lambda: read_manifest(out).get("r2", {}).get("status") == "done", 120, "second job")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log1.close()
    m = read_manifest(out)
    assert m["r1"]["status"] == "done" and m["r2"]["status"] == "done"
    r = run_cli(table, out, server, "--max-queued", "1")
    assert r.returncode == 0, r.stderr + open(tmp_path / "cli1.log").read()
    m2 = read_manifest(out)
    for n in names:
        assert m2[n]["status"] == "done", m2[n]
        assert len(job_files(out, n)) == 1, (n, job_files(out, n))
        assert_video(os.path.join(out, m2[n]["files"][0]))
    assert m2["r1"] == m["r1"]  # finished before the crash: untouched
    # the new server ran r2, r3 and r4 exactly once each and r1 not at all
    counts = runs_per_job(history_of(server), names)
    assert counts == {"r1": 0, "r2": 1, "r3": 1, "r4": 1}, counts
    # and once more: nothing left to do
    before = len(history_of(server))
    r = run_cli(table, out, server)
    assert r.returncode == 0 and len(history_of(server)) == before


def long_jobs(tmp_path, names, seed):
    """(table, output folder) of text-to-video jobs long enough (12 steps) to be caught running."""
    rows = [dict(t2v_row(n, seed + i), steps=12) for i, n in enumerate(names)]
    return write_table(tmp_path / "jobs.csv", rows), str(tmp_path / "out")


def ctrl_c_once(args, ready, what):
    """Run the batch command, press Ctrl-C (SIGINT) once `ready()` holds; (its exit code, its output)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(ready, 120, what)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output


def test_ctrl_c_removes_queued_prompts(server, tmp_path):
    table, out = long_jobs(tmp_path, ["c1", "c2", "c3", "c4"], 40)

    def ours_on_server():
        ids = {e["prompt_id"] for e in read_manifest(out).values() if e.get("prompt_id")}
        q = server.queue()
        running = {i[1] for i in q["queue_running"]} & ids
        pending = {i[1] for i in q["queue_pending"]} & ids
        return (running, pending) if running and len(pending) >= 2 else None
    returncode, output = ctrl_c_once(cli_args(table, out, server, "--max-queued", "3"), ours_on_server,
                                     "three prompts on the server, one running")
    assert returncode == 130, output
    ids = {e["prompt_id"] for e in read_manifest(out).values() if e.get("prompt_id")}
    q = server.queue()
    on_server = {i[1] for i in q["queue_running"] + q["queue_pending"]}
    assert not (ids & on_server), (q, output)
    m = read_manifest(out)
    assert {e["status"] for e in m.values()} <= {"cancelled", "pending", "done"}, m
    assert sum(e["status"] == "cancelled" for e in m.values()) >= 2


def test_crashed_command_picks_up_its_submitted_prompts(server, tmp_path):
    """The command dies (SIGKILL) with prompts on a live server: the rerun waits for those
    prompts and fetches their outputs instead of submitting them again."""
    names = ["k1", "k2"]
    rows = [t2v_row(n, 60 + i) for i, n in enumerate(names)]
    rows[0]["seed"] = "random"  # drawn once and kept in the manifest: the rerun rebuilds the same prompt
    for r in rows:
        r["steps"] = 3
    table = write_table(tmp_path / "jobs.csv", rows)
    out = str(tmp_path / "out")
    proc = subprocess.Popen(cli_args(table, out, server, "--max-queued", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def both_on_server():
            ids = {e["prompt_id"] for e in read_manifest(out).values() if e.get("prompt_id")}
            q = server.queue()
            return len(ids & {i[1] for i in q["queue_running"] + q["queue_pending"]}) == 2
        wait_for(both_on_server, 120, "both prompts on the server")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    submitted = {n: e["prompt_id"] for n, e in read_manifest(out).items()}
    seed = read_manifest(out)["k1"]["seed"]
    assert isinstance(seed, int)
    r = run_cli(table, out, server)
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    for n in names:
        assert m[n]["status"] == "done" and m[n]["attempts"] == 1 and m[n]["prompt_id"] == submitted[n], m[n]
        assert m[n]["server"] == server.url
        assert len(job_files(out, n)) == 1
    assert m["k1"]["seed"] == seed
    assert runs_per_job(history_of(server), names) == {"k1": 1, "k2": 1}
    hist = http_json(f"{server.url}/history/{m['k1']['prompt_id']}")[m["k1"]["prompt_id"]]
    assert [n["inputs"]["seed"] for n in hist["prompt"][2].values()
            if n["class_type"] == "VideoCrafterKSampler"] == [seed]


def test_attempts_are_bounded_across_runs(server, tmp_path):
    """A job whose prompt vanished with its server three times (it crashes the server) is not
    submitted a fourth time: it fails with the reasons of every attempt."""
    import uuid
    table = write_table(tmp_path / "jobs.csv", [t2v_row("boom", 80)])
    out = str(tmp_path / "out")
    os.makedirs(out)
    # what three crashed runs leave: the third prompt recorded as queued on a server that
    # no longer knows it
    r = run_cli(table, out, server, "--dry-run")
    fingerprint = r.stdout.split("fingerprint ")[1].split()[0]
    log = [f"{server.url} prompt {i}: gone from the server (restarted?)" for i in ("aaaa1111", "bbbb2222")]
    with open(os.path.join(out, "manifest.jsonl"), "w") as f:
        f.write(json.dumps({"job": "boom", "status": "queued", "prompt_id": str(uuid.uuid4()), "server": server.url,
                            "attempts": 3, "attempt_log": log, "fingerprint": fingerprint, "files": []}) + "\n")
    before = len(history_of(server))
    r = run_cli(table, out, server)
    assert r.returncode == 1, r.stderr
    e = read_manifest(out)["boom"]
    assert e["status"] == "failed" and e["attempts"] == 3, e
    assert "gave up after 3 attempt(s)" in e["error"] and "aaaa1111" in e["error"] and "bbbb2222" in e["error"], e
    assert len(e["attempt_log"]) == 3 and "gone from the server" in e["attempt_log"][2]
    assert len(history_of(server)) == before  # nothing submitted
    r = run_cli(table, out, server, "--max-attempts", "4")
    assert r.returncode == 0 and read_manifest(out)["boom"]["status"] == "done", r.stderr


@pytest.mark.parametrize("name, expected", [
    ("dc_512", {"image": "10", "frames": "11", "fs": "11", "mode": "11"}),
    ("dc_512_interp", {"image": "10", "end_image": "12", "frames": "11", "fs": "11"}),
    ("dc_512_loop", {"image": "10", "frames": "11"}),
    ("dc_512_freenoise_64", {"image": "10", "frames": "11", "window_size": "15", "window_stride": "15"}),
    ("vc2_t2v_512_freenoise_64", {"frames": "5", "window_size": "12"}),
    ("vc2_turbo_v2", {"unet": "12", "steps": "6", "frames": "5"}),
    ("dc_512_keyframes", {"key_frame_1": "20", "key_frame_2": "21", "key_frame_4": "23", "frames": "6", "fs": "6",
                          "width": "6"}),
    ("toon_512_keyframes", {"key_frame_1": "20", "key_frame_3": "22", "height": "6"}),
])
def test_shipped_workflows_fill_by_role(name, expected):
    """The shipped DynamiCrafter, FreeNoise and turbo workflows: each table column finds its node."""
    wf = wfm.load_workflow(os.path.join(REPO, "workflows", "api", f"{name}.json"))
    roles = wfm.find_roles(wf)
    for role, node in expected.items():
        assert [n for n, _ in roles[role]] == [node], (role, roles.get(role))
    for role in ("prompt", "negative", "seed", "checkpoint", "output"):
        assert roles[role], role


class MalformedComfy:
    """A stand-in ComfyUI that queues every prompt and answers /history and /queue the way a broken (or hostile)
    server might: per job (by its filename_prefix), `answers[job]` is its /history entry; /queue lists numbers and
    strings where prompts belong; /view serves '<subfolder>/<filename>' as the file."""

    def __init__(self, answers):
        import http.server
        import threading
        import urllib.parse
        self.answers, self.prompts = answers, {}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, kind="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                if url.path == "/system_stats":
                    return self._send(200, {"system": {}, "devices": []})
                if url.path == "/queue":
                    return self._send(200, {"queue_running": [5], "queue_pending": [7, "x", [1]]})
                if url.path.startswith("/history/"):
                    pid = url.path[len("/history/"):]
                    return self._send(200, {pid: fake.answers[fake.prompts[pid]]} if pid in fake.prompts else {})
                if url.path == "/view":
                    query = urllib.parse.parse_qs(url.query)
                    return self._send(200, f"{query.get('subfolder', [''])[0]}/{query['filename'][0]}".encode(),
                                      "application/octet-stream")
                self._send(404, {})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prefix = next(n["inputs"]["filename_prefix"] for n in body["prompt"].values()
                              if "filename_prefix" in n["inputs"])
                fake.prompts[body["prompt_id"]] = prefix.split("/")[1]
                self._send(200, {"prompt_id": body["prompt_id"], "number": 1, "node_errors": {}})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def history_with(outputs):
    return {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": outputs}


def test_malformed_server_answers_are_the_jobs_errors_and_no_output_is_lost(tmp_path):
    """D13: an output named '..' or '' looped for ever as 'server unreachable'; a NUL in a name, a history entry that
    is a list, outputs that are strings or numbers where the queue lists prompts gave tracebacks; three outputs of one
    name kept one file. Each is now that job's error (the batch goes on and ends), and same-named outputs all land."""
    def files(*names):
        return {"9": {"images": [{"filename": name, "subfolder": sub, "type": "output"} for sub, name in names]}}
    answers = {"dotdot": history_with(files(("", ".."))), "empty": history_with(files(("", ""))),
               "nul": history_with(files(("", "a\u0000b.mp4"))), "list_entry": [1, 2],
               "string_outputs": history_with({"9": "video.mp4"}),
               "three_same": history_with(files(("a", "v.mp4"), ("b", "v.mp4"), ("c", "v.mp4")))}
    fake = MalformedComfy(answers)
    try:
        table = write_table(tmp_path / "jobs.csv", [t2v_row(name, i) for i, name in enumerate(answers)])
        out = str(tmp_path / "out")
        r = subprocess.run([venv_python(), CLI, table, "--server", fake.url, "--out", out, "--poll-interval", "0.2",
                            "--retry-timeout", "5", "--no-progress"], capture_output=True, text=True, timeout=120)
    finally:
        fake.stop()
    assert r.returncode == 1, r.stdout + r.stderr  # some jobs failed; not 3 (server gone)
    assert "unreachable" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    m = read_manifest(out)
    for name in ("dotdot", "empty", "nul"):
        assert m[name]["status"] == "failed" and "which is not a file name" in m[name]["error"], m[name]
    assert m["list_entry"]["status"] == "failed" and "history entry is a list" in m["list_entry"]["error"]
    assert m["string_outputs"]["status"] == "failed" and "output of node 9 is a str" in m["string_outputs"]["error"]
    assert m["three_same"]["status"] == "done", m["three_same"]
    kept = {name: open(os.path.join(out, "three_same", name)).read() for name in job_files(out, "three_same")}
    assert sorted(kept.values()) == ["a/v.mp4", "b/v.mp4", "c/v.mp4"], kept
    assert not os.path.exists(os.path.join(out, "..part")) and job_files(out, "dotdot") == []


def test_ctrl_c_is_not_a_failed_attempt(server, tmp_path):
    """D12: after Ctrl-C the rerun counted the batch's own interrupt as an attempt: with --max-attempts 1 the job
    that was running failed and never ran. Cancelled by the user, it runs on the rerun."""
    table, out = long_jobs(tmp_path, ["i1", "i2"], 90)

    def one_running():
        ids = {e["prompt_id"] for e in read_manifest(out).values() if e.get("prompt_id")}
        return ids & {i[1] for i in server.queue()["queue_running"]}
    returncode, output = ctrl_c_once(cli_args(table, out, server, "--max-queued", "2", "--max-attempts", "1"),
                                     one_running, "a prompt of the batch running")
    assert returncode == 130, output
    m = read_manifest(out)
    assert sum(e["status"] == "cancelled" for e in m.values()) >= 1, m
    r = run_cli(table, out, server, "--max-attempts", "1")
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    for name in ("i1", "i2"):
        assert m[name]["status"] == "done" and m[name]["attempts"] == 1, m[name]
        assert len(job_files(out, name)) == 1
