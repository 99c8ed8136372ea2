"""Developer tooling: code generation, a private PostgreSQL and NATS, and the local mesh launcher.

Nothing here runs in production; tests and `make run` share it so both start the stack the same way.
"""
