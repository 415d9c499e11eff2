"""Resumable batch samplers for step-based training: balanced (PANNs) and plain random.

Both draw batches of clip indices forever and expose ``state_dict()`` / ``load_state_dict()``
holding everything needed to continue exactly (small: a few counters per class, no index lists,
because every permutation is a function of the seed and a counter). ``history`` keeps the states
after the most recent batches, so a training loop whose DataLoader prefetches ahead can still save
the state that belongs to the last batch it consumed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["BalancedSampler", "RandomSampler"]


def _perm(n: int, seed: int, *counters: int) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + sum(c * 7919**i for i, c in enumerate(counters, 1))) % 2**62)
    return torch.randperm(n, generator=g)


class _Resumable:
    def __init__(self, batch_size: int, history: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.batches = 0
        self.history: deque[tuple[int, dict[str, Any]]] = deque(maxlen=history)

    def next_batch(self) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            batch = self.next_batch()
            self.batches += 1
            self.history.append((self.batches, self.state_dict()))
            yield batch

    def state_after(self, batches: int) -> dict[str, Any]:
        """The state right after the ``batches``-th batch (it must still be in :attr:`history`).

        Args:
            batches: Number of batches consumed.

        Returns:
            The state to save.

        Raises:
            KeyError: If that batch is older than the kept history.
        """
        for count, state in reversed(self.history):
            if count == batches:
                return state
        raise KeyError(f"sampler state after batch {batches} is no longer kept (history {len(self.history)})")


class RandomSampler(_Resumable):
    """Uniform sampling without replacement, epoch after epoch (each epoch a fresh permutation).

    Args:
        num_items: Dataset size.
        batch_size: Indices per batch.
        seed: Seed (each rank of a distributed run should pass a different one).
        history: How many recent states to keep (>= the DataLoader's prefetch depth).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, history: int = 64) -> None:
        super().__init__(batch_size, history)
        if num_items < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items, self.seed = int(num_items), int(seed)
        self.epoch, self.position = 0, 0
        self._order = _perm(self.num_items, self.seed, self.epoch)

    def next_batch(self) -> list[int]:
        """The next batch of indices."""
        out: list[int] = []
        while len(out) < self.batch_size:
            if self.position >= self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = _perm(self.num_items, self.seed, self.epoch)
            take = min(self.batch_size - len(out), self.num_items - self.position)
            out += self._order[self.position : self.position + take].tolist()
            self.position += take
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        return {
            "kind": "random",
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "num_items": self.num_items,
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (same dataset size and seed)."""
        if state.get("kind") != "random" or state["num_items"] != self.num_items:
            raise ValueError("sampler state is for another sampler or dataset size")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self.batches = state["batches"]
        self._order = _perm(self.num_items, self.seed, self.epoch)


class BalancedSampler(_Resumable):
    """PANNs' balanced sampler: classes are visited in turn so rare classes are seen as often as common ones.

    A queue holds the classes in a random order; each index of a batch takes the next class from
    the queue (refilled with a new random order when empty) and that class's next clip (each class
    cycles through its own permutation of its clips, reshuffled each round). Classes without clips
    are never drawn.

    Args:
        targets: ``(N, C)`` multi-hot targets (or ``(N,)`` class indices).
        batch_size: Indices per batch.
        seed: Seed (each rank of a distributed run should pass a different one).
        history: Recent states kept (>= the DataLoader's prefetch depth).

    References:
        Q. Kong et al., "PANNs: Large-scale pretrained audio neural networks for audio pattern
        recognition", IEEE/ACM TASLP 2020 (balanced sampling).
    """

    def __init__(self, targets: Tensor, batch_size: int, seed: int = 0, history: int = 64) -> None:
        super().__init__(batch_size, history)
        targets = torch.as_tensor(targets)
        if targets.dim() == 1:
            targets = torch.nn.functional.one_hot(targets.long()).float()
        if targets.shape[0] == 0:
            raise ValueError("cannot sample from an empty dataset")
        self.seed = int(seed)
        self.members = [torch.nonzero(targets[:, c] > 0.5).flatten() for c in range(targets.shape[1])]
        self.classes = [c for c, m in enumerate(self.members) if len(m)]
        if not self.classes:
            raise ValueError("no class has a positive clip; balanced sampling needs labelled data")
        self.pointer = torch.zeros(targets.shape[1], dtype=torch.long)
        self.round = torch.zeros(targets.shape[1], dtype=torch.long)
        self.queue: list[int] = []
        self.queue_round = 0
        self._perms: dict[int, Tensor] = {}

    def _class_perm(self, c: int) -> Tensor:
        key = c
        if key not in self._perms or self._perms[key][0] != self.round[c]:
            self._perms[key] = (
                self.round[c].clone(),
                _perm(len(self.members[c]), self.seed, c + 1, int(self.round[c]) + 1),
            )
        return self._perms[key][1]

    def next_batch(self) -> list[int]:
        """The next batch of indices."""
        out = []
        for _ in range(self.batch_size):
            if not self.queue:
                order = _perm(len(self.classes), self.seed, 0, self.queue_round + 1)
                self.queue = [self.classes[i] for i in order.tolist()]
                self.queue_round += 1
            c = self.queue.pop(0)
            perm = self._class_perm(c)
            out.append(int(self.members[c][perm[self.pointer[c]]]))
            self.pointer[c] += 1
            if self.pointer[c] >= len(self.members[c]):
                self.pointer[c] = 0
                self.round[c] += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly."""
        return {
            "kind": "balanced",
            "seed": self.seed,
            "pointer": self.pointer.clone(),
            "round": self.round.clone(),
            "queue": list(self.queue),
            "queue_round": self.queue_round,
            "batches": self.batches,
            "num_classes": len(self.members),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (same targets and seed)."""
        if state.get("kind") != "balanced" or state["num_classes"] != len(self.members):
            raise ValueError("sampler state is for another sampler or label set")
        self.seed = state["seed"]
        self.pointer, self.round = state["pointer"].clone().long(), state["round"].clone().long()
        self.queue, self.queue_round, self.batches = list(state["queue"]), state["queue_round"], state["batches"]
        self._perms = {}
