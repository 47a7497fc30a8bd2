"""moto's server with every request serialised under one lock.

Stock `moto_server` handles requests on concurrent threads without locking an item between a
condition check and its write, so racing conditional writes can both pass (we saw 13 of 25
increments succeed against a limit of 10). Real DynamoDB applies writes to an item one at a time.
Serialising whole requests restores that guarantee (more strictly than DynamoDB, which is fine
for tests: every interleaving of requests is still possible, only a request's own check-and-write
is atomic).

Usage: moto_server.py PORT   (binds 127.0.0.1)
"""
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialised(environ, start_response):
        with lock:
            # Materialise the body inside the lock: the write happens while it is produced.
            return list(app(environ, start_response))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple("127.0.0.1", port, serialised, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
