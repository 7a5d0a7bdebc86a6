from facegnet.cli import entry_point

entry_point()
