"""Memory pre-flight: estimate a training run's peak memory from shapes alone and refuse one that will not fit.

`python -m lec.preflight [overrides]` prints the estimate for a composition; `finetune` calls `check` before any
weight is loaded. Every term is a count of bytes that torch holds at the peak of a training step (the start of
the backward pass of the micro-batch after an optimizer step):

  weights      frozen base: bf16/fp32 = 2/4 B/param; QLoRA: NF4 0.5 B per Linear param + quant constants (fp32 absmax
               per 64 = 0.0625 B; double quant: 8-bit absmax + fp32 per 256 blocks = 0.0159 B) and the non-Linear
               params (embeddings, lm_head) in bf16, as lec casts them back like QLoRA's qlora.py
  adapter      LoRA A/B: r·(d_in + d_out) per targeted Linear; fp32 (peft's autocast_adapter_dtype), bf16 in QLoRA
  gradients    one per trainable param, in the param's dtype
  optimizer    AdamW: 2 states in the param dtype (8 B/param fp32); 8-bit AdamW: 2 B; paged_* optimizers page their
               states to CPU memory under pressure, so they are reported but not required to fit ("pageable")
  activations  per token per layer, the tensors autograd saves (see `_layer_bytes`); with gradient checkpointing only
               each layer's input plus one layer's full set while it is recomputed
  logits       tokens × vocab × 12 B at the start of backward: fp32 log-softmax output, its gradient, its input's
  mask         the 4-D attention mask sdpa/eager get for padded or packed rows (flash_attention_2 needs none)
  cuda context CUDA/cuBLAS context and allocator slack on a GPU ([lec] 0.6 GiB + 5 % of activations; not calibrated
               here: no GPU), 0 on CPU
Calibrated on CPU against measured peaks with benchmarks/preflight_calibration.py (error reported in README).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lec.config import AdapterKind, Attention, ConfigError, Device, ModelConfig, ModelShape, Optimizer, QuantConfig
from lec.plan import LoraPlan, TrainPlan
from lec.shapes import head_dim, linears

log = logging.getLogger(__name__)
GiB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CUDA_CONTEXT = 0.6 * GiB  # [lec] typical torch 2.x CUDA context + cuBLAS workspace (nvidia-smi minus allocated)
ALLOCATOR_SLACK = 0.05  # [lec] caching-allocator fragmentation on activations


@dataclass
class Estimate:
    """Peak memory of one training step, term by term (bytes), against what the hardware has."""

    terms: Dict[str, float]
    capacity: float  # bytes the run may use (usable VRAM, or RAM on CPU)
    where: str  # "GPU rtx4090" | "CPU RAM"
    pageable: List[str] = field(default_factory=list)  # terms that may spill to CPU memory (paged optimizers)
    params: int = 0
    trainable: int = 0
    tokens: int = 0  # tokens per micro-batch

    @property
    def total(self) -> float:
        return sum(self.terms.values())

    @property
    def resident(self) -> float:
        return sum(v for k, v in self.terms.items() if k not in self.pageable)

    @property
    def fits(self) -> bool:
        return self.resident <= self.capacity

    def table(self) -> str:
        rows = [f"  {k:<13}{v / GiB:8.2f} GiB" + ("  (pageable)" if k in self.pageable else "") for k, v in self.terms.items()]
        return "\n".join(
            [f"memory pre-flight: {self.params / 1e9:.2f}B params, {self.trainable / 1e6:.1f}M trainable, "
             f"{self.tokens} tokens per micro-batch"] + rows
            + [f"  {'peak':<13}{self.total / GiB:8.2f} GiB  (must stay resident: {self.resident / GiB:.2f} GiB) "
               f"of {self.capacity / GiB:.2f} GiB {self.where}"]
        )  # fmt: skip


def shape_of(model: ModelConfig, base_dir: Optional[Path] = None) -> ModelShape:
    """Architecture numbers without loading weights: from the model's config.json (base_dir, model.local_path or the
    hub cache; lec.models.model_facts), the tiny config before it is built, or the model file's hand-written shape."""
    from lec.models import ModelLoadError, model_facts

    try:
        return model_facts(model, base_dir).shape
    except ModelLoadError as err:
        raise ConfigError(
            f"memory pre-flight: {err}; or set model.shape (vocab_size, hidden_size, intermediate_size, "
            "num_hidden_layers, num_attention_heads, num_key_value_heads) to estimate without it, "
            "or train.preflight=false"
        ) from err


