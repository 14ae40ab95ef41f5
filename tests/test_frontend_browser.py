"""The shipped graphs in the frontend this host ships (0.3.75: 1.32.9, 0.33: 1.49.6), in headless Chromium against a
real server, as a user meets them: each file dropped on the canvas of a fresh page (requests off 127.0.0.1 refused)
is read back from the frontend: every node and link there, every widget value in its widget, no two drawn nodes
overlapping and none grown past its laid-out size, fit-to-view at 1920x1080 at least 0.5 and where the frontend
still draws text (from 8 px / 14 px = 0.57 on), the missing models listed each with its folder, no deprecation badge, no console error from
the pack. The Templates browser lists every graph by its title with a thumbnail that loads.

Needs Debian's chromium and playwright (scripts/setup_host.sh installs both); without them it skips, on CI it fails.
"""
import json
import os
import re

import pytest

from server_util import ComfyServer
import build_workflows  # noqa: E402  (scripts/, on the path through server_util)
import frontend_util
from frontend_util import Browser, drawn_graph, drop_and_wait, fit_view, prepare_user

NAMES = sorted(build_workflows.TITLES)
PACK = "ComfyUI-VideoCrafter"  # the pack's folder in custom_nodes (tests/server_util.py's host links it so)
TRAIN_MODELS = {"train_i2v": "vc1_i2v_512", "train_dc_512": "dc_512", "train_lora_vc2": "vc2_t2v_512"}


def needed_models(name):
    """[(file name, folder)] the graph `name` loads that the user downloads: from the registry, not the file."""
    if name in TRAIN_MODELS:
        entries = [build_workflows.registry.entry(TRAIN_MODELS[name])]
    else:
        entry, workflow = build_workflows.shipped_workflows()[name]
        entries = build_workflows.downloads(entry, workflow)
    return [(e.release.file_name, e.release.folder) for e in entries]


