"""The brokerage core shared by every service: domain, storage, messaging, rpc bootstrap, settings, telemetry."""
