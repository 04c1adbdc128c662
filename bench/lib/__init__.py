"""Helpers of bench/run (the mxgate vs Postfix benchmark harness).

  procs      processes: start pinned, stop by pid, CPU and memory of a process tree
  sink       the smtpsink relay target and its message counter
  mxgate     a private mxgate (config, start, stop, queue state)
  postfix    a private Postfix instance (main.cf, master.cf, start-fg, stop)
  load       smtpload runs (load, idle and handshake-only)
  scenarios  the scenarios a..f, their sizes, and how one run is measured
  machine    machine facts for the report header, `openssl speed`
  report     min/median/max, ratios, the Markdown table and the JSON file
"""
