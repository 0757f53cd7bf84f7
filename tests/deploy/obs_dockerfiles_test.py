"""Checks of deploy/*.Dockerfile that need no container engine.

No docker daemon runs where Polar is built and tested, so the images are
never built here. This parses each Dockerfile and checks, against the
repository and the build tree that scripts/build made, what a build would
otherwise find out late:

- base_images_pinned: every FROM names a tag (after ARG defaults), never
  latest, and the builder and the runtime of one image share a base family.
- copy_sources: every COPY/ADD source from the build context exists and is
  not excluded by .dockerignore.
- build_tree_paths: every path into the builder's build tree (cmake -B DIR)
  that a RUN or COPY --from names exists in POLAR_BUILD_DIR, e.g. the binaries.
- configure_from_context: the builder's COPYs, materialised in a temporary
  directory, configure with the Dockerfile's own cmake command; every
  `--target` it builds exists there and CMake used every -D option.
- runtime_packages: where the runtime stage installs Debian packages, they
  provide every shared library the shipped binary (built here, on the same
  Debian release) links directly, unless every Debian image has it.
- cmd_and_user: CMD/ENTRYPOINT run a binary from the build with flags it
  accepts, listen on the EXPOSEd ports, load the model file scripts/fetch-model
  fetches; the image runs as the numeric non-root user it creates.

Run through scripts/run-python-test (ctest: obs_dockerfiles). Environment:
POLAR_BUILD_DIR (the build tree), POLAR_DEFAULT_MODEL. Exits 77 when the
binaries are not built or cmake/ninja/dpkg are missing.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import obs_lib
from obs_lib import ROOT, Checks

DOCKERFILES = sorted(glob.glob(os.path.join(ROOT, "deploy", "*.Dockerfile")))


# ---- parsing ----

class Stage:
    def __init__(self, image, name, index):
        self.image = image
        self.name = name or str(index)
        self.workdir = "/"
        self.args = {}
        self.instructions = []  # (keyword, text, workdir at that point)


def parse_dockerfile(path):
    """(global ARG defaults, [Stage]) with line continuations joined."""
    with open(path) as f:
        raw = f.read()
    lines, current = [], ""
    for line in raw.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    global_args, stages = {}, []
    for line in lines:
        keyword, _, text = line.strip().partition(" ")
        keyword, text = keyword.upper(), text.strip()
        if keyword == "ARG":
            name, _, default = text.partition("=")
            target = stages[-1].args if stages else global_args
            inherited = global_args.get(name, "") if stages else ""
            target[name] = default if default else inherited
        elif keyword == "FROM":
            parts = text.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name, len(stages)))
        elif keyword == "WORKDIR":
            stages[-1].workdir = os.path.normpath(os.path.join(stages[-1].workdir, text))
            stages[-1].instructions.append((keyword, text, stages[-1].workdir))
        else:
            stages[-1].instructions.append((keyword, text, stages[-1].workdir))
    return global_args, stages


def expand(text, *arg_maps):
    values = {}
    for m in arg_maps:
        values.update(m)

    def replace(match):
        name, default = match.group(1) or match.group(3), match.group(2)
        if name in values and values[name] != "":
            return values[name]
        if default is not None:
            return default
        return match.group(0)  # a shell variable of the RUN itself
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)", replace, text)


def copy_args(text):
    """COPY/ADD text -> (flags dict, [sources], destination)."""
    if text.startswith("["):
        words = json.loads(text)
    else:
        words = shlex.split(text)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


def shell_commands(text):
    """A RUN's shell text -> the word lists of its simple commands (split at
    &&, ||, ;, | outside quotes)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            if words:
                commands.append(words)
            words = []
        else:
            words.append(token)
    if words:
        commands.append(words)
    return commands


def json_or_shell(text):
    return json.loads(text) if text.startswith("[") else shlex.split(text)


# ---- .dockerignore ----

def dockerignore_patterns():
    path = os.path.join(ROOT, ".dockerignore")
    patterns = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    patterns.append(line)
    return patterns


