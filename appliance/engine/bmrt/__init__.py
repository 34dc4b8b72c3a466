"""The bmrt engine: ctypes over libbmrt/libbmlib (libsophon on a device, the x86 cmodel here)."""
