"""`vtok serve`: an HTTP API and a page with a slider over the number of tokens (extra `serve`).

    from vtok.serve import create_app, Limits
    app = create_app({"default": vtok.load("default")}, limits=Limits(workers=2))
    # uvicorn.run(app, host="127.0.0.1", port=8000), or: vtok serve

Importing this package without FastAPI and uvicorn installed raises OptionalDependencyError
with the pip command that installs them.
"""

from __future__ import annotations

from ..errors import OptionalDependencyError

try:
    import fastapi  # noqa: F401
except ImportError as e:  # tested by hiding the package
    raise OptionalDependencyError("fastapi", "serve", "vtok serve") from e
try:
    import uvicorn  # noqa: F401
except ImportError as e:
    raise OptionalDependencyError("uvicorn", "serve", "vtok serve") from e

from .app import ApiError, create_app  # noqa: E402
from .limits import Limits  # noqa: E402
from .server import load_lm, load_models, run  # noqa: E402

__all__ = ["ApiError", "Limits", "create_app", "load_lm", "load_models", "run"]
