"""Test-only stand-ins for cluster components that do not exist on our machines."""