def param_counts(s: ModelShape) -> Tuple[int, int]:
    """(all params, params inside decoder-layer Linears — the ones bitsandbytes quantizes)."""
    lin = s.num_hidden_layers * sum(a * b for dims in linears(s).values() for a, b in dims)
    if s.num_params is not None:  # counted on the meta-device model: biases, norms, embeddings as they are
        return s.num_params, lin
    h, q, kv = s.hidden_size, s.num_attention_heads * head_dim(s), s.num_key_value_heads * head_dim(s)
    bias = s.num_hidden_layers * (q + 2 * kv) if s.attention_bias else 0
    norms = (2 * s.num_hidden_layers + 1) * h
    emb = s.vocab_size * h * (1 if s.tie_word_embeddings else 2)
    return lin + bias + norms + emb, lin


def lora_params(s: ModelShape, targets: List[str], r: int) -> int:
    dims = linears(s)
    unknown = [t for t in targets if t not in dims]
    if unknown:
        raise ConfigError(f"LoRA target(s) {unknown} are not Linear layers of a {s.layout} model's decoder blocks; "
                          f"valid: {', '.join(dims)}")  # fmt: skip
    return s.num_hidden_layers * sum(r * (a + b) for t in targets for a, b in dims[t])


def _layer_bytes(s: ModelShape, train: TrainPlan, row_len: int) -> float:
    """Bytes autograd saves per token in one decoder layer (HF Llama/Mistral code path, counted tensor by tensor;
    a frozen weight's matmul does not save its input, so what is saved depends on what trains).

    S = residual-stream bytes (the embeddings' dtype), A = matmul activation bytes (2 under bf16 autocast),
    M = dropout-mask bytes (bool on CUDA, a float noise tensor on CPU), P = LoRA weight bytes.
    """
    wb = DTYPE_BYTES[train.dtype.value]
    A = 2 if train.bf16 else wb
    P = _lora_bytes(train)
    M = 1 if train.device is Device.cuda else A
    h, i = s.hidden_size, s.intermediate_size
    q, kv = s.num_attention_heads * head_dim(s), s.num_key_value_heads * head_dim(s)
    full = train.lora is None
    widths = {"attn_in": h, "o_in": q, "mlp_in": h, "down_in": i}  # the distinct inputs of a layer's Linears
    feeds = {"q_proj": ["attn_in"], "k_proj": ["attn_in"], "v_proj": ["attn_in"], "o_proj": ["o_in"],
             "gate_proj": ["mlp_in"], "up_proj": ["mlp_in"], "down_proj": ["down_in"],
             "c_attn": ["attn_in"], "c_proj": ["o_in", "down_in"], "w1": ["mlp_in"], "w2": ["mlp_in"]}  # fmt: skip
    saved = set(widths) if full else set()
    lora = 0.0
    if not full:
        for t in _targets(s, train.lora):
            dims = linears(s)[t]
            slots = feeds.get(t) or ["down_in" if d_in == i else "attn_in" for d_in, _ in dims]  # other names: by width
            for (d_in, _), x in zip(dims, slots):
                if train.lora.dropout > 0:
                    lora += (A + M) * d_in  # dropout's output (lora_A's input) and its mask
                elif A != P:
                    lora += A * d_in  # the input cast to the adapter's dtype and back by autocast
                else:
                    saved.add(x)  # lora_A saves the very tensor the frozen Linear reads
                lora += A * train.lora.r  # lora_A's output, lora_B's input
    norm = 4 * h + (A * h if full else 0)  # fp32 input of the variance; the normalised value (trained weight only)
    attn = A * q + 2 * A * kv + A * q + 4 * s.num_attention_heads  # rotated q, rotated k, v, sdpa output + logsumexp
    if kv < q:
        attn += 2 * A * q  # k, v repeated to every head (repeat_kv) before sdpa
    if train.attn_implementation is Attention.eager:
        attn += s.num_attention_heads * row_len * (4 + A)  # fp32 softmax + its cast, per query token
    mlp = 3 * A * i  # gate (silu's input), silu(gate) and up (the product's inputs)
    inputs = sum(A * widths[x] for x in saved)
    return 2 * norm + attn + mlp + lora + inputs


