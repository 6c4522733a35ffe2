"""The trained-model file (`model.pt`): a genotype, its evaluation setting and weights, in one place."""
from __future__ import annotations

from pathlib import Path
from typing import Any


from .errors import RunDirError
from .runs import load_checkpoint, save_checkpoint
from .spaces.darts.genotype import genotype_from_dict, genotype_to_dict
from .spaces.darts.network import EvalNetwork, EvalSetting

MODEL_FORMAT = "dcanas-model/1"
MODEL_FILE = "model.pt"


def save_model(path: str | Path, net: EvalNetwork, extra: dict[str, Any] | None = None) -> None:
    """Write `net` (genotype, setting, weights, and any `extra` such as metrics or budgets) atomically."""
    state = {"format": MODEL_FORMAT, "genotype": genotype_to_dict(net.genotype), "setting": net.setting.to_dict(),
             "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "extra": extra or {}}
    save_checkpoint(Path(path), state)


def load_model(path: str | Path) -> tuple[EvalNetwork, dict[str, Any]]:
    """Rebuild the network saved by `save_model` (a file, or a run folder holding model.pt) and its extras."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise RunDirError(f"{path} is not a dcanas model file (expected one written by `dcanas train`)")
    net = EvalNetwork(genotype_from_dict(state["genotype"]), EvalSetting(**state["setting"]))
    net.load_state_dict(state["state_dict"])
    net.eval()
    return net, state.get("extra", {})
