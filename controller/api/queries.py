"""Feature queries (dry runs, previews, usage) asked of the hub, their failures as problems."""

from __future__ import annotations

from typing import Any

from .context import ApiContext
from .problems import Problem, field_error


def ask(ctx: ApiContext, feature: str, name: str, *, what: str, subject: str, field: str,
        **args: Any) -> Any:
    """``ctx.hub.query(feature, name, **args)``.

    ``what`` names the query in messages ("dry run"), ``subject`` what it
    compiles ("persona 'dev'"), ``field`` the request field a compile error
    is about. A slow worker is 503 (retry), an unknown object 404, and what
    cannot be compiled 422.
    """
    try:
        return ctx.hub.query(feature, name, **args)
    except TimeoutError:
        raise Problem(503, detail=f"the hub did not answer the {what} in time",
                      headers={"Retry-After": "1"}) from None
    except LookupError as exc:
        raise Problem(404, detail=str(exc).strip("'\"") or f"nothing to answer the {what} for") from None
    except ValueError as exc:
        raise Problem(422, "Cannot compile", detail=f"{subject} cannot be compiled: {exc}",
                      errors=[field_error(field, str(exc) or "cannot be compiled")]) from None
