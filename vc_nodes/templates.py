"""The pack's graphs in the frontends' Templates browser (Templates -> Extensions -> this pack).

ComfyUI lists a custom pack's `example_workflows/*.json` (server: app/custom_node_manager.py) and the frontends
(1.32.9, 1.49.6) show each by its file name, with `<file name>.jpg` from the same folder as its thumbnail. The
shipped UI graphs are named by their titles (scripts/build_workflows.py); the thumbnails are drawn here from the
graphs themselves when the pack loads (no image is committed): the graph's title over its groups, nodes and links.
"""
import json
import logging
import os

from ..vc_models.atomic_file import atomic_write

TEMPLATES_FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_workflows")
THUMBNAIL_SIZE = 512  # square: the template cards crop their image to a square
BACKGROUND, NODE, NODE_TITLE, TEXT = (32, 32, 32), (70, 70, 70), (45, 45, 45), (235, 235, 235)
LINK_COLOURS = {"MODEL": (178, 157, 255), "CLIP": (255, 210, 0), "VAE": (255, 110, 110), "CONDITIONING": (255, 160, 50),
                "LATENT": (255, 130, 200), "IMAGE": (100, 180, 255), "VIDEO": (120, 220, 120)}
NOTE_COLOUR = (101, 85, 51)


def thumbnail_path(graph_path):
    return os.path.splitext(graph_path)[0] + ".jpg"


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font (FreeType)
    except (TypeError, OSError):  # Pillow without FreeType: its small bitmap font
        return ImageFont.load_default()


def _hex_colour(value, default):
    if isinstance(value, str) and value.startswith("#") and len(value) in (4, 7):
        digits = value[1:] if len(value) == 7 else "".join(c * 2 for c in value[1:])
        return tuple(int(digits[i:i + 2], 16) for i in (0, 2, 4))
    return default


def _wrap(draw, text, font, width):
    """`text` in lines no wider than `width` pixels."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def render_thumbnail(graph, title, size=THUMBNAIL_SIZE):
    """A square picture of a UI graph: `title` at the top, below it the graph's groups, nodes and links fitted
    into the rest."""
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    margin = size // 24
    title_font = _font(size // 13)
    lines = _wrap(draw, title, title_font, size - 2 * margin)
    line_h = size // 11
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * line_h), line, font=title_font, fill=TEXT)
    top = margin * 2 + len(lines) * line_h
    nodes = {n["id"]: n for n in graph.get("nodes", [])}
    rects = [(x, y - 30, x + w, y + h) for (x, y), (w, h) in ((n["pos"], n["size"]) for n in nodes.values())]
    rects += [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in graph.get("groups", []))]
    if not rects:
        return image
    left, upper = min(r[0] for r in rects), min(r[1] for r in rects)
    right, lower = max(r[2] for r in rects), max(r[3] for r in rects)
    scale = min((size - 2 * margin) / (right - left), (size - top - margin) / (lower - upper))
    x0 = margin + ((size - 2 * margin) - (right - left) * scale) / 2
    y0 = top + ((size - top - margin) - (lower - upper) * scale) / 2

    def at(x, y):
        return x0 + (x - left) * scale, y0 + (y - upper) * scale

    for group in graph.get("groups", []):  # coloured areas (their titles would be too small to read)
        x, y, w, h = group["bounding"]
        colour = _hex_colour(group.get("color"), (90, 90, 90))
        draw.rectangle([at(x, y), at(x + w, y + h)], fill=tuple(c // 3 for c in colour), outline=colour)
    for _id, src, slot, dst, dslot, kind in graph.get("links", []):
        if src in nodes and dst in nodes:
            (sx, sy), sw = nodes[src]["pos"], nodes[src]["size"][0]
            start, end = at(sx + sw, sy + 10 + 20 * slot), at(nodes[dst]["pos"][0], nodes[dst]["pos"][1] + 10 + 20 * dslot)
            bend = abs(end[0] - start[0]) / 2 + 4
            points = [tuple((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
                            for p0, p1, p2, p3 in zip(start, (start[0] + bend, start[1]), (end[0] - bend, end[1]), end))
                      for t in (i / 16 for i in range(17))]
            draw.line(points, fill=LINK_COLOURS.get(kind, (160, 160, 160)), width=max(1, size // 256))
    for node in nodes.values():
        (x, y), (w, h) = node["pos"], node["size"]
        body = NOTE_COLOUR if node.get("type") in ("Note", "MarkdownNote") else NODE
        draw.rectangle([at(x, y - 30), at(x + w, y + h)], fill=body, outline=(20, 20, 20))
        draw.rectangle([at(x, y - 30), at(x + w, y)], fill=NODE_TITLE)
    return image


def ensure_thumbnails(folder=TEMPLATES_FOLDER):
    """Draws `<name>.jpg` for every `<name>.json` graph in `folder` that has none or an older one; returns the
    paths written. A graph that cannot be read or a folder that cannot be written is logged, never raised:
    the pack works without thumbnails."""
    written = []
    if not os.path.isdir(folder):
        return written
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        graph_path = os.path.join(folder, name)
        target = thumbnail_path(graph_path)
        try:
            if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(graph_path):
                continue
            with open(graph_path, encoding="utf-8") as f:
                graph = json.load(f)
            image = render_thumbnail(graph, os.path.splitext(name)[0])
            written.append(atomic_write(target, lambda tmp: image.save(tmp, format="JPEG", quality=88)))
        except PermissionError as e:  # a read-only install: one message, not one a graph
            logging.warning("VideoCrafter: cannot write template thumbnails into %s (%s); the templates work "
                            "without them", folder, e)
            break
        except (OSError, ValueError, KeyError, TypeError) as e:
            logging.warning("VideoCrafter: no template thumbnail for %s (%s); the template works without it", name, e)
    return written
