"""Start the lec model server standalone.

    python -m lec.serve [overrides…]                       # compose conf/ like `python -m lec`, serve the base model
    python -m lec.serve --adapter outputs/runs/…/adapter    # serve a fine-tuned run
    python -m lec.serve --params outputs/runs/…/config.yaml --base … --adapter … serve.port=8080
    python -m lec.serve serve.host=0.0.0.0 serve.port=8080 serve.api_key='${oc.env:LEC_API_KEY}'

Where it listens is `serve.host` / `serve.port` (0: a free port, printed); an address other than loopback needs
`serve.api_key` or `serve.allow_unauthenticated=true`.
"""

from __future__ import annotations

import argparse
import logging

import uvicorn
from omegaconf import OmegaConf

from lec import config, plan
from lec.serve.app import create_app
from lec.serve.load import load_engine
from lec.serve.process import free_port

log = logging.getLogger("lec.serve")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lec.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--params", help="a resolved lec config YAML (a run's config.yaml or params.yaml)")
    parser.add_argument("--base", help="directory of base weights (default: model.local_path or model.hf_id)")
    parser.add_argument("--adapter", help="LoRA adapter or full fine-tuned model directory")
    parser.add_argument("--name", default="lec", help="a label shown by /health")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=tiny serve.port=8080 serve.host=…")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the flags
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
    sv = p.serve
    port = sv.port or free_port(sv.host)
    if not config.is_loopback(sv.host):
        log.warning("listening on %s, reachable from other machines: %s", sv.host,
                    "every request but /health needs the Bearer key (serve.api_key)" if sv.api_key else
                    "WITHOUT authentication (serve.allow_unauthenticated=true)")  # fmt: skip
    app = create_app(engine, name=args.name, max_batch_size=sv.max_batch_size, batch_wait_ms=sv.batch_wait_ms,
                     api_key=sv.api_key, max_request_bytes=sv.max_request_bytes)  # fmt: skip
    log.info("serving %s on http://%s:%d", args.name, sv.host, port)
    uvicorn.run(app, host=sv.host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
