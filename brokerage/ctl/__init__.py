"""brokerctl: the operator's command line, a thin gRPC client of the operations service."""
