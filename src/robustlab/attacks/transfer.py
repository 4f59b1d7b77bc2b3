"""Transfer attack (Papernot et al. 2016, arXiv:1605.07277): adversarial examples crafted on a
surrogate model and evaluated on the target, for the threat of attacks from public models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from robustlab.attacks.apgd import APGD
from robustlab.attacks.base import Attack, input_gradients_only, register
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.inputs import check_fits
from robustlab.model import LoadedModel, load_model
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


def load_surrogate(
    source, data: Dataset, attacks: Sequence[str] | None
) -> tuple[LoadedModel | None, list[str] | None]:
    """The surrogate model for the transfer attack, checked to accept ``data`` and output logits,
    and the attacks to run: given a surrogate and no attacks, the transfer attack alone."""
    names = None if attacks is None else [a.strip().lower() for a in attacks]
    if source is None:
        if names and "transfer" in names:
            raise RobustlabError("the transfer attack needs a surrogate model; found none")
        return None, names
    if names is not None and "transfer" not in names:
        raise RobustlabError(
            f"a surrogate model is used only by the transfer attack; found attacks {names}"
        )
    loaded = load_model(source)
    loaded.module.to(data.x.device)
    check_fits(loaded.module, data, "surrogate model")
    return loaded, names or ["transfer"]