def pattern_regex(pattern):
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def ignored(relpath, patterns):
    """Docker's rule: the last matching pattern wins; a pattern matching a
    directory excludes what is inside it."""
    parts = relpath.strip("/").split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = pattern_regex(os.path.normpath(pattern.lstrip("!").lstrip("/")))
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result


# ---- checks ----

def context_copies(stage):
    """(sources relative to the context, destination made absolute) of the COPYs from the build context."""
    for keyword, text, workdir in stage.instructions:
        if keyword in ("COPY", "ADD"):
            flags, sources, dest = copy_args(text)
            if "from" in flags:
                continue
            yield sources, os.path.normpath(os.path.join(workdir, dest)), dest.endswith("/") or len(sources) > 1


def configure_command(stage, global_args):
    """The `cmake -S ... -B ...` command of a RUN, ARGs expanded, and its workdir."""
    for keyword, text, workdir in stage.instructions:
        if keyword != "RUN":
            continue
        for words in shell_commands(expand(text, global_args, stage.args)):
            if len(words) >= 2 and words[0] == "cmake" and "-S" in words:
                return words, workdir
    return None, None


def build_commands(stage, global_args):
    for keyword, text, workdir in stage.instructions:
        if keyword != "RUN":
            continue
        for words in shell_commands(expand(text, global_args, stage.args)):
            if len(words) >= 2 and words[0] == "cmake" and words[1] == "--build":
                yield words


def build_dir_of(stage, global_args):
    words, workdir = configure_command(stage, global_args)
    if words is None:
        return None
    return os.path.normpath(os.path.join(workdir, words[words.index("-B") + 1]))


def base_images_pinned(path):
    global_args, stages = parse_dockerfile(path)
    families = []
    for stage in stages:
        if stage.image in {s.name for s in stages}:
            continue
        image = expand(stage.image, global_args)
        assert "$" not in image, f"{stage.image}: unresolved ARG"
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and not tag.startswith("latest"), f"FROM {image}: pin a tag"
        families.append((repo, tag))
        print(f"  FROM {image}", flush=True)
    # Builder and runtime of one image: the same repository and release, so
    # the libraries the builder links are the runtime's (flavours aside:
    # devel/runtime/base, slim).
    flavours = {"devel", "runtime", "base", "slim"}
    releases = {(repo, tuple(t for t in tag.split("-") if t not in flavours)) for repo, tag in families}
    assert len(releases) == 1, f"builder and runtime bases differ in more than their flavour: {families}"


def copy_sources(path):
    patterns = dockerignore_patterns()
    global_args, stages = parse_dockerfile(path)
    count = 0
    for stage in stages:
        for sources, _, _ in context_copies(stage):
            for source in sources:
                rel = os.path.normpath(expand(source, global_args, stage.args))
                matches = glob.glob(os.path.join(ROOT, rel))
                assert matches, f"COPY source {source} does not exist in the repository"
                assert not ignored(rel, patterns), f"COPY source {source} is excluded by .dockerignore"
                count += 1
    print(f"  {count} COPY sources exist and are in the build context", flush=True)


def build_tree_paths(path, build_dir):
    global_args, stages = parse_dockerfile(path)
    found = []
    for stage in stages:
        tree = build_dir_of(stage, global_args)
        if tree is None:
            continue
        for other in stages:  # this stage's RUNs, and COPY --from=<this stage> in later ones
            for keyword, text, workdir in other.instructions:
                words = []
                if other is stage and keyword == "RUN":
                    words = [w for c in shell_commands(expand(text, global_args, stage.args)) for w in c]
                elif keyword in ("COPY", "ADD"):
                    flags, sources, _ = copy_args(text)
                    if flags.get("from") == stage.name:
                        words = sources
                for word in words:
                    absolute = os.path.normpath(os.path.join(workdir if other is stage else "/", word))
                    if absolute.startswith(tree + "/"):
                        found.append(absolute[len(tree) + 1:])
    assert found, f"{os.path.basename(path)} names nothing from its build tree"
    for rel in found:
        local = os.path.join(build_dir, rel)
        assert os.path.exists(local), f"{rel}: not in the build tree {build_dir} (scripts/build makes it)"
    print(f"  build tree paths exist: {', '.join(sorted(set(found)))}", flush=True)


