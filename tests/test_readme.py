"""README.md is the page a user starts from; docs/ holds the rest. What they state must be what the code does:
- the README's tables of models, workflows and nodes are what scripts/readme_tables.py makes now of the registry,
  the shipped graphs and the pack's nodes as the real ComfyUI loads them (`make docs` rewrites them);
- the README fits one screen's worth (12 KB), links every doc, and every relative link and anchor resolves;
- every `scripts/<name>.py --flag` the README and docs give is a flag that script's --help lists, every
  `make <target>` a Makefile target, and CI (.ci/run) runs the README's test command.
"""
import difflib
import os
import re
import shlex
import subprocess
import sys

import comfy_host
import readme_tables  # scripts/, on sys.path through comfy_host

REPO = comfy_host.REPO
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")
README_LIMIT = 12 * 1024


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def documents():
    """{path relative to the repository: text} of README.md and docs/*.md."""
    docs = {"README.md": read(README)}
    for name in sorted(os.listdir(DOCS)):
        if name.endswith(".md"):
            docs[f"docs/{name}"] = read(os.path.join(DOCS, name))
    return docs


def table_rows(markdown):
    """The cells of a Markdown table's body rows."""
    rows = [line.strip().strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows[2:]]


def test_readme_tables_are_what_the_code_makes_now():
    pack = comfy_host.boot()
    current = readme_tables.sections(read(README))
    expected = readme_tables.tables(pack)
    stale = {name: "".join(difflib.unified_diff(current[name].splitlines(True), expected[name].splitlines(True),
                                                 f"README.md ({name})", f"the code ({name})"))
             for name in readme_tables.TABLES if current[name] != expected[name]}
    assert not stale, ("README.md's tables differ from the registry / node definitions: run `make docs` "
                       "(scripts/readme_tables.py)\n" + "\n".join(stale.values()))


def test_readme_tables_list_every_download_graph_and_node():
    """What the tables must cover, counted from the sources themselves (the generator could skip a row)."""
    pack = comfy_host.boot()
    tables = readme_tables.sections(read(README))
    ids = {row[0].strip("`") for row in table_rows(tables["models"])}
    assert ids == {e.id for e in readme_tables.registry.downloads()}
    rows = table_rows(tables["workflows"])
    for folder, column, to_file in (("example_workflows", 0, lambda cell: cell + ".json"),
                                    (os.path.join("workflows", "api"), 1, lambda cell: cell.strip("`"))):
        graphs = {to_file(row[column]) for row in rows}
        shipped = {f for f in os.listdir(os.path.join(REPO, folder)) if f.endswith(".json")}
        assert graphs == shipped, (f"{folder}/*.json not in the README's table: {sorted(shipped - graphs)}; listed "
                                   f"but not shipped: {sorted(graphs - shipped)} (the builders and the registry decide)")
    names = [row[0] for row in table_rows(tables["nodes"])]
    assert sorted(names) == sorted(node.GET_SCHEMA().display_name for node in pack.vc_nodes.NODE_CLASSES.values())


def slug(heading):
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text):
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_fits_a_screen_links_every_doc_and_links_resolve():
    docs = documents()
    size = len(docs["README.md"].encode("utf-8"))
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move details to docs/"
    linked = set(LINK.findall(docs["README.md"]))
    unlinked = [d for d in docs if d != "README.md" and d not in linked]
    assert not unlinked, f"docs the README does not link: {unlinked}"
    broken = []
    for name, text in docs.items():
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
                continue
            path, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(os.path.join(REPO, name)), path)) if path else \
                os.path.join(REPO, name)
            if not os.path.exists(resolved):
                broken.append(f"{name}: {target} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in anchors(read(resolved)):
                broken.append(f"{name}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
    # the graphs' missing-model entries send users to the README's models section
    guide = readme_tables.build_workflows.MODELS_GUIDE_URL.partition("#")[2]
    assert guide in anchors(docs["README.md"]), f"README.md has no heading for #{guide} (MODELS_GUIDE_URL)"


def code_texts(text):
    """The code spans and the lines of fenced code blocks of a Markdown text."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return [line for block in blocks for line in block.splitlines()] + re.findall(r"`([^`\n]+)`", rest)


def script_flags(docs):
    """{script file name: {flag: [where]}} of every `scripts/<name>.py ... --flag` in the docs' code."""
    found = {}
    for name, text in docs.items():
        for code in code_texts(text):
            for match in re.finditer(r"scripts/(\w+\.py)\b(.*)", code):
                try:
                    words = shlex.split(match.group(2).split("#")[0])
                except ValueError:
                    words = match.group(2).split()
                for word in words:
                    word = word.strip("[]")
                    if word.startswith("--"):
                        found.setdefault(match.group(1), {}).setdefault(word.split("=")[0], []).append(name)
    return found


def test_command_lines_in_the_docs_use_flags_the_scripts_have():
    flags = script_flags(documents())
    assert "benchmark.py" in flags  # docs/performance.md gives the commands behind its numbers
    problems = []
    for script, used in sorted(flags.items()):
        path = os.path.join(REPO, "scripts", script)
        if not os.path.exists(path):
            problems.append(f"scripts/{script} does not exist (in {sorted({d for w in used.values() for d in w})})")
            continue
        source = read(path)
        if "argparse" not in source and ".cli import main" not in source:
            problems.append(f"scripts/{script} takes no options, yet the docs give it {sorted(used)}")
            continue
        out = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True, timeout=300,
                             cwd=REPO)
        assert out.returncode == 0, f"scripts/{script} --help failed:\n{out.stderr[-2000:]}"
        listed = set(re.findall(r"--[\w-]+", out.stdout))
        problems += [f"scripts/{script} {flag} (in {', '.join(sorted(set(where)))}) is not an option of the script"
                     for flag, where in used.items() if flag not in listed]
    assert not problems, "\n".join(problems)


def test_make_targets_exist_and_ci_runs_the_readme_test_command():
    docs = documents()
    makefile = read(os.path.join(REPO, "Makefile"))
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    used = {t: d for d, text in docs.items() for code in code_texts(text) for t in re.findall(r"\bmake ([a-z][\w-]*)", code)}
    missing = {t: d for t, d in used.items() if t not in targets}
    assert not missing, f"make targets the docs name that the Makefile lacks: {missing}"
    section = docs["README.md"].split("## Developer commands", 1)[1]
    commands = [line.split("#")[0].strip() for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()]
    assert {"make test", "make demo"} <= set(commands), commands
    ci = read(os.path.join(REPO, ".ci", "run"))
    runs = [line for line in ci.splitlines() if not line.lstrip().startswith("#") and re.search(r"\bmake test\b", line)]
    assert runs, ".ci/run does not run `make test`, the test command the README gives"
