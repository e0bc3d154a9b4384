"""Built-in plugins. Each ``*_plugin`` module is light (no torch at import)
and registers its components through the same hook third-party plugins use."""
