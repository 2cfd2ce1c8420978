"""Repository checks: export drift, notebook pairs, presets of notebooks, packaging in step."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def _run(args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)


def _scratch_copy(tmp_path: Path) -> Path:
    """A copy of what the exporter and pair checker read, to break on purpose."""
    dst = tmp_path / "repo"
    for sub in ("tools", "notebooks", "aef_lit"):
        shutil.copytree(ROOT / sub, dst / sub, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_export_is_in_sync():
    res = _run(["tools/nb_export.py", "--check"])
    assert res.returncode == 0, res.stderr


def test_export_check_catches_a_hand_edit(tmp_path):
    repo = _scratch_copy(tmp_path)
    mod = repo / "aef_lit" / "conventions.py"
    mod.write_text(mod.read_text() + "\nHAND_EDIT = 1\n")
    res = _run(["tools/nb_export.py", "--check"], cwd=repo)
    assert res.returncode == 1
    assert "aef_lit/conventions.py" in res.stderr


def test_export_check_catches_an_unexported_notebook_edit(tmp_path):
    repo = _scratch_copy(tmp_path)
    nb = repo / "notebooks" / "01_conventions.py"
    nb.write_text(nb.read_text().replace("EMBED_DIM = 64", "EMBED_DIM = 65", 1))
    res = _run(["tools/nb_export.py", "--check"], cwd=repo)
    assert res.returncode == 1 and "conventions.py" in res.stderr
    # exporting repairs it, and a second export is a no-op (deterministic output)
    assert _run(["tools/nb_export.py"], cwd=repo).returncode == 0
    again = _run(["tools/nb_export.py"], cwd=repo)
    assert again.returncode == 0 and "wrote" not in again.stdout
    assert _run(["tools/nb_export.py", "--check"], cwd=repo).returncode == 0


def test_generated_modules_name_their_notebook():
    generated = [f for f in (ROOT / "aef_lit").rglob("*.py") if f.name not in ("__init__.py", "__main__.py")]
    assert generated
    for f in generated:
        head = f.read_text().split("\n", 1)[0]
        m = re.match(r"# generated from (notebooks/\d\d_\w+\.py) by tools/nb_export.py: do not edit\.", head)
        assert m, f"{f.name} lacks the generated-from header"
        assert (ROOT / m.group(1)).exists()


def test_every_generated_module_sits_in_a_package_with_a_hand_written_init():
    for f in (ROOT / "aef_lit").rglob("*.py"):
        if f.name == "__init__.py":
            assert not f.read_text().startswith("# generated from"), f"{f} must be hand-written"
        else:
            assert (f.parent / "__init__.py").exists(), f"{f.parent} lacks __init__.py"


def test_a_cell_can_export_to_another_module_of_a_sub_package(tmp_path):
    """`#| export part.other` sends one cell elsewhere; dropping it removes the stale module."""
    repo = _scratch_copy(tmp_path)
    nb = repo / "notebooks" / "01_conventions.py"
    text = nb.read_text()
    nb.write_text(text + "\n# %%\n#| export model.extra_cell\nEXTRA = 1\n")
    assert _run(["tools/nb_export.py"], cwd=repo).returncode == 0
    extra = repo / "aef_lit" / "model" / "extra_cell.py"
    assert extra.read_text().startswith("# generated from notebooks/01_conventions.py")
    assert "EXTRA = 1" in extra.read_text() and "EXTRA" not in (repo / "aef_lit" / "conventions.py").read_text()
    nb.write_text(text)
    assert _run(["tools/nb_export.py", "--check"], cwd=repo).returncode == 1  # the orphan is drift
    assert _run(["tools/nb_export.py"], cwd=repo).returncode == 0
    assert not extra.exists()
    assert _run(["tools/nb_export.py", "--check"], cwd=repo).returncode == 0


def test_notebook_pairs_agree():
    res = _run(["tools/nb_sync.py", "--check"])
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("breakage", ["edit_py", "outputs", "tags"])
def test_pair_check_catches_unsynced_notebooks(tmp_path, breakage):
    repo = _scratch_copy(tmp_path)
    py = repo / "notebooks" / "01_conventions.py"
    ipynb = py.with_suffix(".ipynb")
    if breakage == "edit_py":
        py.write_text(py.read_text().replace("seed = 0", "seed = 1", 1))
        expect = "differs"
    elif breakage == "outputs":
        nb = json.loads(ipynb.read_text())
        code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
        ipynb.write_text(json.dumps(nb))
        expect = "outputs"
    else:
        nb = json.loads(ipynb.read_text())
        for c in nb["cells"]:
            c.get("metadata", {}).pop("tags", None)
        ipynb.write_text(json.dumps(nb))
        expect = "tags"
    res = _run(["tools/nb_sync.py", "--check"], cwd=repo)
    assert res.returncode == 1 and expect in res.stderr


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_header_and_parameters(py):
    import jupytext

    text = py.read_text()
    assert "kernelspec:" in text and "name: python3" in text, "full jupytext header needed (papermill)"
    assert "jupytext_version" not in text, "filter jupytext_version out of the header (churn)"
    nb = jupytext.read(py, fmt="py:percent")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged `parameters`"
    names = set(re.findall(r"^(\w+)\s*=", params[0].source, flags=re.M))
    assert {"preset", "device", "seed", "data"} <= names
    assert re.search(r'^preset\s*=\s*"tiny"', params[0].source, flags=re.M), "default preset must be tiny (CI)"
    assert 'google.colab' in text, "a Colab install cell"


def test_toc_lists_every_notebook_and_only_existing_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    for f in files:
        assert list(ROOT.glob(f + ".*")), f"_toc.yml names {f}, which does not exist"
    listed = {f for f in files if f.startswith("notebooks/")}
    assert {f"notebooks/{p.stem}" for p in NOTEBOOKS} == listed


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_in_step_with_pyproject():
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_req_name(r) for r in proj["dependencies"]}
    for extra in ("dev", "text"):
        wanted |= {_req_name(r) for r in proj["optional-dependencies"][extra]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_req_name(r) for r in dep["pip"] if not r.startswith("-e")}
        else:
            exact = "=" in dep and "==" not in dep and ">" not in dep  # conda's python=3.11
            conda.add(_req_name(dep.replace("=", "==", 1) if exact else dep))
    conda = {"torch" if n == "pytorch" else n for n in conda} - {"python", "pip"}
    assert wanted == conda | pip, (f"only in pyproject: {wanted - conda - pip}; "
                                   f"only in environment.yml: {(conda | pip) - wanted}")
    # versions agree too (conda and pip spell the same lower bounds)
    spec = {_req_name(r): r.replace(" ", "")[len(_req_name(r)):] for r in proj["dependencies"]}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and _req_name(dep) in spec:
            assert dep.replace(" ", "")[len(_req_name(dep)):] == spec[_req_name(dep)], dep


def test_torch_not_hard_pinned_but_constrained():
    text = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'"torch\s*==', text), "keep torch unpinned in the package (Colab keeps its own)"
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_readme_starts_with_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.S)
    first = [ln.split("#")[0].strip() for ln in blocks[0].splitlines() if ln.split("#")[0].strip()]
    assert first[:2] == ["bash tools/main.sh", "bash tools/test.sh"], first
    assert readme.find("```") < readme.find("\n## "), "the commands come first"
    assert "bash tools/test.sh" in (ROOT / ".ci" / "run").read_text()


def _import_graph(pkg: Path) -> dict[str, set[str]]:
    """Module -> the aef_lit modules it imports (anywhere in its body, functions included).

    Importing `aef_lit.part.mod` from outside `part` runs `part/__init__.py` too, so it also
    counts as importing the package `aef_lit.part`; the root package is left out (every
    module sits under it).
    """
    import ast

    files = {".".join(f.relative_to(pkg.parent).with_suffix("").parts).removesuffix(".__init__"): f
             for f in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                continue
            for t in targets:
                if not t.startswith("aef_lit.") or t not in files:
                    continue
                graph[mod].add(t)
                parts = t.split(".")
                for i in range(2, len(parts)):
                    parent = ".".join(parts[:i])
                    if not mod.startswith(parent + ".") and mod != parent:
                        graph[mod].add(parent)
    for m in graph:
        graph[m].discard(m)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    graph = _import_graph(ROOT / "aef_lit")
    assert len(graph) > 20 and graph["aef_lit.model.aef"], "the graph reader found no imports"
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
