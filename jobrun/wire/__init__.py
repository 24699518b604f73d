"""jobrun's values on the wire: every conversion of a Job or a Record to and from JSON (`--json`,
jobrund's D-Bus API), protobuf (the gRPC API) and the Logs pipe's frames, kept at the edge so
that everything inside passes typed values.

One module per form, each imported only where it is needed: `jobs` (JSON of jobs), `logs`
(records: JSON lines, line-break codes), `dbus` (a{sv} options), `proto` (protobuf, which loads
the protobuf runtime); `schedules` and `schedules_proto` the same for schedules.
"""
