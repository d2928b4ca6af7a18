import CLayerSupport
import Foundation
import LayerBuilder
import LayerStore
import LayerSupport
import Testing

/// A layer file is untrusted input: whatever its `run:` commands (and the scriptlets of its
/// packages) try against the host fails inside the build with the command's own error, so the
/// build fails at the `run:` line; and the host is as it was.
@Suite("Confinement", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct ConfinementTests {
    /// What the escapes aim at, on the host: read before and after each.
    struct HostState: Equatable, CustomStringConvertible {
        var settings: [String: String] = [:]
        var devices: [String: [Int]] = [:]
        var owned: Bool
        var hostname: String

        static let settingPaths = [
            "/proc/sys/fs/lease-break-time", "/proc/sys/kernel/core_pattern", "/sys/kernel/mm/transparent_hugepage/enabled",
        ]

        static func read(owned: String) -> HostState {
            var state = HostState(
                owned: FileManager.default.fileExists(atPath: owned),
                hostname: ProcessInfo.processInfo.hostName)
            for path in settingPaths { state.settings[path] = try? String(contentsOfFile: path, encoding: .utf8) }
            for path in ["/dev/full", "/dev/null", "/dev/zero"] {
                var st = stat()
                if stat(path, &st) == 0 { state.devices[path] = [Int(st.st_mode), Int(st.st_uid), Int(st.st_gid), Int(st.st_rdev)] }
            }
            return state
        }

        var description: String { "\(settings) \(devices) owned=\(owned) hostname=\(hostname)" }
    }

    /// Builds `from: base` with `run: [command]` in `layers` (base is stored already), with
    /// `options` for `build`, and returns the result.
    func build(
        _ command: String, in layers: String, store: String, network: Bool = false, options: [String] = []
    ) throws -> Harness.Result {
        let quoted = command.replacingOccurrences(of: "'", with: "''")
        try "from: base\n\(network ? "network: true\n" : "")run:\n  - '\(quoted)'\n".write(
            toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        return try Harness.run(["build", layers + "/probe.yaml", "--store", store] + options)
    }

    /// The demo layer files, and a new store that holds their base layer.
    func storeWithBase() throws -> (layers: String, store: String) {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/base.yaml", "--store", store]).status == 0)
        return (layers, store)
    }

    /// Each escape: the command, and what its own error says.
    static func escapes(owned: String, disk: (major: UInt32, minor: UInt32)) -> [(command: String, error: String)] {
        [
            // pid 1 of the build is the builder: its root, environment and descriptors stay closed.
            ("echo x > /proc/1/root\(owned)", "Permission denied"),
            ("cat /proc/1/environ", "Permission denied"),
            ("echo '{\"kind\":\"finished\"}' > /proc/1/fd/3", "Permission denied"),
            // The kernel's settings and sysfs are read-only, and cannot be made writable again.
            ("echo 48 > /proc/sys/fs/lease-break-time", "Read-only file system"),
            ("echo '|/bin/sh' > /proc/sys/kernel/core_pattern", "Read-only file system"),
            ("echo never > /sys/kernel/mm/transparent_hugepage/enabled", "Read-only file system"),
            ("mount -o remount,rw /sys", "permission denied"),
            ("mount -o remount,rw /proc/sys", "permission denied"),
            // No new mounts, namespaces or hostname.
            ("mount -t tmpfs none /mnt", "permission denied"),
            ("umount /proc", "Operation not permitted"),
            ("unshare -U true", "Operation not permitted"),
            ("unshare -m true", "Operation not permitted"),
            ("hostname owned", "Operation not permitted"),
            // Devices: a node the layer makes cannot be opened, and /dev takes no new ones.
            ("mknod /root/disk b \(disk.major) \(disk.minor) && head -c 1 /root/disk", "Permission denied"),
            ("mknod /dev/disk b \(disk.major) \(disk.minor)", "Read-only file system"),
            ("chmod 600 /dev/full", "Read-only file system"),
            // Masked: the host's memory and keys are empty here.
            ("test -s /proc/keys || test -s /proc/kcore || ls /sys/firmware | grep -q . || exit 7", "status 7"),
            // No host process is visible, so none can be signalled.
            ("kill -0 \(getpid())", "No such process"),
        ]
    }

    @Test("each escape fails inside the layer at its run: line, with the command's own error, and the host stays as it was")
    func escapes() throws {
        let (layers, store) = try storeWithBase()
        let owned = "/tmp/layerctl-owned-\(getpid())"
        var root = stat()
        #expect(stat("/", &root) == 0)
        let disk = (lc_major(UInt64(root.st_dev)), lc_minor(UInt64(root.st_dev)))
        let before = HostState.read(owned: owned)
        let keys = try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted()
        for escape in Self.escapes(owned: owned, disk: disk) {
            let result = try build(escape.command, in: layers, store: store)
            #expect(result.status == 6, "\(escape.command): \(result.stderr)")
            #expect(result.stderr.contains("probe.yaml:3:5: run command"), "\(escape.command): \(result.stderr)")
            #expect(result.stderr.contains(escape.error), "\(escape.command): \(result.stderr)")
            #expect(HostState.read(owned: owned) == before, "\(escape.command)")
            // Other suites mount things meanwhile: what counts is that nothing of the build's is left.
            #expect(try Harness.leakedMounts(under: store).isEmpty && Harness.leakedMounts(under: layers).isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted() == keys)
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        }
        unlink(owned)
        try Harness.expectValidStore(store)
    }

    @Test(
        "a run: step that never ends, or leaves a 1 TiB sparse file, is stopped at --timeout with everything it started: one line at its run: line or its layer file, nothing left"
    )
    func timeLimit() throws {
        let (layers, store) = try storeWithBase()
        let keys = try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted()
        // A child in a session of its own, one in the background, and the step itself: all wait,
        // each in a shell whose command line carries the marker.
        let marker = "layerctl-hang-\(getpid())"
        let wait = "sh -c \"sleep 300; :\" \(marker)"
        try "from: base\nrun:\n  - echo started\n  - '(setsid \(wait) &); \(wait) & \(wait)'\n"
            .write(toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let started = Date()
        let result = try Harness.run(["build", layers + "/probe.yaml", "--store", store, "--timeout", "3"])
        let seconds = Date().timeIntervalSince(started)
        #expect(result.status == 6, "\(result.stderr)")
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
        #expect(errors.count == 1 && errors[0].contains("probe.yaml:4:5: layer probe did not finish within 3 s (at: run 2 `"), "\(result.stderr)")
        #expect(seconds < 30, "stopped after \(seconds) s")
        // Not one of the build's processes is left, wherever it went.
        let left = try FileManager.default.contentsOfDirectory(atPath: "/proc").filter { name in
            guard Int(name) != nil, let line = try? String(contentsOfFile: "/proc/\(name)/cmdline", encoding: .utf8) else { return false }
            return line.contains(marker)
        }
        #expect(left.isEmpty, "left running: \(left)")
        #expect(try Harness.leakedMounts(under: store).isEmpty && Harness.leakedMounts(under: layers).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted() == keys)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        // A sparse file takes no disk and can be as large as the filesystem allows; reading it
        // for the tree's digest is part of the layer's build, under the same limit.
        try "from: base\nrun:\n  - truncate -s 1099511627776 /sparse\n".write(
            toFile: layers + "/sparse.yaml", atomically: false, encoding: .utf8)
        let sparseStarted = Date()
        let sparse = try Harness.run(["build", layers + "/sparse.yaml", "--store", store, "--timeout", "3"])
        #expect(Date().timeIntervalSince(sparseStarted) < 30)
        #expect(sparse.status == 6, "\(sparse.stderr)")
        let sparseErrors = sparse.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
        #expect(
            sparseErrors.count == 1
                && sparseErrors[0].hasSuffix(
                    "sparse.yaml: layer sparse did not finish within 3 s (at: reading /sparse); it was stopped. Give it longer with --timeout"),
            "\(sparse.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers").sorted() == keys)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        // A negative limit is refused.
        let negative = try Harness.run(["build", layers + "/probe.yaml", "--store", store, "--timeout=-1"])
        #expect(negative.status != 0 && negative.stderr.contains("--timeout takes a number of seconds"), "\(negative.stderr)")
        try Harness.expectValidStore(store)
    }

    /// A command that reached the terminal layerctl runs in could wait for input, read what the
    /// user types, or push input into it (TIOCSTI) for the user's root shell to run once the
    /// build is over. layerctl runs here in a terminal of `script`'s.
    /// The build's pid 1 is a clone of layerctl's starter, which wiped its copy of layerctl's
    /// command line: a step reads `layerctl` there, where an exec'd builder shows its executable's
    /// path, and nothing of the host's (the layer file's path, the store's). Also when layerctl
    /// starts with its stdin closed, as from a daemon, and the starter's socket gets low numbers.
    @Test("a run: step reads no word of layerctl's command line in its pid 1, which the starter cloned without an exec")
    func commandLineOfFirstProcess() throws {
        let (layers, store) = try storeWithBase()
        for (launcher, closing) in [("direct", ""), ("stdin closed", " <&-")] {
            let step = #"echo "pid 1 (\#(launcher)): $(tr "\000" "|" < /proc/1/cmdline)""#
            try "from: base\nrun:\n  - '\(step)'\n".write(toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
            let result = try Harness.run(
                ["-c", #"exec "$0" "$@""# + closing, Harness.executable, "build", layers + "/probe.yaml", "--store", store],
                tool: "/bin/sh")
            #expect(result.status == 0, "\(launcher): \(result.stderr)")
            let output = result.stdout + result.stderr
            let marker = "| pid 1 (\(launcher)): "
            let line = try #require(output.split(separator: "\n").first { $0.contains(marker) }, "\(output)")
            // The wiped bytes are NULs, which tr shows as bars.
            let shown = try #require(line.components(separatedBy: marker).last)
            #expect(shown.hasPrefix("layerctl|") && shown.dropFirst(8).allSatisfy { $0 == "|" }, "\(line)")
            #expect(!line.contains(store) && !line.contains("probe.yaml") && !line.contains("build"), "\(line)")
        }
    }

    @Test("a run: step cannot reach the terminal layerctl runs in: /dev/tty is no device, and no input is pushed into it")
    func terminal() throws {
        let (layers, store) = try storeWithBase()
        // Perl's ioctl, as a hostile step would: TIOCSTI is 0x5412. The text pushed is put
        // together at run time, so only a push can put it into the terminal's transcript.
        let push = #"open(my $t, "+<", "/dev/tty") or die "no tty: $!\n"; ioctl($t, 0x5412, $_) or die "TIOCSTI: $!\n" for split //, "echo PUS" . "HED\n""#
        try "from: base\nrun:\n  - 'perl -e ''\(push)''; exit 0'\n".write(
            toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let work = try Harness.temporaryDirectory("terminal")
        let command = "'\(Harness.executable)' build '\(layers)/probe.yaml' --store '\(store)' --timeout 60; sleep 1"
        let ran = try KernelMount.run("/usr/bin/script", ["-qec", command, work + "/transcript"])
        #expect(ran.status == 0, "\(ran.output)")
        let transcript = try String(decoding: Data(contentsOf: URL(fileURLWithPath: work + "/transcript")), as: UTF8.self)
        #expect(transcript.contains("probe | no tty: No such device or address"), "\(transcript)")
        #expect(!transcript.contains("PUSHED"), "\(transcript)")
    }

    /// A step's and a scriptlet's output reach the user's terminal, or a log read in one later: an
    /// escape sequence in them could set the terminal's title or clipboard, clear the screen, or
    /// hide what a line says behind a carriage return.
    @Test("no escape sequence from a run: step or a scriptlet reaches the terminal; tabs stay, CRLF is a line end")
    func escapeSequences() throws {
        let (layers, store) = try storeWithBase()
        let step = #"printf "hidden start\rrun-step: \033]52;c;ZWNobyBoaQ==\007\033[2J\302\233c\tend\r\n""#
        try "from: base\npackages: [escape-scriptlet]\nrun:\n  - '\(step)'\n".write(
            toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let probe = try Harness.run(["build", layers + "/probe.yaml", "--store", store])
        #expect(probe.status == 0, "\(probe.stderr)")
        let bytes = Array(probe.stderr.utf8)
        #expect(!bytes.contains(0x1B) && !bytes.contains(0x07) && !bytes.contains(0x0D), "\(probe.stderr)")
        #expect(!zip(bytes, bytes.dropFirst()).contains { $0 == 0xC2 && $1 == 0x9B }, "\(probe.stderr)")
        #expect(probe.stderr.contains(#"probe | hidden start\x0drun-step: \x1b]52;c;ZWNobyBoaQ==\x07\x1b[2J\xc2\x9bc"# + "\tend\n"))
        #expect(probe.stderr.contains(#"probe | hidden start\x0descape-scriptlet: \x1b]0;TITLE\x07\x1b[2J\xc2\x9bc"# + "\tend\n"))
        // --json carries the text whole, with every control written as a \u escape.
        let json = try Harness.run(["build", layers + "/probe.yaml", "--store", store, "--no-cache", "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let out = Array(json.stdout.utf8)
        #expect(!out.contains { $0 < 0x20 && $0 != 0x0A } && !out.contains(0x7F), "\(json.stdout)")
        #expect(!zip(out, out.dropFirst()).contains { $0 == 0xC2 && (0x80...0x9F).contains($1) }, "\(json.stdout)")
        let messages = json.stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.compactMap { $0["message"] as? String }
        #expect(messages.contains("hidden start\rrun-step: \u{1B}]52;c;ZWNobyBoaQ==\u{07}\u{1B}[2J\u{9B}c\tend\r"), "\(messages)")
    }

    /// libalpm's log of a build goes into the store's pacman.log, which a user reads as what
    /// libalpm did: a run: step must not forge it, and a scriptlet that floods it is cut.
    @Test("nothing a layer runs writes to libalpm's log but libalpm, and a scriptlet's flood is cut, in the store's pacman.log and on the terminal")
    func libalpmLog() throws {
        let (layers, store) = try storeWithBase()
        let log = store + "/cache/pacman.log"
        // Where the log was mounted, a file of the build's own /run now; the builder's descriptors.
        let command = "echo \"[ALPM] forged\" >> /run/layerctl/pacman.log; for f in /proc/1/fd/*; do echo \"[ALPM] forged\" >> \"$f\" && echo \"$f\" >> /etc/written; done; true"
        let probe = try build(command, in: layers, store: store)
        #expect(probe.status == 0, "\(probe.stderr)")
        let key = try String(contentsOfFile: store + "/refs/probe", encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(!FileManager.default.fileExists(atPath: store + "/layers/\(key)/tree/etc/written"))
        var text = try String(decoding: Data(contentsOf: URL(fileURLWithPath: log)), as: UTF8.self)
        #expect(text.contains("[ALPM] installed busybox") && !text.contains("forged"))
        // 200,000 lines of scriptlet output, some 18 MB of log: its first and last 4 MiB go in.
        let before = try #require(try FileManager.default.attributesOfItem(atPath: log)[.size] as? Int)
        try "from: base\npackages: [chatty-scriptlet]\n".write(toFile: layers + "/chatty.yaml", atomically: false, encoding: .utf8)
        let chatty = try Harness.run(["build", layers + "/chatty.yaml", "--store", store])
        #expect(chatty.status == 0, "\(chatty.stderr.suffix(2000))")
        // On the terminal, the scriptlet's output is clipped as a run: step's is.
        #expect(chatty.stderr.utf8.count < 3 << 20, "\(chatty.stderr.utf8.count) bytes of output")
        #expect(chatty.stderr.contains("chatty | chatty-scriptlet line 0 of 200000, to fill a log\n"))
        #expect(chatty.stderr.contains("chatty | (output clipped: ") && !chatty.stderr.contains("line 100000 of"))
        #expect(chatty.stderr.contains("chatty | chatty-scriptlet line 199999 of 200000, to fill a log\n"))
        let after = try #require(try FileManager.default.attributesOfItem(atPath: log)[.size] as? Int)
        #expect(after - before > 8 << 20 && after - before < (8 << 20) + 200, "\(after - before) bytes added")
        text = try String(decoding: Data(contentsOf: URL(fileURLWithPath: log)), as: UTF8.self)
        #expect(text.contains("chatty-scriptlet line 0 of 200000") && text.contains("chatty-scriptlet line 199999 of 200000"))
        #expect(text.contains(" bytes of this build's log are left out here\n"))
        #expect(!text.contains("chatty-scriptlet line 100000 of 200000"))
    }

    @Test("a run: step's output cannot hold the build: a line without end goes on in pieces, gigabytes keep their head and tail")
    func endlessOutput() throws {
        let (layers, store) = try storeWithBase()
        // 10,000 bytes without a newline; then 100 bytes, and a second later 4,100 more with their
        // newline in one write (the line's end comes past 4 KiB of what is held); then 256 MiB of
        // zeros (a binary on stdout) and a last line, where a failing command's error would be.
        let line = #"awk 'BEGIN { s = sprintf("%4100s", ""); gsub(/ /, "a", s); print s }'"#
        let command = #"echo first; head -c 10000 /dev/zero | tr "\0" a; echo; head -c 100 /dev/zero | tr "\0" b; sleep 1; "#
            + line + "; dd if=/dev/zero bs=1M count=256 2>/dev/null; echo; echo last words"
        let started = Date()
        let result = try build(command, in: layers, store: store, options: ["--timeout", "120"])
        #expect(result.status == 0, "\(result.stderr.prefix(2000))")
        #expect(Date().timeIntervalSince(started) < 60)
        let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { $0.hasPrefix("probe | ") }.map { String($0.dropFirst(8)) }
        #expect(lines.allSatisfy { $0.utf8.count <= 4096 })
        #expect(
            Array(lines.prefix(6)) == [
                "first", String(repeating: "a", count: 4096), String(repeating: "a", count: 4096), String(repeating: "a", count: 1808),
                String(repeating: "b", count: 100) + String(repeating: "a", count: 3996), String(repeating: "a", count: 104),
            ])
        #expect(lines.contains { $0.hasPrefix("(output clipped: ") && $0.hasSuffix(" bytes after the first 2 MiB are not shown; the last lines follow)") })
        #expect(lines.last == "last words")
        #expect(result.stderr.utf8.count < 3 << 20, "\(result.stderr.utf8.count) bytes of output")
    }

    @Test("a run: step that forks without end gets EAGAIN at --max-processes, fails at its line, and leaves no process or cgroup")
    func processLimit() throws {
        let (layers, store) = try storeWithBase()
        guard FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers")
            || FileManager.default.fileExists(atPath: "/sys/fs/cgroup/pids/cgroup.procs")
        else {
            print("skipped: this host mounts no pids cgroup controller")
            return
        }
        // 300 children that wait: far more than the limit, and few enough to end if it did not hold.
        let fork = "i=0; while [ $i -lt 300 ]; do sleep 60 & i=$((i+1)); done"
        let result = try build(fork, in: layers, store: store, options: ["--max-processes", "40"])
        #expect(result.status == 6, "\(result.stderr)")
        #expect(result.stderr.contains("can't fork") && result.stderr.contains("probe.yaml:3:5: run command"), "\(result.stderr)")
        let left = Harness.leftBuildCgroups()
        #expect(left.isEmpty, "cgroups left: \(left)")
        #expect(try Harness.leakedMounts(under: store).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        // The default limit lets the same step through: its children end with the build.
        let roomy = try Harness.run(["build", layers + "/probe.yaml", "--store", store])
        #expect(roomy.status == 0, "\(roomy.stderr)")
        try Harness.expectValidStore(store)
    }

    /// Files on a tmpfs are no process's: a step that filled the build's /tmp, /run and /dev/shm
    /// (half the machine's memory each, by the kernel's default) would leave the host's OOM killer
    /// only the host's processes to end.
    @Test("a build's memory, its tmpfs folders included, stops at --memory: the kernel ends its processes, not the host's")
    func memoryLimit() throws {
        let (layers, store) = try storeWithBase()
        guard case .success = BuildCgroup.parentFolder(.memory) else {
            print("skipped: this host offers no memory cgroup to root (\(BuildCgroup.parentFolder(.memory)))")
            return
        }
        // 64 MiB into each of two tmpfs folders: each fits its own size, both do not fit the limit.
        let fill = "dd if=/dev/zero of=/tmp/fill bs=1048576 count=64; dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=64"
        try "from: base\nrun:\n  - df -k /tmp /run /dev/shm\n  - \(fill)\n".write(
            toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/probe.yaml", "--store", store, "--memory", "96M"])
        #expect(result.status == 6, "\(result.stderr)")
        #expect(result.stderr.contains("probe.yaml:4:5: "), "\(result.stderr)")
        #expect(result.stderr.contains("reached its memory limit of 96.0 MiB (--memory;"), "\(result.stderr)")
        // df in the build tells what a step may write there.
        #expect(result.stderr.split(separator: "\n").filter { $0.hasPrefix("probe | tmpfs") && $0.contains(" 98304 ") }.count == 3, "\(result.stderr)")
        #expect(Harness.leftBuildCgroups().isEmpty, "cgroups left: \(Harness.leftBuildCgroups())")
        #expect(try Harness.leakedMounts(under: store).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        #expect(!FileManager.default.fileExists(atPath: store + "/refs/probe"))
        // A process that asks for too much is ended; a step that lets it fail goes on, with a warning.
        try "from: base\nrun:\n  - perl -e '$x = \"a\" x (256 << 20)' || echo went on\n".write(
            toFile: layers + "/greedy.yaml", atomically: false, encoding: .utf8)
        let greedy = try Harness.run(["build", layers + "/greedy.yaml", "--store", store, "--memory", "96M"])
        #expect(greedy.status == 0, "\(greedy.stderr)")
        #expect(greedy.stderr.contains("greedy | went on"), "\(greedy.stderr)")
        #expect(greedy.stderr.contains("greedy: warning: the build reached its memory limit of 96.0 MiB"), "\(greedy.stderr)")
        for wrong in ["1M", "lots", "150%"] {
            let refused = try Harness.run(["build", layers + "/greedy.yaml", "--store", store, "--memory", wrong])
            #expect(refused.status == 2 && refused.stderr.contains("--memory takes a size"), "\(wrong): \(refused.stderr)")
        }
        try Harness.expectValidStore(store)
    }

    /// The command of `layerctl shell` is the user's, but what it runs is the layer's: a fork bomb
    /// or a fill of its tmpfs root must stop inside the shell, as in a build.
    @Test("a shell is held to --max-processes and --memory as a build is, its tmpfs root included")
    func shellLimits() throws {
        let (_, store) = try storeWithBase()
        guard case .success = BuildCgroup.parentFolder(.memory), case .success = BuildCgroup.parentFolder(.pids) else {
            print("skipped: this host offers no pids or memory cgroup to root (\(BuildCgroup.parentFolder(.memory)))")
            return
        }
        func shell(_ limits: [String], _ script: String) throws -> Harness.Result {
            try Harness.run(["shell", "base", "--store", store] + limits + ["--", "/bin/sh", "-c", script])
        }
        // df tells what the shell may write: its root and its tmpfs folders are the limit's size.
        let sizes = try shell(["--memory", "96M"], "df -k / /tmp /dev/shm | tail -n +2")
        #expect(sizes.status == 0, "\(sizes.stderr)")
        #expect(sizes.stdout.split(separator: "\n").filter { $0.contains(" 98304 ") }.count == 3, "\(sizes.stdout)")
        // 64 MiB into the root and 64 MiB into /tmp: each fits its own size, both do not fit the limit.
        let fill = try shell(
            ["--memory", "96M"],
            "dd if=/dev/zero of=/fill bs=1048576 count=64; dd if=/dev/zero of=/tmp/fill bs=1048576 count=64")
        #expect(fill.stderr.contains("layerctl: warning: the shell reached its memory limit of 96.0 MiB (--memory; what it wrote anywhere counts)"), "\(fill.stderr)")
        // 300 children that wait: far more than the limit.
        let forks = try shell(["--max-processes", "40"], "i=0; while [ $i -lt 300 ]; do sleep 60 & i=$((i+1)); done")
        #expect(forks.status != 0 && forks.stderr.contains("can't fork"), "\(forks.stderr)")
        for wrong in [["--memory", "1M"], ["--max-processes=-1"]] {
            let refused = try shell(wrong, "true")
            #expect(refused.status == 2 && refused.stderr.contains("takes a"), "\(wrong): \(refused.stderr)")
        }
        #expect(Harness.leftBuildCgroups().isEmpty, "cgroups left: \(Harness.leftBuildCgroups())")
        #expect(try Harness.leakedMounts(under: store).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
        try Harness.expectValidStore(store)
    }

    /// A layer's tree keeps the setuid programs its packages or its image's author gave it. Were the
    /// store's trees open to the host's users, any of them could run such a program, as root, on
    /// the host (Docker's CVE-2021-41091). The kernel says who may: a setuid copy of `id` in a
    /// layer prints euid 0 when the host's nobody can reach it.
    @Test("the host's users cannot run the setuid programs of a stored tree; a store made before is closed when opened")
    func storeKeepsTreesPrivate() throws {
        let (layers, store) = try storeWithBase()
        // The store as /var/lib/layerctl is: a folder everyone may pass through (in /var/tmp).
        chmod(store, 0o755)
        try FileManager.default.copyItem(atPath: "/usr/bin/id", toPath: layers + "/id")
        try "from: base\nfiles:\n  - path: /usr/bin/rootme\n    source: id\n    mode: \"4755\"\n".write(
            toFile: layers + "/rootme.yaml", atomically: false, encoding: .utf8)
        let built = try Harness.run(["build", layers + "/rootme.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")
        let key = try String(contentsOfFile: store + "/refs/rootme", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let program = store + "/layers/" + key + "/tree/usr/bin/rootme"
        var st = stat()
        #expect(stat(program, &st) == 0 && st.st_mode & S_ISUID != 0 && st.st_uid == 0, "the layer keeps its setuid file")
        // Through a shell: setpriv itself keeps root's capabilities until its own exec.
        func runAsNobody() throws -> (status: Int32, output: String) {
            try KernelMount.run(
                "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", "exec \"$0\" -u", program])
        }
        for folder in ["layers", "tmp"] {
            #expect(stat(store + "/" + folder, &st) == 0 && st.st_mode & 0o777 == 0o700, "\(folder): \(String(st.st_mode & 0o777, radix: 8))")
        }
        let refused = try runAsNobody()
        #expect(refused.status != 0 && refused.output.contains("Permission denied"), "\(refused.output)")
        // A store made before the folders were private is closed by the next command that opens it.
        chmod(store + "/layers", 0o755)
        chmod(store + "/tmp", 0o755)
        #expect(try runAsNobody().output.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "the kernel's oracle: open, it is root")
        #expect(try Harness.run(["ls", "--store", store]).status == 0)
        #expect(try runAsNobody().output.contains("Permission denied"))
        #expect(stat(store + "/tmp", &st) == 0 && st.st_mode & 0o777 == 0o700)
    }

    /// After the build, layerctl itself rewrites a few files of the tree on the host (the
    /// normaliser's machine-id). A step may leave a symlink at any name it can guess there: the
    /// temporary file of that rewrite was `machine-id.tmp-PID`, and the pid is in the build's
    /// /proc/self/mountinfo (the store's `tmp/build-PID-…` folder; it was in /proc/self/cgroup
    /// too). Through it, a layer file wrote into any host file, as root.
    @Test("a symlink a run: step leaves beside a file layerctl rewrites in the tree reaches no host file")
    func rewriteFollowsNoPlantedSymlink() throws {
        let (layers, store) = try storeWithBase()
        let victim = try Harness.temporaryDirectory("victim") + "/file"
        try "the host's\n".write(toFile: victim, atomically: false, encoding: .utf8)
        let plant = #"pid=$(sed -n "s|.*/tmp/build-\([0-9]*\)-.*|\1|p" /proc/self/mountinfo | head -1); "#
            + "echo x > /etc/machine-id; for p in $pid $(seq 1 300); do ln -s \(victim) /etc/machine-id.tmp-$p; done; echo planted $pid"
        let result = try build(plant, in: layers, store: store)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.range(of: #"probe \| planted [0-9]+\n"#, options: .regularExpression) != nil, "\(result.stderr)")
        #expect(result.stderr.contains("/etc/machine-id left empty"), "\(result.stderr)")
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "the host's\n")
        let key = try String(contentsOfFile: store + "/refs/probe", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try String(contentsOfFile: store + "/layers/\(key)/tree/etc/machine-id", encoding: .utf8) == "")
    }

    /// libalpm reads a repository's database on the host, as root, and would read it with every
    /// format and filter libarchive has: a cpio or a zip with its own parser, an lrzip by running
    /// the host's `lrzip`. Each of these databases lists the demo's packages, and the old code
    /// built from the cpio and the zip.
    @Test("a repository database that is no tar in a library's compression is refused before libalpm reads it")
    func databaseOfNoTar() throws {
        let work = try Harness.temporaryDirectory("odd-database")
        let demo = Harness.demoOut + "/repo/demo"
        let lrzip = try Data("LRZI".utf8) + Data([0, 6]) + Data(count: 58) + #require(FileManager.default.contents(atPath: demo + "/demo.db"))
        try FileManager.default.createDirectory(atPath: work + "/entries", withIntermediateDirectories: true)
        let unpack = try KernelMount.run("/usr/bin/bsdtar", ["-xf", demo + "/demo.db", "-C", work + "/entries"])
        #expect(unpack.status == 0, "\(unpack.output)")
        let entries = try FileManager.default.contentsOfDirectory(atPath: work + "/entries").sorted()
        for (index, shape) in ["lrzip", "cpio", "zip"].enumerated() {
            let repo = work + "/repo-\(index)/demo"
            try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
            for name in try FileManager.default.contentsOfDirectory(atPath: demo) where name.hasSuffix(".pkg.tar.zst") {
                try FileManager.default.createSymbolicLink(atPath: repo + "/" + name, withDestinationPath: demo + "/" + name)
            }
            if shape == "lrzip" {
                try lrzip.write(to: URL(fileURLWithPath: repo + "/demo.db"))
            } else {
                let format = shape == "cpio" ? ["--format", "newc", "-z"] : ["--format", "zip"]
                let pack = try KernelMount.run("/usr/bin/bsdtar", format + ["-cf", repo + "/demo.db", "-C", work + "/entries"] + entries)
                #expect(pack.status == 0, "\(pack.output)")
            }
            let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(work)/repo-\(index)/$repo]\n    siglevel: Optional TrustAll\npackages: [busybox]\n"
            try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
            let store = work + "/store-\(index)"
            let result = try Harness.run(["build", work + "/probe.yaml", "--store", store])
            #expect(result.status != 0, "\(shape): \(result.stderr)")
            #expect(
                result.stderr.contains("probe.yaml:4:5: refresh repository demo failed: its database is no tar archive, plain or compressed with gzip, bzip2, xz, lzma, lzip, zstd, lz4 or compress"),
                "\(shape): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(shape): \(result.stderr)")
            // Nothing of it is kept in the store's cache.
            let kept = FileManager.default.enumerator(atPath: store + "/cache")?.compactMap { $0 as? String }.filter { $0.hasSuffix("demo.db") }
            #expect(kept == [], "\(shape): \(kept ?? [])")
        }
    }

    /// A package that matches its database's sha256 but is no tar: the builder's libalpm would not
    /// open it (AlpmTests.packageOfNoTar), and said so at the builder's path, naming no repository.
    /// The old code installed it, before libalpm was given tar alone.
    @Test("a package that is a cpio is refused in one line at its repository, not kept, and no layer is stored")
    func packageOfNoTar() throws {
        let work = try Harness.temporaryDirectory("cpio-package")
        let repo = work + "/repo/demo"
        try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
        let package = "busybox-1.35.0-1-x86_64.pkg.tar.zst"
        try BootMachine.shell(
            """
            mkdir '\(work)/files'
            bsdtar -xf '\(Harness.demoOut)/repo/demo/\(package)' -C '\(work)/files'
            cd '\(work)/files'
            bsdtar --format newc --zstd -cf '\(repo)/\(package)' .PKGINFO .MTREE usr
            repo-add -q '\(repo)/demo.db.tar.gz' '\(repo)/\(package)'
            """)
        let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(work)/repo/$repo]\n    siglevel: Optional TrustAll\npackages: [busybox]\n"
        try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", work + "/probe.yaml", "--store", work + "/store"])
        #expect(result.status == 5, "\(result.stderr)")
        #expect(
            result.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
                == ["layerctl: \(work)/probe.yaml:4:5: package busybox of repository demo (\(package)) is no tar archive, "
                    + "plain or compressed with gzip, bzip2, xz, lzma, lzip, zstd, lz4 or compress; it was removed from the cache"],
            "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: work + "/store/cache/pkg/\(package)"))
        #expect(!FileManager.default.fileExists(atPath: work + "/store/refs/probe"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: work + "/store/layers") == [])
    }

    /// libalpm's curl ends a download when its source does: a database or a package that is
    /// /dev/zero (a symlink in some user's folder, or a file:// URL that curl cuts at `#`) was
    /// written into the cache until the disk was full. The probe runs with a file size limit
    /// of 1 GiB of its own, so the old code ends there (SIGXFSZ), not at the disk's end.
    @Test("a database or a package without end is stopped at the size it may have, and nothing of it stays in the cache")
    func downloadsWithoutEnd() throws {
        let work = try Harness.temporaryDirectory("endless")
        let demo = Harness.demoOut + "/repo/demo"
        // A folder of odd characters, where a real repository might live, still works.
        for folder in ["zero-db", "zero-package", "odd #?% name"] {
            try FileManager.default.createDirectory(atPath: "\(work)/\(folder)/demo", withIntermediateDirectories: true)
            for name in try FileManager.default.contentsOfDirectory(atPath: demo) where name.hasSuffix(".pkg.tar.zst") || name == "demo.db" {
                let endless = (folder == "zero-db" && name == "demo.db") || (folder == "zero-package" && name.hasPrefix("busybox-"))
                try FileManager.default.createSymbolicLink(atPath: "\(work)/\(folder)/demo/\(name)", withDestinationPath: endless ? "/dev/zero" : demo + "/" + name)
            }
        }
        func build(_ server: String, store: String) throws -> (status: Int32, output: String) {
            let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\"\(server)\"]\n    siglevel: Never\npackages: [busybox]\n"
            try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
            return try KernelMount.run("/usr/bin/prlimit", ["--fsize=\(1 << 30)", Harness.executable, "build", work + "/probe.yaml", "--store", store])
        }
        func leftovers(_ folder: String) -> [String] {
            (FileManager.default.enumerator(atPath: folder)?.compactMap { $0 as? String } ?? [])
                .filter { $0.hasSuffix(".part") || $0.hasSuffix("demo.db") || $0.hasSuffix(".pkg.tar.zst") }
        }
        let cut = try build("file:///dev/zero#", store: work + "/store-cut")
        #expect(cut.status == 3 && cut.output.contains("probe.yaml:5:15: a file:// server is a folder"), "\(cut.output)")

        for (folder, says, cache) in [
            ("zero-db", "refresh repository demo failed: its database passed 128.0 MiB, the most libalpm takes; the download was stopped", "cache"),
            ("zero-package", "the download of package busybox of repository demo passed 1.0 MiB, more than its database gives it", "cache/pkg"),
        ] {
            let result = try build(work + "/\(folder)/$repo", store: work + "/store-\(folder)")
            #expect(result.status != 0)
            #expect(result.output.contains("probe.yaml:4:5: " + says), "\(result.output)")
            #expect(leftovers(work + "/store-\(folder)/\(cache)") == [])
        }

        let odd = try build(work + "/odd #?% name/$repo", store: work + "/store-odd")
        #expect(odd.status == 0, "\(odd.output)")
    }

    /// curl gives up on a download only below a byte a second for 10 s: a server that sends a
    /// byte every half second, with no length, held the old code's refresh without end (the probe
    /// runs under `timeout 120`, so the old code fails here rather than hangs). curl now has a
    /// floor of 32 KiB in 30 s (download_floor.c). A repository with one server: the database,
    /// then (the database served whole) a package.
    @Test("a database or a package that comes at less than 32 KiB in 30 s from its one server is stopped, in one line at its repository")
    func downloadStall() throws {
        let database = try PythonHelper("trickle-server.py", folderName: "trickle") { ["--port-file", $0 + "/port"] }
        defer { database.stop() }
        let package = try PythonHelper("trickle-server.py", folderName: "trickle-package") {
            ["--port-file", $0 + "/port", "--files", Harness.demoOut + "/repo/demo", "--trickle", ".pkg.tar.zst"]
        }
        defer { package.stop() }
        let work = try Harness.temporaryDirectory("stall")
        for (server, says) in [
            (database, "refresh repository demo failed: its database came at less than 32.0 KiB in 30 s from each of its servers; "
                + "the download was stopped (list a faster server)"),
            (package, "the download of package busybox of repository demo came at less than 32.0 KiB in 30 s from each of its servers; "
                + "it was stopped (list a faster server)"),
        ] {
            let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\"http://127.0.0.1:\(server.port)/$repo\"]\n    siglevel: Never\npackages: [busybox]\n"
            try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
            let store = work + "/store-\(server.port)"
            let result = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "120", Harness.executable, "build", work + "/probe.yaml", "--store", store])
            #expect(result.status == 5, "\(result.output)")
            #expect(result.output.contains("probe.yaml:4:5: " + says), "\(result.output)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers") == [])
            // libalpm keeps what came of a package, to go on from there; only as a `.part`.
            let cached = try FileManager.default.contentsOfDirectory(atPath: store + "/cache/pkg")
            #expect(cached.allSatisfy { $0.hasSuffix(".part") }, "\(cached)")
        }
    }

    /// A slow mirror first in the list, as a mirror list often has one: curl ends its database's
    /// and its package's downloads after 30 s each, and libalpm takes them from the next server,
    /// going on from what the slow one brought (the file's true beginning). Before the floor, the
    /// build ended at the first stall ("list a faster server first").
    @Test("a slow server is left for the next one, for the database and for a package, and the layer builds")
    func slowServerSkipped() throws {
        let server = try PythonHelper("trickle-server.py", folderName: "trickle-mirror") {
            ["--port-file", $0 + "/port", "--files", Harness.demoOut + "/repo/demo", "--trickle", ".db", ".pkg.tar.zst"]
        }
        defer { server.stop() }
        let work = try Harness.temporaryDirectory("slow-mirror")
        let layer = """
            from: scratch
            arch: x86_64
            repos:
              - name: demo
                servers: ["http://127.0.0.1:\(server.port)/$repo", "\(Harness.demoOut)/repo/$repo"]
                siglevel: Never
            packages: [busybox]

            """
        try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
        let result = try KernelMount.run(
            "/usr/bin/timeout", ["-s", "KILL", "150", Harness.executable, "build", work + "/probe.yaml", "--store", work + "/store"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("Operation too slow"), "\(result.output)")
        #expect(FileManager.default.fileExists(atPath: work + "/store/refs/probe"))
    }

    /// What curl cannot end: a `file://` server's database, or package, that is a FIFO no one
    /// writes, where curl's open waits without end. The watch on the `.part` files ends the build
    /// once nothing came for as long as curl would have given each server (30 s), and 30 s more.
    @Test("a download blocked for good is stopped by the watch, in one line at its repository")
    func blockedDownload() throws {
        let work = try Harness.temporaryDirectory("blocked")
        let database = work + "/database", package = work + "/package"
        try FileManager.default.createDirectory(atPath: database, withIntermediateDirectories: true)
        #expect(mkfifo(database + "/demo.db", 0o644) == 0)
        // The demo's own database, which lists busybox: its package is the FIFO.
        try FileManager.default.createDirectory(atPath: package, withIntermediateDirectories: true)
        // (demo.db is repo-add's symlink to demo.db.tar.gz)
        try FileManager.default.copyItem(atPath: Harness.demoOut + "/repo/demo/demo.db.tar.gz", toPath: package + "/demo.db")
        #expect(mkfifo(package + "/busybox-1.35.0-1-x86_64.pkg.tar.zst", 0o644) == 0)
        for (folder, says) in [
            (database, "probe.yaml:4:5: refresh repository demo failed: its database brought less than 32.0 KiB in 60 s; the download was stopped"),
            (package, "probe.yaml:4:5: the download of package busybox of repository demo brought less than 32.0 KiB in 60 s; it was stopped"),
        ] {
            let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(folder)]\n    siglevel: Never\npackages: [busybox]\n"
            try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
            let store = work + "/store-" + FileSystem.split(folder).name
            let result = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "120", Harness.executable, "build", work + "/probe.yaml", "--store", store])
            #expect(result.status == 5, "\(result.output)")
            #expect(result.output.contains(says), "\(result.output)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/layers") == [])
        }
    }

    /// libalpm's resolution takes time and memory that grow with the square of a dependency
    /// chain's length: this database of 20,000 packages, each needing the next, is 570 KB, and
    /// the old code resolved it for 190 s in 6 GB before it failed at the downloads.
    @Test("a dependency chain too long to resolve is stopped at the build's --timeout or --memory, in one line at the layer's packages")
    func resolutionWithoutEnd() throws {
        let work = try Harness.temporaryDirectory("chain")
        _ = try PackageWorkTests.chainRepository(in: work, count: 20_000)
        for (limit, says) in [(["--timeout", "2"], "took more than 2 s"), (["--memory", "200M"], "took more than 200.0 MiB of memory")] {
            let result = try Harness.run(["build", work + "/probe.yaml", "--store", work + "/store", "--json"] + limit)
            #expect(result.status == 5, "\(result.stderr)")
            #expect(
                result.stderr.contains("probe.yaml:7:12: resolving the packages of layer probe \(says)"), "\(result.stderr)")
            #expect(result.labelled.count == 1, "\(result.stderr)")
            // The --json record says it too, as for any other error.
            #expect(result.stdout.contains(#""error":{"code":"packages","exitStatus":5"#), "\(result.stdout)")
        }
    }

    /// A layer file names its repositories' servers, and a file:// one may be any folder of the
    /// host's: a database of the layer author's could name a host file as a package's file, which
    /// the download would copy into the store's package cache, where every later build sees it.
    @Test("a package whose database names no sha256 is refused: no host file reaches the package cache")
    func packageFromAHostFolder() throws {
        let work = try Harness.temporaryDirectory("host-file-repo")
        for folder in ["repo", "secret", "db/evilpkg-1.0-1"] {
            try FileManager.default.createDirectory(atPath: work + "/" + folder, withIntermediateDirectories: true)
        }
        try "root:a secret of the host's\n".write(toFile: work + "/secret/shadow", atomically: false, encoding: .utf8)
        let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: evil\n    servers: [file://\(work)/repo, file://\(work)/secret]\n    siglevel: Never\npackages: [evilpkg]\n"
        try layer.write(toFile: work + "/probe.yaml", atomically: false, encoding: .utf8)
        let sha256 = "%SHA256SUM%\n" + String(repeating: "0", count: 64) + "\n\n"
        // Without a sha256, with one that is not the file's, and with a file name that leaves the
        // server's folder, which libalpm refuses and says so only in its log: its line is shown.
        for (index, (filename, checksum)) in [("shadow", ""), ("shadow", sha256), ("../secret/shadow", sha256)].enumerated() {
            let desc = "%FILENAME%\n\(filename)\n\n%NAME%\nevilpkg\n\n%VERSION%\n1.0-1\n\n%ARCH%\nany\n\n%CSIZE%\n28\n\n"
            try (desc + checksum).write(toFile: work + "/db/evilpkg-1.0-1/desc", atomically: false, encoding: .utf8)
            let tar = try KernelMount.run("/usr/bin/tar", ["-czf", work + "/repo/evil.db", "-C", work + "/db", "evilpkg-1.0-1"])
            #expect(tar.status == 0, "\(tar.output)")
            let store = work + "/store-\(index)"
            let result = try Harness.run(["build", work + "/probe.yaml", "--store", store])
            #expect(result.status != 0, "\(result.stderr)")
            if checksum.isEmpty {
                #expect(result.stderr.contains("probe.yaml:4:5: package evilpkg of repository evil has no sha256 in its database"), "\(result.stderr)")
            }
            if filename.contains("/") {
                #expect(
                    result.stderr.contains(
                        "probe.yaml:7:12: install evilpkg failed: target not found in any repository; "
                            + "evil database is inconsistent: filename of package evilpkg is illegal;"),
                    "\(result.stderr)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/cache/pkg") == [], "case \(index)")
        }
    }

    /// A layer's tree is a stranger's (its `run:` steps, or an image's tar), and to resolve the
    /// layer above it, libalpm reads its package database in layerctl's own process, on the host.
    /// There, a symlink would be followed to a file of the host (the old resolution took this
    /// `desc` of the host's for a package and built the layer), a device node would open a device
    /// of the host, and a FIFO would hold the build.
    @Test("a package database below that holds a symlink, a device node or a FIFO is refused at from:, and nothing of it is opened")
    func plantedPackageDatabase() throws {
        let work = try Harness.temporaryDirectory("planted-database")
        try "%NAME%\nhostpkg\n\n%VERSION%\n1-1\n\n".write(toFile: work + "/host-desc", atomically: false, encoding: .utf8)
        let local = "/var/lib/pacman/local"
        let cases: [(plant: String, path: String, kind: String)] = [
            ("mkdir \(local)/evil-1-1 && ln -s \(work)/host-desc \(local)/evil-1-1/desc", "\(local)/evil-1-1/desc", "a symbolic link"),
            // The host's /dev/null; a disk's numbers would do as well.
            ("mkdir \(local)/dev-1-1 && mknod \(local)/dev-1-1/desc c 1 3", "\(local)/dev-1-1/desc", "a character device"),
            ("rm \(local)/ALPM_DB_VERSION && mkfifo \(local)/ALPM_DB_VERSION", "\(local)/ALPM_DB_VERSION", "a FIFO"),
        ]
        for (index, planted) in cases.enumerated() {
            let folder = work + "/layers-\(index)", store = work + "/store-\(index)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let base = """
                from: scratch
                arch: x86_64
                repos:
                  - name: demo
                    servers: [\(Harness.demoOut)/repo/$repo]
                    siglevel: Never
                packages: [filesystem, busybox]
                run: ["\(planted.plant)"]

                """
            try base.write(toFile: folder + "/base.yaml", atomically: false, encoding: .utf8)
            try "from: base\npackages: [demo-lib]\n".write(toFile: folder + "/top.yaml", atomically: false, encoding: .utf8)
            let built = try Harness.run(["build", folder + "/base.yaml", "--store", store])
            #expect(built.status == 0, "\(built.stderr)")
            let result = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable, "build", folder + "/top.yaml", "--store", store])
            #expect(result.status == 5, "case \(index): \(result.output)")
            #expect(
                result.output.contains(
                    "top.yaml:1:7: the package database of the layers below holds \(planted.path), which is \(planted.kind); "
                        + "a package database holds only files and folders"),
                "\(result.output)")
            #expect(!FileManager.default.fileExists(atPath: store + "/refs/top"), "case \(index)")
        }
    }

    /// A sparse file costs a layer no disk, whatever its size, and layerctl's own process, outside
    /// the build's memory limit, reads some files of the tree. The old normaliser read this 2 GiB
    /// `/etc/machine-id` whole (with 6 GiB, it took 12.6 GB of memory), and the old resolution
    /// had libalpm read a 2 GiB `desc` line by line.
    @Test("sparse files in a tree: the normaliser and the resolution read none of them whole, and name those too large")
    func sparseFilesInTheTree() throws {
        let work = try Harness.temporaryDirectory("sparse-tree")
        let desc = "/var/lib/pacman/local/busybox-1.35.0-1/desc"
        let tooLarge = "\(desc) is 2.0 GiB, more than the 64.0 MiB layerctl reads of such a file"
        func build(_ name: String, run: String?) throws -> (status: Int32, output: String, kilobytes: Int) {
            let steps = run.map { "run: [\"\($0)\"]\n" } ?? ""
            let layer = "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(Harness.demoOut)/repo/$repo]\n    siglevel: Never\npackages: [filesystem, busybox]\n" + steps
            try layer.write(toFile: work + "/\(name).yaml", atomically: false, encoding: .utf8)
            let result = try KernelMount.run(
                "/usr/bin/time", ["-f", "maxrss %M", Harness.executable, "build", work + "/\(name).yaml", "--store", work + "/store"])
            let kilobytes = result.output.split(separator: "\n").last { $0.hasPrefix("maxrss ") }.flatMap { Int($0.dropFirst(7)) } ?? -1
            return (result.status, result.output, kilobytes)
        }
        // Dealt with by their sizes: the file holds an id (it is neither empty nor `uninitialized`),
        // and the keyring holds a secret key.
        let identity = try build("identity", run: "truncate -s 2G /etc/machine-id && mkdir -p /etc/pacman.d/gnupg && truncate -s 2G /etc/pacman.d/gnupg/secring.gpg")
        #expect(identity.status == 0, "\(identity.output)")
        #expect(identity.kilobytes > 0 && identity.kilobytes < 512 << 10, "\(identity.kilobytes) KB: \(identity.output)")
        let key = try String(contentsOfFile: work + "/store/refs/identity", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let tree = work + "/store/layers/\(key)/tree"
        #expect(try String(contentsOfFile: tree + "/etc/machine-id", encoding: .utf8) == "")
        #expect(!FileManager.default.fileExists(atPath: tree + "/etc/pacman.d/gnupg"))
        // A package database file of 2 GiB: refused by its size, in one line.
        let database = try build("database", run: "truncate -s 2G \(desc)")
        #expect(database.status != 0, "\(database.output)")
        #expect(database.output.contains(tooLarge), "\(database.output)")
        #expect(database.kilobytes > 0 && database.kilobytes < 512 << 10, "\(database.kilobytes) KB: \(database.output)")
        #expect(!FileManager.default.fileExists(atPath: work + "/store/refs/database"))
        // The same file in a layer below, as an image's tar would bring it: the resolution of the
        // layer above refuses it at `from:`.
        #expect(try build("base", run: nil).status == 0)
        let base = try String(contentsOfFile: work + "/store/refs/base", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(truncate(work + "/store/layers/\(base)/tree" + desc, 2 << 30) == 0)
        try "from: base\npackages: [demo-lib]\n".write(toFile: work + "/top.yaml", atomically: false, encoding: .utf8)
        let top = try KernelMount.run("/usr/bin/timeout", ["-s", "KILL", "60", Harness.executable, "build", work + "/top.yaml", "--store", work + "/store"])
        #expect(top.status == 5, "\(top.output)")
        #expect(top.output.contains("top.yaml:1:7: in the package database of the layers below, " + tooLarge), "\(top.output)")
    }

    /// With the host's network, the host's abstract unix sockets are in reach: no path guards them,
    /// and a container runtime's shims, a session bus or X11 listen there (containerd's shims gave a
    /// container with the host's network root on the host: CVE-2020-15257).
    @Test("network: true reaches no abstract unix socket of the host's; those the build makes still work")
    func abstractSockets() throws {
        let (layers, store) = try storeWithBase()
        guard lc_landlock_abi() >= 6 else {
            print("skipped: this kernel has no Landlock scopes (ABI \(lc_landlock_abi()); they need Linux 6.12)")
            return
        }
        let name = "layerctl-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in name.utf8.enumerated() { path[index + 1] = byte }
        }
        let length = socklen_t(MemoryLayout.offset(of: \sockaddr_un.sun_path)! + 1 + name.utf8.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        #expect(bound == 0 && listen(listener, 8) == 0)
        func probe(_ socket: String) -> String {
            #"socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; print connect($s, pack_sockaddr_un("\0"#
                + socket + #"")) ? ""# + socket + #" reached\n" : ""# + socket + #" refused: $!\n";"#
        }
        let inner = #"socket(my $l, AF_UNIX, SOCK_STREAM, 0) or die; bind($l, pack_sockaddr_un("\0inner")) or die; listen($l, 1);"#
        try "from: base\nnetwork: true\nrun:\n  - |\n    perl -MSocket -e '\(probe(name)) \(inner) \(probe("inner"))'\n".write(
            toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/probe.yaml", "--store", store])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("probe | \(name) refused: Operation not permitted"), "\(result.stderr)")
        #expect(result.stderr.contains("probe | inner reached"), "\(result.stderr)")
    }

    /// What every Arch install does after pacstrap, and a read-only image must do in a layer, since
    /// nothing set on the running system stays: make users, groups and passwords. shadow's tools
    /// lock /etc/.pwd.lock, write beside and rename, chown a new home and send to the audit socket:
    /// all of it works inside the confinement, and what they write is the same on every build (no
    /// password age from the clock: `SOURCE_DATE_EPOCH` is 0, which useradd takes as no aging).
    @Test("users, groups and passwords made by shadow's tools in run:, as an Arch install makes them, are the same in every build")
    func accounts() throws {
        let folder = try Harness.temporaryDirectory("accounts")
        let hash = "$6$pepper$0c7rNDw3yA4GdArIz7T/"
        try (Harness.demoRoot(["filesystem", "busybox", "shadow"]) + """
            run:
              # Arch's filesystem package has /etc/shadow and /etc/gshadow; the demo's makes them here.
              - pwconv && grpconv
              - groupadd -g 998 wheel
              - useradd -m -u 1000 -G wheel -s /bin/sh -p '' arch
              - useradd -m -u 1001 -s /bin/sh -p '\(hash)' steve
              - echo 'arch:$6$salt$other' | chpasswd -e

            """).write(toFile: folder + "/users.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/users.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        let seen = try Harness.run([
            "shell", "users", "--store", store, "--", "sh", "-c",
            "tail -n 2 /etc/passwd /etc/shadow; tail -n 3 /etc/group; stat -c '%n %u:%g %a' /home/arch /home/steve",
        ])
        #expect(seen.status == 0, "\(seen.stderr)")
        #expect(
            seen.stdout == """
                ==> /etc/passwd <==
                arch:x:1000:1000::/home/arch:/bin/sh
                steve:x:1001:1001::/home/steve:/bin/sh

                ==> /etc/shadow <==
                arch:$6$salt$other::0:99999:7:::
                steve:\(hash)::0:99999:7:::
                wheel:x:998:arch
                arch:x:1000:
                steve:x:1001:
                /home/arch 1000:1000 755
                /home/steve 1001:1001 755

                """, "\(seen.stdout)")
        let check = try Harness.run(["build", "--check", folder + "/users.yaml"])
        #expect(check.status == 0 && check.stdout.contains("reproducible"), "\(check.stdout)\n\(check.stderr)")
    }

    @Test("run: and scriptlets see the layer's root, the build's processes, its own devices, loopback, cgroup and packages, with few privileges")
    func whatTheBuildSees() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let facts = [
            "ls /proc | grep -E '^[0-9]+$' | sort -n > /etc/pids",
            "ls /sys/class/net > /etc/nets",
            "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status > /etc/status",
            "ls /dev > /etc/devices",
            "mknod /etc/null c 1 3 && echo made > /etc/null-made",
            "(ulimit -Hc; ulimit -c unlimited 2>&1 || echo refused) > /etc/core",
            "cat /proc/self/cgroup > /etc/cgroups",
            "ls /run/layerctl/packages > /etc/packages-seen",
        ]
        try ("from: base\npackages: [game]\nrun:\n" + facts.map { "  - \($0)\n" }.joined()).write(
            toFile: layers + "/facts.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/facts.yaml", "--store", store])
        #expect(result.status == 0, "\(result.stderr)")
        let key = try String(contentsOfFile: store + "/refs/facts", encoding: .utf8).trimmingCharacters(in: .newlines)
        let tree = store + "/layers/\(key)/tree/etc/"
        func lines(_ name: String) -> [String] {
            ((try? String(contentsOfFile: tree + name, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        // pid 1 (the builder), the shell of this command and its pipeline: nothing of the host.
        #expect(lines("pids").allSatisfy { (Int($0) ?? 99) < 10 } && lines("pids").first == "1", "\(lines("pids"))")
        #expect(lines("nets") == ["lo"])
        // The capability set of container runtimes (0xa80405fb), no_new_privs, a seccomp filter.
        #expect(
            lines("status") == [
                "CapEff:\t00000000a80405fb", "CapBnd:\t00000000a80405fb", "NoNewPrivs:\t1", "Seccomp:\t2",
            ], "\(lines("status"))")
        #expect(
            Set(lines("devices")) == ["fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
                                       "tty", "urandom", "zero"], "\(lines("devices"))")
        // A package may hold a device node: making one works, in the layer.
        #expect(lines("null-made") == ["made"])
        // No core dumps, whatever the caller's limit: none lands in the layer or with the host's handler.
        #expect(lines("core").first == "0" && lines("core").last == "refused", "\(lines("core"))")
        // The build's cgroup is the root of what it sees: no host path, no layerctl pid.
        #expect(!lines("cgroups").isEmpty && lines("cgroups").allSatisfy { $0.hasSuffix(":/") }, "\(lines("cgroups"))")
        // The packages it installs, and none of the others in the store's cache (base's six and
        // their dependencies).
        #expect(lines("packages-seen") == ["game-1.0-1-any.pkg.tar.zst"], "\(lines("packages-seen"))")
    }

    /// The build's processes had the caller's limits: 20,000 open files on this machine, 1,024 in a
    /// user's login shell, and whatever a CI runner's `ulimit` said. A step that depends on them (a
    /// build system that sizes itself by `ulimit -n`, a test that opens many files, a limit on
    /// address space) built differently, or failed, by who ran layerctl. Without CAP_SYS_RESOURCE
    /// (this machine's root lacks it) a hard limit cannot be raised: the callers here only lower
    /// soft limits, or hard ones to where a build's soft limit still fits, and the last one goes
    /// below it, which the build says.
    @Test("run: steps, and what shell runs, have a service's limits whatever the caller's ulimit; a hard limit below them is named")
    func limitsOfTheCaller() throws {
        let layers = try Harness.demoLayers()
        try "from: base\nrun:\n  - ulimit -a > /etc/limits; ulimit -H -a > /etc/limits.hard\n".write(
            toFile: layers + "/limits.yaml", atomically: false, encoding: .utf8)
        let raises = Harness.hasCapability(24)  // CAP_SYS_RESOURCE
        var caller = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &caller)
        var seen: [(soft: [String], hard: [String], output: String)] = []
        for limits in [
            [], ["--nofile=300:4096", "--stack=2097152:16777216", "--memlock=1048576:", "--msgqueue=4096:",
                 "--as=68719476736:", "--data=68719476736:", "--fsize=107374182400:", "--cpu=100000:", "--nproc=1000:",
                 "--locks=1000:", "--core=unlimited:"],
            ["--nofile=256:256"],
        ] {
            let store = try Harness.temporaryDirectory("store")
            let result = try KernelMount.run(
                "/usr/bin/prlimit", limits + [Harness.executable, "build", layers + "/limits.yaml", "--store", store])
            #expect(result.status == 0, "\(limits): \(result.output)")
            let key = try String(contentsOfFile: store + "/refs/limits", encoding: .utf8)
                .trimmingCharacters(in: .newlines)
            func lines(_ name: String) throws -> [String] {
                try String(contentsOfFile: store + "/layers/\(key)/tree/etc/" + name, encoding: .utf8)
                    .split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
            }
            seen.append((try lines("limits"), try lines("limits.hard"), result.output))
            // A step tried in `shell` runs with the step's limits and umask, under a caller's umask too.
            let shell = try KernelMount.run(
                "/bin/sh",
                ["-c", "umask 077; exec /usr/bin/prlimit \"$@\"", "sh"] + limits
                    + [Harness.executable, "shell", "limits", "--store", store, "--", "/bin/sh", "-c", "ulimit -a; umask"])
            #expect(shell.status == 0, "\(limits): \(shell.output)")
            let shellLines = shell.output.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
            #expect(Set(seen[seen.count - 1].soft).isSubset(of: shellLines), "\(limits): \(shell.output)")
            #expect(shellLines.contains("0022"), "\(shell.output)")
            #expect(
                shell.output.contains("the shell's command gets limits below a build's") == seen[seen.count - 1].output
                    .contains("limits below"), "\(shell.output)")
        }
        #expect(seen[0].soft == seen[1].soft, "\(seen[0].soft) \(seen[1].soft)")
        for line in [
            "open files (-n) 1024", "stack size (kb) (-s) 8192", "core file size (blocks) (-c) 0",
            "max locked memory (kb) (-l) 8192", "POSIX message queues (bytes) (-q) 819200",
            "virtual memory (kb) (-v) unlimited", "file size (blocks) (-f) unlimited",
            "cpu time (seconds) (-t) unlimited",
        ] {
            #expect(seen[1].soft.contains(line), "\(line): \(seen[1].soft)")
        }
        #expect(
            !seen[0].output.contains("limits below") && !seen[1].output.contains("limits below"), "\(seen[1].output)")
        // The hard limits are a build's where layerctl may raise them, else the caller's where lower.
        let hard = [raises ? 524_288 : min(Int(caller.rlim_max), 524_288), raises ? 524_288 : 4096]
        for (index, most) in hard.enumerated() {
            #expect(seen[index].hard.contains("open files (-n) \(most)"), "\(seen[index].hard)")
            #expect(seen[index].hard.contains("core file size (blocks) (-c) 0"), "\(seen[index].hard)")
        }
        if raises {
            #expect(seen[2].soft.contains("open files (-n) 1024") && !seen[2].output.contains("limits below"))
        } else {
            #expect(seen[2].soft.contains("open files (-n) 256"), "\(seen[2].soft)")
            #expect(
                seen[2].output.contains(
                    "warning: the build's steps get limits below a build's, since layerctl's hard limits are lower and it "
                        + "may not raise them (no CAP_SYS_RESOURCE): open files (-n) 256 (a build's is 1024)"),
                "\(seen[2].output)")
        }
    }

    @Test("a package's scriptlet runs as confined as run: does, and its escape fails")
    func scriptlets() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let setting = "/proc/sys/fs/lease-break-time"
        let before = try String(contentsOfFile: setting, encoding: .utf8)
        try "from: base\npackages: [env-probe]\n".write(toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/probe.yaml", "--store", store])
        #expect(result.status == 0, "\(result.stderr)")
        let key = try String(contentsOfFile: store + "/refs/probe", encoding: .utf8).trimmingCharacters(in: .newlines)
        let tree = store + "/layers/\(key)/tree/etc/"
        #expect(
            try String(contentsOfFile: tree + "env-probe.status", encoding: .utf8)
                == "CapBnd:\t00000000a80405fb\nNoNewPrivs:\t1\nSeccomp:\t2\n")
        #expect(try String(contentsOfFile: tree + "env-probe.escape", encoding: .utf8).contains("Read-only file system"))
        #expect(try String(contentsOfFile: setting, encoding: .utf8) == before)
    }

    @Test("network: true gives run: the host's network, for that layer only; it is part of the key and inspect shows it")
    func network() throws {
        let (layers, store) = try storeWithBase()
        let host = try FileManager.default.contentsOfDirectory(atPath: "/sys/class/net").sorted()
        let command = "ls /sys/class/net > /etc/nets"

        let without = try build(command, in: layers, store: store)
        #expect(without.status == 0, "\(without.stderr)")
        let closedKey = try String(contentsOfFile: store + "/refs/probe", encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(try String(contentsOfFile: store + "/layers/\(closedKey)/tree/etc/nets", encoding: .utf8) == "lo\n")
        #expect(try Harness.run(["inspect", "probe", "--store", store]).stdout.contains("network:    none: loopback only"))

        let with = try build(command, in: layers, store: store, network: true)
        #expect(with.status == 0, "\(with.stderr)")
        let openKey = try String(contentsOfFile: store + "/refs/probe", encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(openKey != closedKey)
        let seen = try String(contentsOfFile: store + "/layers/\(openKey)/tree/etc/nets", encoding: .utf8)
        #expect(seen.split(separator: "\n").map(String.init) == host)
        #expect(try Harness.run(["inspect", "probe", "--store", store]).stdout.contains("network:    the host's"))

        // A child of a layer with the network has none of its own.
        try "from: probe\nrun:\n  - ls /sys/class/net > /etc/child-nets\n".write(
            toFile: layers + "/child.yaml", atomically: false, encoding: .utf8)
        #expect(try Harness.run(["build", layers + "/child.yaml", "--store", store]).status == 0)
        let childKey = try String(contentsOfFile: store + "/refs/child", encoding: .utf8).trimmingCharacters(in: .newlines)
        #expect(try String(contentsOfFile: store + "/layers/\(childKey)/tree/etc/child-nets", encoding: .utf8) == "lo\n")
        try Harness.expectValidStore(store)
    }

    /// Builds a layer that sleeps, and once it sleeps unmounts the disk `disk` from `mountPoint`
    /// on the host: its loop device must go, since nothing of the build may hold the filesystem.
    func expectUnmountLetGo(disk: String, at mountPoint: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (layers, store) = try storeWithBase()
        try "from: base\nrun:\n  - 'sleep 15'\n".write(toFile: layers + "/sleeper.yaml", atomically: false, encoding: .utf8)
        var released: Bool?
        let status = try Harness.runReadingEvents(["build", layers + "/sleeper.yaml", "--store", store, "--json"]) {
            event, process in
            guard released == nil, event["kind"] as? String == "step", event["message"] as? String == "run 1/1: sleep 15"
            else { return }
            _ = try BootMachine.shell("umount '\(mountPoint)'")
            released = false
            // The loop device goes once its last user does; a loaded machine may take seconds.
            for _ in 0..<100 where !released! {
                usleep(100_000)
                released = try BootMachine.shell("losetup -j '\(disk)'").isEmpty
            }
            #expect(process.isRunning, "the build ended before the check: it proves nothing", sourceLocation: sourceLocation)
        }
        #expect(status == 0, sourceLocation: sourceLocation)
        #expect(
            released == true, "the disk stayed in use while the build ran: a namespace of the build held a copy of the host's mount",
            sourceLocation: sourceLocation)
        try Harness.expectValidStore(store, sourceLocation: sourceLocation)
    }

    @Test("a filesystem the host unmounts while a build runs is let go at once: the build's namespace holds no copy of it")
    func hostUnmountReachesTheBuild() throws {
        // Where the host's mounts propagate (as under systemd, whose / is shared; this machine's
        // mounts are private): a shared tmpfs, and a loop-mounted disk in it.
        let folder = try Harness.temporaryDirectory("host-mounts")
        let shared = folder + "/shared"
        let disk = folder + "/disk.ext4"
        _ = try BootMachine.shell(
            """
            mkdir -p '\(shared)'
            mount -t tmpfs tmpfs '\(shared)'
            mount --make-shared '\(shared)'
            mkfs.ext4 -q '\(disk)' 64M
            mkdir '\(shared)/disk'
            mount -o loop '\(disk)' '\(shared)/disk'
            """)
        defer { _ = try? BootMachine.shell("umount -R '\(shared)' 2>/dev/null; rm -rf '\(folder)'") }
        try expectUnmountLetGo(disk: disk, at: shared + "/disk")
    }

    /// Where the host's mounts are private (no systemd: Artix with OpenRC, a container; this
    /// machine), no unmount of the host's reaches a namespace. The builder pivots away from the
    /// host's root, but libalpm's children live as long as the build and did not: a disk unmounted
    /// meanwhile stayed alive in their copies, its data unwritten, until the build ended.
    @Test("a filesystem the host unmounts while a build runs is let go at once where the host's mounts are private, libalpm's children too")
    func privateHostUnmountReachesTheBuild() throws {
        let folder = try Harness.temporaryDirectory("private-mounts")
        let disk = folder + "/disk.ext4"
        _ = try BootMachine.shell(
            """
            mkfs.ext4 -q '\(disk)' 64M
            mkdir '\(folder)/disk'
            mount --make-private -o loop '\(disk)' '\(folder)/disk'
            """)
        defer { _ = try? BootMachine.shell("umount '\(folder)/disk' 2>/dev/null; rm -rf '\(folder)'") }
        try expectUnmountLetGo(disk: disk, at: folder + "/disk")
    }

    /// What Dockerfiles for Arch end with, and what pacman -Scc and -Sy do: a run: step that changes
    /// the sync databases. They used to fail with "Read-only file system"; removing the folder
    /// itself, or /var/lib/pacman whole (a slim image's last step), failed with "Device or resource
    /// busy" while the databases were mounted there.
    @Test("a run: step may remove and rewrite the sync databases, and remove /var/lib/pacman: its build goes on, the next layer's build sees them whole, no layer keeps them")
    func syncDatabasesChangedForNothing() throws {
        let (layers, store) = try storeWithBase()
        let sync = "/var/lib/pacman/sync"
        try "from: base\nrun:\n  - rm -rf \(sync)/*\n  - echo forged > \(sync)/demo.db\n  - test \"$(cat \(sync)/demo.db)\" = forged\n"
            .write(toFile: layers + "/cleaned.yaml", atomically: false, encoding: .utf8)
        // Built in the same invocation, on the same snapshot of the databases, after the first.
        try "from: cleaned\npackages: [demo-app]\nrun:\n  - tar -tzf \(sync)/demo.db | grep -q '^demo-app-1.0-1/'\n"
            .write(toFile: layers + "/after.yaml", atomically: false, encoding: .utf8)
        // The folder removed, and one of the step's own made in its place.
        try "from: after\nrun:\n  - rm -rf \(sync)\n  - mkdir \(sync) && echo forged > \(sync)/demo.db\n"
            .write(toFile: layers + "/replaced.yaml", atomically: false, encoding: .utf8)
        try "from: replaced\npackages: [demo-lib]\nrun:\n  - tar -tzf \(sync)/demo.db | grep -q '^demo-lib-1.0-1/'\n"
            .write(toFile: layers + "/whole.yaml", atomically: false, encoding: .utf8)
        try "from: whole\nrun:\n  - rm -rf /var/lib/pacman\n".write(toFile: layers + "/slim.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/slim.yaml", "--store", store])
        #expect(result.status == 0, "\(result.stderr)")
        let stored = try Store(root: store)
        for name in ["cleaned", "after", "replaced", "whole", "slim"] {
            let tree = stored.tree(try #require(try stored.ref(name), "\(name) was not built"))
            var st = stat()
            #expect(lstat(tree + sync, &st) != 0, "\(name) keeps \(sync)")
        }
        // slim's tree has /var/lib/pacman as a whiteout: the layers below are hidden, not changed.
        var st = stat()
        let slim = stored.tree(try #require(try stored.ref("slim")))
        #expect(lstat(slim + "/var/lib/pacman", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0)
        #expect(try Harness.leakedMounts(under: store).isEmpty)
        try Harness.expectValidStore(store)
    }

    /// A layer below that holds /var/lib/pacman/sync as a folder (a pulled image made by other
    /// tools may): the build shows its own databases there, mounted over it, not the layer's.
    @Test("where a layer below holds the sync folder, the build's databases are mounted over it, and the layer keeps none")
    func syncFolderBelow() throws {
        let (layers, store) = try storeWithBase()
        let stored = try Store(root: store)
        let base = stored.tree(try #require(try stored.ref("base")))
        // As an image's layer would hold it; written into the stored tree by hand.
        try FileManager.default.createDirectory(atPath: base + "/var/lib/pacman/sync", withIntermediateDirectories: true)
        try "stale\n".write(toFile: base + "/var/lib/pacman/sync/stale.db", atomically: false, encoding: .utf8)
        let sync = "/var/lib/pacman/sync"
        try "from: base\nrun:\n  - test -d \(sync) && test ! -L \(sync) && test ! -e \(sync)/stale.db\n  - tar -tzf \(sync)/demo.db > /dev/null\n  - echo x > \(sync)/new.db\n"
            .write(toFile: layers + "/above.yaml", atomically: false, encoding: .utf8)
        let result = try Harness.run(["build", layers + "/above.yaml", "--store", store])
        #expect(result.status == 0, "\(result.stderr)")
        let tree = stored.tree(try #require(try stored.ref("above"), "above was not built"))
        var st = stat()
        #expect(lstat(tree + sync, &st) != 0, "above keeps \(sync)")
        #expect(try Harness.leakedMounts(under: store).isEmpty)
    }

    @Test("a root layer's run: step makes the folders of the build's mount points symlinks to host folders: the teardown leaves the host's alone")
    func mountPointsThroughSymlinks() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        // What the teardown removes when still empty: the sync databases' mount point, and with
        // the network the resolv.conf it binds on. Each gets a twin on the host. Only a root
        // layer is built straight in its folder, where a folder that holds a mount point can be
        // renamed (overlayfs refuses).
        let host = try Harness.temporaryDirectory("host-twins")
        defer { try? FileManager.default.removeItem(atPath: host) }
        try FileManager.default.createDirectory(atPath: host + "/pacman/sync", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: host + "/etc", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: host + "/etc/resolv.conf", contents: Data()))
        let base = try String(contentsOfFile: layers + "/base.yaml", encoding: .utf8)
        let root = String(base[..<base.range(of: "files:")!.lowerBound])
        for (name, network, command) in [
            ("sync", false, "mv /var/lib/pacman /var/lib/pacman.moved && ln -s \(host)/pacman /var/lib/pacman"),
            ("resolv", true, "mv /etc /etc.moved && ln -s \(host)/etc /etc"),
        ] {
            try (root + (network ? "network: true\n" : "") + "run:\n  - '\(command)'\n").write(
                toFile: "\(layers)/\(name).yaml", atomically: false, encoding: .utf8)
            let result = try Harness.run(["build", "\(layers)/\(name).yaml", "--store", store])
            #expect(result.status == 0, "\(name): \(result.stderr)")
        }
        #expect(FileSystem.isDirectory(host + "/pacman/sync"), "the build removed the host's \(host)/pacman/sync")
        #expect(FileManager.default.fileExists(atPath: host + "/etc/resolv.conf"), "the build removed the host's \(host)/etc/resolv.conf")
        try Harness.expectValidStore(store)
    }
}
