"""Data files shipped with npconv (read them through :mod:`npconv.datasets`)."""
