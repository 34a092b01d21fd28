"""The hub's performance benchmark (`./scripts/bench`): hub vs. a bare-Starlette floor.

Modules: fixture (database and accounts), bulk (fast row generation), asgi (in-process
driver), ops (the measured operations), inprocess (CPU per request), servers and wrk
(throughput under uvicorn), growth (cost at 10k/100k/1M rows), coldstart, report.
"""
