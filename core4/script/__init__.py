"""Command line programs: ``coco`` (and, with logging, ``chist``)."""
