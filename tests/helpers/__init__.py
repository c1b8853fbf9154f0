"""Helper servers and clients for the meshwrap integration tests."""
