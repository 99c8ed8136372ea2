"""Generated from protos/broker/v1 by `python -m devtools.protogen`; never edit by hand."""
