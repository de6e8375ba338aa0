"""A reward helper in a second user module (error locations: the deepest user frame is this file's)."""


def lookup(key):
    return {"present": 1.0}[key]  # the line raised_at must point at
