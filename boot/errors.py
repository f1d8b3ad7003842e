"""Errors of the boot layer: sysroot layout, deployments, boot entries, /etc merge."""

from store.errors import ToolError


class BootError(ToolError):
    """Something about the sysroot or its boot configuration is wrong."""


class SysrootError(BootError):
    """The sysroot layout is missing or inconsistent."""


class DeploymentError(BootError):
    """A deployment could not be made, found or changed."""


class KernelError(DeploymentError):
    """A tree has no usable kernel (or initramfs)."""


class OriginError(BootError):
    """A deployment's .origin keyfile is unreadable or malformed."""


class BlsError(BootError):
    """A Boot Loader Spec entry is malformed."""


class EtcMergeError(DeploymentError):
    """User changes to /etc cannot be carried onto the new image's /etc."""
