"""`python -m connectors.sandbox`: serve the sandbox provider (see connectors.sandbox.cli)."""

from connectors.sandbox.cli import main

raise SystemExit(main())
