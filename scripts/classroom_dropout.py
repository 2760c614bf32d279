"""Chapter 13's table: the classroom recipe trained with and without caption dropout, read by the checker.

    python scripts/classroom_dropout.py                      # about 12 minutes on 2 CPU cores
    python scripts/classroom_dropout.py --steps 300 --out /tmp/x.json   # a quick look

Each run is ``sdcourse.classroom.train`` with ``Recipe.classroom(caption_dropout=...)`` (seed 0); each trained
model then draws the same 64 held-out captions at guidance 1 and 7.5 (DDIM, 20 steps) and the course's checker
reads them. The record (``sdcourse/measured/classroom_dropout.json`` by default, which chapter 13 prints)
names the machine, the library versions and each run's minutes. Checkpoints go to ``--runs`` (resumed when
rerun).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdcourse import classroom, shapes  # noqa: E402
from sdcourse.mini.train import Recipe  # noqa: E402
from sdcourse.speed import machine_info  # noqa: E402

DEFAULT_OUT = ROOT / "sdcourse" / "measured" / "classroom_dropout.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the record goes (JSON)")
    ap.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "sdcourse-runs" / "classroom-dropout",
                    help="checkpoint folder, one subfolder per run")
    ap.add_argument("--steps", type=int, default=Recipe.classroom().unet_steps, help="training steps per run")
    ap.add_argument("--n", type=int, default=64, help="held-out captions per guidance scale")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.n < 1 or args.threads < 1:
        ap.error("--steps, --n and --threads must be 1 or more")
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.touch()
    except OSError as err:
        ap.error(f"cannot write --out {args.out}: {err}")
    import torch

    torch.set_num_threads(args.threads)
    rows, minutes = [], {}
    for dropout in (Recipe.classroom().caption_dropout, 0.0):
        recipe = Recipe.classroom(caption_dropout=dropout, unet_steps=args.steps)
        start = time.perf_counter()
        run = classroom.train(recipe, args.runs / f"dropout_{dropout:g}", sample_every=10**9, n_eval=8,
                              live=False, device="cpu")
        minutes[f"{dropout:g}"] = round((time.perf_counter() - start) / 60, 1)
        for guidance in (1.0, 7.5):
            accuracy, _ = classroom.accuracy(run.pipe, guidance=guidance, n=args.n)
            rows.append({"caption_dropout": dropout, "guidance": guidance, **accuracy})
            print(f"dropout {dropout:g}, guidance {guidance:g}: "
                  + ", ".join(f"{a} {accuracy[a]:.0%}" for a in shapes.ATTRIBUTES), flush=True)
    machine = machine_info("cpu")
    record = {"machine": f"{machine.get('cpu', 'CPU')}, {args.threads} threads, torch {torch.__version__}",
              "command": "python scripts/classroom_dropout.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
              "steps": args.steps, "captions": args.n, "sampler": "DDIM, 20 steps", "seed": 0,
              "minutes_per_run": minutes, "rows": rows, "machine_info": machine}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