def _lora_bytes(train: TrainPlan) -> int:
    return 2 if train.method is AdapterKind.qlora and train.bf16 else 4


def _targets(s: ModelShape, lora: LoraPlan) -> List[str]:
    """The plan's LoRA targets; `all-linear` (a hub model lec had no shape for at plan time) = every block Linear."""
    return list(linears(s)) if list(lora.targets) == ["all-linear"] else list(lora.targets)


def _optimizer_bytes(optim: Optimizer, param_bytes: int) -> float:
    optim = optim.value
    if "8bit" in optim:
        return 2.0
    if optim.startswith("sgd"):
        return 0.0
    if "adafactor" in optim:
        return 0.1 * param_bytes  # factored second moment: rows + cols, no first moment
    return 2.0 * param_bytes  # AdamW / Lion-like: two states (Lion: one; counted as two, conservative)


def capacity_of(train: TrainPlan) -> Tuple[float, str]:
    if train.capacity_gb is not None:
        return train.capacity_gb * GiB, f"GPU {train.hardware}"
    import psutil

    return float(psutil.virtual_memory().total), "CPU RAM"


def estimate(train: TrainPlan, model: ModelConfig, base_dir: Optional[Path] = None,
             capacity: Optional[float] = None) -> Estimate:
    s = shape_of(model, base_dir)
    total, lin = param_counts(s)
    wb = DTYPE_BYTES[train.dtype.value]
    terms: Dict[str, float] = {}
    if train.method is AdapterKind.qlora:
        q = train.quantization or QuantConfig()
        consts = (1 / 64 + 4 / (64 * 256)) if q.double_quant else 4 / 64
        terms["weights"] = lin * (0.5 + consts) + (total - lin) * (2 if train.bf16 else 4)
    else:
        terms["weights"] = total * wb
    if train.lora is None:
        trainable, pb = total, wb
    else:
        trainable, pb = lora_params(s, _targets(s, train.lora), train.lora.r), _lora_bytes(train)
        terms["adapter"] = trainable * pb
    terms["gradients"] = trainable * pb
    terms["optimizer"] = trainable * _optimizer_bytes(train.optim, pb)

    row = train.pack_len or train.seq_len
    tokens = row * train.micro_batch_size
    A = 2 if train.bf16 else wb
    S = 2 if train.method is AdapterKind.qlora else wb
    per_layer = _layer_bytes(s, train, row)
    working = 2 * A * max(s.hidden_size, s.intermediate_size) + 2 * S * s.hidden_size  # gradients flowing back
    logits = tokens * s.vocab_size * 12.0  # fp32 log-softmax kept + its gradient + the gradient of its input
    if train.gradient_checkpointing:
        # layer inputs stay; the loss' buffers are freed before the first layer is recomputed in backward
        acts = tokens * s.num_hidden_layers * S * s.hidden_size
        recompute = tokens * (per_layer + working)
        terms["activations"], terms["logits"] = acts + max(0.0, recompute - logits), logits
    else:
        terms["activations"], terms["logits"] = tokens * s.num_hidden_layers * per_layer, logits
    acts = terms["activations"]
    if not train.attn_implementation.value.startswith("flash"):
        terms["mask"] = train.micro_batch_size * row * row * (1 if train.attn_implementation is Attention.sdpa else A)
    if train.device is Device.cuda:
        terms["cuda context"] = CUDA_CONTEXT + ALLOCATOR_SLACK * (acts + terms["logits"])
    cap, where = capacity_of(train) if capacity is None else (capacity, "given")
    pageable = ["optimizer"] if train.optim.value.startswith("paged_") else []
    return Estimate(terms, cap, where, pageable, total, trainable, tokens)


