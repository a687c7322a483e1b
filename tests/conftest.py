import os

import torch
from hypothesis import settings

# Keep torch from oversubscribing the 2 CI cores (torchrun tests add processes) and hypothesis quick.
torch.set_num_threads(1)  # tiny tensors: one thread is as fast and never contends
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
