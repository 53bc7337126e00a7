"""``python -m meshcore_node``: the same as ``meshcore node``."""

from meshcore_node.cli import node_command

node_command(prog_name="meshcore node")
