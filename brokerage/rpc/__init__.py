"""gRPC plumbing every server shares: the server bootstrap, health, the call boundary and error mapping."""
