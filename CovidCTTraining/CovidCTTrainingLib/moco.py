"""MoCo contrastive pre-training for Self-Trans (seed 003; He et al. 2020, MoCo v2 settings).

The query encoder is the classifier with its final linear layer swapped for a 2-layer MLP (hidden 2048,
output 128); the key encoder is a momentum copy (m = 0.999) updated without gradients; a queue of
512 keys gives the negatives; InfoNCE with temperature tau. Seed 003 names tau without a value; 0.2 is
MoCo v2's. ``restore_head()`` puts the classifier's own head back for fine-tuning.
Not done: MoCo's shuffled batch normalisation across GPUs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .augment import moco_augment
from .distributed import gather


class MoCo(nn.Module):
    uses_unlabelled = False  # the images of a pre-training phase are its data; labels are never read

    def __init__(self, net: nn.Module, head_name: str, dim: int = 128, hidden: int = 2048, queue: int = 512,
                 momentum: float = 0.999, temperature: float = 0.2):
        super().__init__()
        head = net.get_submodule(head_name)
        self._head = (head_name, head)  # a tuple: kept aside, not a parameter of the pre-training
        net.set_submodule(head_name, nn.Sequential(nn.Linear(head.in_features, hidden), nn.ReLU(inplace=True),
                                                   nn.Linear(hidden, dim)))
        self.net = net
        self.key_net = copy.deepcopy(net).requires_grad_(False)
        self.momentum, self.temperature = momentum, temperature
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def prepare(self, x, y, u, generator):
        return moco_augment(x, generator), moco_augment(x, generator)

    def forward(self, xq: torch.Tensor, xk: torch.Tensor) -> dict:
        q = F.normalize(self.net(xq).float(), dim=1)
        with torch.no_grad():
            for pk, pq in zip(self.key_net.parameters(), self.net.parameters()):
                pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)
            k = F.normalize(self.key_net(xk).float(), dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.clone()], 1) / self.temperature
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        self._enqueue(gather(k))
        return {"loss": loss, "contrastive": loss}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        size = self.queue.shape[1]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[:, idx] = keys.T
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def restore_head(self) -> nn.Module:
        """The classifier with its own (untouched) final layer back in place of the MLP."""
        self.net.set_submodule(*self._head)
        return self.net
