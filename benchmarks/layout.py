"""The package's layout in numbers (issue 34): what a newcomer pays to read it, and what a run pays to start.

Static counts, from the source of the tree given (``--root``, default this checkout; parsed, not imported):

- imports of another package's private module or name (``from tiler.model._file import ...`` in
  ``tiler/pipeline.py``, ``from tiler.pipeline import _check_patch_size`` in ``tiler/info.py``);
- imports inside functions: of tiler's own modules outside ``cli/``, of the standard library, of a module
  the file already imports at its top, and all of them;
- the longest modules, in lines.

Counts of one ``tiler run`` of the sample scene, in a fresh process of that tree (its ``tiler`` package first
on ``sys.path``):

- the Python frames between the ``tiler run`` command's function and the engine's ``stream`` (the path to
  the first pixel), and the tiler modules they pass through;
- calls of every check and resolution on every thread (``threading.setprofile``): the run's checks are
  made once where the run is resolved, not again below it.

    python benchmarks/layout.py [--root TREE] [--scene SCENE]

Run it on two trees (a worktree of an earlier commit) to compare them side by side.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from collections import Counter

from _timing import stamp  # benchmarks/_timing.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: (module path suffix, function) -> what it checks. Every one is a check or a resolution a run needs once.
CHECKS = {
    ("tiler/model/_runtime.py", "check_runtime"): "check_runtime (runtime and precision)",
    ("tiler/plan.py", "from_overlap"): "PatchGrid.from_overlap",
    ("tiler/plan.py", "stride_from_overlap"): "overlap checked (stride_from_overlap)",
    ("tiler/output.py", "check_creation_options"): "creation options checked",
    ("tiler/pipeline.py", "_check_patch_size"): "patch size checked (before: pipeline.py)",
    ("tiler/pipeline/_resolve.py", "check_patch_size"): "patch size checked",
    ("tiler/model/_file.py", "read_info"): "the model's metadata read",
    ("tiler/destination.py", "guard_outputs"): "outputs guarded (before: destination.py)",
    ("tiler/destination/_guard.py", "guard_outputs"): "outputs guarded",
    ("tiler/distributed/_journal.py", "file_sha256"): "a file hashed (sha256)",
    ("tiler/distributed/_journal.py", "fingerprint"): "a run fingerprinted",
    ("tiler/scene/_scene.py", "open_scene"): "the scene opened",
}

_PROBE = r'''
import json, os, sys, tempfile, threading
sys.path.insert(0, sys.argv[1])
checks = [tuple(k) for k in json.loads(sys.argv[3])]
counts = {"|".join(k): 0 for k in checks}
by_name = {}
for suffix, name in checks:
    by_name.setdefault(name, []).append(suffix)
path = {}

def profile(frame, event, arg):
    if event != "call":
        return
    code = frame.f_code
    suffixes = by_name.get(code.co_name)
    if suffixes:
        for suffix in suffixes:
            if code.co_filename.endswith(suffix):
                counts[suffix + "|" + code.co_name] += 1
    if code.co_name == "stream" and code.co_filename.endswith("tiler/engine.py") and not path:
        frames, f = [], frame
        while f is not None:
            frames.append(f)
            f = f.f_back
        start = next(i for i, f in enumerate(frames) if f.f_code.co_name == "run"
                     and f.f_code.co_filename.endswith("tiler/cli/run.py"))
        between = frames[:start + 1]
        path["frames"] = len(between) - 1
        package = os.path.join(sys.argv[1], "tiler")
        path["modules"] = sorted({os.path.relpath(f.f_code.co_filename, sys.argv[1]) for f in between
                                  if os.path.abspath(f.f_code.co_filename).startswith(package)})

threading.setprofile(profile)
sys.setprofile(profile)
from tiler.cli import main
with tempfile.TemporaryDirectory() as d:
    try:
        main.main(["run", sys.argv[2], "-o", os.path.join(d, "m.tif"), "-q"], standalone_mode=False)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
print("LAYOUT " + json.dumps({"counts": counts, "path": path}))
'''


def _imports(root: str):
    """Per module of the package: its dotted name, package, and every import with where it is."""
    out = []
    base = os.path.join(root, "tiler")
    for folder, _, files in os.walk(base):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            module = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            parents = {}
            for node in ast.walk(tree):
                for child in ast.iter_child_nodes(node):
                    parents[child] = node
            lines = sum(1 for _ in open(path, encoding="utf-8"))
            out.append((rel, module, tree, parents, lines))
    return out


def _package_of(module: str) -> str:
    """``tiler.model._file`` -> ``tiler.model``; ``tiler.pipeline`` -> ``tiler.pipeline`` (a top-level module)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _in_function(node, parents) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return True
    return False


