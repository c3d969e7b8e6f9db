"""KV blocks and vLLM's prefix cache, at the granularity of cached *segments*.

A segment is a run of full KV blocks whose content is known by hash: a group's system
prompt (``(BOS + system prompt tokens) // 16`` blocks) and, chained below it, the rest of one
distinct prompt's hittable blocks (``(P − 1) // 16`` in all: a hit never covers the whole
prompt, at least one token is computed). A segment is created when the first request that
computed those tokens completes its prefill, and is then referenced by that request.

``used`` counts blocks held by running requests (their own blocks and the segments they
reference); unreferenced resident segments are cached-free (``evictable``, counted as free
as in vLLM's usage metric) and are evicted, least recently released first (a segment's
children with it), when the never-cached free blocks run out. Simplifications, documented:
a preempted or aborted request's own blocks are dropped rather than kept as evictable;
eviction takes never-cached blocks before cached ones (vLLM's free queue interleaves them
by release time).
"""

from __future__ import annotations


class PrefixCache:
    """Segments with reference counts and LRU eviction over ``total_blocks`` KV blocks."""

    def __init__(self, total_blocks: int) -> None:
        self.total = total_blocks
        self.used = 0
        self.evictable = 0
        self.blocks: list[int] = []
        self.ref: list[int] = []
        self.resident: list[bool] = []
        self.children: list[list[int]] = []
        self.lru: dict[int, None] = {}

    @property
    def free(self) -> int:
        return self.total - self.used

    def new_segment(self, blocks: int, parent: int, ref: int) -> int:
        """A resident segment of ``blocks`` blocks below ``parent`` (−1: a root)."""
        s = len(self.blocks)
        self.blocks.append(blocks)
        self.ref.append(ref)
        self.resident.append(True)
        self.children.append([])
        if parent >= 0:
            self.children[parent].append(s)
        if ref == 0:
            self.used -= blocks
            self.evictable += blocks
            self.lru[s] = None
        return s

    def is_resident(self, s: int) -> bool:
        return s >= 0 and self.resident[s]

    def acquire(self, chain: list[int]) -> None:
        for s in chain:
            if self.ref[s] == 0:
                del self.lru[s]
                self.evictable -= self.blocks[s]
                self.used += self.blocks[s]
            self.ref[s] += 1

    def release(self, chain: list[int]) -> None:
        for s in reversed(chain):                  # deepest first: evicted first on ties
            self.ref[s] -= 1
            if self.ref[s] == 0:
                self.used -= self.blocks[s]
                self.evictable += self.blocks[s]
                self.lru[s] = None

    def evictable_blocks(self, chain: list[int]) -> int:
        return sum(self.blocks[s] for s in chain if self.ref[s] == 0)

    def make_room(self) -> list[int]:
        """Evict LRU segments until the never-cached free blocks are ≥ 0; returns evicted ids."""
        gone: list[int] = []
        while self.total - self.used - self.evictable < 0:
            self._evict(next(iter(self.lru)), gone)
        return gone

    def _evict(self, s: int, gone: list[int]) -> None:
        if not self.resident[s]:
            return
        assert self.ref[s] == 0, "evicting a referenced segment"
        for c in self.children[s]:
            self._evict(c, gone)
        self.resident[s] = False
        del self.lru[s]
        self.evictable -= self.blocks[s]
        gone.append(s)
