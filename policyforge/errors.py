"""The errors a user can cause; the CLI prints them as one line instead of a traceback."""

import errno

from policyforge.algos.contract import ContractError
from policyforge.algos.registry import UnknownAlgorithm
from policyforge.data.user import DataError
from policyforge.metrics.report import ReportError
from policyforge.models.load import ModelError
from policyforge.rewards.score import RewardError
from policyforge.train.config import ConfigError
from policyforge.train.step import NonFiniteUpdate

# the OSErrors a path the user gave causes (they name the path): one line, not a traceback
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
USER_ERRORS = (UnknownAlgorithm, ContractError, DataError, ModelError, RewardError, ConfigError, ReportError,
               NonFiniteUpdate) + PATH_ERRORS
# OSErrors of a full or read-only disk (they name their path too): one line as well
DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)  # disk full, read-only file system, quota exceeded


def is_user_error(e: BaseException) -> bool:
    """Whether `e` is printed as one line rather than a traceback (the CLI's rule; Ray workers' errors too)."""
    return isinstance(e, USER_ERRORS) or (isinstance(e, OSError) and e.errno in DISK_ERRNOS)
