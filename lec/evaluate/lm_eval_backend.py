"""The second evaluation backend: EleutherAI's lm-evaluation-harness (lm-eval 0.4.13) against a served model's OpenAI
endpoint, `/v1/completions`, through lm-eval's own `local-completions` model — the same way it evaluates any
OpenAI-compatible server (vLLM, TGI, another lec server).

- Requests go as token ids (`tokenized_requests`): a loglikelihood is scored from exactly the tokens lm-eval counted
  its context length on (echo + logprobs; lec's server returns the prompt's own logprobs), with the model's
  tokenizer read from its files, offline.
- lm-eval's request cache (`use_cache`) is a SQLite file per served model's identity under `eval.cache_dir`, like
  HELM's: an evaluation started again re-asks nothing it has an answer for.
- Offline, the smoke suite exists as lm-eval tasks over the very files lec generates for HELM (`write_tasks`):
  `lec_mmlu_<subject>` (HELM's MMLU prompt, multiple choice by loglikelihood) and `lec_gsm` (HELM's GSM prompt,
  generation, lm-eval's strict match on the number after "The answer is"). With network, any lm-eval task name works
  (`eval.lm_eval_tasks`; conf/eval/open_lm_eval.yaml maps the challenge's open scenarios).
Results come back as `{task: {metric: value}}` ("acc", "exact_match_strict-match": the filter joins the name).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from lec.evaluate.backends import Backend, BackendResult, EvalJob, Served
from lec.plan import EvalPlan

log = logging.getLogger(__name__)
MMLU_COLUMNS = ["question", "A", "B", "C", "D", "answer"]  # HELM's MMLU CSVs have no header row


def prepare(job: EvalJob) -> List[str]:
    """Every model is served: lm-eval's own request cache (per identity) answers what it already has."""
    return list(job.labels)


def run(job: EvalJob, served: Dict[str, Served]) -> BackendResult:
    """lm-eval on every served model through its /v1/completions; the smoke tasks are written beside HELM's files."""
    ev = job.ev
    tasks_dir = None
    if ev.synthetic is not None:
        tasks_dir = write_tasks(job.layout.helm, ev.synthetic.mmlu_subjects, job.layout.run_dir / "lm_eval_tasks")
    tokenizer = str(job.base_dir or job.model.local_path or job.model.hf_id)
    start, out = time.monotonic(), {}
    for label, s in served.items():
        log.info("lm-eval on %s: %s", label, ", ".join(ev.lm_eval_tasks))
        out[label] = evaluate(s.url, str(s.health.get("model") or label), tokenizer, list(ev.lm_eval_tasks),
                              tasks_dir, Path(ev.cache_dir) / "lm_eval" / job.identities[label].short,
                              s.health["context"], ev.num_threads, ev.max_eval_instances, job.serve.api_key)  # fmt: skip
    return BackendResult(out, time.monotonic() - start)


def decontam_instances(ev: EvalPlan, scenarios_dir: Optional[str], outputs_dir: Path):
    """The eval docs of eval.lm_eval_tasks. The smoke tasks (lec_*) read the very files the smoke suite's
    generator writes, so theirs are that generator's instances; other tasks' are read through lm-eval."""
    from lec.data import decontam

    own = [t for t in ev.lm_eval_tasks if not t.startswith("lec_")]
    parts = [decontam.smoke_instances(ev.synthetic)] if ev.synthetic is not None and len(own) < len(ev.lm_eval_tasks) else []
    if own:
        texts, origin, unavailable = instances(own)
        note = f"lm-eval: {len(texts)} instances of {len(own) - len(unavailable)} tasks" + \
            (f", not available here: {unavailable}" if unavailable else "")  # fmt: skip
        parts.append(decontam.EvalInstances(texts, origin, missing=unavailable, available=bool(texts), note=note))
    return decontam.merge(parts)


