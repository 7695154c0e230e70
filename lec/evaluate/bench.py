"""Benchmark curves during training: the live model scored in-process by lm-evaluation-harness (0.4.13) on a small,
fixed subset of the eval suite's multiple-choice tasks (`eval.bench`), every `train.bench_every_steps`
(lec/train/bench.py calls the scorer this module builds).

- No server: lm-eval's `HFLM` wraps the very model object being trained (a peft model too: HFLM reads its `.config`
  and `.device` and calls its forward, which runs the adapter), with the run's tokenizer, BOS first as in training.
- The tasks and their requests (the first `eval.bench.limit` docs of each, rendered by lm-eval from the task's
  templates) are built once; a check sends the same requests through `HFLM.loglikelihood` and scores them with the
  task's own `process_results`/`aggregation`, as `lm_eval.evaluator.evaluate` does, without re-rendering every
  prompt (lm-eval compiles a Jinja template per doc: ~0.8 s of CPU a check on the smoke tasks, 3× the model's time).
- The smoke suite's tasks read files its generator writes (lec/evaluate/smoke_data.py) under <run>/bench/:
  `lec_mmlu_<subject>` (lm_eval_backend.write_tasks: HELM's MMLU prompt) and `lec_<kind>` for the closed-stage
  multiple-choice scenarios (corr2cause, ethics_*), whose docs hold the very prompt HELM sends, built by HELM's own
  adapter code (instructions, its sampled in-context examples, the lettered options, "Answer:"); lm-eval compares the
  letters' loglikelihoods where HELM lets the model generate one token.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from lec.config import SyntheticEvalConfig

log = logging.getLogger(__name__)
Metrics = Dict[str, Dict[str, float]]  # {task: {metric: value}}


def write_closed_tasks(helm_output: Path, kinds: Sequence[str], out: Path, shots: Dict[str, int]) -> None:
    """lm-eval tasks `lec_<kind>` over the closed-stage files under helm_output/scenarios: HELM's valid split (what the
    challenge scored), each doc the full prompt HELM's multiple-choice-joint adapter builds for it."""
    from helm.benchmark.adaptation.adapters.multiple_choice_joint_adapter import MultipleChoiceJointAdapter
    from helm.benchmark.adaptation.prompt import Prompt
    from helm.benchmark.scenarios.scenario import TRAIN_SPLIT

    from lec.evaluate import helm_plugin
    from lec.evaluate.helm_plugin import SOURCES

    out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        spec = helm_plugin._mc_run_spec(kind).adapter_spec
        if kind in shots:  # the run entry's max_train_instances (HELM's MaxTrainInstancesRunExpander)
            from dataclasses import replace

            spec = replace(spec, max_train_instances=shots[kind])
        rows = helm_plugin.read_rows(kind, SOURCES[kind], helm_output / "scenarios" / kind)
        instances = helm_plugin.to_instances(kind, SOURCES[kind], rows)
        train = [i for i in instances if i.split == TRAIN_SPLIT]
        # HELM's adapter without its tokenizer service: only the prompt-building methods are used (the bench prompts
        # are far below the served context, so HELM's fit-by-dropping-examples never applies)
        adapter = MultipleChoiceJointAdapter.__new__(MultipleChoiceJointAdapter)
        adapter.adapter_spec = spec
        state = random.getstate()  # HELM's sampler seeds Python's global RNG; lec's process keeps its own sequence
        examples = adapter.sample_examples(train, seed=0, sample_train=spec.sample_train)  # train trial 0, as helm-run
        random.setstate(state)
        blocks = [adapter.construct_example_prompt(i, include_output=True, reference_index=None) for i in examples]
        docs = []
        for inst in (i for i in instances if i.split != TRAIN_SPLIT):
            prompt = Prompt(spec.global_prefix, spec.global_suffix, spec.instance_prefix, spec.substitutions,
                            spec.instructions, blocks,
                            adapter.construct_example_prompt(inst, include_output=False, reference_index=None))  # fmt: skip
            letters = [chr(ord("A") + j) for j in range(len(inst.references))]  # HELM's "A. ", "B. ", …
            correct = next(j for j, r in enumerate(inst.references) if r.is_correct)
            docs.append({"prompt": prompt.text, "choices": letters, "label": correct})
        data = out / f"lec_{kind}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        task = {
            "task": f"lec_{kind}",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test",
            "num_fewshot": 0,  # HELM's in-context examples are in the prompt already
            "output_type": "multiple_choice",
            "doc_to_text": "prompt",  # a column: the text as it is (no template to render)
            "doc_to_choice": "choices",
            "doc_to_target": "label",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        (out / f"lec_{kind}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))


def write_tasks(root: Path, synthetic: SyntheticEvalConfig, tasks: Sequence[str], shots: Dict[str, int]) -> Path:
    """The smoke suite's files (its generator, its seeds) under root, and the lm-eval task YAMLs of `tasks` that
    read them; returns the task dir."""
    from lec.evaluate.lm_eval_backend import write_tasks as write_mmlu
    from lec.evaluate.smoke_data import write_scenarios

    write_scenarios(root, synthetic)
    out = root / "tasks"
    write_mmlu(root, list(synthetic.mmlu_subjects), out)
    write_closed_tasks(root, [k for k in synthetic.closed if f"lec_{k}" in tasks], out, shots)
    return out


@dataclass
class InProcess:
    """`score(model) → {task: {metric: value}}`: lm-eval's model wrapper around the live model and the tasks with
    their requests, built once by `scorer`; a call only runs the model (the one object being trained)."""

    lm: Any  # the HFLM subclass of _bench_lm, wrapping the model
    tasks: Dict[str, Any]  # lm-eval task objects, their requests built
    limit: int

    def __call__(self, model) -> Metrics:
        import torch

        from lec.evaluate.lm_eval_backend import metrics_of

        if model is not self.lm.model:
            raise ValueError("the bench scorer wraps one model object: build another for this one")
        was, threads = model.training, torch.get_num_threads()
        model.eval()  # no adapter dropout while scoring
        if self.lm.device.type == "cpu":
            # A check's batches are small (~12 rows × ~50 tokens past the shared head): one thread does them in 0.12 s
            # of CPU; two threads on 2 busy cores took 30× the wall time (0.23 s vs 8.7 s measured at load 6).
            torch.set_num_threads(1)
        try:
            with torch.no_grad():
                return metrics_of({name: _run(self.lm, task, self.limit) for name, task in self.tasks.items()})
        finally:
            model.train(was)
            torch.set_num_threads(threads)


def scorer(model, tokenizer, tasks: Sequence[str], limit: int, tasks_dir: Optional[Path],
           batch_size: int = 16) -> InProcess:  # fmt: skip
    """The in-process scorer of `model` on lm-eval `tasks`: the task objects and their requests (the first `limit` docs
    of each, rendered by the task's own templates) and lm-eval's model wrapper are built here, once. Raises ValueError
    naming a task that is not multiple choice (generation would stall training)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the packaged json/csv builders need no network
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    was_training = model.training
    with _quiet():  # datasets' and lm-eval's progress bars, and HFLM's advice for `lm_eval` CLI users
        # lm-eval's own ~10k task files are indexed only when a task of theirs is asked for
        own = any(not t.startswith("lec_") for t in tasks)
        manager = TaskManager(include_path=str(tasks_dir) if tasks_dir else None, include_defaults=own)
        found = manager.load(list(tasks))["tasks"]  # leaf tasks by name (a group's members too)
        for name, task in found.items():
            if task.OUTPUT_TYPE != "multiple_choice":
                raise ValueError(f"eval.bench: {name} is a {task.OUTPUT_TYPE} task; benchmark curves score "
                                 "multiple-choice tasks by loglikelihood")  # fmt: skip
            task.build_all_requests(limit=limit)  # the prompts, once: the same requests every check
        lm = _bench_lm(HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                             add_bos_token=True)  # BOS first: as trained, as HELM's prompts reach the server
    model.train(was_training)  # HFLM put the model in eval mode; a check does that itself, each time
    log.info("benchmark curves: %s (%d docs each), ready in %.1f s", ", ".join(found), limit,
             time.perf_counter() - start)  # fmt: skip
    return InProcess(lm, found, limit)


@contextlib.contextmanager
def _quiet():
    """stderr (progress bars) and lm-eval's warnings held back while the tasks and the model wrapper are built; lec's
    log handlers keep their own stream."""
    lm_log = logging.getLogger("lm_eval")
    level = lm_log.level
    lm_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        lm_log.setLevel(level)


def _run(lm, task, limit: int) -> Dict[str, float]:
    """One task's requests through the model, scored and aggregated the way lm_eval.evaluator.evaluate does (its
    `{"acc,none": …}` keys), without rebuilding the requests."""
    requests = task.instances
    for r in requests:
        r.resps = []
    for r, answer in zip(requests, lm.loglikelihood(requests, disable_tqdm=True), strict=True):
        r.resps.append(answer)
    task.apply_filters()
    by_doc: Dict[int, list] = {}
    for r in requests:
        by_doc.setdefault(r.doc_id, []).append(r)
    values: Dict[Tuple[str, str], List[float]] = {}
    for key in requests[0].filtered_resps:
        for doc_id, doc in task.doc_iterator(limit=limit):
            answers = [r.filtered_resps[key] for r in sorted(by_doc[doc_id], key=lambda r: r.idx)]
            for metric, v in task.process_results(doc, answers).items():
                values.setdefault((metric, key), []).append(v)
    agg = task.aggregation()
    return {f"{metric},{key}": agg[metric](vs) for (metric, key), vs in values.items()}


def _bench_lm(hflm):
    """HFLM for scoring the same requests again and again on a model that changes:
    - each prompt is tokenized once (the texts do not change between checks);
    - a batch's shared head is run once: the tokens all its rows start with, then the rest of every row on that KV
      cache. A bench task's prompts share instructions and in-context examples (~85 % of a smoke prompt's ~260–500
      tokens), so a check costs ~5× less; the logits are the same up to float rounding."""
    import torch

    class BenchLM(hflm):
        MIN_SHARED = 16  # tokens: a shorter head is not worth a second forward

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._encoded: Dict[Tuple[str, str], Tuple[List[int], List[int]]] = {}

        def _encode_pair(self, context: str, continuation: str):
            key = (context, continuation)
            if key not in self._encoded:
                self._encoded[key] = super()._encode_pair(context, continuation)
            return self._encoded[key]

        def _model_call(self, inps, attn_mask=None, labels=None):
            if attn_mask is not None or labels is not None or inps.shape[0] < 2:
                return super()._model_call(inps, attn_mask, labels)
            same = (inps == inps[:1]).all(dim=0).int()  # rows are right-padded: a shared head, then their own tails
            shared = min(int(same.cumprod(0).sum()), inps.shape[1] - 1)
            if shared < self.MIN_SHARED:
                return super()._model_call(inps)
            with torch.no_grad():
                head = self.model(inps[:1, :shared], use_cache=True)
                head.cache.batch_repeat_interleave(inps.shape[0])  # transformers ≥ 5.25 names the KV cache `cache`
                tail = self.model(inps[:, shared:], cache=head.cache, use_cache=True).logits
            return torch.cat([head.logits.expand(inps.shape[0], -1, -1), tail], dim=1)

    return BenchLM
