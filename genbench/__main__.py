"""`python -m genbench` runs the CLI; so does `torchrun ... genbench train NAME` from the project root, where Python
runs this folder (torchrun starts `python -u SCRIPT`)."""

from genbench.cli import app

app()
