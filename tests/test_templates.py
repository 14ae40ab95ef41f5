"""The template thumbnails the pack draws from its graphs when it loads (vc_nodes/templates.py): one square JPEG per
graph beside it, drawn again only when the graph is newer; a file that is no graph is reported, not raised."""
import json
import logging
import os
import shutil
import sys

from server_util import load_workflow
import build_workflows  # noqa: E402  (scripts/, on the path through server_util)


def test_thumbnails_drawn_once_per_graph_and_again_when_it_changes(pack, tmp_path, caplog):
    from PIL import Image
    templates = sys.modules[pack.__name__ + ".vc_nodes.templates"]
    for name in ("dc_512_keyframes", "train_i2v"):
        shutil.copy(build_workflows.ui_path(name), tmp_path)
    (tmp_path / "not a graph.json").write_text("[1, 2")
    with caplog.at_level(logging.WARNING):
        written = templates.ensure_thumbnails(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == sorted(
        os.path.basename(build_workflows.ui_path(n))[:-5] + ".jpg" for n in ("dc_512_keyframes", "train_i2v"))
    assert "not a graph.json" in caplog.text
    for path in written:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (templates.THUMBNAIL_SIZE,) * 2
            # the graph is drawn: the picture is not one flat colour
            assert len(image.convert("L").getcolors(maxcolors=256) or ()) > 20
    assert templates.ensure_thumbnails(str(tmp_path)) == []  # up to date
    graph = build_workflows.ui_path("train_i2v", str(tmp_path))
    later = os.path.getmtime(written[0]) + 10
    os.utime(graph, (later, later))
    assert templates.ensure_thumbnails(str(tmp_path)) == [templates.thumbnail_path(graph)]
    with open(graph) as f:
        assert load_workflow("train_i2v", api=False) == json.load(f)  # the copy is the shipped graph
