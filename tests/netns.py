"""Private "hosts" for tests: one network namespace per host, all joined by
a bridge, each process started with a host name of its own.

Layout of a :class:`Lab` (``TAG`` is ``c4h<pid of the test process>``)::

    root namespace (the test)          TAG-sw (switch)          TAG-<host>
    veth TAG-r  10.213.N.254/24  ----  br0  ----  veth eth0  10.213.N.<i>/24

* ``TAG-sw`` holds only the bridge ``br0``; every host namespace has one
  veth (``eth0`` inside, its peer a port of ``br0``) and ``lo`` up.
* The root namespace gets one more port (veth ``TAG-r``, address ``.254``)
  so that the test itself reaches the hosts; it has no default route into
  them, and they have none out: traffic stays on the test's links.
* ``N`` is the first third octet in ``10.213.0.0/16`` that no address or
  route of the root namespace uses (see :func:`pick_subnet`).
* A host's processes run as ``ip netns exec NS unshare --uts sh -c
  'hostname H && exec ...'``: own network and host name, shared file
  system and pid space (so the test sees their pids).

:meth:`Lab.close` kills every process in the lab's namespaces and deletes
them (the veths go with them); :func:`remove_stale` deletes what a killed
earlier run left behind. Everything needs root: :func:`require_netns`
fails the test with a clear message otherwise.
"""

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import time

import psutil
import pytest

#: the /16 the labs take their /24 from (an unusual private range)
PREFIX = "10.213"
#: third octets tried, in order, starting at an offset of the test's pid
OCTETS = range(20, 250)
_TAG = re.compile(r"^c4h(\d+)-")


def ip(*args, check=True):
    """Run ``ip ARGS``; return its stdout. With ``check`` a failure raises
    an AssertionError showing the command and its stderr."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True,
                          timeout=30)
    if check and done.returncode:
        raise AssertionError("ip %s failed (%d): %s" % (
            " ".join(args), done.returncode, done.stderr.strip()))
    return done.stdout


def require_netns():
    """Fail (not skip) unless this process may create network namespaces:
    the multi-host test is worthless if it silently does not run."""
    problem = None
    if os.geteuid() != 0:
        problem = "it runs as uid %d, not root" % os.geteuid()
    else:
        try:
            done = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                  text=True, timeout=30)
            if done.returncode:
                problem = "'ip netns list' failed: %s" % done.stderr.strip()
        except OSError as exc:
            problem = "'ip' cannot be run: %s" % exc
    if problem:
        pytest.fail("tests/test_hosts.py builds hosts out of network "
                    "namespaces (ip netns, veth, unshare --uts) and needs "
                    "root, but %s. Run it as root (or in a container with "
                    "CAP_SYS_ADMIN and CAP_NET_ADMIN)." % problem,
                    pytrace=False)


def used_networks():
    """IPv4 networks of the root namespace's addresses and routes."""
    found = []
    for line in ip("-o", "-4", "addr", "show").splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            found.append(ipaddress.ip_interface(match.group(1)).network)
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        for word in line.split()[:2]:  # "10.0.0.0/8 ..." or "local 10.1 .."
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_network(word, strict=False))
                break
    return found


def pick_subnet():
    """Return the first free ``10.213.N`` (as a string prefix) whose /24
    overlaps nothing in :func:`used_networks` (``default`` routes do not
    count: they do not claim the range)."""
    used = [net for net in used_networks() if net.prefixlen > 0]
    start = os.getpid() % len(OCTETS)
    for octet in list(OCTETS)[start:] + list(OCTETS)[:start]:
        net = ipaddress.ip_network("%s.%d.0/24" % (PREFIX, octet))
        if not any(net.overlaps(other) for other in used):
            return "%s.%d" % (PREFIX, octet)
    raise AssertionError("no free /24 in %s.0.0/16" % PREFIX)


