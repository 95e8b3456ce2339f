"""The attack replay (``python -m bench.attack``): see ``bench.attack.run``."""
