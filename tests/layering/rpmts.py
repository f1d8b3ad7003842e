"""``rpm -U`` of package files and ``rpm -e`` of package names in ONE librpm transaction,
as dnf runs one (the rpm command line cannot mix them): the oracle for a compose that
layers and removes at once.  Run by the system's python3 with its ``rpm`` bindings
(Debian's python3-rpm, librpm 4.18)::

    python3 rpmts.py ROOT DBPATH FILE.rpm... -NAME...
"""

import os
import sys

import rpm


def main(root: str, dbpath: str, args: list[str]) -> int:
    rpm.addMacro("_dbpath", dbpath)
    ts = rpm.TransactionSet(root)
    ts.setVSFlags(rpm.RPMVSF_MASK_NOSIGNATURES | rpm.RPMVSF_MASK_NODIGESTS)
    for path in (a for a in args if not a.startswith("-")):
        fd = os.open(path, os.O_RDONLY)
        try:
            ts.addInstall(ts.hdrFromFdno(fd), path, "u")
        finally:
            os.close(fd)
    for name in (a[1:] for a in args if a.startswith("-")):
        ts.addErase(name)
    if ts.check():
        print(ts.problems(), file=sys.stderr)
        return 1
    ts.order()
    fds: dict[str, int] = {}

    def callback(reason: int, _amount: int, _total: int, key: str, _data: object) -> int | None:
        if reason == rpm.RPMCALLBACK_INST_OPEN_FILE:
            fds[key] = os.open(key, os.O_RDONLY)
            return fds[key]
        if reason == rpm.RPMCALLBACK_INST_CLOSE_FILE:
            os.close(fds.pop(key))
        return None

    return 1 if ts.run(callback, "") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