def static_counts(root: str) -> dict:
    private, deferred = [], Counter()
    longest = []
    for rel, module, tree, parents, lines in _imports(root):
        longest.append((lines, rel))
        here = _package_of(module)
        top_level = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top_level |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                top_level.add(node.module)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            else:
                targets = [(node.module or "", a.name) for a in node.names] if node.level == 0 else []
            for target, name in targets:
                # tiler's own private top-level modules (tiler._logging, tiler._signals ...) are the root package's,
                # shared by all of it.
                root_private = (len(target.split(".")) == 2 and target.split(".")[1].startswith("_")
                                or target == "tiler" and name is not None and name.startswith("_"))
                if target.split(".")[0] == "tiler" and _package_of(target) != here and not root_private:
                    private_module = any(p.startswith("_") for p in target.split(".")[1:])
                    private_name = name is not None and name.startswith("_") and not name.startswith("__")
                    if private_module or private_name:
                        private.append(f"{rel}: {target}{'.' + name if name else ''}")
            if _in_function(node, parents):
                mod = targets[0][0] if targets else ""
                deferred["all"] += 1
                if mod.split(".")[0] in sys.stdlib_module_names:
                    deferred["standard library"] += 1
                if mod.split(".")[0] == "tiler" and not rel.startswith(os.path.join("tiler", "cli")):
                    deferred["tiler's own, outside cli/"] += 1
                if mod in top_level:
                    deferred["a module the file imports at its top"] += 1
    return {"private": private, "deferred": dict(deferred), "longest": sorted(longest, reverse=True)[:5]}


def run_counts(root: str, scene: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, root, scene, json.dumps([list(k) for k in CHECKS])],
                          capture_output=True, text=True, cwd=root, timeout=900)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("LAYOUT ")), None)
    if line is None:
        raise SystemExit(f"the run failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("LAYOUT "):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=ROOT, help="the tree to measure (a checkout or worktree)")
    ap.add_argument("--scene", default=os.path.join(ROOT, "examples", "dubai_sample.tif"))
    args = ap.parse_args(argv)
    root = os.path.abspath(args.root)
    print(stamp(), flush=True)
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"tree {root} (commit {commit or '?'})")
    s = static_counts(root)
    print(f"\nimports of another package's private module or name: {len(s['private'])}")
    for entry in s["private"]:
        print(f"  {entry}")
    print("\nimports inside functions:")
    for k in ("all", "tiler's own, outside cli/", "standard library", "a module the file imports at its top"):
        print(f"  {k:<40} {s['deferred'].get(k, 0):>4}")
    print("\nlongest modules:")
    for lines, rel in s["longest"]:
        print(f"  {lines:>5}  {rel}")
    r = run_counts(root, args.scene)
    print(f"\ntiler run {os.path.basename(args.scene)}: {r['path'].get('frames')} frames from the command to the "
          f"engine's stream, through {len(r['path'].get('modules', []))} tiler modules:")
    print("  " + ", ".join(r["path"].get("modules", [])))
    print(f"\n{'check (every thread)':<44} calls")
    for (suffix, name), what in CHECKS.items():
        print(f"{what:<44} {r['counts'].get(suffix + '|' + name, 0):>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
