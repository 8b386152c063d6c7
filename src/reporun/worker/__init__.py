"""The worker: checkout (mirror cache), sandbox (bubblewrap) and the claim-run-report loop."""
