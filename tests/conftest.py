import os

# Tests never reach a hub: fail at once instead of retrying for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ZEROI2V_NB_SMALL", "1")

import torch  # noqa: E402

# Tiny test models run faster on one thread than on two contending for 2 cores.
torch.set_num_threads(1)
