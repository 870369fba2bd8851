"""Testing a module: its handlers called in process through the real lifecycle, with fakes.

In the spirit of httpx's ``MockTransport`` and temporalio's test environment: nothing but the
module's own code is real, and what surrounds it is given by the test.

    from runtime.testing import ModuleHarness

    async def test_create_user_announces_it() -> None:
        users = ModuleHarness.for_module("users")
        user = await users.call("CreateUser", {"given_name": "Ada", "family_name": "L",
                                               "email": "ada@example.com"})
        assert users.published[0].topic == "users.created"

With pytest, the ``module_harness`` fixture (the modrpc plugin) builds and closes harnesses:
``users = module_harness("users")``.
"""

from runtime.testing._fakes import (
    DictSecrets,
    ManualClock,
    ModuleCall,
    Published,
    RecordingFabric,
    Stub,
    StubModules,
)
from runtime.testing._harness import TEST_PRINCIPAL, ModuleHarness

__all__ = [
    "TEST_PRINCIPAL",
    "DictSecrets",
    "ManualClock",
    "ModuleCall",
    "ModuleHarness",
    "Published",
    "RecordingFabric",
    "Stub",
    "StubModules",
]
