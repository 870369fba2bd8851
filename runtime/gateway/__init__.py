"""The gateway: ingress (authentication, metadata, request ids) and the route manager.

Every module sits behind one gRPC port; see ``_server`` for the shape and ``_routes`` for the
per-call path.
"""

from runtime.gateway._auth import ApiKey, Authenticator, hash_api_key, issue_dev_token
from runtime.gateway._metadata import Metadata, normalise, request_id
from runtime.gateway._roles import check_roles, missing_roles
from runtime.gateway._routes import Credentials, ModuleRoutes, Route, RouteTable, Usage, build_table
from runtime.gateway._server import Gateway, authenticator_from_settings

__all__ = [
    "ApiKey",
    "Authenticator",
    "Credentials",
    "Gateway",
    "Metadata",
    "ModuleRoutes",
    "Route",
    "RouteTable",
    "Usage",
    "authenticator_from_settings",
    "build_table",
    "check_roles",
    "hash_api_key",
    "issue_dev_token",
    "missing_roles",
    "normalise",
    "request_id",
]
