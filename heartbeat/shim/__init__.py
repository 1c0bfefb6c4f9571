"""The run shim (run_shim.py): a standalone, standard-library-only program, alone in this folder.

Alone so that it can be imported as a top-level module from here, byte-code cached, without
anything of the product on its path (heartbeat/selectors.py, for one, would shadow the
standard library's selectors)."""
