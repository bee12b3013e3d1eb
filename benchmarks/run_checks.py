"""How many times one ``tiler run`` resolves and checks things (issue 24: each once).

Runs ``tiler run SCENE -o OUT`` in this process under cProfile and prints how many times each
resolution or check was called: configs validated, the model's metadata read, the options checked
against the model, outputs guarded, the scene's files listed, the scene opened.

    python benchmarks/run_checks.py [SCENE] [-- extra tiler run options]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile

from _timing import stamp  # benchmarks/_timing.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: (module file suffix, function name) -> what it is.
CHECKS = {
    ("tiler/config.py", "__post_init__"): "a config validated (any of the four)",
    ("tiler/config.py", "for_model"): "InferenceConfig.for_model",
    ("tiler/pipeline/_resolve.py", "resolve_run"): "resolve_run",
    ("tiler/pipeline/_resolve.py", "_checked"): "the run's options checked against the model",
    ("tiler/destination/_guard.py", "guard_outputs"): "guard_outputs",
    ("tiler/scene/_paths.py", "scene_inputs"): "scene_inputs",
    ("tiler/scene/_scene.py", "open_scene"): "open_scene",
    ("tiler/model/_file.py", "read_info"): "read_info",
    ("tiler/pipeline/_prepare.py", "prepare_scene"): "prepare_scene (domain check, registration)",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", nargs="?", default=os.path.join(ROOT, "examples", "dubai_sample.tif"))
    ap.add_argument("extra", nargs="*", help="more tiler run options (after --)")
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    from tiler.cli import main as tiler_main

    with tempfile.TemporaryDirectory() as d:
        cmd = ["run", args.scene, "-o", os.path.join(d, "m.tif"), "-q", *args.extra]
        prof = cProfile.Profile()
        prof.enable()
        try:
            tiler_main.main(cmd, standalone_mode=False)
        finally:
            prof.disable()
    stats = pstats.Stats(prof).stats
    counts = {k: 0 for k in CHECKS}
    for (filename, _, name), (_, ncalls, *_rest) in stats.items():
        for (suffix, fn) in CHECKS:
            if filename.endswith(suffix) and name == fn:
                counts[(suffix, fn)] += ncalls
    print(f"tiler {' '.join(cmd[:2])} ... {' '.join(args.extra)}")
    print(f"{'check':<48} calls")
    for key, what in CHECKS.items():
        print(f"{what:<48} {counts[key]:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
