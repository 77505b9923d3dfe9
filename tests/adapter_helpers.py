"""Shared by the model tests: adapters and temporal embedding made non-zero, as after training."""
import torch


def random_adapters(model, seed=0):
    """Non-zero adapters (they start as identity) and temporal embedding, as after training (std 0.05)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapters." in name or name == "temporal_embedding":
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model
