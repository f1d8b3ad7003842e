"""``/var`` content of a composed image, described for a stateroot that already exists.

Deploy copies an image's ``/var`` only into a fresh stateroot; an existing one
keeps its own, so everything the packages *and their scripts* put under
``/var`` is also written as ``usr/lib/tmpfiles.d`` lines, read after the
scripts ran so that they carry the owner and mode the scripts left (nginx's
postinst ``chown root:adm /var/log/nginx``):

- ``d /var/DIR MODE UID GID - -`` for a directory new or changed against the base;
- ``C /var/FILE - - - - /usr/share/factory/var/FILE`` for a new or changed file
  (the factory copy has the final content, mode and owner; tmpfiles copies it
  only when the file does not exist yet);
- ``L /var/LINK - - - - TARGET`` for a symlink.

Lines go to ``strata-pkg-NAME.conf`` for paths package NAME ships, and to
``strata-scripts.conf`` for paths only scripts made.  The package databases'
places (``var/lib/dpkg``, ``var/lib/rpm``: symlinks into ``/usr``) are left out.

Host identity under ``/var`` (:data:`HOST_IDENTITY`: D-Bus's machine ID, which
``dbus-uuidgen --ensure`` makes in dbus's postinst) is the host's, never an ID
made during a compose: the file is dropped from the image and gets no line, so
dbus's own ``L /var/lib/dbus/machine-id - - - - /etc/machine-id`` links it to the
host's ``/etc/machine-id`` at boot (as on ostree and image-built hosts).
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable, Iterator

from importers.model import PackageMeta
from layering.assemble import runtime_path
from layering.convert import DB_MOVES
from store.mtree import MutableTree
from store.objects import FileMeta
from store.txn import Transaction

SCRIPTS_CONF = "usr/lib/tmpfiles.d/strata-scripts.conf"
PKG_CONF = "usr/lib/tmpfiles.d/strata-pkg-{}.conf"
FACTORY = "usr/share/factory"
HOST_IDENTITY = ("var/lib/dbus/machine-id",)
SKIP = (*(old for old, _new, _link in DB_MOVES), *HOST_IDENTITY)


def _changed(base: MutableTree | None, final: MutableTree, rel: str,
             ) -> Iterator[tuple[str, str | MutableTree]]:
    """Paths below ``rel`` of ``final`` that ``base`` lacks or holds differently."""
    for name in sorted(final.dirs):
        path = f"{rel}/{name}"
        if path in SKIP:
            continue
        child = final.dirs[name]
        old = base.dirs.get(name) if base is not None else None
        if old is None or old.meta != child.meta:
            yield path, child
        yield from _changed(old, child, path)
    for name in sorted(final.files):
        path = f"{rel}/{name}"
        if path not in SKIP and (base is None or base.files.get(name) != final.files[name]):
            yield path, final.files[name]


def var_lines(base: MutableTree | None, tree: MutableTree,
              file_meta: Callable[[str], FileMeta]) -> dict[str, str]:
    """``/var`` path -> its tmpfiles line, writing the factory copies into ``tree``."""
    var = tree.lookup("var")
    if not isinstance(var, MutableTree):
        return {}
    old = base.lookup("var") if base is not None else None
    lines = {}
    for rel, node in _changed(old if isinstance(old, MutableTree) else None, var, "var"):
        if isinstance(node, MutableTree):
            m = node.meta
            lines[rel] = f"d /{rel} {stat.S_IMODE(m.mode):04o} {m.uid} {m.gid} - -"
        elif file_meta(node).is_symlink:
            lines[rel] = f"L /{rel} - - - - {file_meta(node).symlink}"
        else:
            tree.ensure_dir(f"{FACTORY}/{rel}".rpartition("/")[0])
            tree.set_file(f"{FACTORY}/{rel}", node)
            lines[rel] = f"C /{rel} - - - - /{FACTORY}/{rel}"
    return lines


def write_var_tmpfiles(base: MutableTree | None, tree: MutableTree, txn: Transaction,
                       added: Iterable[PackageMeta],
                       file_meta: Callable[[str], FileMeta]) -> list[str]:
    """Write the tmpfiles.d snippets for ``tree``'s ``/var`` (see the module docstring),
    after dropping :data:`HOST_IDENTITY` files from it; return the paths written."""
    for rel in HOST_IDENTITY:
        node = tree.lookup(rel)
        if isinstance(node, str) and not file_meta(node).is_symlink:
            tree.remove(rel)
    owner = {runtime_path(f.path): p.name for p in added for f in p.files}
    groups: dict[str, list[str]] = {}
    for rel, line in sorted(var_lines(base, tree, file_meta).items()):
        name = owner.get(rel)
        conf = PKG_CONF.format(name) if name else SCRIPTS_CONF
        groups.setdefault(conf, []).append(line)
    if groups:
        tree.ensure_dir("usr/lib/tmpfiles.d")
    for conf, lines in groups.items():
        what = conf.rpartition("/")[2].removeprefix("strata-pkg-").removesuffix(".conf")
        head = ("# /var content made by maintainer scripts, written by strata\n"
                if conf == SCRIPTS_CONF else f"# /var content of package {what}, made by strata\n")
        body = head + "".join(line + "\n" for line in lines)
        tree.set_file(conf, txn.write_file(FileMeta(0, 0, stat.S_IFREG | 0o644), body.encode()))
    return sorted(groups)
