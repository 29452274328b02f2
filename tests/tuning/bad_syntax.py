"""A task module with a syntax error."""

def task(:
    pass
