"""mlvc: content-addressed versioning for machine-learning runs.

``Repo`` is the library API; ``mlvc.errors`` holds the errors it raises.
"""

from .errors import MlvcError
from .repo import Repo

__version__ = "0.1.0"
__all__ = ["MlvcError", "Repo", "__version__"]
