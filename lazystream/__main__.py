"""``python -m lazystream`` is the ``lazystream`` command."""

from lazystream.cli import run

if __name__ == "__main__":
    run()
