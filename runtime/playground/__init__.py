"""The playground: see, call, trace and replay every module in a browser.

Served by the gateway's admin port at ``/playground/`` (``modrpc up`` prints the URL next to
"ready"), as a Starlette app on uvicorn, with its page in plain HTML, CSS and JavaScript modules
shipped inside this package:

- **Catalog**: every module, its versions and labels, its methods with their policies, each
  version's request and response schema, and the diff between any two versions with breaking
  changes marked and the transformers that bridge them.
- **Explorer**: a request edited as JSON, prefilled from the version's schema, sent through the
  real gateway with a token; the response, status and details, trailers, request id and time.
- **Traces**: the recent requests, each one's timeline across the gateway and the workers.
- **Snapshots**: stored snapshots, replayed at any version in a sandbox, two replays diffed,
  hooks from the manifest played back.
- **Live**: per method, calls per second, error rate, p50 and p99.

On a loopback address it is on by default and needs no token; elsewhere it is off unless
``playground.enabled`` is set, and then every call needs a token with ``playground.role``.

    playground = Playground.attach(gateway)      # after gateway.start(); None when it is off
    print(playground.url)                        # http://127.0.0.1:9464/playground/
    await playground.close()
"""

from runtime.playground._playground import GatewayView, Playground

__all__ = ["GatewayView", "Playground"]
