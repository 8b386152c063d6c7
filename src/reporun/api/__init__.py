"""The HTTP API: v1 routes, the seed's legacy routes, health and metrics."""
