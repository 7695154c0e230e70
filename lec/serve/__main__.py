"""Start the lec model server standalone.

    python -m lec.serve [overrides…]                       # compose conf/ like `python -m lec`, serve the base model
    python -m lec.serve --adapter outputs/runs/…/adapter    # serve a fine-tuned run
    python -m lec.serve --params outputs/runs/…/config.yaml --base … --adapter … --port 8080
"""

from __future__ import annotations

import argparse
import logging

import uvicorn
from omegaconf import OmegaConf

from lec import config, plan
from lec.serve.app import create_app
from lec.serve.load import load_engine


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lec.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="a resolved lec config YAML (a run's config.yaml or params.yaml)")
    parser.add_argument("--base", help="directory of base weights (default: model.local_path or model.hf_id)")
    parser.add_argument("--adapter", help="LoRA adapter or full fine-tuned model directory")
    parser.add_argument("--host", default=None, help="bind address (default serve.host = 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default serve.port)")
    parser.add_argument("--name", default="lec", help="a label shown by /health")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny serve.port=8080")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[lec.serve] %(message)s")

    try:
        if args.params:
            cfg = config.load(OmegaConf.merge(OmegaConf.load(args.params), OmegaConf.from_dotlist(args.overrides)))
        else:
            cfg = config.compose(args.overrides)
        p = plan.build(cfg)
    except config.ConfigError as err:
        raise SystemExit(f"lec.serve: invalid config: {err}") from None
    base = args.base
    if base is None and p.model.tiny is not None:
        from lec.models import materialize_base

        base = str(materialize_base(p.model, plan.RunLayout.of(p.outputs_dir).cache))
    engine = load_engine(p.serve, p.model, base=base, adapter=args.adapter)
    host = args.host or p.serve.host
    port = args.port if args.port is not None else (p.serve.port or 8080)
    app = create_app(engine, name=args.name, max_batch_size=p.serve.max_batch_size, batch_wait_ms=p.serve.batch_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
