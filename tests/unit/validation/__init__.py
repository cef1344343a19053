"""Tests of medimg.validation: a package, so test_stage and test_frames here do not clash
with test modules of the same name in other test folders."""
