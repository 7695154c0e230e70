"""Exact and MinHash near-duplicate detection over normalised rows.

Near-dedup: each text's word 5-grams (lec.data.ngrams) → a MinHash signature of `num_perm` values (multiply-shift
hashes h·a + b >> 32, min per text, all texts at once with numpy) → LSH: `bands` bands of num_perm/bands values; two
texts whose band values all match are candidates → kept as duplicates when their signatures agree on ≥ threshold
of the positions (the MinHash estimate of Jaccard similarity) → connected groups keep their first row.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from lec.config import DedupKeep
from lec.data import ngrams


def exact_duplicates(rows: Sequence[Dict[str, str]], key: List[str], keep: DedupKeep) -> Dict[int, int]:
    """{dropped row: kept row} for rows whose key fields match after case/whitespace normalisation."""
    groups: Dict[str, List[int]] = {}
    for i, row in enumerate(rows):
        parts = [row[k] for k in key if k in row] or [row.get("text", "")]
        norm = "\x1f".join(" ".join(p.lower().split()) for p in parts)
        groups.setdefault(norm, []).append(i)
    dropped: Dict[int, int] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        if keep is DedupKeep.longest_output:
            kept = max(members, key=lambda i: (len(rows[i].get("output", rows[i].get("text", ""))), -i))
        else:
            kept = members[0]
        dropped.update({i: kept for i in members if i != kept})
    return dropped


def signatures(texts: Sequence[str], ngram: int, num_perm: int, seed: int,
               cache: Optional[ngrams.WordCache] = None) -> np.ndarray:  # fmt: skip
    """(len(texts), num_perm) uint64 MinHash signatures; a text with no words gets all-max (never a candidate)."""
    words, offsets = (cache or ngrams.WordCache()).hashes(texts)
    sh, row = ngrams.windows(words, offsets, ngram)
    # texts shorter than `ngram` words: their whole word sequence is their one shingle
    short = [i for i, k in enumerate(ngrams.lengths(offsets)) if 0 < k < ngram]
    if short:
        extra = [ngrams.windows(words[offsets[i] : offsets[i + 1]], np.array([0, offsets[i + 1] - offsets[i]]),
                                int(offsets[i + 1] - offsets[i]))[0] for i in short]  # fmt: skip
        sh = np.concatenate([sh, *extra])
        row = np.concatenate([row, np.asarray(short, dtype=np.int64)])
        order = np.argsort(row, kind="stable")
        sh, row = sh[order], row[order]
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    sig = np.full((len(texts), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    if not len(sh):
        return sig
    starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    present = row[starts]
    with np.errstate(over="ignore"):
        for j in range(num_perm):
            sig[present, j] = np.minimum.reduceat((sh * a[j] + b[j]) >> np.uint64(32), starts)
    return sig


def near_duplicates(texts: Sequence[str], ngram: int = 5, num_perm: int = 128, bands: int = 16,
                    threshold: float = 0.7, seed: int = 1,
                    cache: Optional[ngrams.WordCache] = None) -> Dict[int, int]:  # fmt: skip
    """{dropped text: kept text} for texts whose estimated Jaccard similarity with a kept text is ≥ threshold."""
    n = len(texts)
    if n < 2:
        return {}
    sig = signatures(texts, ngram, num_perm, seed, cache)
    valid = sig[:, 0] != np.iinfo(np.uint64).max
    r = num_perm // bands
    firsts, others = [], []
    for band in range(bands):
        cols = sig[:, band * r : (band + 1) * r]
        key = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for c in range(r):
                key = key * np.uint64(0x100000001B3) + cols[:, c]
        idx = np.flatnonzero(valid)
        if len(idx) < 2:
            break
        order = idx[np.argsort(key[idx], kind="stable")]  # stable: within a bucket, lower row first
        k = key[order]
        new = np.r_[True, k[1:] != k[:-1]]
        head = order[np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))]
        dup = ~new
        firsts.append(head[dup])
        others.append(order[dup])
    if not firsts:
        return {}
    pairs = np.unique(np.stack([np.concatenate(firsts), np.concatenate(others)], axis=1), axis=0)
    if not len(pairs):
        return {}
    sim = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs[sim >= threshold].tolist():
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)  # the group keeps its first row
    dropped = {}
    for i in np.unique(pairs[sim >= threshold]).tolist():
        root = find(i)
        if root != i:
            dropped[i] = root
    return dropped
