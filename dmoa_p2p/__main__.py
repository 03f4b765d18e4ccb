"""`python -m dmoa_p2p` runs the command line."""

from dmoa_p2p.cli import main

main()
