#!/usr/bin/env python3
"""Writes README.md's tables of models, workflows and nodes from the code, so they never drift from it: the models
and workflows from the registry (vc_models/registry.py) and the graph builders, the nodes from the definitions of
the pack as the real ComfyUI loads it (each node's V3 schema: display name, category, the first sentence of its
description).

Each table sits between `<!-- BEGIN <table>: ... -->` and `<!-- END <table> -->` in README.md; everything else in
the README is left alone. `make docs` (and `make workflows`) runs this; tests/test_readme.py fails when the README's
tables differ from what it would write now.

    python scripts/readme_tables.py           # rewrite the tables in README.md
    python scripts/readme_tables.py --check   # exit 1, naming the tables that are out of date
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import comfy_boot  # noqa: E402
import build_workflows  # noqa: E402  (registry, shipped_workflows, downloads, lora_name)
import build_train_workflow  # noqa: E402  (training_graphs)

registry = build_workflows.registry
README = os.path.join(comfy_boot.REPO, "README.md")
WORKFLOWS = os.path.join(comfy_boot.REPO, "workflows")
TABLES = ("models", "workflows", "nodes")
CATEGORY_ROOT = "VideoCrafter/"
DEFAULT_RELEASED_FILE = "model.ckpt"  # most releases' file name: the models table names only the others
DEFAULT_FOLDER = "videocrafter"  # most downloads' models folder: the table names the others

def cell(text):
    """`text` as one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]) + "\n"


def code(name):
    return f"`{name}`"


def models_table():
    """Every download of the registry: its id, what it is, the file the workflows load, where it comes from."""
    rows = []
    for e in registry.downloads():
        what = e.description
        if getattr(e, "base_model", ""):
            what += f", UNet only (with {code(e.base_model)})"
        if isinstance(e, registry.ControlNetEntry):
            what += f" for {code(e.model)}"
        r = e.release
        released = r.repo + ("" if r.file == DEFAULT_RELEASED_FILE else f" {code(r.file)}")
        written = r.file_name if r.folder == DEFAULT_FOLDER else f"../{r.folder}/{r.file_name}"
        rows.append([code(e.id), what, code(written), released])
    return table(["id", "what it is", f"written to `ComfyUI/models/{DEFAULT_FOLDER}/`",
                  f"from `huggingface.co/` (file {code(DEFAULT_RELEASED_FILE)} unless named)"], rows)


def workflow_rows():
    """[(graph name, what to download)] of every graph the builders write, shipped graphs first (registry order),
    then the training graphs (their titles say what they make)."""
    rows = []
    for name, (entry, workflow) in build_workflows.shipped_workflows().items():
        needs = ", ".join(code(e.id) for e in build_workflows.downloads(entry, workflow))
        if workflow.variation == "lora":
            needs += f" + your {code('loras/' + build_workflows.lora_name(entry))}"
        rows.append([name, needs])
    for name, entry, _values in build_train_workflow.training_graphs():
        rows.append([name, f"{code(entry.id)} + your videos"])
    return rows


def workflows_table():
    """A row per template: its title (Templates -> Extensions, the file in example_workflows/) and its API twin."""
    return table(["template (`example_workflows/`)", "API graph (`workflows/api/`)", "download first"],
                 [[build_workflows.TITLES.get(name, name), code(f"{name}.json"), needs] for name, needs in workflow_rows()])


FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z'\"(])")
PARENTHESIS = re.compile(r"\s*\([^()]*\)")
SUMMARY_CHARS = 240  # a node's line in the table; the node's own DESCRIPTION (its tooltip) says the rest


def summary(description):
    """A node's DESCRIPTION in one line: its first sentence; past SUMMARY_CHARS without its parentheses, and if still
    longer up to its first ': ' or '; '."""
    text = FIRST_SENTENCE.split(" ".join((description or "").split()), maxsplit=1)[0]
    if len(text) > SUMMARY_CHARS:
        text = PARENTHESIS.sub("", text)
    if len(text) > SUMMARY_CHARS:
        text = re.split(r"[:;] ", text, maxsplit=1)[0] + "."
    return text


def nodes_table(pack):
    """The pack's nodes as ComfyUI registers them (their V3 schemas), grouped by category in the order categories
    first appear."""
    schemas = [node.define_schema() for node in pack.vc_nodes.NODES]
    categories = list(dict.fromkeys(schema.category for schema in schemas))
    rows = []
    for category in categories:
        for schema in schemas:
            if schema.category != category:
                continue
            short = category[len(CATEGORY_ROOT):] if category.startswith(CATEGORY_ROOT) else category
            rows.append([schema.display_name or schema.node_id, short, summary(schema.description)])
    return table(["node", "category (`VideoCrafter/…`)", "what it does"], rows)


def tables(pack=None):
    """{table name: Markdown} as this script writes them now; `pack`: the loaded pack module (booted if None)."""
    pack = pack or comfy_boot.boot(cpu=True)
    return {"models": models_table(), "workflows": workflows_table(), "nodes": nodes_table(pack)}


def marker_pattern(name):
    return re.compile(rf"(<!-- BEGIN {name}:[^\n]*-->\n)(.*?)(<!-- END {name} -->)", re.S)


def sections(text):
    """{table name: the Markdown between its markers} of a README text; a missing pair of markers is an error."""
    found = {}
    for name in TABLES:
        match = marker_pattern(name).search(text)
        if match is None:
            raise SystemExit(f"README.md has no '<!-- BEGIN {name}: ... -->' ... '<!-- END {name} -->' markers; "
                             "put them where the table goes and run make docs.")
        found[name] = match.group(2)
    return found


def render(text, new_tables):
    sections(text)  # every pair of markers is there
    for name, markdown in new_tables.items():
        text = marker_pattern(name).sub(lambda m: m.group(1) + markdown + m.group(3), text, count=1)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table is out of date")
    args = parser.parse_args(argv)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    new = tables()
    stale = [name for name, markdown in sections(text).items() if markdown != new[name]]
    if args.check:
        if stale:
            print(f"README.md: the {', '.join(stale)} table(s) differ from the code; run make docs", file=sys.stderr)
            return 1
        print("README.md tables are up to date")
        return 0
    if stale:
        from vc_models.atomic_file import atomic_write  # the repository root is on sys.path (build_workflows)
        rendered = render(text, new)

        def write(tmp):
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(rendered)
        atomic_write(README, write)
    print(f"README.md: {', '.join(stale) or 'no'} table(s) rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
