"""The real-package corpus: which Debian 12 packages, why, and their cached local apt repository.

Each package is there for a feature of dpkg/apt that layering has to reproduce
(see ``why``); ``check`` is a command that shows the package's program runs.
Everything fetched is kept under :data:`CACHE` (``$STRATA_TEST_CACHE``, else
``~/.cache/strata-tests``), so the tests need no network after the first run::

    CACHE/corpus/
      minbase.tar          mmdebstrap --variant=minbase of the machine's own apt sources
      debs/                every corpus package and the dependencies apt would add to minbase
      repo/                dists/stable/main/binary-amd64/{Packages,Release} over debs/ (pool)
      stamp                the corpus names the repository was built for
      apt-KEY/PKG.{tar,json}  apt's side per package (upper layer, seconds), the oracle's
                           result for this repository, minbase and harness (KEY)

The mirror is whatever this machine's apt is configured with, read at run time.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.util import run

CACHE = Path(os.environ.get("STRATA_TEST_CACHE", "~/.cache/strata-tests")).expanduser() / "corpus"


@dataclass(frozen=True)
class CorpusPackage:
    """One package of the corpus: its name, the features it exercises, a command that runs it."""

    name: str
    why: str
    check: tuple[str, ...]


CORPUS: tuple[CorpusPackage, ...] = (
    CorpusPackage("hello", "baseline: one binary, no scripts", ("hello", "--version")),
    CorpusPackage("tree", "baseline: one binary", ("tree", "--version")),
    CorpusPackage("jq", "new shared libraries: ldconfig trigger", ("jq", "--version")),
    CorpusPackage("less", "update-alternatives (pager)", ("less", "--version")),
    CorpusPackage("nano", "update-alternatives (editor), conffile /etc/nanorc",
                  ("nano", "--version")),
    CorpusPackage("vim-tiny", "update-alternatives (vi, ex, view, editor), Depends vim-common",
                  ("vim.tiny", "--version")),
    CorpusPackage("gawk", "update-alternatives over the base's mawk (higher priority wins: awk)",
                  ("awk", "--version")),
    CorpusPackage("curl", "many shared libraries, Recommends ca-certificates via libcurl4",
                  ("curl", "--version")),
    CorpusPackage("ca-certificates", "debconf (noninteractive), its own trigger, /etc/ssl/certs",
                  ("sh", "-c", "grep -q 'BEGIN CERT' /etc/ssl/certs/ca-certificates.crt")),
    CorpusPackage("openssh-server", "adduser (sshd), ucf conffile, debconf, systemd enablement, "
                  "tmpfiles, host keys, Recommends", ("sshd", "-V")),
    CorpusPackage("nginx", "postinst chown root:adm /var/log/nginx, conffiles, systemd "
                  "enablement, /var/lib/nginx", ("nginx", "-v")),
    CorpusPackage("cron", "addgroup crontab, dpkg-statoverride (setgid crontab), "
                  "/var/spool/cron, Pre-Depends, systemd enablement",
                  ("sh", "-c", "crontab -l 2>&1 | grep -q 'no crontab'")),
    CorpusPackage("rsyslog", "/var/log files by postinst, systemd enablement, Recommends "
                  "logrotate", ("rsyslogd", "-v")),
    CorpusPackage("logrotate", "/var/lib/logrotate, systemd timer enablement",
                  ("logrotate", "--version")),
    CorpusPackage("sudo", "tmpfiles.d (sudo.conf), conffile /etc/sudoers mode 0440",
                  ("sudo", "-V")),
    CorpusPackage("git", "large: perl, Recommends (less, patch, openssh-client)",
                  ("git", "--version")),
    CorpusPackage("man-db", "man-db trigger, debconf, /var/cache/man owned by man, timer",
                  ("man", "--version")),
    CorpusPackage("fontconfig", "fontconfig trigger (fc-cache), fonts", ("fc-list",)),
    CorpusPackage("dbus", "system user messagebus, dpkg-statoverride (launch helper 4754), "
                  "Pre-Depends, systemd", ("dbus-daemon", "--version")),
    CorpusPackage("systemd-timesyncd", "systemd itself (sysusers, tmpfiles, daemon-reload), "
                  "virtual time-daemon", ("timedatectl", "--version")),
    CorpusPackage("chrony", "adduser _chrony, Conflicts time-daemon, systemd enablement",
                  ("chronyd", "--version")),
    CorpusPackage("postfix", "debconf (noninteractive) heavy postinst, adduser postfix, "
                  "groups postdrop, statoverride, Provides mail-transport-agent",
                  ("postconf", "-d", "mail_version")),
    CorpusPackage("bsd-mailx", "Depends default-mta | mail-transport-agent (A | B and a "
                  "virtual): exim4, its debconf and user", ("exim4", "-bV")),
    CorpusPackage("python3", "py3compile in postinst (bytecode), alternatives",
                  ("python3", "-c", "import json")),
    CorpusPackage("file", "libmagic, shared libraries", ("file", "/bin/sh")),
    CorpusPackage("shared-mime-info", "mime trigger (update-mime-database)",
                  ("update-mime-database", "-v")),
    CorpusPackage("locales", "debconf, locale-gen, conffile /etc/locale.gen",
                  ("locale", "-a")),
    CorpusPackage("iproute2", "conffiles under /etc/iproute2, file capabilities", ("ip", "-V")),
    CorpusPackage("iputils-ping", "setcap in postinst (security.capability xattr)",
                  ("ping", "-V")),
    CorpusPackage("ufw", "debconf, ucf, python3, iptables update-alternatives "
                  "(debconf | debconf-2.0)", ("ufw", "version")),
    CorpusPackage("apache2-utils", "plain tools with libapr", ("htpasswd", "-nb", "a", "b")),
    CorpusPackage("plocate", "addgroup plocate, setgid binary, systemd timer",
                  ("plocate", "--version")),
    CorpusPackage("uuid-runtime", "adduser uuidd, Pre-Depends, systemd socket enablement",
                  ("uuidgen",)),
    CorpusPackage("molly-guard", "dpkg-divert of shutdown/halt/reboot",
                  ("sh", "-c", "test -x /usr/lib/molly-guard/molly-guard")),
    CorpusPackage("at", "daemon user, /var/spool/cron/atjobs, Recommends default-mta | "
                  "mail-transport-agent", ("sh", "-c", "atq")),
)
NAMES = tuple(p.name for p in CORPUS)
SOURCE_PARTS = "/etc/apt/sources.list.d"


def _stamp() -> str:
    return hashlib.sha256(" ".join(NAMES).encode()).hexdigest()


def minbase_tar() -> Path:
    """``mmdebstrap --variant=minbase`` of bookworm from this machine's apt sources (cached)."""
    tar = CACHE / "minbase.tar"
    if tar.exists():
        return tar
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "minbase-tmp.tar"
    sources = [*sorted(glob.glob(f"{SOURCE_PARTS}/*.sources")),
               *sorted(glob.glob(f"{SOURCE_PARTS}/*.list")), "/etc/apt/sources.list"]
    run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "bookworm", tmp,
         *[s for s in sources if os.path.getsize(s) if os.path.exists(s)]], timeout=1800)
    tmp.rename(tar)
    return tar


