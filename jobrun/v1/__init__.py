"""Generated from proto/jobrun/v1/jobrun.proto by packaging/gen-proto; do not edit."""
