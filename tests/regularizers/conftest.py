"""Test settings for the regularizer tests.

The models here have a few dozen parameters: intra-op threads cost more in hand-off than they
save, and on a shared CPU box they make every small op wait for a busy core.
"""

import torch

torch.set_num_threads(1)
