"""The curate stage: the plan's data mixture → load, curate, mix → <dir>/{train,val}.jsonl + curation report.

It resolves what the curation steps (lec.data.filters) need: the model's tokenizer for the length filter and the
chat template, the eval suite's instances for decontamination, the training sample length.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

from lec.config import DataConfig, ModelConfig, Template
from lec.data import decontam
from lec.data.filters import Context
from lec.data.mixture import Mixture, build_mixture
from lec.data.templates import chat_prompt
from lec.plan import EvalPlan

log = logging.getLogger(__name__)


def eval_instances(data: DataConfig, ev: EvalPlan, outputs_dir: Path) -> decontam.EvalInstances:
    """The instances decontamination checks against: each backend's (eval.backends). HELM's are its scenario files
    (see lec.data.decontam); lm-eval's are its tasks' eval docs (the smoke tasks lec_* read the very files HELM's
    smoke suite does, so those come from that suite's generator whichever backend runs)."""
    from lec.config import Backend

    lm_eval = ev.lm_eval_tasks if Backend.lm_eval in ev.backends else ()
    helm_files = Backend.helm in ev.backends or any(t.startswith("lec_") for t in lm_eval)
    inst = helm_instances(data, ev, outputs_dir) if helm_files else decontam.EvalInstances()
    if _lm_eval_own(lm_eval):
        from lec.evaluate import lm_eval_backend

        texts, origin, unavailable = lm_eval_backend.instances(_lm_eval_own(lm_eval))
        inst.units, inst.origin = inst.units + texts, inst.origin + origin
        inst.missing += unavailable
        inst.available = bool(inst.units)
        inst.note = (inst.note + "; " if inst.note else "") + f"lm-eval: {len(texts)} instances of " \
            f"{len(_lm_eval_own(lm_eval)) - len(unavailable)} tasks" + (f", not available here: {unavailable}" if unavailable else "")
    return inst


def _lm_eval_own(tasks) -> List[str]:
    """lm-eval tasks with data of their own (not the smoke suite's generated files)."""
    return [t for t in tasks if not t.startswith("lec_")]


def helm_instances(data: DataConfig, ev: EvalPlan, outputs_dir: Path) -> decontam.EvalInstances:
    """HELM's scenario files of the suite: a given scenarios dir, the smoke suite's generator, else none."""
    names = sorted({e.split(":", 1)[0] for e in ev.entries})
    where = data.curation.decontam.scenarios_dir
    if where:
        return decontam.read_scenarios(Path(where), names)
    if ev.synthetic is not None:
        return decontam.smoke_instances(ev.synthetic)
    inst = decontam.read_scenarios(outputs_dir / "helm_scenarios", names)
    inst.note = (f"eval suite '{ev.name}': its HELM scenario files are not available (set "
                 f"data.curation.decontam.scenarios_dir to a benchmark_output/scenarios dir of an earlier helm-run "
                 f"of this suite); " + inst.note)  # fmt: skip
    return inst


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
