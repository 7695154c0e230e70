"""The evaluation backends by name (eval.backends): each a `lec.evaluate.backends.Backend`."""

from __future__ import annotations

from typing import Dict

from lec.evaluate import helm_backend, lm_eval_backend
from lec.evaluate.backends import Backend


def registry() -> Dict[str, Backend]:
    return {b.name: b for b in (helm_backend.BACKEND, lm_eval_backend.BACKEND)}
