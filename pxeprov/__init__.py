"""pxeprov: a proxyDHCP + TFTP network-boot server next to the DHCP server you have."""

__version__ = "0.1.0"
