"""The host's own ComfyUI frontend in headless Chromium (Debian's `chromium`, driven by playwright; playwright never
downloads a browser here): open a server's page with every request off 127.0.0.1 refused, drop a workflow file on
the canvas as a user does (a drag-and-drop of the file through the browser's input pipeline), read the graph back
as the frontend drew it.

    with Browser() as browser:
        page = browser.open(server)           # a fresh page, the app loaded
        drop_file(page, path)                 # the file dropped on the canvas
        graph = drawn_graph(page)             # nodes, links, widgets as the frontend holds them
"""
import json
import os
import shutil
import time
from urllib.parse import urlparse

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
VIEWPORT = {"width": 1920, "height": 1080}


def chromium_path():
    """Debian's chromium (scripts/setup_host.sh installs it), or $CHROMIUM; None when there is none."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((shutil.which(name) for name in CHROMIUM_CANDIDATES if shutil.which(name)), None)


def off_machine(url):
    """A URL the test's pages may not reach (anything but this machine's servers and the page's own data)."""
    return bool(url) and not url.startswith(("data:", "blob:")) and urlparse(url).hostname not in ("127.0.0.1", "localhost")


# the frontend's settings for the test user: no first-visit templates browser over the canvas
TEST_SETTINGS = {"Comfy.TutorialCompleted": True}


def prepare_user(server):
    """Writes the test user's frontend settings into the server's user folder (before the first page opens)."""
    folder = os.path.join(server.user_dir, "default")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "comfy.settings.json"), "w") as f:
        json.dump(TEST_SETTINGS, f)


class Browser:
    """One headless Chromium for a test module; `open` gives a fresh context (no shared storage) per page."""

    def __init__(self, viewport=VIEWPORT):
        self.viewport = viewport
        self._pw = self._browser = None

    def __enter__(self):
        from playwright.sync_api import sync_playwright
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        return self

    def __exit__(self, *exc):
        self._browser.close()
        self._pw.stop()

    def open(self, server, timeout=90):
        """A new page on the server's frontend, the app and its node definitions loaded. `page.console` collects
        (type, text, url) of console messages and page errors; `page.refused` the URLs refused off the machine."""
        context = self._browser.new_context(viewport=self.viewport)
        page = context.new_page()
        page.console, page.refused = [], []

        def route(r):
            if off_machine(r.request.url):
                page.refused.append(r.request.url)
                r.abort()
            else:
                r.continue_()

        context.route("**/*", route)
        page.on("console", lambda m: page.console.append((m.type, m.text, (m.location or {}).get("url", ""))))
        page.on("pageerror", lambda e: page.console.append(("pageerror", f"{e.name}: {e.message}\n{e.stack}", "")))
        page.goto(server.url, wait_until="domcontentloaded", timeout=timeout * 1000)
        page.wait_for_function("() => window.app && window.app.graph && window.app.canvas && "
                               "window.LiteGraph && Object.keys(LiteGraph.registered_node_types).length > 100",
                               timeout=timeout * 1000)
        # the frontend loads its default graph once set up; a file dropped before that would be replaced by it
        try:
            page.wait_for_function("() => app.graph._nodes.length > 0", timeout=40000)
        except Exception:  # noqa: BLE001  (a frontend that starts on an empty canvas)
            pass
        close_dialogs(page)
        return page


