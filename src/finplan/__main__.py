"""``python -m finplan``: the same as the ``finplan`` command."""
from finplan.cli.main import run

if __name__ == "__main__":
    run()
