"""Tests of medimg.feedback: a package, so its conftest and modules do not clash with
those of other test folders."""
