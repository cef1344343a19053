"""Fixture writers shared by tests: small real files made in tmp dirs."""
