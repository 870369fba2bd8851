"""The gateway: every module behind one gRPC port.

Each method path is a :class:`Route` whose ingress is a chain of named steps (request id,
authenticate, resolve version, authorize, rate limit, pick instance, forward), built once per
route from the manifest store and swapped in whole when the store changes.
"""

from runtime.gateway._auth import hash_api_key, issue_dev_token
from runtime.gateway._keys import jwt_secret_in_force
from runtime.gateway._server import Gateway, authenticator_from_settings

__all__ = [
    "Gateway",
    "authenticator_from_settings",
    "hash_api_key",
    "issue_dev_token",
    "jwt_secret_in_force",
]
