"""The testbed's real nodes: network namespaces with their own sshd and libvirtd, site networks, guest images.

`vm5k-testbed up` builds them (`lab.lab.Lab`), the API server reaches them through `LabBackend`
(`lab.backend`), and `vm5k-testbed image` builds the guest image (`lab.image`). Everything runs as root on
this machine; nothing here is reachable from the machine's root network namespace except through the SSH
configuration the testbed writes (see docs/testbed.md).
"""