def namespace_pids(ns):
    """Pids of all processes whose network namespace is ``ns``."""
    out = ip("netns", "pids", ns, check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def kill_namespace(ns, timeout=30):
    """SIGKILL every process in namespace ``ns`` until none is left (a
    process may fork while the others die, so this repeats)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = namespace_pids(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise AssertionError("processes %s in %s survive SIGKILL" % (
                pids, ns))
        time.sleep(0.05)


def remove_stale():
    """Delete namespaces (and their processes) of earlier labs whose test
    process is gone (a run killed before its finalizer)."""
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        match = _TAG.match(name)
        if match and not psutil.pid_exists(int(match.group(1))):
            kill_namespace(name)
            ip("netns", "del", name, check=False)
            ip("link", "del", "c4h%s-r" % match.group(1), check=False)


class Host:
    """One host of a :class:`Lab`: its namespace, address and name."""

    def __init__(self, lab, key, ns, address, hostname):
        self.lab = lab
        self.key = key
        self.ns = ns
        self.address = address
        self.hostname = hostname

    def spawn(self, argv, env, log_path, cwd=None):
        """Start ``argv`` on this host (own session, output to
        ``log_path``); return the :class:`subprocess.Popen`. ``ip netns
        exec``, ``unshare`` and ``sh`` each exec the next, so the pid is
        that of ``argv`` itself."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh",
                 "-c", 'hostname "$0" && exec "$@"', self.hostname, *argv],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                stdin=subprocess.DEVNULL, start_new_session=True)
        self.lab.procs.append(proc)
        return proc

    def run(self, argv, env, cwd=None, timeout=90):
        """Run ``argv`` on this host to its end; return the
        :class:`subprocess.CompletedProcess` (text output)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c",
             'hostname "$0" && exec "$@"', self.hostname, *argv],
            env=env, capture_output=True, text=True, timeout=timeout,
            cwd=cwd, stdin=subprocess.DEVNULL)

    def pids(self):
        """Pids of the processes running on this host."""
        return namespace_pids(self.ns)

    def kill_all(self):
        """SIGKILL everything on this host: the host "dies"."""
        kill_namespace(self.ns)

    def __repr__(self):
        return "<Host %s %s %s>" % (self.hostname, self.ns, self.address)


class Lab:
    """A switch namespace and host namespaces on one /24 (see the module
    docstring); :meth:`close` removes all of it."""

    def __init__(self):
        self.tag = "c4h%d" % os.getpid()
        self.switch = "%s-sw" % self.tag
        self.root_link = "%s-r" % self.tag
        self.subnet = None
        self.hosts = {}
        self.procs = []
        self.namespaces = []

    def start(self):
        """Create the switch and the root namespace's port."""
        remove_stale()
        self.close()  # leftovers of an earlier lab of this very process
        self.subnet = pick_subnet()
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        ip("link", "add", self.root_link, "type", "veth", "peer", "name",
           "root", "netns", self.switch)
        self._plug("root")
        ip("addr", "add", "%s.254/24" % self.subnet, "dev", self.root_link)
        ip("link", "set", self.root_link, "up")
        return self

    def _add_namespace(self, ns):
        self.namespaces.append(ns)
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def _plug(self, port):
        ip("-n", self.switch, "link", "set", port, "master", "br0")
        ip("-n", self.switch, "link", "set", port, "up")

    def add_host(self, key, index, hostname):
        """Create host ``key`` (namespace ``TAG-key``) with address
        ``10.213.N.index`` and host name ``hostname``; return it."""
        ns = "%s-%s" % (self.tag, key)
        address = "%s.%d" % (self.subnet, index)
        self._add_namespace(ns)
        port = "p%d" % index
        ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
           port, "netns", self.switch)
        self._plug(port)
        ip("-n", ns, "addr", "add", "%s/24" % address, "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        host = self.hosts[key] = Host(self, key, ns, address, hostname)
        return host

    def close(self):
        """Kill every process of the lab, delete its namespaces and links
        (errors are ignored: this runs after failures too)."""
        for proc in self.procs:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        for ns in reversed(self.namespaces):
            with contextlib.suppress(AssertionError):
                kill_namespace(ns, timeout=10)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        ip("link", "del", self.root_link, check=False)
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        self.namespaces = []
        self.procs = []
        self.hosts = {}