def close_dialogs(page):
    """Closes what a first visit opens over the canvas (templates browser, release notes) with Escape."""
    for _ in range(3):
        if not page.locator(".p-dialog-mask").count():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def drop_file(page, path):
    """Drags the file from outside the window onto the middle of the canvas and drops it: the browser's own
    drag-and-drop (CDP Input.dispatchDragEvent with the file), as a file dragged from the desktop."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#graph-canvas").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    data = {"items": [], "files": [os.path.abspath(path)], "dragOperationsMask": 0xFFFF}
    for kind in ("dragEnter", "dragOver", "drop"):
        cdp.send("Input.dispatchDragEvent", {"type": kind, "x": x, "y": y, "data": data})
    cdp.detach()


PREVIEWS_LOADED_JS = """() => app.graph._nodes.filter(n => (n.widgets || []).some(w => w.name === 'image' && w.value) &&
    !(n.imgs && n.imgs.length && n.imgs.every(i => i.complete && i.naturalWidth > 0))).map(n => n.title)"""


HOLDS_JS = """(nodes) => { const held = new Map(app.graph._nodes.map(n => [String(n.id), n.type]));
    return held.size === nodes.length && nodes.every(([id, type]) => held.get(String(id)) === type); }"""


def drop_and_wait(page, path, timeout=30):
    """Drops the file, waits until the graph holds exactly the file's nodes (same ids and types: a node count alone
    cannot tell it from the frontend's own default graph, which on 1.49.6 also has 10 nodes), dropping once more,
    as a user would, when the frontend was still busy loading its own graph, and until its image previews have
    loaded; returns the titles of the nodes whose image did not show."""
    with open(path) as f:
        nodes = [[str(n["id"]), n["type"]] for n in json.load(f)["nodes"]]
    drop_file(page, path)
    try:
        page.wait_for_function(HOLDS_JS, arg=nodes, timeout=timeout * 1000)
    except Exception:  # noqa: BLE001
        drop_file(page, path)
    page.wait_for_function(HOLDS_JS, arg=nodes, timeout=timeout * 1000)
    return wait_graph(page, len(nodes), timeout)


def wait_graph(page, count, timeout=30):
    """Waits until the graph holds `count` nodes and its image previews have loaded (a node grows by its preview);
    returns the titles of the nodes whose image did not show."""
    page.wait_for_function("(count) => app.graph._nodes.length === count", arg=count, timeout=timeout * 1000)
    try:
        page.wait_for_function(f"() => ({PREVIEWS_LOADED_JS})().length === 0", timeout=timeout * 1000 / 2)
    except Exception:  # noqa: BLE001  (the caller asserts on what is left)
        pass
    # two frames: the canvas draws once more after the previews grew the nodes
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => { app.canvas.draw(true, true); "
                  "requestAnimationFrame(r) }))")
    return page.evaluate(PREVIEWS_LOADED_JS)


DRAWN_GRAPH_JS = """() => {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = app.graph._nodes.map(n => ({
        id: n.id, type: n.type, title: n.title, pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]],
        title_height: title, collapsed: !!(n.flags && n.flags.collapsed),
        bounding: (() => { const b = new Float32Array(4); n.getBounding(b); return Array.from(b); })(),
        widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type, value: w.value,
                                              y: w.y ?? w.last_y ?? null})),
        inputs: (n.inputs || []).map(i => ({name: i.name, type: i.type, link: i.link})),
        outputs: (n.outputs || []).map(o => ({name: o.name, type: o.type, links: o.links || []})),
        badges: (n.badges || []).map(b => { const v = typeof b === 'function' ? b() : b;
                                            return v && (v.text ?? String(v)); }),
        unknown: !LiteGraph.registered_node_types[n.type],
        deprecated: !!(n.constructor.nodeData && n.constructor.nodeData.deprecated),
        properties: n.properties,
    }));
    const links = [];
    const all = app.graph.links;
    const values = all instanceof Map ? Array.from(all.values()) : Object.values(all);
    for (const l of values) if (l) links.push([l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]);
    return {nodes, links, groups: (app.graph._groups || app.graph.groups || []).map(g => ({
        title: g.title, bounding: Array.from(g._bounding || g.bounding)}))};
}"""


def drawn_graph(page):
    return page.evaluate(DRAWN_GRAPH_JS)


def fit_view(page):
    """The canvas zoom after the frontend's own fit-to-view ('.' on the canvas)."""
    page.locator("#graph-canvas").focus()  # the key goes to the canvas (a click could land on a node or a panel)
    page.keyboard.press(".")
    page.wait_for_timeout(300)
    return page.evaluate("() => app.canvas.ds.scale")
