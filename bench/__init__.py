"""jobrun's benchmark: each number next to a baseline measured in the same run.

    tests/with-systemd .venv/bin/python -m bench            # the full run (10-13 minutes)
    tests/with-systemd .venv/bin/python -m bench --quick    # tiny sizes: a smoke run
    ... -m bench --only P3,P5 --json results.json

It needs a real systemd (tests/with-systemd boots a private one and the benchmark installs
jobrun's unit, D-Bus, polkit and journald files into it) and root. One module per measurement:
p1_start (CLI start), p2_throughput (API starts/s), p3_read (reading logs), p4_follow (follow
latency), p5_ingest (journal ingestion, lines lost), p6_cold (CLI cold start, imports).
Results and their analysis: docs/PERFORMANCE.md.
"""
