"""User-caused errors: each says what to do; the CLI prints it in one line and exits 2."""


class DcanasError(Exception):
    """Base class of every error a user can cause (bad path, budget, genotype, file)."""


class GenotypeError(DcanasError):
    """A genotype is malformed: unknown op, input out of range, wrong edge count."""


class DatasetError(DcanasError):
    """A dataset is missing, corrupt, or cannot be downloaded."""


class BudgetError(DcanasError):
    """A budget cannot be met by any network of the chosen evaluation setting."""


class ConfigError(DcanasError):
    """An option value or combination is invalid."""


class RunDirError(DcanasError):
    """A run folder or checkpoint is missing, corrupt, or belongs to another run."""


class DivergedError(DcanasError):
    """The loss became NaN or infinite: the options (usually the learning rate) do not train."""
