"""``python -m zoo_ray.minicluster.hostexec HOSTNAME -- COMMAND...``: name the host, then exec.

Runs inside an isolated host's network and UTS namespaces (see ``netns.launcher``),
as the first step of every daemon started there: it sets the namespace's hostname,
which no iproute2 or util-linux tool does together with an exec, and becomes COMMAND.
"""
from __future__ import annotations

import os
import socket
import sys


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        sys.exit("usage: python -m zoo_ray.minicluster.hostexec HOSTNAME -- COMMAND [ARGS...]")
    socket.sethostname(argv[0])
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
