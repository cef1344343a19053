"""Data contracts: Great Expectations suites that a manifest must pass before training."""
