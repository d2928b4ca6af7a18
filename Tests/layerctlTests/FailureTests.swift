import Foundation
import LayerStore
import LayerSupport
import Testing

/// A build that cannot succeed says why in one line and leaves the store as it was.
@Suite("Failed builds", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct FailureTests {
    /// Builds base, then a child layer with `body`, and checks the failure, its exit status (3 the
    /// layer file, 5 libalpm, 6 a build step), its one labelled line, and the store.
    func expectFailure(_ body: String, status: Int32, mentions expected: [String]) throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/base.yaml", "--store", store]).status == 0)
        let before = try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted()
        let refsBefore = try Store(root: store).refs().map(\.key)
        try ("from: base\n" + body).write(toFile: layers + "/broken.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/broken.yaml", "--store", store])
        #expect(result.status == status, "\(result.stderr)")
        let labelled = result.stderr.split(separator: "\n").filter { $0.contains("layerctl: ") }
        #expect(labelled.count == 1 && labelled[0].hasPrefix("layerctl: "), "\(result.stderr)")
        #expect(labelled.allSatisfy { !$0.contains("error: ") }, "a doubled label: \(result.stderr)")
        for text in expected { #expect(result.stderr.contains(text), "missing \(text) in: \(result.stderr)") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted() == before)
        #expect(try Store(root: store).refs().map(\.key) == refsBefore)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        try Harness.expectValidStore(store)
    }

    @Test("a failing scriptlet fails the build and names the package")
    func scriptlet() throws {
        try expectFailure("packages: [broken-scriptlet]\n", status: 5, mentions: ["broken-scriptlet", "scriptlet failed"])
    }

    @Test("a failing run: command names the command, its status and its line")
    func runCommand() throws {
        try expectFailure("run:\n  - echo fine\n  - exit 9\n", status: 6, mentions: ["broken.yaml:4:5", "`exit 9`", "status 9"])
    }

    /// An error is one line, whatever the text it quotes holds: a command of several lines, a name
    /// with a newline or an escape sequence (which a stranger's layer file may hold).
    @Test("a failing run: command of several lines is quoted in one line, its newlines as \\x0a")
    func multiLineCommand() throws {
        try expectFailure(
            "run:\n  - |\n    echo first\n    printf '\\033[2J' > /dev/null; exit 4\n", status: 6,
            mentions: ["broken.yaml:3:5", "`echo first\\x0aprintf '\\x5c033[2J' > /dev/null; exit 4\\x0a` exited with status 4"])
    }

    @Test("an unknown package names the package and its line")
    func unknownPackage() throws {
        try expectFailure("packages: [no-such-package]\n", status: 5, mentions: ["broken.yaml:2:12", "no-such-package", "not found"])
    }

    @Test("conflicting packages fail the build and name both")
    func conflict() throws {
        try expectFailure("packages: [conflict-a, conflict-b]\n", status: 5, mentions: ["conflict-a", "conflict-b", "conflict"])
    }

    @Test("removing a package that the layers below need is placed at its line and names what needs it")
    func removeNeeded() throws {
        try expectFailure(
            "remove: [busybox]\n", status: 5,
            mentions: [
                "broken.yaml:2:10: resolve busybox failed: could not satisfy dependencies",
                // pacman's words: what needs it is installed, and the removal is what breaks it.
                "removing busybox breaks dependency 'sh' required by greeter",
            ])
    }

    /// Arch renames packages (exa became eza): the old name leaves the repositories, and the new
    /// package says it `replaces` it, which pacman -Syu follows and a target name does not.
    @Test("a package the repositories no longer hold is not found, naming the package that replaces it")
    func renamed() throws {
        try expectFailure(
            "packages: [oldname]\n", status: 5,
            mentions: ["broken.yaml:2:12: install oldname failed: target not found in any repository; newname replaces it"])
    }

    /// `pacman -S 'linux>=6.6'`: a version a target must have, or the build stops at it.
    @Test("a package with a version it must satisfy: built when the repository's does, else one line that says what the repository holds")
    func versioned() throws {
        try expectFailure(
            "packages: [\"game>=2\"]\n", status: 5,
            mentions: ["broken.yaml:2:12: install game>=2 failed: the repositories hold game 1.0-1, which is not >=2"])
        let layers = try Harness.demoLayers()
        try "from: base\npackages: [\"game>=1.0\", \"demo/tool-a=1.0-1\"]\n".write(
            toFile: layers + "/versioned.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let built = try Harness.run(["build", layers + "/versioned.yaml", "--store", store])
        #expect(built.status == 0 && built.stderr.contains("versioned: install game 1.0-1"), "\(built.stderr)")
        #expect(try Harness.run(["lock", layers + "/versioned.yaml", "--store", store]).status == 0)
        let lock = try String(contentsOfFile: layers + "/versioned.lock", encoding: .utf8)
        #expect(lock.contains("\ninstall demo/tool-a=1.0-1\ninstall game>=1.0\n"), "\(lock)")
    }

    @Test("removing a package that is not installed names it")
    func removeMissing() throws {
        try expectFailure("remove: [demo-app]\n", status: 5, mentions: ["demo-app", "not installed"])
    }

    @Test("a layer file error stops the build before anything runs")
    func badLayerFile() throws {
        try expectFailure("pakages: [game]\n", status: 3, mentions: ["broken.yaml:2:1", "did you mean `packages`"])
    }

    /// A layer's own symlink cannot lead `files:` into the kernel's filesystems of the build root.
    @Test("files: through a symlink of the layer into /proc fails at its line, and the host's setting stays")
    func symlinkIntoProc() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let setting = "/proc/sys/fs/lease-break-time"
        let before = try String(contentsOfFile: setting, encoding: .utf8)
        // The link is a folder on the way: a link at the path itself is replaced, never followed.
        try "from: base\nrun:\n  - ln -s /proc/sys/fs /etc/fs\n".write(
            toFile: layers + "/linked.yaml", atomically: false, encoding: .utf8)
        try "from: linked\nfiles:\n  - path: /etc/fs/lease-break-time\n    content: \"48\\n\"\n".write(
            toFile: layers + "/through.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/through.yaml", "--store", store])
        #expect(result.status == 6, "\(result.stderr)")
        #expect(
            result.stderr.contains(
                "through.yaml:3:5: writing /etc/fs/lease-break-time failed: /etc/fs leads out of the layer, onto a "
                    + "filesystem mounted for the build"), "\(result.stderr)")
        #expect(try String(contentsOfFile: setting, encoding: .utf8) == before)
        try Harness.expectValidStore(store)
    }

    /// A user who forgot sudo: a command whose work needs root says so in one line, as pacman does,
    /// before it makes or reads anything, not as the failure of the first step only root may take
    /// ("open lock /var/lib/layerctl/lock failed: No such file or directory", it said).
    @Test("build, lock, shell, pull, stage, unstage and boot by a user other than root: one line that says to use sudo, exit 4, no store made")
    func notRoot() throws {
        let folder = try Harness.temporaryDirectory("not-root")
        chmod(folder, 0o755)
        let layer = folder + "/base.yaml"
        try "from: scratch\narch: x86_64\npackages: [busybox]\n".write(toFile: layer, atomically: false, encoding: .utf8)
        let store = folder + "/store"
        for (arguments, command) in [
            (["build", layer], "layerctl build"), (["lock", layer], "layerctl lock"),
            (["shell", "base"], "layerctl shell"), (["pull", "localhost:5000/demo"], "layerctl pull"),
        ] {
            let result = try KernelMount.run(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Harness.executable] + arguments + [
                    "--store", store,
                ])
            #expect(result.status == 4, "\(result.output)")
            #expect(
                result.output == "layerctl: \(command) must run as root: it works in mount and pid namespaces of its own "
                    + "and makes files of any owner, as pacman does; run layerctl with sudo\n")
        }
        #expect(!FileManager.default.fileExists(atPath: store))
        // What changes the machine's boot is root's too ("create directory /var/lib/layerctl/boot
        // failed: Permission denied", stage said).
        let state = folder + "/state"
        for command in ["stage", "unstage", "boot"] {
            let result = try KernelMount.run(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Harness.executable, command, "base", "--store", store,
                 "--state-dir", state, "--boot-dir", folder, "--no-grub"])
            #expect(result.status == 4, "\(result.output)")
            #expect(
                result.output == "layerctl: layerctl \(command) must run as root: it writes the boot loader's kernels and "
                    + "entries; run layerctl with sudo\n")
        }
        #expect(!FileManager.default.fileExists(atPath: state))
    }

    /// In a chroot of a plain folder (`chroot DIR`, which arch-chroot would have bound onto
    /// itself) `/` is no mount point: a build said "make slave / failed: not mount point or bad
    /// option" (exit 8), and `stage` "find the mount that holds … failed: No such file or
    /// directory".
    @Test("build, lock, shell and pull in a chroot of a plain folder: one line that says to bind it first, no store made; stage says the same")
    func plainChroot() throws {
        let folder = try Harness.temporaryDirectory("plain-chroot")
        let chroot = folder + "/root", work = folder + "/work"
        try FileManager.default.createDirectory(atPath: chroot, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        try "from: scratch\narch: x86_64\nrepos: [{name: demo, servers: [/work/repo]}]\npackages: [busybox]\n".write(
            toFile: work + "/base.yaml", atomically: false, encoding: .utf8)
        _ = try StagingTests.smallImages(["a"], in: work)
        // The system's folders are bound into the chroot's with what is mounted below them (the
        // Swift runtime the test build loads may be a mount of its own in /opt); the chroot's own
        // folder is bound nowhere. The mounts go with the private mount namespace the script runs in.
        let script = """
            c=$1 work=$2 exe=$3
            mkdir -p "$c/usr" "$c/etc" "$c/opt" "$c/proc" "$c/dev" "$c/work" "$c/exe"
            for link in lib lib64 bin sbin; do ln -s "usr/$link" "$c/$link"; done
            for system in usr etc opt; do mount --rbind "/$system" "$c/$system"; done
            mount -t proc proc "$c/proc"
            mount --rbind /dev "$c/dev"
            mount --bind "$work" "$c/work"
            mount --bind "$exe" "$c/exe"
            for command in 'build /work/base.yaml' 'lock /work/base.yaml' 'shell base' 'pull localhost:5000/demo'; do
                # shellcheck disable=SC2086  # the command's words
                chroot "$c" /exe/layerctl $command --store /work/store
                echo "status $?"
            done
            chroot "$c" /exe/layerctl stage /work/a.squashfs --name n --state-dir /state --boot-dir /work/boot --no-grub
            echo "status $?"
            """
        let result = try KernelMount.run(
            "/usr/bin/unshare",
            ["-m", "--propagation", "private", "/bin/sh", "-c", script, "sh", chroot, work,
             (Harness.executable as NSString).deletingLastPathComponent])
        let lines = result.output.split(separator: "\n").map(String.init)
        for command in ["build", "lock", "shell", "pull"] {
            #expect(
                lines.contains(
                    "layerctl: layerctl \(command) cannot run where / is no mount point, as in a chroot of a plain folder: the mounts of "
                        + "its namespaces are kept from the host's by making / a slave mount; enter the chroot with arch-chroot, or "
                        + "bind-mount its folder onto itself (mount --bind DIR DIR) before chroot"),
                "\(result.output)")
        }
        #expect(
            lines.contains(
                "layerctl: no mount this process sees holds /state/n, since / is no mount point here, as in a chroot of a plain "
                    + "folder; enter the chroot with arch-chroot, or bind-mount its folder onto itself (mount --bind DIR DIR) before chroot"),
            "\(result.output)")
        #expect(lines.filter { $0.hasPrefix("status ") } == Array(repeating: "status 8", count: 5), "\(result.output)")
        #expect(lines.filter { $0.hasPrefix("layerctl: ") }.count == 5, "\(result.output)")
        #expect(!FileManager.default.fileExists(atPath: work + "/store"))
        #expect(!FileManager.default.fileExists(atPath: work + "/boot"))
        #expect(try MountTable().entries.allSatisfy { !$0.target.hasPrefix(folder) })
    }

    /// Reading root's store as another user: `ls` printed its header (or `[]`), then the refusal,
    /// and exited as for a damaged store (7); `gc` said "open lock …/lock failed: Permission denied".
    @Test("ls, inspect, gc and sbom of root's store by another user: one line that says to use sudo, exit 4, nothing before it")
    func othersStore() throws {
        let stack = try CraftedStack("others-store")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        // Every folder of a store as root's commands leave it.
        #expect(try Harness.run(["ls", "--store", stack.store]).status == 0)
        chmod(stack.store, 0o755)
        let unreadable = "layerctl: cannot read \(stack.store)/layers: the store's layers are its owner's alone (their trees "
            + "hold setuid programs); run layerctl as that user (sudo)\n"
        let cases: [([String], String)] = [
            (["ls"], unreadable), (["ls", "--json"], unreadable), (["inspect", "only"], unreadable),
            (["gc"], "layerctl: the store \(stack.store) is its owner's alone, and this user may not use it; run layerctl as that user (sudo)\n"),
        ]
        // A store root has not made yet (the default one, before the first build) is root's to
        // make; a command that reads one says there is none (`storeNotThere`).
        let unmade = stack.store + "/not-yet"
        let cases2: [([String], String, String)] =
            cases.map { ($0.0, $0.1, stack.store) } + [
                (["export", "only", "-o", stack.store + "/only.squashfs"], "layerctl: the store \(unmade) is its owner's alone, and this user may not use it; run layerctl as that user (sudo)\n", unmade)
            ]
        for (arguments, says, store) in cases2 {
            let result = try KernelMount.run(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Harness.executable] + arguments + ["--store", store])
            #expect(result.status == 4, "\(arguments): \(result.output)")
            // --json adds its error object, and prints no list before it.
            let json = arguments.contains("--json") ? #"{"error":{"code":"privilege","exitStatus":4,"message":"# : ""
            #expect(result.output.hasPrefix(says + json), "\(arguments) \(store)")
            #expect(result.output.split(separator: "\n").count == (json.isEmpty ? 1 : 2), "\(arguments) \(store)")
        }
        #expect(!FileManager.default.fileExists(atPath: unmade))
        // Where no lock was ever taken, a reader may not make the lock file: "open lock … No such
        // file or directory", it said.
        unlink(stack.store + "/lock")
        let reader = try KernelMount.run(
            "/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Harness.executable, "sbom", "only", "--store", stack.store])
        #expect(reader.status == 4, "\(reader.output)")
        #expect(
            reader.output == "layerctl: the store \(stack.store) is its owner's alone, and this user may not use it; "
                + "run layerctl as that user (sudo)\n")
        #expect(try Harness.run(["inspect", "only", "--store", stack.store]).status == 0)
    }

    /// A mistyped `--store` made a store there, and `ls` listed it empty (exit 0): it looked as if
    /// the layers were gone. A command that reads a store makes none.
    @Test("ls, inspect, diff, gc, rm, sbom, shell and push at a store that is not there: one line naming it, exit 3, nothing made")
    func storeNotThere() throws {
        let work = try Harness.temporaryDirectory("no-store")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let missing = work + "/mistyped"
        let says = "layerctl: no store at \(missing): nothing was built or pulled there (`layerctl build` or `layerctl pull` makes "
            + "one; --store or LAYERCTL_STORE names another)\n"
        for arguments in [
            ["ls"], ["inspect", "base"], ["diff", "base", "gaming"], ["gc"], ["rm", "base"], ["sbom", "base"], ["shell", "base"],
            ["push", "base", "localhost:1/base"],
        ] {
            let result = try Harness.run(arguments + ["--store", missing])
            #expect(result.status == 3, "\(arguments): \(result.stderr)")
            #expect(result.stderr == says, "\(arguments)")
            #expect(result.stdout.isEmpty, "\(arguments): \(result.stdout)")
            #expect(!FileManager.default.fileExists(atPath: missing), "\(arguments) made \(missing)")
        }
        let json = try Harness.run(["ls", "--json", "--store", missing])
        #expect(json.status == 3 && json.stdout.hasPrefix(#"{"error":{"code":"input","exitStatus":3,"message":"no store at "#), "\(json.stdout)")
        // The same through LAYERCTL_STORE; and a folder that is there, made empty for a store, is one.
        let environment = try Harness.run(["ls"], environment: ["LAYERCTL_STORE": missing])
        #expect(environment.status == 3 && environment.stderr == says)
        #expect(mkdir(missing, 0o755) == 0)
        let empty = try Harness.run(["ls", "--json", "--store", missing])
        #expect(empty.status == 0 && empty.stdout == "[]\n", "\(empty.stdout) \(empty.stderr)")
    }

    /// A store on a filesystem without trusted.* attributes built a root layer, and then the first
    /// `rm -rf` of a folder from a layer below failed inside a `run:` command with "Input/output
    /// error": overlayfs could not mark the new folder opaque. ramfs stands for the filesystems
    /// that lack them (vfat, exFAT, some FUSE and network ones). On an overlay (`/` of a system
    /// booted from a layerctl image, or of a container) a root layer built too, and the next
    /// layer's mount failed with "wrong fs type, bad option".
    @Test("a store on ramfs or on an overlay, which cannot hold an overlay's upper folder: one line naming it, before anything is built")
    func storeFileSystem() throws {
        let folder = try Harness.temporaryDirectory("unsuitable-store")
        for name in ["ramfs", "lower", "upper", "work", "overlay"] {
            try FileManager.default.createDirectory(atPath: folder + "/" + name, withIntermediateDirectories: true)
        }
        for (type, options, lacks, refusal) in [
            ("ramfs", [], "the attribute trusted.overlay.opaque of an opaque folder", "Operation not supported"),
            ("overlay", ["-o", "lowerdir=\(folder)/lower,upperdir=\(folder)/upper,workdir=\(folder)/work"],
             "the 0:0 character device of a deleted name", "Operation not permitted"),
        ] {
            let mountPoint = folder + "/" + type
            let mounted = try KernelMount.run("/bin/mount", ["-t", type] + options + [type, mountPoint])
            try #require(mounted.status == 0, "\(mounted.output)")
            defer { _ = try? KernelMount.run("/bin/umount", [mountPoint]) }
            let store = mountPoint + "/store"
            let result = try Harness.run(["build", try Harness.demoLayers() + "/base.yaml", "--store", store])
            #expect(result.status == 3, "\(result.stderr)")
            let labelled = result.stderr.split(separator: "\n").filter { $0.contains("layerctl: ") }
            #expect(
                labelled == [
                    "layerctl: the store \(store) is on \(type), which cannot hold a layer's tree: overlayfs keeps \(lacks) "
                        + "there, and \(type) refuses it (\(refusal)); put the store on ext4, xfs, btrfs or tmpfs "
                        + "(--store or LAYERCTL_STORE)"
                ], "\(result.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
            let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            #expect(!mounts.contains(store), "\(mounts)")
        }
    }

    /// A server that is not there, or that lacks a package its database lists: libalpm's own line
    /// says which file, from where and why; its error number said "invalid url for server" for a
    /// host that does not resolve and "download library error" for a missing file, before it, and
    /// a package's failure was "commit transaction failed" at the layer file, with no line.
    @Test("a download that fails is one line at the repository: the file, the server and why, without libalpm's error number")
    func downloadFails() throws {
        let folder = try Harness.temporaryDirectory("downloads")
        let repository = folder + "/repo/demo"
        try FileManager.default.createDirectory(atPath: folder + "/repo", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/repo/demo", toPath: repository)
        let nano = try FileManager.default.contentsOfDirectory(atPath: repository).first {
            $0.hasPrefix("nano-") && $0.hasSuffix(".pkg.tar.zst")
        }!
        try FileManager.default.removeItem(atPath: repository + "/" + nano)
        try FileManager.default.createDirectory(atPath: folder + "/mirror", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: repository, toPath: folder + "/mirror/demo")
        let store = try Harness.temporaryDirectory("store")
        for (server, packages, expected) in [
            (
                folder + "/nowhere/$repo", "busybox",
                "layer.yaml:4:5: refresh repository demo failed: failed retrieving file 'demo.db' from disk: "
                    + "Couldn't open file \(folder)/nowhere/demo/demo.db"
            ),
            (
                folder + "/repo/$repo", "busybox, nano",
                "layer.yaml:4:5: the download of package nano of repository demo failed: failed retrieving file "
                    + "'\(nano)' from disk: Couldn't open file \(repository)/\(nano)"
            ),
            // Each server tried is named: the error is the only line that says so.
            (
                folder + "/repo/$repo, " + folder + "/mirror/$repo", "busybox, nano",
                "layer.yaml:4:5: the download of package nano of repository demo failed: failed retrieving file "
                    + "'\(nano)' from disk: Couldn't open file \(repository)/\(nano); failed retrieving file "
                    + "'\(nano)' from disk: Couldn't open file \(folder)/mirror/demo/\(nano)"
            ),
        ] {
            try Self.writeRootLayer(servers: server, packages: packages, to: folder + "/layer.yaml")
            let result = try Harness.run(["build", folder + "/layer.yaml", "--store", store])
            #expect(result.status == 5, "\(result.stderr)")
            let labelled = result.labelled
            #expect(labelled == ["layerctl: \(folder)/\(expected)"], "\(result.stderr)")
            // libalpm's own lines about it ("error: failed retrieving file", "warning: failed to
            // retrieve some files") would say it twice and once more.
            #expect(!result.stderr.contains("error: ") && !result.stderr.contains("warning: "), "\(result.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").isEmpty)

        // A server that lacks the package, then one that has it: the build goes on, and libalpm's
        // line still tells of the first, as pacman's does.
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/repo/demo", toPath: folder + "/whole")
        try Self.writeRootLayer(
            servers: folder + "/repo/$repo, " + folder + "/whole", packages: "busybox, nano", to: folder + "/layer.yaml")
        let served = try Harness.run(["build", folder + "/layer.yaml", "--store", store])
        #expect(served.status == 0, "\(served.stderr)")
        #expect(
            served.stderr.contains("layer: error: failed retrieving file '\(nano)' from disk : Couldn't open file \(repository)/\(nano)\n"),
            "\(served.stderr)")
    }

    static func writeRootLayer(servers: String, packages: String, to path: String) throws {
        try """
        from: scratch
        arch: x86_64
        repos:
          - name: demo
            servers: [\(servers)]
            siglevel: Optional TrustAll
        packages: [\(packages)]

        """.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// Each layer file's env: is held to what the kernel passes a program, but the env: of a stack's
    /// layers add up: past the kernel's room (2 MiB, a quarter of the build's fixed 8 MiB stack
    /// limit, whatever the caller's `ulimit -s`), the shell does not start. That said "its files or
    /// steps broke /bin/sh". Run under a stack limit of 64 MiB, where the kernel's room would be
    /// 6 MiB and the command would run, had the build not set its own.
    @Test("a stack whose env: add up past what the kernel passes a program fails at the run: line, saying so, under any ulimit -s")
    func environmentPastTheKernel() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        var parent = "base"
        for number in 1...17 {
            let top = number == 17
            try "from: \(parent)\nenv:\n  V\(number): \(String(repeating: "x", count: 130_000))\n\(top ? "run:\n  - \"true\"\n" : "")"
                .write(toFile: layers + "/env\(number).yaml", atomically: false, encoding: .utf8)
            parent = "env\(number)"
        }
        let result = try Harness.run(
            ["--stack=\(64 << 20)", Harness.executable, "build", layers + "/env17.yaml", "--store", store], tool: "/usr/bin/prlimit")
        #expect(result.status == 3, "\(result.stderr.suffix(600))")
        let labelled = result.labelled
        #expect(
            labelled == [
                "layerctl: \(layers)/env17.yaml:5:5: the command and the environment (the env: of this layer and the layers below) "
                    + "are more than the kernel passes a program (Argument list too long); make them shorter"
            ], "\(result.stderr.suffix(600))")
        // Sixteen of them leave room: the layers below built.
        #expect(try Store(root: store).ref("env16") != nil)
    }

    /// A root layer without a shell cannot run its `run:` commands: said at the first one, whose
    /// line it lacked. Nor can one whose shell the layer broke: `files:` made /bin (the filesystem
    /// package's link to usr/bin) a file, or a step took the shell's execute bits; that said
    /// "layer.yaml: start /bin/sh failed: Not a directory", at no line.
    @Test(
        "a run: command in a layer without /bin/sh, or whose /bin/sh the layer broke, fails at its line, saying why",
        arguments: [
            ("packages: [nano]\nrun:\n  - nano --version", 9, "the layer has no /bin/sh to run commands with; install a shell first"),
            (
                "packages: [filesystem, busybox]\nfiles:\n  - path: /bin\n    content: \"not a folder\\n\"\nrun:\n  - echo one", 12,
                "the layer's /bin/sh could not be started to run commands: Not a directory; its files or steps broke /bin/sh or the path to it"
            ),
            (
                "packages: [filesystem, busybox]\nrun:\n  - chmod 000 /usr/bin/busybox\n  - echo two", 10,
                "the layer's /bin/sh could not be started to run commands: Permission denied; its files or steps broke /bin/sh or the path to it"
            ),
        ])
    func noShell(steps: String, line: Int, says: String) throws {
        let folder = try Harness.temporaryDirectory("no-shell")
        try """
        from: scratch
        arch: x86_64
        repos:
          - name: demo
            servers: [\(Harness.demoOut)/repo/$repo]
            siglevel: Optional TrustAll
        \(steps)

        """.write(toFile: folder + "/layer.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let result = try Harness.run(["build", folder + "/layer.yaml", "--store", store])
        #expect(result.status == 3, "\(result.stderr)")
        let labelled = result.labelled
        #expect(labelled == ["layerctl: \(folder)/layer.yaml:\(line):5: \(says)"], "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").isEmpty)
    }
}