def knobs(train: TrainPlan, model: ModelConfig, base_dir: Optional[Path] = None) -> List[Tuple[str, float, bool]]:
    """Single changes that lower the peak: (override, new resident GiB, fits)."""
    out: List[Tuple[str, TrainPlan]] = []
    r = dataclasses.replace
    if not train.gradient_checkpointing:
        out.append(("hardware.gradient_checkpointing=true", r(train, gradient_checkpointing=True)))
    if train.micro_batch_size > 1:
        for mb in range(train.micro_batch_size - 1, 0, -1):
            c = r(train, micro_batch_size=mb, grad_accum=train.grad_accum * train.micro_batch_size // mb)
            if estimate(c, model, base_dir).fits or mb == 1:
                out.append((f"hardware.micro_batch_size={mb} hardware.grad_accum={c.grad_accum}", c))
                break
    for n in ((train.pack_len or train.seq_len) // 2, (train.pack_len or train.seq_len) // 4):
        if n >= 256 and train.pack_len and n >= train.seq_len:
            out.append((f"hardware.pack_len={n}", r(train, pack_len=n)))
        elif n >= 256 and not train.pack_len:
            out.append((f"hardware.max_seq_len={n}", r(train, seq_len=n)))
    lora = train.lora or LoraPlan(16, 32, 0.05, "none", ("all-linear",))  # conf/adapter/lora.yaml's r, alpha
    if train.method is not AdapterKind.qlora and train.device is Device.cuda:
        q = r(train, method=AdapterKind.qlora, lora=lora, quantization=QuantConfig(), optim=Optimizer.paged_adamw_32bit)
        out.append(("adapter=qlora", q))
    if train.lora is None:
        out.append(("adapter=lora", r(train, method=AdapterKind.lora, lora=lora)))
    if "8bit" not in train.optim.value and not train.optim.value.startswith("paged_") and train.device is Device.cuda:
        out.append(("adapter.optim=paged_adamw_8bit", r(train, optim=Optimizer.paged_adamw_8bit)))
    return [(k, (e := estimate(c, model, base_dir)).resident / GiB, e.fits) for k, c in out]


def check(train: TrainPlan, model: ModelConfig, base_dir: Optional[Path] = None) -> Estimate:
    """Log the estimate; raise ConfigError naming the knobs to turn when it does not fit."""
    est = estimate(train, model, base_dir)
    log.info("%s", est.table())
    if not est.fits:
        options = knobs(train, model, base_dir)
        lines = [f"  {k}  → {gib:.1f} GiB" + ("  (fits)" if ok else "") for k, gib, ok in options]
        raise ConfigError(
            f"memory pre-flight: model={model.name} adapter={train.method.value} needs ~{est.resident / GiB:.1f} GiB "
            f"but hardware={train.hardware} has {est.capacity / GiB:.1f} GiB ({est.where}). Turn one of these knobs "
            "(or train.preflight=false to try anyway):\n" + "\n".join(lines) + "\n" + est.table()
        )
    if est.total > est.capacity:
        log.warning("memory pre-flight: %.1f GiB with optimizer states > %.1f GiB: the paged optimizer will page "
                    "states to CPU memory (slower steps)", est.total / GiB, est.capacity / GiB)  # fmt: skip
    return est


def main(argv: Optional[List[str]] = None) -> int:
    """`python -m lec.preflight [overrides]`: print the estimate; exit 1 (with the knobs) if it does not fit."""
    from lec import plan
    from lec.config import compose

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        p = plan.build(compose(list(sys.argv[1:] if argv is None else argv)))
    except ConfigError as err:
        print(f"lec: invalid config: {err}", file=sys.stderr)
        return 2
    try:
        print(check(p.train, p.model).table())
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
