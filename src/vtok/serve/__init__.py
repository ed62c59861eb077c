"""`vtok serve`: an HTTP API and a page with a slider over the number of tokens (extra `serve`).

    from vtok.serve import create_app, Limits
    app = create_app({"default": vtok.load("default")}, limits=Limits(workers=2))
    # uvicorn.run(app, host="127.0.0.1", port=8000), or: vtok serve

Importing this package without FastAPI and uvicorn installed raises OptionalDependencyError
with the pip command that installs them.
"""

from . import _require  # noqa: F401  (first: OptionalDependencyError without the extra)
from .app import ApiError, create_app
from .limits import Limits
from .server import load_lm, load_models, run

__all__ = ["ApiError", "Limits", "create_app", "load_lm", "load_models", "run"]
