import os

# Tests never reach a hub: fail at once instead of retrying for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("ZEROI2V_NB_SMALL", "1")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
