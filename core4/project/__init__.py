"""core4 projects: creating them (``coco --init``), their environments in
the core4 home, and releasing them (``coco --build`` / ``--release``)."""
