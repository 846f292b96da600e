#!/usr/bin/env python3
"""Profiling side measurements for issue 18 (standard library only): where a proxied request's CPU goes.

Owns starting its own nginx upstream, nginx-as-proxy and router on free 127.0.0.1 ports (from bench/*.in and
bench/router.yaml), loading them with oha, and reading CPU from /proc. Must not write BENCHMARKS.md (that is
bench/run.sh and bench/report.py) nor send traffic anywhere but 127.0.0.1. Needs what bench/run.sh installs
(nginx, bench/tools/bin/oha) and a release build of the router; `callgrind` also needs valgrind.

  profile.py share [SECONDS] [ROUNDS]   every process's CPU a request at saturation (oha -c 64), through
                                        nginx-as-proxy and through the router, in alternating rounds
  profile.py callgrind [REQUESTS]       the router's instructions a request under callgrind (one keep-alive
                                        connection, after 200 warm-up requests): the whole process, the
                                        serving path, and the functions with the most instructions of their own

The router binary is $ROUTER, else $CARGO_TARGET_DIR/release/router, else target/release/router.
PROFILE_KEEP=1 keeps the temporary directory (configs, logs, the callgrind dump) and prints its path.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tool  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OHA = os.path.join(ROOT, "bench", "tools", "bin", "oha")
BODY = '{"model":"bench-model","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
HZ = os.sysconf("SC_CLK_TCK")


def router_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    path = os.environ.get("ROUTER") or os.path.join(target, "release", "router")
    if not os.access(path, os.X_OK):
        sys.exit(f"no router binary at {path} (cargo build --release --bin router, or set ROUTER)")
    return path


class Servers:
    """nginx (upstream), nginx-as-proxy (2 workers) and, when asked, a router; all stopped on exit."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="router-profile-")
        self.procs = []
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(self.nginx, os.X_OK) or not os.access(OHA, os.X_OK):
            sys.exit("nginx or bench/tools/bin/oha is missing: bash bench/run.sh installs both")
        self.upstream_port, self.proxy_port = tool.freeport(), tool.freeport()
        self.upstream = self._nginx("up", "nginx.conf.in", {"PORT": self.upstream_port})
        subs = {"PORT": self.proxy_port, "UPSTREAM": self.upstream_port, "MOCK": tool.freeport(), "WORKERS": 2}
        self.proxy = self._nginx("px", "nginx-proxy.conf.in", subs)

    def _nginx(self, name, template, subs):
        prefix = os.path.join(self.dir, name)
        os.makedirs(prefix)
        text = open(os.path.join(ROOT, "bench", template)).read().replace("@PREFIX@", prefix)
        for k, v in subs.items():
            text = text.replace(f"@{k}@", str(v))
        conf = os.path.join(prefix, "nginx.conf")
        open(conf, "w").write(text)
        p = subprocess.Popen([self.nginx, "-p", prefix, "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
        self.procs.append(p)
        if not tool.wait_port(subs["PORT"], 30):
            sys.exit(f"nginx ({name}) did not start")
        return p

    def router(self, cmd_prefix=(), port=None):
        port = port or tool.freeport()
        env = dict(os.environ, BENCH_NGINX_PORT=str(self.upstream_port), BENCH_MOCK_PORT=str(tool.freeport()))
        store = os.path.join(self.dir, f"router-{port}.redb")
        cmd = [*cmd_prefix, router_bin(), "serve", "--config", os.path.join(ROOT, "bench", "router.yaml"),
               "--store", store, "--listen", f"127.0.0.1:{port}"]
        log = open(os.path.join(self.dir, f"router-{port}.log"), "w")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        self.procs.append(p)
        if not tool.wait_port(port, 120):
            sys.exit(f"the router did not start (see {log.name})")
        return p, port

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p in (self.upstream, self.proxy) else signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("PROFILE_KEEP"):
            print(f"(kept {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def oha(port, *args):
    cmd = [OHA, "--no-tui", "--output-format", "json", *args, "-m", "POST", "-H", "content-type: application/json",
           "-H", "authorization: Bearer sk-bench-fake", "-d", BODY, f"http://127.0.0.1:{port}/v1/chat/completions"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    r = json.loads(out)
    return sum(r["statusCodeDistribution"].values()), r


def process_times(names):
    """CPU ticks (user, system) of every process, keyed by a readable name (`names`: pid -> name)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        f = s[s.rindex(")") + 2:].split()
        pid, ppid = int(d), int(f[1])
        name = names.get(pid) or names.get(ppid) or comm
        u, t = out.get((pid, name), (0, 0))
        out[(pid, name)] = (u + int(f[11]), t + int(f[12]))
    return out


def machine_ticks():
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], fields[3]


def share(seconds=8, rounds=2):
    servers = Servers()
    try:
        router, router_port = servers.router()
        names = {servers.upstream.pid: "upstream nginx", servers.proxy.pid: "nginx-as-proxy",
                 router.pid: "router"}
        targets = [("nginx-as-proxy", servers.proxy_port), ("router", router_port)]
        for _, port in targets:
            oha(port, "-z", "2s", "-c", "64")  # warm-up
        for i in range(rounds):
            for label, port in targets:
                before, (busy0, idle0) = process_times(names), machine_ticks()
                kids0 = os.times()
                n, r = oha(port, "-z", f"{seconds}s", "-c", "64")
                kids1 = os.times()
                after, (busy1, idle1) = process_times(names), machine_ticks()
                per = {}
                for key, (u, t) in after.items():
                    u0, t0 = before.get(key, (0, 0))
                    if (u - u0) + (t - t0) > 0:
                        x = per.setdefault(key[1], [0, 0])
                        x[0] += u - u0
                        x[1] += t - t0
                per["load generator (oha)"] = [(kids1.children_user - kids0.children_user) * HZ,
                                               (kids1.children_system - kids0.children_system) * HZ]
                us = lambda ticks: ticks / HZ / n * 1e6  # noqa: E731
                rps = r["summary"]["requestsPerSec"]
                idle = (idle1 - idle0) / max(1, (busy1 - busy0) + (idle1 - idle0)) * 100
                print(f"round {i + 1}, through {label}: {rps:,.0f} requests/s; whole machine "
                      f"{us(busy1 - busy0):.1f} us a request (idle {idle:.1f}%)")
                for name, (u, t) in sorted(per.items(), key=lambda kv: -sum(kv[1]))[:6]:
                    print(f"  {name:24s} {us(u + t):6.2f} us  (user {us(u):5.2f}, system {us(t):5.2f})")
    finally:
        servers.stop()


def callgrind(requests=1000):
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing (apt-get install valgrind)")
    servers = Servers()
    out = os.path.join(servers.dir, "callgrind.out")
    try:
        port = tool.freeport()
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--instr-atstart=no"]
        router, _ = servers.router(vg, port)
        oha(port, "-n", "200", "-c", "1")
        subprocess.run(["callgrind_control", "-i", "on", str(router.pid)], capture_output=True, check=True)
        oha(port, "-n", str(requests), "-c", "1")
        subprocess.run(["callgrind_control", "-i", "off", str(router.pid)], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-d", str(router.pid)], capture_output=True, check=True)
        dump = out + ".1"
        for _ in range(100):
            if os.path.exists(dump):
                break
            time.sleep(0.1)
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", dump], capture_output=True,
                              text=True).stdout
        total = re.search(r"([\d,]+) \([ \d.%]+\)\s+PROGRAM TOTALS", text)
        # The serving path is `h1::serve`'s inclusive count: the largest of its lines (callgrind names a function
        # once per file its inlined code came from, and once more by the path the build recorded).
        serving = max((int(c.replace(",", "")) for c in re.findall(
            r"^\s*([\d,]+) \([ \d.%]+\)\s+\S*proxy/h1\.rs:router::proxy::h1::serve::\{\{closure\}\}", text, re.M)),
            default=0)
        whole = int(total.group(1).replace(",", "")) if total else 0
        print(f"{requests} requests over one connection: {whole / requests:,.0f} instructions a request in the "
              f"whole process, {serving / requests:,.0f} on the serving path (proxy::h1::serve)")
        own = subprocess.run(["callgrind_annotate", dump], capture_output=True, text=True).stdout
        print("most instructions of their own, a request:")
        rows = re.findall(r"^\s*([\d,]+) \([ \d.%]+\)\s+(\S.*)$", own, re.M)
        for count, name in [r for r in rows if "PROGRAM TOTALS" not in r[1]][:20]:
            print(f"  {int(count.replace(',', '')) / requests:8,.0f}  {name.split(':', 1)[-1][:110]}")
    finally:
        servers.stop()


def main(argv):
    if len(argv) < 2 or argv[1] not in ("share", "callgrind"):
        sys.exit(__doc__)
    if argv[1] == "share":
        share(*(int(a) for a in argv[2:4]))
    else:
        callgrind(*(int(a) for a in argv[2:3]))


if __name__ == "__main__":
    main(sys.argv)
