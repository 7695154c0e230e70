"""A bad value fails fast: wall time of each bad setting of issue 13's list, refused under a plain run, `--cfg job`,
a sweep (`-m`) and DVC stage mode, against the 3 s target and against a baseline measured in the same run (a valid
`python -m lec --cfg job`, i.e. what composing costs anyway).

    .venv/bin/python benchmarks/fail_fast.py            # median of 3 per case
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 3.0
BAD = ["adapter.r=0", "adapter.alpha=0", "adapter.dropout=1.5", "adapter.epochs=-1", "train.max_steps=0",
       "train.max_steps=-5", "train.save_every_steps=0", "serve.port=99999", "adapter.scheduler=bogus",
       "+adapter.rr=4", "data.sources.0.local_path=/x.jsonl", "train.resume_from=/nonexistent", "model=mistral8b",
       "adapter.r=abc", "adapter=qlora"]  # fmt: skip


def timed(cmd: list, cwd: Path) -> tuple:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    return time.perf_counter() - start, out


def params_with(override: str, tmp: Path) -> Path:
    """params.yaml as DVC's composition writes it, with one bad value set (or the composition error's text)."""
    import yaml
    from omegaconf import OmegaConf

    sys.path.insert(0, str(ROOT))
    from lec import config

    key, _, value = override.lstrip("+").partition("=")
    params = OmegaConf.to_container(config.compose_raw([]), resolve=True, enum_to_str=True)
    node = params
    *path, leaf = key.split(".")
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[leaf] = yaml.safe_load(value)
    out = tmp / f"params-{abs(hash(override))}.yaml"
    out.write_text(yaml.safe_dump(params))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = statistics.median(timed([py, "-m", "lec", "--cfg", "job"], ROOT)[0] for _ in range(args.rounds))
        print(f"baseline: a valid `python -m lec --cfg job` takes {base:.2f} s (median of {args.rounds})")
        print(f"{'bad value':36} {'mode':6} {'seconds':>8} {'÷ target':>9} {'÷ baseline':>11}  one line, exit 2")
        worst = 0.0
        for bad in BAD:
            modes = {"run": [py, "-m", "lec", bad, f"outputs_dir={tmp}/o"],
                     "cfg": [py, "-m", "lec", bad, "--cfg", "job"],
                     "sweep": [py, "-m", "lec", "-m", bad, "seed=0,1", f"outputs_dir={tmp}/o"]}  # fmt: skip
            if bad.split("=")[0].lstrip("+") not in ("model", "adapter"):  # group choices are not params.yaml keys
                modes["dvc"] = [py, "-m", "lec.stages", "curate", "--params", str(params_with(bad, tmp)),
                                "--dir", f"{tmp}/pipe"]  # fmt: skip
            for mode, cmd in modes.items():
                runs = [timed(cmd, ROOT) for _ in range(args.rounds)]
                secs = statistics.median(r[0] for r in runs)
                out = runs[-1][1]
                ok = out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
                worst = max(worst, secs)
                print(f"{bad:36} {mode:6} {secs:8.2f} {secs / TARGET_S:9.2f} {secs / base:11.2f}  "
                      f"{'yes' if ok else 'NO: ' + out.stderr.strip()[-200:]}")  # fmt: skip
        print(f"slowest refusal {worst:.2f} s = {worst / TARGET_S:.2f} × the {TARGET_S:g} s target "
              f"({'met' if worst < TARGET_S else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