def configure_from_context(path):
    global_args, stages = parse_dockerfile(path)
    builders = [s for s in stages if configure_command(s, global_args)[0]]
    assert builders, "no stage configures with cmake"
    for stage in builders:
        work = tempfile.mkdtemp(prefix="polar-docker-context-")
        try:
            for sources, dest, into_dir in context_copies(stage):
                target = os.path.join(work, dest.lstrip("/"))
                for source in sources:
                    src = os.path.join(ROOT, expand(source, global_args, stage.args))
                    if os.path.isdir(src):
                        shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        os.makedirs(target if into_dir else os.path.dirname(target), exist_ok=True)
                        shutil.copy(src, target if not into_dir else os.path.join(target, os.path.basename(src)))
            words, workdir = configure_command(stage, global_args)
            cwd = os.path.join(work, workdir.lstrip("/"))
            out = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=300)
            log = out.stdout + out.stderr
            assert out.returncode == 0, f"`{' '.join(words)}` failed in the image's context:\n{log[-3000:]}"
            assert "Manually-specified variables were not used" not in log, \
                f"CMake ignores a -D option of `{' '.join(words)}`:\n{log[-2000:]}"
            tree = os.path.join(cwd, words[words.index("-B") + 1])
            targets_out = subprocess.run(["ninja", "-C", tree, "-t", "targets", "all"], capture_output=True,
                                         text=True, timeout=60)
            targets = {line.split(":")[0] for line in targets_out.stdout.splitlines()}
            wanted = []
            for build in build_commands(stage, global_args):
                if "--target" in build:
                    i = build.index("--target") + 1
                    while i < len(build) and not build[i].startswith("-"):
                        wanted.append(build[i])
                        i += 1
            assert wanted, "the build builds every target: name the image's with --target"
            for name in wanted:
                assert name in targets, f"--target {name}: no such target after configuring the context"
            print(f"  stage {stage.name}: `{' '.join(words)}` configures; targets {', '.join(wanted)} exist",
                  flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def essential_closure():
    """Packages every Debian image has: Essential or Priority required, and
    what they depend on, from this (Debian) machine's package database."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n"],
                         capture_output=True, text=True, check=True)
    depends, seeds = {}, []
    for line in out.stdout.splitlines():
        name, essential, priority, deps = line.split("\t")
        alternatives = [re.split(r"[\s(:]", d.strip())[0] for d in re.split(r"[,|]", deps) if d.strip()]
        depends[name] = alternatives
        if essential == "yes" or priority == "required":
            seeds.append(name)
    closure, todo = set(), list(seeds)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        todo.extend(d for d in depends.get(name, []) if d not in closure)
    return closure


def owning_package(library_path):
    real = os.path.realpath(library_path)
    for candidate in (library_path, real, "/usr" + library_path, "/usr" + real):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":")[0].strip()
    raise AssertionError(f"no Debian package owns {library_path}")


def runtime_packages(path, build_dir):
    global_args, stages = parse_dockerfile(path)
    final = stages[-1]
    packages = []
    for keyword, text, _ in final.instructions:
        if keyword == "RUN" and "apt-get" in text:
            for words in shell_commands(text):
                if "install" in words and words[0] in ("apt-get", "DEBIAN_FRONTEND=noninteractive"):
                    packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    if not packages:
        print("  the runtime stage installs no packages (its libraries come from the builder)", flush=True)
        return
    shipped = []
    for keyword, text, _ in final.instructions:
        if keyword == "COPY":
            flags, sources, _ = copy_args(text)
            builder = next((s for s in stages if s.name == flags.get("from")), None)
            tree = builder and build_dir_of(builder, global_args)
            for source in sources:
                if tree and source.startswith(tree + "/"):
                    shipped.append(os.path.join(build_dir, source[len(tree) + 1:]))
    assert shipped, "the runtime stage copies no binary from the build tree"
    base = essential_closure()
    for binary in shipped:
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout)
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
        missing = []
        for lib in needed:
            if lib not in resolved:
                continue  # the dynamic loader itself
            package = owning_package(resolved[lib])
            if package not in packages and package not in base:
                missing.append(f"{lib} ({package})")
        assert not missing, (f"{os.path.basename(binary)} links libraries whose packages the runtime stage "
                             f"does not install: {', '.join(missing)}")
        print(f"  {os.path.basename(binary)}: {len(needed)} direct libraries, all from "
              f"{', '.join(packages)} or the base image", flush=True)


def cmd_and_user(path, bin_dir, default_model):
    global_args, stages = parse_dockerfile(path)
    final = stages[-1]
    entry, cmd, user, exposed, text_all = None, [], None, set(), ""
    for keyword, text, _ in final.instructions:
        text_all += text + "\n"
        if keyword == "ENTRYPOINT":
            entry = json_or_shell(text)
        elif keyword == "CMD":
            cmd = json_or_shell(text)
        elif keyword == "USER":
            user = text
        elif keyword == "EXPOSE":
            exposed.update(p.split("/")[0] for p in text.split())
    assert entry, "no ENTRYPOINT"
    binary = os.path.join(bin_dir, os.path.basename(entry[0]))
    assert os.access(binary, os.X_OK), f"ENTRYPOINT {entry[0]}: {binary} is not built"
    argv = entry[1:] + cmd
    obs_lib.check_flags(binary, argv, f"{os.path.basename(path)} CMD")
    for flag in ("--listen", "--metrics-listen"):
        if flag in argv:
            port = argv[argv.index(flag) + 1].rsplit(":", 1)[1]
            assert port in exposed, f"{flag} port {port} is not EXPOSEd ({sorted(exposed)})"
    if "--model" in argv:
        model = argv[argv.index("--model") + 1]
        assert os.path.basename(model) == os.path.basename(default_model), \
            f"--model {model}: scripts/fetch-model fetches {os.path.basename(default_model)}"
    assert user and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user), \
        f"USER {user}: run as a numeric non-root uid (Kubernetes runAsNonRoot can only verify a number)"
    uid = user.split(":")[0]
    assert re.search(rf"useradd\b[^\n]*--uid {uid}\b", text_all), f"the runtime stage does not create uid {uid}"
    print(f"  {' '.join(entry + cmd)} as {user}; EXPOSE {' '.join(sorted(exposed))}", flush=True)


def main():
    build_dir = os.environ.get("POLAR_BUILD_DIR", os.path.join(ROOT, "build"))
    bin_dir = os.path.join(build_dir, "bin")
    default_model = os.environ.get("POLAR_DEFAULT_MODEL",
                                   os.path.join(ROOT, ".cache", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    for tool in ("cmake", "ninja", "readelf", "ldd", "dpkg", "dpkg-query"):
        if not shutil.which(tool):
            obs_lib.skip(f"{tool} not installed")
    for binary in ("polar-worker", "polar-gateway", "polar"):
        if not os.access(os.path.join(bin_dir, binary), os.X_OK):
            obs_lib.skip(f"{binary} is not built in {bin_dir} (scripts/build)")
    assert DOCKERFILES, "no deploy/*.Dockerfile"
    checks = Checks()
    for path in DOCKERFILES:
        name = os.path.basename(path).replace(".Dockerfile", "")
        checks.run(f"{name}.base_images_pinned", base_images_pinned, path)
        checks.run(f"{name}.copy_sources", copy_sources, path)
        checks.run(f"{name}.build_tree_paths", build_tree_paths, path, build_dir)
        checks.run(f"{name}.configure_from_context", configure_from_context, path)
        checks.run(f"{name}.runtime_packages", runtime_packages, path, build_dir)
        checks.run(f"{name}.cmd_and_user", cmd_and_user, path, bin_dir, default_model)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
