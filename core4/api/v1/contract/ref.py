"""References to the named schemas of the document."""


def ref(name):
    """``{"$ref": "#/components/schemas/<name>"}``."""
    return {"$ref": "#/components/schemas/%s" % name}
