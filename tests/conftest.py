"""Fixtures every test shares."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The test networks are tiny: on a shared 2-core machine intra-op threads only fight (measured 7x slower),
    and one thread keeps CPU results deterministic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
