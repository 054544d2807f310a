"""Data-parallel training (DistributedDataParallel) with two CPU processes on the gloo backend: both ranks end
with the same weights, including Self-Trans's MoCo phase (keys gathered from both ranks into one queue)."""

from __future__ import annotations

import numpy as np
import torch
import torch.multiprocessing as mp

from conftest import COVID_CT, DATA

SIZE = 32


def _rank(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist

    from CovidCTTrainingLib.data import covid_ct_split, load_images, load_unlabelled_images
    from CovidCTTrainingLib.trainer import make_config, train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    tr, va = covid_ct_split(COVID_CT, "train"), covid_ct_split(COVID_CT, "val")
    tr, va = tr[:4] + tr[-4:], va[:2] + va[-2:]
    config = make_config("selftrans", architecture="crnet", pretrained=False, epochs=1, pretrain_epochs=1,
                         batch_size=4, moco_batch_size=4, moco_queue=8, device="cpu", seed=1)
    result = train(load_images(tr, SIZE), np.array([i.label for i in tr]), load_images(va, SIZE),
                   np.array([i.label for i in va]), config, f"{folder}/work",
                   unlabelled_images=load_unlabelled_images(DATA / "infnet-semiseg" / "unlabelled" / "images", SIZE,
                                                            limit=8))
    torch.save(result.state_dict, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "work" / "checkpoint.pt").is_file() and (tmp_path / "work" / "pretrain-unlabelled.pt").is_file()
