"""Imported first by the package: the serve extra's packages, or the pip command that installs them."""

from ..errors import OptionalDependencyError

try:
    import fastapi  # noqa: F401
except ImportError as e:  # tested by hiding the package
    raise OptionalDependencyError("fastapi", "serve", "vtok serve") from e
try:
    import uvicorn  # noqa: F401
except ImportError as e:
    raise OptionalDependencyError("uvicorn", "serve", "vtok serve") from e
