"""How the CLI reaches jobs: `target` says where (this host through jobrund or in-process, or a
remote jobrund) and opens a `backend.Backend` for it: `local` (the library in this process),
`dbus` (jobrund on the system bus) or `remote` (jobrund's gRPC API). Each answers with typed
values (model.Job, journal.Record), so the CLI prints the same whichever path it took.
`oneshot` (over `blocking`, a bus client without asyncio) is the CLI's fast path to jobrund.

Nothing is imported here: `jobrun --version` and `--help` load none of it.
"""
