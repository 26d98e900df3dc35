"""autoprune's built-in plugins (installed as ``autoprune_plugins``).

Each module is an ordinary plugin declared in autoprune's own
``[project.entry-points.autoprune]`` table, exactly like a third-party plugin.
"""
