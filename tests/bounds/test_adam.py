"""bounds/adam.py against torch.optim.Adam (+ ExponentialLR): the same iterates."""

import pytest
import torch

from robustlab.bounds.adam import Adam


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_iterates_as_torch_adam(dtype):
    g = torch.Generator().manual_seed(0)
    a0 = torch.randn(3, 4, generator=g, dtype=dtype)
    b0 = torch.randn(5, generator=g, dtype=dtype)
    ours = [a0.clone(), b0.clone()]
    ref = [a0.clone().requires_grad_(True), b0.clone().requires_grad_(True)]
    opt = Adam([([ours[0]], 0.1), ([ours[1]], 0.01)], decay=0.98)
    topt = torch.optim.Adam([{"params": [ref[0]], "lr": 0.1}, {"params": [ref[1]], "lr": 0.01}])
    sched = torch.optim.lr_scheduler.ExponentialLR(topt, 0.98)
    for k in range(25):
        grads = [torch.sin(ours[0] * (k + 1)), torch.cos(ours[1]) if k % 3 else None]
        opt.step(grads)
        for p, gr in zip(
            ref,
            [
                torch.sin(ref[0].detach() * (k + 1)),
                None if k % 3 == 0 else torch.cos(ref[1].detach()),
            ],
            strict=True,
        ):
            p.grad = gr
        topt.step()
        sched.step()
        tol = 8 * torch.finfo(dtype).eps
        for x, y in zip(ours, ref, strict=True):
            y = y.detach()
            assert torch.allclose(x, y, rtol=tol, atol=tol * float(y.abs().max()))