def example_inputs(folder):
    """The example inputs the shipped graphs name, as the pack writes them into ComfyUI's input folder: three
    512x320 images and key frames, a 16-frame sketch video."""
    import av
    import numpy as np
    from PIL import Image, ImageDraw
    colours = {build_workflows.EXAMPLE_START: (200, 110, 60), build_workflows.EXAMPLE_END: (60, 110, 200)}
    colours.update({build_workflows.example_key_frame(i): (50 * i, 150, 220 - 40 * i) for i in range(1, 5)})
    for name, colour in colours.items():
        Image.new("RGB", (512, 320), colour).save(os.path.join(folder, name))
    with av.open(os.path.join(folder, build_workflows.EXAMPLE_SKETCH), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 512, 320, "yuv420p"
        for i in range(16):
            frame = Image.new("RGB", (512, 320), "white")
            ImageDraw.Draw(frame).line((30 * i, 0, 512 - 30 * i, 320), fill="black", width=3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def browser():
    missing = [what for what, ok in (("chromium (apt-get install chromium)", frontend_util.chromium_path()),
                                     ("playwright (pip)", _have_playwright())) if not ok]
    if missing:
        message = "the browser test needs " + " and ".join(missing) + ": run scripts/setup_host.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with Browser() as b:
        yield b


def _have_playwright():
    try:
        import playwright.sync_api  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def frontend(module_tmp, browser):
    """A server of this host with the example inputs in its input folder and no model files (so the graphs'
    models are missing, as for a new user)."""
    srv = ComfyServer(module_tmp("frontend"), checkpoints=())
    prepare_user(srv)
    example_inputs(srv.input_dir)
    srv.start()
    yield srv
    srv.stop()


def _rect(node):
    x, y, w, h = node["bounding"]
    return (x, y, x + w, y + h)


def _same(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-6 * max(1, abs(a))
    return a == b


def _missing_models_text(page):
    """What the frontend says about missing models: 1.32.9's dialog, or 1.49.6's Errors panel (View details)."""
    page.wait_for_timeout(500)
    details = page.get_by_text("View details", exact=True)
    if details.count():
        details.first.click()
        page.get_by_text("Missing Models").first.wait_for(timeout=10000)
    return page.evaluate("() => document.body.innerText")


@pytest.mark.parametrize("name", NAMES)
def test_dropped_graph_reads_as_laid_out(frontend, browser, name):
    ui_file = build_workflows.ui_path(name)
    with open(ui_file) as f:
        ui = json.load(f)
    info = frontend.object_info()
    page = browser.open(frontend)
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        no_preview = drop_and_wait(page, ui_file)
        graph = drawn_graph(page)
        nodes = {str(n["id"]): n for n in graph["nodes"]}

        # every node and link, no unknown type
        assert sorted(nodes) == sorted(str(n["id"]) for n in ui["nodes"])
        assert {str(n["id"]): n["type"] for n in ui["nodes"]} == {i: n["type"] for i, n in nodes.items()}
        assert not [n["type"] for n in graph["nodes"] if n["unknown"]]
        assert sorted(tuple(map(str, l[1:5])) for l in graph["links"]) == \
            sorted(tuple(map(str, l[1:5])) for l in ui["links"])

        # every widget value in the widget the file meant (by name, as this host's node definition reads the file)
        misplaced = []
        for node in ui["nodes"]:
            drawn = {w["name"]: w["value"] for w in nodes[str(node["id"])]["widgets"]}
            if node["type"] in build_workflows.NOTE_TYPES:
                meant = {"text": node["widgets_values"][0]}
            else:
                widgets = build_workflows.ui_widgets(info[node["type"]], node["widgets_values"])
                meant = {w[0]: v for w, v in zip(widgets, node["widgets_values"]) if w[1] not in ("CONTROL", "UPLOAD")}
            misplaced += [(node["title"], k, v, drawn.get(k, "<no widget>")) for k, v in meant.items()
                          if not _same(v, drawn.get(k))]
        assert not misplaced, misplaced

        # the example inputs the graph names are the pack's (in ComfyUI's input folder): each image shows
        assert not no_preview, no_preview

        # drawn as laid out: no node grew past its size in the file, no two drawn rectangles (title bars included)
        # overlap
        by_file = {str(n["id"]): n for n in ui["nodes"]}
        grown = [(n["title"], by_file[i]["size"], n["size"]) for i, n in nodes.items()
                 if n["size"][0] > by_file[i]["size"][0] + 1 or n["size"][1] > by_file[i]["size"][1] + 1]
        assert not grown, grown
        rects = [(n["title"], _rect(n)) for n in graph["nodes"]]
        overlaps = [(a, b) for i, (a, ra) in enumerate(rects) for b, rb in rects[i + 1:]
                    if ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]]
        assert not overlaps, overlaps

        # no deprecation badge (0.33 marks core ImageBatch deprecated)
        deprecated = [(n["title"], n["badges"]) for n in graph["nodes"]
                      if n["deprecated"] or any("DEPR" in str(b) for b in n["badges"])]
        assert not deprecated, deprecated

        # a Note on the canvas says what the user provides: the model files, the inputs the Load nodes read, for a
        # training graph where the videos go
        notes = [n for n in graph["nodes"] if n["type"] in build_workflows.NOTE_TYPES]
        assert len(notes) == 1, [n["title"] for n in notes]
        text = notes[0]["widgets"][0]["value"]
        provided = [f for f, _ in needed_models(name)] + [n["widgets_values"][0] for n in ui["nodes"]
                                                          if n["type"] in build_workflows.INPUT_TYPES]
        provided += ["ComfyUI/input/videocrafter_train"] if name in TRAIN_MODELS else []
        assert [p for p in provided if p not in text] == [], text

        # the missing models, each with its folder
        text = _missing_models_text(page)
        for file_name, folder in needed_models(name):
            at = [m.start() for m in re.finditer(re.escape(file_name), text)]
            assert at, (file_name, text[-2000:])
            assert any(folder in text[max(0, i - 60):i + len(file_name) + 60] for i in at), (file_name, folder)

        # fit-to-view at 1920x1080: at least half size, and the frontend still draws the text (it drops it below
        # its level-of-detail zoom, 8 px / 14 px = 0.57 by default)
        zoom = fit_view(page)
        threshold, low_quality = page.evaluate("() => [app.canvas._lowQualityZoomThreshold, app.canvas.low_quality]")
        print(f"\n{name}: fit-to-view zoom {zoom:.3f} (text drawn from {threshold:.3f})")
        assert zoom >= build_workflows.MIN_FIT_ZOOM and not low_quality, (zoom, threshold)

        # nothing the pack serves fails, no console error names the pack (the requests refused off the machine
        # - api.comfy.org, the models' links - fail as meant)
        pack_failures = [f for f in failed if "videocrafter" in f.lower()]
        assert not pack_failures, pack_failures
        errors = [c for c in page.console if c[0] in ("error", "pageerror") and not frontend_util.off_machine(c[2])
                  and "videocrafter" in (c[1] + c[2]).lower()]
        assert not errors, errors
    finally:
        if os.environ.get("VIDEOCRAFTER_SCREENSHOTS"):
            page.screenshot(path=os.path.join(os.environ["VIDEOCRAFTER_SCREENSHOTS"], f"{name}.png"))
        page.context.close()


# the picture of the template card whose title (its text, the frontends cut it short on screen) is `title`: drawn
# (complete, at the size vc_nodes/templates.py draws)
CARD_PICTURE_JS = """(title) => {
    const label = Array.from(document.querySelectorAll('h3, span, p, div')).find(e => e.children.length === 0 &&
        e.textContent.trim() === title);
    let card = label;
    while (card && !card.querySelector('img')) card = card.parentElement;
    const img = card && card.querySelector('img');
    return !!img && img.complete && img.naturalWidth === %d;
}""" % 512


def test_templates_show_titles_and_thumbnails(frontend, browser):
    """Templates -> Extensions -> the pack: every shipped graph by its title, each thumbnail served and drawn."""
    page = browser.open(frontend)
    thumbnails = {}
    page.on("response", lambda r: thumbnails.__setitem__(r.url, (r.status, r.headers.get("content-type")))
            if "/workflow_templates/" in r.url and r.url.endswith(".jpg") else None)
    try:
        page.get_by_text("Templates", exact=True).first.click()
        page.get_by_text(PACK, exact=True).first.click()
        titles = sorted(build_workflows.TITLES.values())
        for title in titles:  # the cards load their pictures once scrolled into view
            page.get_by_text(title, exact=True).first.scroll_into_view_if_needed(timeout=20000)
            page.wait_for_function(CARD_PICTURE_JS, arg=title, timeout=20000)
        from urllib.parse import unquote
        served = {unquote(url.rsplit("/", 1)[1])[:-4]: status for url, status in thumbnails.items()}
        assert {t: served.get(t) for t in titles} == {t: (200, "image/jpeg") for t in titles}
    finally:
        page.context.close()
