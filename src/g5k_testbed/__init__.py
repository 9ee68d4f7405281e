"""A Grid'5000 site in a box: the REST API, OAR, Kadeploy and KaVLAN, and real nodes on this machine.

This package never imports vm5k: the two meet over HTTP and SSH, exactly like vm5k and Grid'5000.
"""

__version__ = "1.0.0.dev0"
