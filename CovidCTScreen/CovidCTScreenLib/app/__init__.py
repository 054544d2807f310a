"""Entry points and running: shared options, command lines (screen, evaluate, batch), worker, process runner."""
