"""The trained-model file (`model.pt`): a genotype, its evaluation setting and weights, in one place."""
from __future__ import annotations

from pathlib import Path
from typing import Any


from .errors import DcanasError, RunDirError
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
    state = load_checkpoint(path, "model file", "give a model.pt written by `dcanas train` (or train again)")
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise RunDirError(f"{path} is not a dcanas model file (expected one written by `dcanas train`)")
    try:
        net = EvalNetwork(genotype_from_dict(state.get("genotype")), EvalSetting(**state["setting"]))
        net.load_state_dict(state["state_dict"])
    except DcanasError as exc:
        raise RunDirError(f"{path} does not describe a network dcanas can build: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RunDirError(f"{path} is damaged or from another version ({reason}); train it again") from None
    net.eval()
    extra = state.get("extra", {})
    return net, extra if isinstance(extra, dict) else {}
