"""Probe cases, one module per area. Each module registers cases with ``tests.hostile.harness.register``/``case``
and may define ``prepare(fixture_dir)``, called once in the parent before forking, for shared fixtures."""
