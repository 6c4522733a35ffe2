"""dcanas: Device Constraints-Aware Neural Architecture Search."""
from .errors import DcanasError

__version__ = "0.1.0"
__all__ = ["DcanasError", "__version__"]
