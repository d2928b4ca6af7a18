import Foundation
import LayerStore
import LayerSupport
import Testing

/// What Arch systems make anew on every install is kept out of layers by default (the README's
/// list), and the builder's clean-up never follows a layer's own symlinks onto the host.
@Suite("Per-machine state", .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct MachineStateTests {
    func record(_ name: String, store: String) throws -> LayerRecord {
        let inspect = try Harness.run(["inspect", name, "--store", store, "--json"])
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(LayerRecord.self, from: Data(inspect.stdout.utf8))
    }

    @Test("machine id, random seed, aux-cache, host keys, pacman's private key and build logs: handled, and two builds give one tree")
    func handled() throws {
        let layers = try Harness.demoLayers()
        try """
            from: base
            packages: [machine-state]
            run:
              - date > /var/log/build.log
              - echo "$SOURCE_DATE_EPOCH" > /etc/epoch
            """.write(toFile: layers + "/state.yaml", atomically: false, encoding: .utf8)
        var trees: [String] = []
        var stores: [String] = []
        for _ in 0..<2 {
            let store = try Harness.temporaryDirectory("state-store")
            let build = try Harness.run(["build", layers + "/state.yaml", "--store", store])
            #expect(build.status == 0, "\(build.stderr)")
            for note in [
                "/etc/machine-id left empty", "/var/lib/systemd/random-seed removed", "/var/cache/ldconfig/aux-cache removed",
                "/etc/ssh/ssh_host_ed25519_key removed", "/etc/ssh/ssh_host_ed25519_key.pub removed",
                "/etc/pacman.d/gnupg removed: it held a private key",
                "removed from /var/log, which no package owns: /var/log/build.log, /var/log/machine-state.log",
            ] {
                #expect(build.stderr.contains("state: " + note), "\(note): \(build.stderr)")
            }
            trees.append(try record("state", store: store).treeDigest)
            stores.append(store)
            sleep(1)  // the second build runs at another second of the clock
        }
        #expect(trees[0] == trees[1])
        let tree = try Store(root: stores[0]).tree(try record("state", store: stores[0]).key)
        #expect(FileManager.default.contents(atPath: tree + "/etc/machine-id") == Data())
        // As systemd leaves it, whatever the umask: under `build --check`'s second (0077) the
        // rewritten file was 0400, and the image another machine built was not this one.
        var st = stat()
        #expect(stat(tree + "/etc/machine-id", &st) == 0 && st.st_mode & 0o7777 == 0o444 && st.st_uid == 0)
        let check = try Harness.run(["build", layers + "/state.yaml", "--store", stores[0], "--check"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        for gone in [
            "var/lib/systemd/random-seed", "var/cache/ldconfig/aux-cache", "etc/ssh/ssh_host_ed25519_key", "etc/pacman.d/gnupg",
            "var/log/build.log", "var/log/machine-state.log",
        ] {
            #expect(!FileSystemProbe.exists(tree + "/" + gone), "\(gone)")
        }
        // A log the package ships is the package's: it stays.
        #expect(FileManager.default.contents(atPath: tree + "/var/log/machine-state/kept.log") == Data("shipped by the package\n".utf8))
        #expect(FileManager.default.contents(atPath: tree + "/etc/epoch") == Data("\(try record("state", store: stores[0]).sourceDateEpoch)\n".utf8))
    }

    @Test(
        "a layer that makes the folders the builder cleans symlinks to host folders, or its files FIFOs, touches nothing of the host and hangs nothing, nor does a layer above it; files: above FIFOs replaces them"
    )
    func hostileLinks() throws {
        let victim = try Harness.temporaryDirectory("normaliser-victim")
        let planted = [
            "cache/pacman/pkg/precious", "log/pacman.log", "log/other.log", "lib/systemd/random-seed", "ssh/ssh_host_rsa_key",
            "pacman.d/gnupg/private-keys-v1.d/k.key", "local/x-1/files", "ldconfig/aux-cache",
        ]
        for path in planted {
            try FileManager.default.createDirectory(atPath: victim + "/" + (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data("precious\n".utf8).write(to: URL(fileURLWithPath: victim + "/" + path))
        }
        let layers = try Harness.demoLayers()
        try """
            from: base
            run:
              - rm -rf /var/cache && ln -s \(victim)/cache /var/cache
              - rm -rf /var/log && ln -s \(victim)/log /var/log
              - mkdir -p /var/lib && rm -rf /var/lib/systemd && ln -s \(victim)/lib/systemd /var/lib/systemd
              - rm -rf /etc/ssh && ln -s \(victim)/ssh /etc/ssh
              - rm -rf /etc/pacman.d && ln -s \(victim)/pacman.d /etc/pacman.d
              - mkfifo /etc/machine-id
              - for d in /var/lib/pacman/local/*/; do rm -f "$d/desc" && mkfifo "$d/desc"; done
            """.write(toFile: layers + "/evil.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("normaliser-store")
        let build = try Harness.run(["build", layers + "/evil.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        for path in planted {
            #expect(FileManager.default.contents(atPath: victim + "/" + path) == Data("precious\n".utf8), "\(path)")
        }
        // A layer on top: libalpm would wait on the FIFOs of its database until the time limit.
        // The time limits here make a wait a failure instead of a test that never ends. The
        // resolution refuses them before libalpm opens the database.
        try "from: evil\n".write(toFile: layers + "/above.yaml", atomically: false, encoding: .utf8)
        let above = try Harness.run(["build", layers + "/above.yaml", "--store", store, "--timeout", "60"])
        #expect(above.status == 5, "\(above.stderr)")
        #expect(
            above.stderr.contains("above.yaml:1:7: the package database of the layers below holds /var/lib/pacman/local/")
                && above.stderr.contains("/desc, which is a FIFO"), "\(above.stderr)")

        // files: over FIFOs of the layer below: replaced, never opened (to write, a FIFO waits for
        // a reader), and an owner looked up in a /etc/passwd that is a FIFO is not read.
        try "from: base\nrun:\n  - rm /etc/passwd && mkfifo /etc/passwd /etc/motd /etc/machine-id\n".write(
            toFile: layers + "/fifos.yaml", atomically: false, encoding: .utf8)
        try """
            from: fifos
            files:
              - path: /etc/motd
                content: "welcome\\n"
              - path: /etc/machine-id
                content: "uninitialized\\n"
                owner: root:root
            """.write(toFile: layers + "/over-fifos.yaml", atomically: false, encoding: .utf8)
        let over = try Harness.run(["build", layers + "/over-fifos.yaml", "--store", store, "--timeout", "60"])
        #expect(over.status == 0, "\(over.stderr)")
        let tree = try Store(root: store).tree(try #require(try Store(root: store).ref("over-fifos")))
        #expect(FileManager.default.contents(atPath: tree + "/etc/motd") == Data("welcome\n".utf8))
        #expect(FileManager.default.contents(atPath: tree + "/etc/machine-id") == Data("uninitialized\n".utf8))
        try Harness.expectValidStore(store)
    }

    /// A socket has no data, nothing listens on it once the build ends, and tar has no type for
    /// it: a layer that kept one would lose it on a push, and a store that pulled the layer would
    /// write other image bytes than the store that built it.
    @Test(
        "sockets a build leaves (as gpg-agent and dirmngr do) are removed with a note, under every name; one over a file of the layers below keeps it hidden; every format holds the same entries"
    )
    func sockets() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("sockets-store")
        let listen = { (path: String) in
            "perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => \"\(path)\", Listen => 1) or die $!'"
        }
        // base writes /etc/hostname; here a socket takes its name.
        try Harness.edit(layers + "/base.yaml") { $0 + "  - \(listen("/root-agent.sock"))\n" }
        try """
            from: base
            run:
              - rm /etc/hostname && \(listen("/etc/hostname"))
              - mkdir -p /srv/run && \(listen("/srv/run/agent.sock")) && ln /srv/run/agent.sock /srv/run/agent.link
              - mkfifo /srv/fifo
            """.write(toFile: layers + "/sockets.yaml", atomically: false, encoding: .utf8)
        let build = try Harness.run(["build", layers + "/sockets.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(build.stderr.contains("base: removed the sockets the build left (tar and OCI have no type for them): /root-agent.sock\n"), "\(build.stderr)")
        #expect(build.stderr.contains("sockets: removed the sockets the build left (tar and OCI have no type for them): /etc/hostname and 2 more\n"), "\(build.stderr)")

        let base = try Store(root: store).tree(try #require(try Store(root: store).ref("base")))
        #expect(!FileSystemProbe.exists(base + "/root-agent.sock"), "a root layer has nothing below to hide: no whiteout")
        let work = try Harness.temporaryDirectory("sockets")
        let image = work + "/sockets.squashfs"
        #expect(try Harness.run(["export", "sockets", "-o", image, "--store", store]).status == 0)
        let tar = try Harness.run(["export", "sockets", "--format", "tar", "-o", work + "/sockets.tar", "--store", store])
        #expect(tar.status == 0 && !tar.stderr.contains("socket"), "\(tar.stderr)")
        let mounted = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(mounted) }
        for gone in ["/etc/hostname", "/srv/run/agent.sock", "/srv/run/agent.link", "/root-agent.sock"] {
            #expect(!FileSystemProbe.exists(mounted + gone), "\(gone)")
        }
        #expect(FileSystemProbe.exists(mounted + "/srv/fifo") && FileSystemProbe.exists(mounted + "/srv/run"))
        let listed = try KernelMount.run("/usr/bin/tar", ["--warning=no-unknown-keyword", "-tf", work + "/sockets.tar"])
        let inTar = Set(listed.output.split(separator: "\n").map { "/" + $0.trimmingCharacters(in: CharacterSet(charactersIn: "./")) })
        let found = try KernelMount.run("/usr/bin/find", [mounted])
        let inImage = Set(found.output.split(separator: "\n").map { "/" + $0.dropFirst(mounted.count).trimmingCharacters(in: CharacterSet(charactersIn: "/")) })
        #expect(inTar == inImage, "only in tar: \(inTar.subtracting(inImage)), only in the image: \(inImage.subtracting(inTar))")
        try Harness.expectValidStore(store)
    }

    /// systemd's own `ConditionNeedsUpdate=` check, run by `systemd-analyze condition` on this
    /// machine as a boot of the image would: in a mount namespace, with writable copies of the
    /// image's /etc and /var on /etc and /var (a boot's are the tmpfs overlay's), and /usr with
    /// this machine's files but the image's /usr time (an overlay whose top layer is an empty folder
    /// of that time). "succeeded" means the units would run at every boot.
    func needsUpdate(_ image: String) throws -> String {
        let mounted = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(mounted) }
        var st = stat()
        guard lstat(mounted + "/usr", &st) == 0 else { throw SystemError("inspect", mounted + "/usr") }
        let work = try Harness.temporaryDirectory("needs-update")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let script = """
            set -eu
            cp -a '\(mounted)/etc' '\(work)/etc'
            cp -a '\(mounted)/var' '\(work)/var'
            mkdir '\(work)/usr-time'
            touch -d @\(st.st_mtim.tv_sec) '\(work)/usr-time'
            mount --make-rprivate /
            mount -t overlay overlay -o 'lowerdir=\(work)/usr-time:/usr' /usr
            mount --bind '\(work)/etc' /etc
            mount --bind '\(work)/var' /var
            for folder in /etc /var; do
                systemd-analyze condition "ConditionNeedsUpdate=$folder" 2>&1 | grep ConditionNeedsUpdate || true
            done
            """
        let checked = try KernelMount.run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script])
        #expect(checked.status == 0, "\(checked.output)")
        return checked.output
    }

    @Test("a layer that changes /usr in a stack with systemd stamps /etc/.updated and /var/.updated, so the booted image's ConditionNeedsUpdate= units do not run at every boot; a stack without systemd gets none")
    func updateStamps() throws {
        let folder = try Harness.temporaryDirectory("stamps")
        try Harness.demoRoot(["filesystem", "busybox", "glibc", "systemd"]).write(
            toFile: folder + "/base.yaml", atomically: false, encoding: .utf8)
        try "from: base\npackages: [demo-data]\n".write(toFile: folder + "/top.yaml", atomically: false, encoding: .utf8)
        try Harness.demoRoot(["filesystem", "busybox", "glibc"]).write(
            toFile: folder + "/plain.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        for name in ["top", "plain"] {
            let built = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store, "-o", "\(folder)/\(name).squashfs"])
            #expect(built.status == 0, "\(built.stderr)")
        }
        let stamped = try needsUpdate(folder + "/top.squashfs")
        for condition in ["/etc", "/var"] {
            #expect(stamped.contains("ConditionNeedsUpdate=\(condition) failed."), "\(stamped)")
        }
        for layer in ["base", "plain"] {
            let key = try #require(try Store(root: store).ref(layer))
            let tree = "\(store)/layers/\(key)/tree"
            for stamp in ["/etc/.updated", "/var/.updated"] {
                let text = try? String(contentsOfFile: tree + stamp, encoding: .utf8)
                #expect((text?.hasPrefix("# Written by layerctl") ?? false) == (layer == "base"), "\(layer)\(stamp): \(text ?? "none")")
            }
        }
        // Without them, as the image without systemd is: systemd would run the units.
        let plain = try needsUpdate(folder + "/plain.squashfs")
        #expect(plain.contains("ConditionNeedsUpdate=/etc succeeded."), "\(plain)")

        // A step that leaves the stamps as symlinks to host files: replaced, never followed.
        let victim = try Harness.temporaryDirectory("stamp-victim")
        for name in ["etc", "var"] { try Data("precious\n".utf8).write(to: URL(fileURLWithPath: "\(victim)/\(name)")) }
        try """
            from: base
            run:
              - touch /usr/changed
              - rm -f /etc/.updated /var/.updated
              - ln -s \(victim)/etc /etc/.updated && ln -s \(victim)/var /var/.updated
            """.write(toFile: folder + "/linked.yaml", atomically: false, encoding: .utf8)
        let linked = try Harness.run(["build", folder + "/linked.yaml", "--store", store])
        #expect(linked.status == 0, "\(linked.stderr)")
        let tree = try Store(root: store).tree(try #require(try Store(root: store).ref("linked")))
        for name in ["etc", "var"] {
            #expect(FileManager.default.contents(atPath: "\(victim)/\(name)") == Data("precious\n".utf8), "\(name)")
            let text = try? String(contentsOfFile: "\(tree)/\(name)/.updated", encoding: .utf8)
            #expect(text?.hasPrefix("# Written by layerctl") == true, "\(name): \(text ?? "none")")
            #expect(!FileSystemProbe.isSymlink("\(tree)/\(name)/.updated"))
        }
    }

    /// The README's word on cleaning by age: the image's files are as old as their layer's epoch
    /// to systemd-tmpfiles (squashfs keeps no other time), and a file of /etc/tmpfiles.d keeps them.
    @Test("systemd-tmpfiles --clean, as 15 minutes into a boot, takes the image's files out of a folder with an age; a files: entry in /etc/tmpfiles.d keeps them")
    func cleanedByAge() throws {
        let folder = try Harness.temporaryDirectory("aged")
        try Harness.demoRoot(["filesystem", "busybox"]).write(toFile: folder + "/base.yaml", atomically: false, encoding: .utf8)
        try """
            from: base
            files:
              - path: /usr/lib/tmpfiles.d/man-db.conf
                content: "d /var/cache/man 0755 root root 1w\\n"
              - path: /var/cache/man/index.db
                content: "the index apropos reads\\n"
            """.write(toFile: folder + "/man.yaml", atomically: false, encoding: .utf8)
        try """
            from: man
            files:
              - path: /etc/tmpfiles.d/man-db.conf
                content: "d /var/cache/man 0755 root root -\\n"
            """.write(toFile: folder + "/kept.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        for (name, expected) in [("man", "removed"), ("kept", "kept")] {
            let built = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store, "-o", "\(folder)/\(name).squashfs"])
            #expect(built.status == 0, "\(built.stderr)")
            let mounted = try KernelMount.squashfs("\(folder)/\(name).squashfs")
            defer { KernelMount.unmount(mounted) }
            let work = try Harness.temporaryDirectory("aged-boot")
            // A boot's root: the image under a tmpfs upper folder.
            let script = """
                set -eu
                mount --make-rprivate /
                mount -t tmpfs tmpfs '\(work)'
                mkdir '\(work)/upper' '\(work)/work' '\(work)/root'
                mount -t overlay overlay -o 'lowerdir=\(mounted),upperdir=\(work)/upper,workdir=\(work)/work' '\(work)/root'
                systemd-tmpfiles --clean --root='\(work)/root' 2>&1 || true
                if [ -e '\(work)/root/var/cache/man/index.db' ]; then echo kept; else echo removed; fi
                """
            let (status, output) = try KernelMount.run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script])
            #expect(status == 0 && output.hasSuffix(expected + "\n"), "\(name): \(output)")
        }
    }

    /// Arch's systemd makes each package's accounts with systemd-sysusers, in a hook; under the
    /// build's SOURCE_DATE_EPOCH of 0 it wrote day 0 as their last password change, and PAM then
    /// asked for a new password before letting anyone into them (`sudo -u postgres psql` failed).
    @Test("the accounts systemd-sysusers makes let su in (their day-0 password change is left empty); an account a step expired with chage -d 0 stays expired")
    func lockedAccountAges() throws {
        let folder = try Harness.temporaryDirectory("accounts")
        try Harness.demoRoot(["filesystem", "busybox", "glibc", "systemd"]).write(
            toFile: folder + "/base.yaml", atomically: false, encoding: .utf8)
        try """
            from: base
            run:
              - useradd -m -p '$6$salt$hash' steve && chage -d 0 steve
            """.write(toFile: folder + "/users.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let built = try Harness.run(["build", folder + "/users.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")
        // Debian's sysusers.d names 17 of them (daemon, bin, …, systemd-network).
        #expect(built.stderr.contains("base: /etc/shadow: 17 locked accounts (daemon, bin, sys, sync, games and 12 more) had a last password change on day 0"), "\(built.stderr)")
        let handle = try Store(root: store)
        let base = try String(contentsOfFile: handle.tree(try #require(try handle.ref("base"))) + "/etc/shadow", encoding: .utf8)
        #expect(base.contains("systemd-network:!*:::::::\n") && !base.contains(":!*:0:"), "\(base)")

        // The host's PAM judges the accounts as the image has them: su, as root, into each.
        let tree = handle.tree(try #require(try handle.ref("users")))
        let work = try Harness.temporaryDirectory("accounts-pam")
        let script = """
            set -eu
            for f in passwd group shadow; do cp /etc/$f '\(work)'/$f; done
            for user in systemd-network steve; do
                for f in passwd group shadow; do
                    grep -v "^$user:" '\(work)'/$f > '\(work)'/$f.new || true
                    grep "^$user:" '\(tree)'/etc/$f >> '\(work)'/$f.new || true
                    mv '\(work)'/$f.new '\(work)'/$f
                done
            done
            for f in passwd group shadow; do mount --bind '\(work)'/$f /etc/$f; done
            for user in systemd-network steve; do
                if out=$(su -s /bin/sh "$user" -c 'echo in' </dev/null 2>&1); then echo "$user: $out"; else echo "$user: refused: $out"; fi
            done
            """
        let (status, output) = try KernelMount.run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", script])
        #expect(status == 0, "\(output)")
        #expect(output.contains("systemd-network: in\n"), "\(output)")
        #expect(output.contains("steve: refused: You are required to change your password immediately"), "\(output)")
        try Harness.expectValidStore(store)
    }
}

/// lstat, which does not follow a symlink at the end.
enum FileSystemProbe {
    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func isSymlink(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK
    }
}
