"""Run by test_train.py under `python -m torch.distributed.run --nproc_per_node 2` (CPU, gloo).

Each rank trains the same micro model on its shard of random in-memory clips and writes its final weights
to <out>/rank<R>.pt and a few facts to <out>/rank<R>.json; the test compares the ranks.
"""
import json
import os
import sys

import torch
from torch.utils.data import Dataset

from zeroi2v.config import load_config
from zeroi2v.model import create_model
from zeroi2v.train import train


class RandomClips(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)  # the same data on every rank; the sampler shards it
        self.x, self.y = torch.randn(n, 3, 4, 32, 32, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"video": self.x[i], "label": int(self.y[i]), "index": i, "decode_failures": 0}


def main(out):
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    cfg = load_config(None, [
        "model.backbone=zeroi2v-micro", "model.num_frames=4", "model.num_classes=3", "model.offsets=1x1,-1x1",
        "model.adapter_dropout=0.1", "train.batch_size=2", "train.total_batch=8", "optim.epochs=2",
        "optim.warmup_epochs=0.5", "data.workers=0", "train.device=cpu", "train.progress=false", "test.batch_size=2",
        f"train.out_dir={out}/run"])
    torch.manual_seed(0)
    model = create_model(cfg.model)
    if rank == 0:
        torch.save(model.state_dict(), f"{out}/init.pt")
    result = train(cfg, model=model, train_set=RandomClips(16, 0), val_set=RandomClips(7, 1))
    torch.save(result["model"].state_dict(), f"{out}/rank{rank}.pt")
    facts = {k: result[k] for k in ("world_size", "global_step", "accumulation")}
    facts.update(val_samples=result["val"]["num_samples"], val_top1=result["val"]["top1"])
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(facts, f)


if __name__ == "__main__":
    main(sys.argv[1])
