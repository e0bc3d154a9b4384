"""Built-in plugin ``tasks``: benchmark tasks on real, offline data."""

from mmzoo.hookspecs import hookimpl


@hookimpl
def mmzoo_register(registry):
    pass
