"""Test settings for the regularizer tests.

The models here have a few dozen parameters: intra-op threads cost more in hand-off than they
save, and on a shared CPU box they make every small op wait for a busy core. The setting is
restored after each test so that other test folders keep their own.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
