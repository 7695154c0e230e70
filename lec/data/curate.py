"""The curate stage: the plan's data mixture → load, curate, mix → <dir>/{train,val}.jsonl + curation report.

It resolves what the curation steps (lec.data.filters) need: the model's tokenizer for the length filter and the
chat template, the eval suite's instances for decontamination, the training sample length.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from lec.config import DataConfig, ModelConfig, Template
from lec.data import decontam
from lec.data.filters import Context
from lec.data.mixture import Mixture, build_mixture
from lec.data.templates import chat_prompt
from lec.plan import EvalPlan

log = logging.getLogger(__name__)


def eval_instances(data: DataConfig, ev: EvalPlan, outputs_dir: Path) -> decontam.EvalInstances:
    """The instances decontamination checks against: those of each backend of eval.backends
    (lec/evaluate/backends.py: HELM's scenario files, lm-eval's tasks' eval docs), one set."""
    from lec.evaluate.registry import registry

    where = data.curation.decontam.scenarios_dir
    return decontam.merge([registry()[b.value].instances(ev, where, outputs_dir) for b in ev.backends])


def curate(data: DataConfig, seq_len: int, model: ModelConfig, ev: EvalPlan, out_dir: Path,
           base_dir: Optional[Path] = None, outputs_dir: Path = Path("outputs")) -> Mixture:
    """Tokenizer + eval instances → build_mixture → out_dir/{train,val}.jsonl + report. `seq_len` is the plan's
    training sample length (hardware.max_seq_len), the length filter's limit."""
    c = data.curation
    tokenizer = None
    if c.length.enabled or data.template is Template.chat:
        from lec.models import load_tokenizer

        tokenizer = load_tokenizer(model, path=str(base_dir) if base_dir else None)
    if data.template is Template.chat:
        chat_prompt(tokenizer, [{"role": "user", "content": "hi"}])  # no chat template → a clear error, now
    inst = eval_instances(data, ev, outputs_dir) if c.decontam.enabled else None
    if inst is not None and not inst.available:
        log.warning("decontamination: %s", inst.note)
    return build_mixture(data, out_dir, Context(data.template, tokenizer, seq_len, inst))
