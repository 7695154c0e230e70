"""Automatic prefix caching for the engine (the idea of vLLM's automatic prefix caching, docs.vllm.ai
design/automatic_prefix_caching): the KV of prompt prefixes, kept in blocks of `BLOCK` tokens keyed by the hash of
the block and everything before it, under a memory bound, evicted least-recently-used.

HELM's prompts within a run share their in-context examples (the same 0–5 training examples precede every instance
of a subject), so most of a prompt's prefill is the same work over and over. A prompt whose first k blocks are
cached prefills only the rest, attending to the cached KV. A block's KV depends only on its tokens, the tokens before
it and their positions (0…), so a cached block is what a fresh prefill would compute (tests/serve/test_prefix.py:
greedy results equal uncached decoding).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import List, Optional, Tuple

import torch

BLOCK = 16  # tokens per block (vLLM's default block size)
KV = List[Tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each [heads, tokens, head_dim]


class PrefixCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._blocks: "OrderedDict[bytes, KV]" = OrderedDict()
        self.bytes = 0
        self.prompt_tokens = 0  # every prompt token prefilled, and those read from the cache instead
        self.cached_tokens = 0

    @staticmethod
    def hashes(ids: List[int]) -> List[bytes]:
        """The chained hash of every full block of `ids`: block i's key covers tokens [0, (i+1)·BLOCK)."""
        out, prev = [], b""
        for start in range(0, len(ids) - len(ids) % BLOCK, BLOCK):
            prev = hashlib.blake2b(prev + torch.tensor(ids[start:start + BLOCK], dtype=torch.int64).numpy().tobytes(),
                                   digest_size=16).digest()  # fmt: skip
            out.append(prev)
        return out

    def lookup(self, ids: List[int]) -> Tuple[int, Optional[KV]]:
        """(cached prefix length, its KV per layer) — at most all but the last token, which must be prefilled for
        its logits."""
        keys = self.hashes(ids[: len(ids) - 1])
        found: List[KV] = []
        for key in keys:
            block = self._blocks.get(key)
            if block is None:
                break
            self._blocks.move_to_end(key)
            found.append(block)
        if not found:
            return 0, None
        kv = [(torch.cat([b[layer][0] for b in found], dim=1), torch.cat([b[layer][1] for b in found], dim=1))
              for layer in range(len(found[0]))]  # fmt: skip
        return len(found) * BLOCK, kv

    def store(self, ids: List[int], kv_of_block) -> None:
        """Keep every full block of `ids` not cached yet; `kv_of_block(i)` gives block i's KV (copied out of the
        batch's cache, so the batch's tensors can be freed)."""
        if self.max_bytes <= 0:
            return
        for i, key in enumerate(self.hashes(ids)):
            if key in self._blocks:
                self._blocks.move_to_end(key)
                continue
            block = kv_of_block(i)
            size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in block)
            if size > self.max_bytes:
                return
            while self.bytes + size > self.max_bytes and self._blocks:
                _, old = self._blocks.popitem(last=False)  # least recently used
                self.bytes -= sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in old)
            self._blocks[key] = block
            self.bytes += size

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def stats(self) -> dict:
        return {"blocks": len(self._blocks), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                "hit_rate": self.hit_rate}  # fmt: skip