def write_tasks(helm_output: Path, subjects: List[str], out: Path) -> Path:
    """lm-eval task YAMLs over the smoke suite's generated files (lec/evaluate/smoke_data.py); returns the dir."""
    out.mkdir(parents=True, exist_ok=True)
    mmlu = helm_output / "scenarios" / "mmlu" / "data"
    for subject in subjects:
        task = {
            "task": f"lec_mmlu_{subject}",
            "dataset_path": "csv",
            "dataset_kwargs": {"data_files": {"test": str(mmlu / "test" / f"{subject}_test.csv"),
                                              "dev": str(mmlu / "dev" / f"{subject}_dev.csv")},
                               "column_names": MMLU_COLUMNS},  # fmt: skip
            "test_split": "test",
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},  # the dev split in order, as HELM's in-context examples
            "num_fewshot": 5,
            "output_type": "multiple_choice",
            # HELM's MMLU prompt (the header, "Question: …", the same 5 dev examples first), so both libraries see
            # the same text and differ in how they score it: HELM generates the letter, lm-eval compares the four
            # letters' loglikelihoods (lm_eval/tasks/mmlu/default/_default_template_yaml at v0.4.13)
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n",
            "doc_to_text": "Question: {{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
        (out / f"lec_mmlu_{subject}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    gsm = helm_output / "scenarios" / "gsm"
    task = {
        "task": "lec_gsm",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(gsm / "gsm_data_test"), "train": str(gsm / "gsm_data_train")}},
        "test_split": "test",
        "fewshot_split": "train",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": 5,
        "output_type": "generate_until",
        # HELM's GSM8K prompt (what the smoke suite's HELM entry sends: "Q: … A: … The answer is N."), lm-eval's
        # strict match on the number after "The answer is" (lm_eval/tasks/gsm8k/gsm8k-cot.yaml at v0.4.13)
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_target": "{{answer.split('####')[0].strip()}} The answer is {{answer.split('####')[-1].strip()}}.",
        "target_delimiter": " ",
        "generation_kwargs": {"until": ["\n\n"], "do_sample": False, "temperature": 0.0, "max_gen_toks": 128},
        "filter_list": [{"name": "strict-match", "filter": [
            {"function": "regex", "regex_pattern": "The answer is (\\-?[0-9\\.\\,]+)"},
            {"function": "take_first"}]}],  # fmt: skip
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False,
                         # the reference is a whole worked answer: both sides keep the number after "The answer is"
                         "regexes_to_ignore": [",", "\\$", "(?s).*The answer is ", "\\.$"]}],  # fmt: skip
    }
    (out / "lec_gsm.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    return out


def evaluate(url: str, served_name: str, tokenizer_dir: str, tasks: List[str], tasks_dir: Optional[Path],
             cache: Path, context: int, num_concurrent: int, limit: Optional[int],
             api_key: Optional[str] = None) -> Dict[str, Dict[str, float]]:  # fmt: skip
    """Run lm-eval's `local-completions` model against `url`'s /v1/completions on `tasks`."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the packaged csv/json builders need no network
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    cache.parent.mkdir(parents=True, exist_ok=True)
    model_args = {"base_url": f"{url}/v1/completions", "model": served_name, "tokenizer": tokenizer_dir,
                  "tokenizer_backend": "huggingface", "tokenized_requests": True, "num_concurrent": num_concurrent,
                  "max_retries": 1, "max_length": context, "timeout": 600,
                  "add_bos_token": True,  # as the model was trained and as HELM's prompts reach it: after BOS
                  **({"auth_token": api_key} if api_key else {})}  # fmt: skip
    manager = TaskManager(include_path=str(tasks_dir) if tasks_dir else None)
    out = simple_evaluate(model="local-completions", model_args=model_args, tasks=list(tasks), task_manager=manager,
                          use_cache=str(cache), limit=limit, log_samples=False, bootstrap_iters=0,
                          verbosity="WARNING")  # fmt: skip
    return metrics_of(out["results"])


def metrics_of(results: Dict[str, Dict[str, object]]) -> Dict[str, Dict[str, float]]:
    """lm-eval's `{task: {"acc,none": 0.5, "acc_stderr,none": …}}` → `{task: {"acc": 0.5}}` (stderr left out)."""
    out: Dict[str, Dict[str, float]] = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if not filt or "stderr" in metric or not isinstance(value, (int, float)):
                continue
            out.setdefault(task, {})[metric if filt == "none" else f"{metric}_{filt}"] = float(value)
    return out


def instances(tasks: List[str], tasks_dir: Optional[Path] = None) -> Tuple[List[str], List[str], List[str]]:
    """The backend's eval instances, for decontamination: (texts, the task of each, tasks not available here). A
    text is what the model is asked and what it should answer (doc_to_text + doc_to_target of each eval doc); a task
    whose data cannot be loaded (offline, a gated set) is named, never skipped in silence."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(tasks_dir) if tasks_dir else None)
    texts, origin, unavailable = [], [], []
    for name in tasks:
        try:
            found = get_task_dict([name], manager)
        except Exception as err:  # noqa: BLE001 - lm-eval raises anything from datasets' loaders
            unavailable.append(f"{name} ({type(err).__name__})")
            continue
        for task_name, task in _leaves(found):
            for doc in task.eval_docs:
                target = task.doc_to_target(doc)
                if isinstance(target, int) and hasattr(task, "doc_to_choice"):  # multiple choice: the right choice
                    target = task.doc_to_choice(doc)[target]
                texts.append(f"{task.doc_to_text(doc)} {target}")
                origin.append(f"lm_eval/{task_name}")
    return texts, origin, unavailable


def _leaves(tasks: Dict) -> List[Tuple[str, object]]:
    """lm-eval's task dict (groups nest dicts of tasks) as (name, task) pairs."""
    out = []
    for key, value in tasks.items():
        if isinstance(value, dict):
            out += _leaves(value)
        elif value is not None:
            out.append((getattr(key, "group_name", None) or str(key), value))
    return out


BACKEND = Backend("lm_eval", "openai", prepare, run, decontam_instances)
