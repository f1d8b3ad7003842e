"""strata's resolution against apt's: ``apt-get install -s NAME`` over a real minbase's dpkg
status and the real Debian 12 ``main`` index, for well over a hundred packages.

Only resolution: no package is downloaded.  The minbase, the index (from the mirror this
machine's apt uses) and apt's answers are kept in the test cache
(:func:`tests.layering.realworld.cache_root`); strata answers afresh every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layering.aptoracle import Answer, AptOracle, query_key
from tests.layering.realworld import cache_root, main_index, minbase_status
from tests.util import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# chosen to cover Recommends, `A | B` alternatives, virtual packages (requested and as
# dependencies), Pre-Depends, Conflicts/Breaks and packages that apt refuses
NAMES = """
nginx nginx-common apache2 curl wget git vim vim-tiny vim-nox nano emacs emacs-nox less
openssh-server openssh-client sudo python3 python3-pip python3-venv python3-dev perl
build-essential gcc make cmake rsync tmux screen htop jq zsh fish bash-completion man-db
locales tzdata ca-certificates gnupg dirmngr postfix exim4 sendmail courier-mta mailutils
bsd-mailx cron anacron rsyslog logrotate systemd dbus udev iproute2 iputils-ping net-tools
bind9-dnsutils netcat-openbsd socat tcpdump strace gdb file unzip zip p7zip-full zstd sqlite3
postgresql-client mariadb-client redis-tools php-cli ruby nodejs default-jre-headless
fontconfig fontconfig-config imagemagick ghostscript graphviz docker.io podman qemu-utils
parted lvm2 mdadm cryptsetup nfs-common cifs-utils openvpn wireguard-tools iptables nftables
ufw fail2ban apparmor auditd chrony ntpsec sysstat lsof smartmontools ifupdown
isc-dhcp-client wpasupplicant avahi-daemon libssl-dev pkg-config autoconf automake libtool
debhelper dpkg-dev fakeroot aptitude unattended-upgrades needrestart mutt lynx w3m mc
moreutils ripgrep shellcheck certbot haproxy squid bind9 dnsmasq slapd krb5-user
mail-transport-agent default-mta awk editor www-browser x-terminal-emulator c-compiler
debconf-2.0 no-such-package-anywhere
""".split()
NO_RECOMMENDS = """
nginx git vim emacs-nox mailutils exim4 imagemagick default-jre-headless ghostscript cron
postfix python3-pip
""".split()

# where strata differs from apt on purpose or cannot know apt's tie-break
INACTIVE = {"awk", "debconf-2.0"}  # a base package provides it: strata's inactive request,
# as rpm-ostree (apt refuses every virtual name with several providers, installed or not)
KERNEL_TIE = {"wireguard-tools"}  # Recommends wireguard-modules, which many kernel images
# provide: apt breaks the tie by its cache's internal package order


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> AptOracle:
    require_tool("apt-get", "apt-ftparchive", "mmdebstrap")
    return AptOracle(tmp_path_factory.mktemp("apt"), minbase_status(), main_index())


def _same(apt: Answer, strata: Answer) -> bool:
    return apt.install == strata.install and bool(apt.error) == bool(strata.error)


def test_strata_resolves_like_apt_for_real_packages(oracle: AptOracle) -> None:
    queries = [(n, True) for n in NAMES] + [(n, False) for n in NO_RECOMMENDS]
    assert len(queries) >= 100
    apt = oracle.apt_cached(queries, cache_root() / "bookworm" / "apt-answers.json")
    universe = oracle.universe(cache_root() / "bookworm" / "solv")
    differ = []
    for name, recommends in queries:
        a = apt[query_key(name, recommends)]
        s = AptOracle.strata(universe, name, recommends=recommends)
        if name in INACTIVE:
            ok = bool(a.error) and not s.error and not s.install
        elif name in KERNEL_TIE:
            kernels = {p for p in a.install + s.install if p.startswith("linux-image-")}
            ok = (set(a.install) - kernels == set(s.install) - kernels
                  and any(p.startswith("linux-image-") for p in s.install))
        else:
            ok = _same(a, s)
        if not ok:
            differ.append(f"{query_key(name, recommends)}: apt only "
                          f"{sorted(set(a.install) - set(s.install))} {a.error}; strata only "
                          f"{sorted(set(s.install) - set(a.install))} {s.error}")
    assert not differ, f"{len(differ)} of {len(queries)} differ:\n" + "\n".join(differ)


def test_alternatives_follow_apt(oracle: AptOracle) -> None:
    """`fonts-dejavu-core | ... | fonts-croscore`: the first one, as apt."""
    u = oracle.universe(cache_root() / "bookworm" / "solv")
    got = AptOracle.strata(u, "fontconfig-config").install
    assert "fonts-dejavu-core" in got and "fonts-croscore" not in got
    emacs = AptOracle.strata(u, "emacs-nox").install
    assert "exim4-daemon-light" in emacs
    assert not {"courier-mta", "tcl", "expect"} & set(emacs)


def test_a_virtual_package_with_several_providers_is_refused(oracle: AptOracle) -> None:
    u = oracle.universe(cache_root() / "bookworm" / "solv")
    ans = AptOracle.strata(u, "mail-transport-agent")
    assert not ans.install
    assert "virtual package provided by" in ans.error
    assert "exim4-daemon-light" in ans.error and "postfix" in ans.error
    apt = oracle.apt("mail-transport-agent")
    assert apt.error and not apt.install


def test_a_virtual_package_with_one_provider_is_that_provider(oracle: AptOracle,
                                                              tmp_path: Path) -> None:
    u = oracle.universe(cache_root() / "bookworm" / "solv")
    apt = oracle.apt("default-mta")
    assert "exim4-daemon-light" in apt.install
    assert AptOracle.strata(u, "default-mta").install == apt.install
