"""moto's server, handling one request at a time.

moto's DynamoDB evaluates a conditional write's condition and applies the write without a lock,
so two requests on one item in two server threads can both pass their conditions (and a failed
transaction restores a copy of the whole table). DynamoDB itself makes each conditional write
atomic per item. Tests that race processes on one item run against this serial server instead
(and against DynamoDB Local in `make test-ddb-local`). Usage: moto-serial.py PORT
"""
import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

if __name__ == "__main__":
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False, request_handler=MotoRequestHandler)
