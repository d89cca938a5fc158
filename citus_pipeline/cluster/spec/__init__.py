"""ClusterSpec: the one typed description of the HA Citus cluster.

Both backends (local processes and Kubernetes) are driven by this model, loaded from
YAML (``cluster.yaml`` at the repository root by default). An invalid spec is refused
before anything starts, with a message that names the field and the reason.

The parts: ``base`` (the strict model and field types), ``sections`` (what every backend
reads), ``backends`` (what only one reads), ``model`` (ClusterSpec and what derives from it),
``loading`` (YAML in, SpecError out), ``fixed`` (what both backends apply and the spec does
not expose). Every name is importable from here.
"""

from __future__ import annotations

from ...settings import DEFAULT_SPEC_PATH

# Each part's __all__ is its public names, spelled once there; the package re-exports them all.
from . import backends, fixed, loading, model, sections
from .backends import *
from .fixed import *
from .loading import *
from .model import *
from .sections import *

__all__ = ["DEFAULT_SPEC_PATH"]
__all__ += backends.__all__ + fixed.__all__ + loading.__all__ + model.__all__ + sections.__all__
