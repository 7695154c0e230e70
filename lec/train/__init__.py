"""Training: `finetune(plan.train, plan.model, layout, base_dir)` — see lec/train/finetune.py, read top to bottom.

packing.py (encode, pack, collate) · budget.py (time budget, atomic checkpoints, resume) · finetune.py (the recipe)
"""

from lec.train.finetune import TrainResult, attach_adapter, finetune, prepare_model
from lec.train.packing import IGNORE, collate, encode, pack

__all__ = ["IGNORE", "TrainResult", "attach_adapter", "collate", "encode", "finetune", "pack", "prepare_model"]