def _apt_options(state: Path, debs: Path) -> list[str]:
    """apt-get options: the machine's sources and lists, minbase's dpkg status, our archive."""
    return ["-o", f"Dir::State::status={state / 'status'}", "-o", f"Dir::Cache::archives={debs}",
            "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
            "-o", "Debug::NoLocking=1", "-o", "APT::Get::Download-Only=true"]


def _download(tar: Path, debs: Path) -> None:
    """Each corpus package with what ``apt-get install`` would add to minbase (one by one, so
    conflicting packages such as postfix and exim4 each get their own dependencies)."""
    state = CACHE / "state"
    state.mkdir(exist_ok=True)
    run(["tar", "-C", state, "-xf", tar, "--strip-components=4", "./var/lib/dpkg/status"])
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        run(["apt-get", "install", "-y", "-q", *_apt_options(state, debs), name],
            timeout=1800, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    shutil.rmtree(state)


def local_repo() -> Path:
    """The local apt repository (``deb [trusted=yes] URL stable main``) of the corpus (cached)."""
    tar = minbase_tar()
    repo, debs = CACHE / "repo", CACHE / "debs"
    stamp = CACHE / "stamp"
    if stamp.exists() and stamp.read_text() == _stamp() and (repo / "dists").is_dir():
        return repo
    _download(tar, debs)
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "dists/stable/main/binary-amd64").mkdir(parents=True)
    (repo / "pool").symlink_to(debs)
    packages = run(["apt-ftparchive", "packages", "pool/"], cwd=repo).stdout
    (repo / "dists/stable/main/binary-amd64/Packages").write_text(packages)
    release = run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Suite=stable",
                   "-o", "APT::FTPArchive::Release::Codename=stable",
                   "-o", "APT::FTPArchive::Release::Architectures=amd64",
                   "-o", "APT::FTPArchive::Release::Components=main",
                   "release", "dists/stable"], cwd=repo).stdout
    (repo / "dists/stable/Release").write_text(release)
    stamp.write_text(_stamp())
    return repo


HARNESS = "1"  # bump when the apt side changes (policy-rc.d, tmpfiles pass, ...)


def apt_results() -> Path:
    """Where apt's results for the current repository and minbase are kept
    (``$STRATA_CORPUS_APT=fresh`` re-runs apt-get and replaces them)."""
    tar = minbase_tar()
    key = hashlib.sha256(f"{HARNESS} {_stamp()} {tar.stat().st_size} {tar.stat().st_mtime_ns}"
                         .encode()).hexdigest()[:16]
    path = CACHE / f"apt-{key}"
    if os.environ.get("STRATA_CORPUS_APT") == "fresh":
        shutil.rmtree(path, ignore_errors=True)
    return path
