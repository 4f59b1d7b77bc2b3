"""DeepFool (Moosavi-Dezfooli et al. 2016, arXiv:1511.04599): iterated steps to the closest
linearised decision boundary, Linf or L2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.attacks.base import geometry, logits_and_jacobian, register
from robustlab.threat import ThreatModel


@register("deepfool")
@dataclass(frozen=True)
class DeepFool:
    """DeepFool (Moosavi-Dezfooli et al. 2016, arXiv:1511.04599), Linf or L2.

    At each step, over the ``candidates`` classes ranked highest at the clean point, the closest
    linearised boundary is crossed by the minimal step (plus 1e-4); the accumulated step is scaled
    by 1 + ``overshoot`` and clipped to the input domain. An example stops once misclassified;
    the result is projected onto the threat model.
    """

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    seed: int = 0  # deterministic; kept for a uniform interface

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        geo = geometry(threat, x)
        with torch.no_grad():
            scores = model(x).scatter(1, y[:, None], torch.inf)
        k = min(self.candidates, scores.shape[1])
        cand = scores.topk(k, dim=1).indices  # column 0 is the label
        out = x.clone()
        act = torch.arange(len(x), device=x.device)
        x0, y0, xa = x, y, x.clone()
        r_tot = torch.zeros_like(x)
        for _ in range(self.steps + 1):
            logits, jac = logits_and_jacobian(model, xa, cand)
            wrong = logits.argmax(1) != y0
            if bool(wrong.any()):
                out[act[wrong]] = xa[wrong]
                keep = ~wrong
                act, x0, y0, xa, r_tot = act[keep], x0[keep], y0[keep], xa[keep], r_tot[keep]
                cand, logits, jac = cand[keep], logits[keep], jac[keep]
                if len(act) == 0:
                    break
                if geo.is_box:
                    geo = geometry(threat, x0)
            z = logits.gather(1, cand)
            f = z[:, 1:] - z[:, :1]
            w = (jac[:, 1:] - jac[:, :1]).flatten(2)
            dual = w.abs().sum(2) if geo.norm == "inf" else w.norm(dim=2)
            best = (f.abs() / (dual + 1e-8)).argmin(1)
            idx = torch.arange(len(act), device=x.device)
            f_l, w_l, d_l = f[idx, best].abs() + 1e-4, w[idx, best], dual[idx, best] + 1e-8
            if geo.norm == "inf":
                r = (f_l / d_l)[:, None] * w_l.sign()
            else:
                r = (f_l / d_l**2)[:, None] * w_l
            r_tot = r_tot + r.view_as(xa)
            xa = geo.clip(x0 + (1 + self.overshoot) * r_tot)
        if len(act):
            out[act] = xa
        return threat.project(x, out)
