"""The heap policy for large tensors: set and released where the C library is glibc, a no-op
elsewhere; tensors allocated after it compute as before."""

import platform

import pytest
import torch

from robustlab.bounds import heap


def test_keep_freed_memory_then_release():
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert heap.keep_freed_memory() is glibc
    a = torch.arange(2**22, dtype=torch.float64)  # 32 MiB: an mmap block before the policy
    for _ in range(3):
        b = a * 2
        assert b[-1].item() == 2 * (2**22 - 1)
        del b
    assert heap.release_freed_memory() is glibc


@pytest.mark.parametrize("limit", [-1, 2**31])
def test_keep_freed_memory_refuses_a_limit_a_c_int_cannot_hold(limit):
    with pytest.raises(ValueError, match="limit must be a byte count under 2\\*\\*31"):
        heap.keep_freed_memory(limit)
