"""``python -m bench.modules [DATE]``: record new versions of the bench modules."""

import sys

from bench.modules import record_versions

result = record_versions(sys.argv[1] if len(sys.argv) > 1 else None)
print("recorded:", ", ".join(result.recorded) or "nothing (schemas unchanged)")
