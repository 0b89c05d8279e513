"""Process entry points for the DDP tests: spawned processes import them by module name."""

import torch

from bodycorr.common.errors import BodycorrError
from bodycorr.training.config import load_config
from bodycorr.training.loop import train


def train_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg = load_config("depth-tiny").replace(val_every=0, steps=2, ckpt_every=1)
    train(cfg, out, progress=False)


def diverge_worker(rank: int, port: int, result: str) -> None:
    import os
    from pathlib import Path

    from bodycorr.training.loop import check_ranks_agree

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    check_ranks_agree(net)  # same seed: agree
    if rank == 1:
        with torch.no_grad():
            net.weight[0, 0] += 0.1
    try:
        check_ranks_agree(net)
        outcome = "agreed"
    except BodycorrError as e:
        outcome = str(e)
    Path(f"{result}.{rank}").write_text(outcome)
    torch.distributed.destroy_process_group()
