"""LowRankAdamW inside other drivers: transformers' Trainer, and torch DDP over two processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from rankwise.optim import LowRankAdamW
from tests.conftest import tiny_llama


def test_hf_trainer_trains_the_tiny_model_with_lowrank_adamw(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments, get_constant_schedule

    model = tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = LowRankAdamW(model.parameters(), lr=1e-2, rank=4, update_gap=2, projector="dct")
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 128, (8, 16), generator=gen)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, use_cpu=True,
                             report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, optimizers=(opt, get_constant_schedule(opt)))
    result = trainer.train()
    assert result.global_step == 4 and opt.steps == 4
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        model = DistributedDataParallel(tiny_llama())
        opt = LowRankAdamW(model.parameters(), lr=1e-2, rank=4, update_gap=2, projector="random", seed=1)
        for step in range(5):  # refreshes at steps 1, 3 and 5
            # Each rank its own data: only the all-reduced gradient keeps the ranks in step.
            x = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(100 * step + rank))
            opt.zero_grad()
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            Path(out).write_text(str(int(torch.equal(gathered[0], gathered[1]))) + " "
                                 + str(int(not torch.equal(flat, torch.cat([p.detach().flatten() for p in
                                                                            tiny_llama().parameters()])))))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_stay_bit_identical_across_subspace_refreshes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "result.txt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    assert out.read_text() == "1 1"  # identical on both ranks, and trained
