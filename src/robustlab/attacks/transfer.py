"""Transfer attack (Papernot et al. 2016, arXiv:1605.07277): adversarial examples crafted on a
surrogate model and evaluated on the target, for the threat of attacks from public models."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from robustlab.attacks.apgd import APGD
from robustlab.attacks.base import Attack, input_gradients_only, register
from robustlab.errors import RobustlabError
from robustlab.threat import ThreatModel


@register("transfer")
@dataclass(frozen=True)
class Transfer:
    """Transfer attack (Papernot et al. 2016, arXiv:1605.07277).

    Runs ``attack`` (APGD-CE by default) on ``surrogate`` with the true labels; the target model
    is never queried while crafting, so its pass counts measure only the final check.
    """

    surrogate: nn.Module | None = None
    attack: Attack = field(default_factory=APGD)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor:
        if self.surrogate is None:
            raise RobustlabError("the transfer attack needs a surrogate model; found None")
        was_training = self.surrogate.training
        self.surrogate.eval()
        try:
            with input_gradients_only(self.surrogate):
                return self.attack(self.surrogate, x, y, threat)
        finally:
            self.surrogate.train(was_training)
