import CLayerSupport
import Foundation
import Glibc
import LayerStore
import LayerSupport
import Testing

@Suite("Building the demo stack", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct DemoBuildTests {
    @Test("gaming builds base, nvidia and gaming, and each tree holds what its layer file says")
    func buildsTheStack() throws {
        let layers = try Harness.demoLayers()
        let storeRoot = try Harness.temporaryDirectory("store")
        let before = Harness.childrenCPU()
        let result = try Harness.run(["build", layers + "/gaming.yaml", "--store", storeRoot, "--json"])
        let childrenCPU = Harness.childrenCPU() - before
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.built == ["base", "nvidia", "gaming"])
        // The summary says where the CPU time went: layerctl's own process and each kind of child,
        // none counted twice (this test's children include that layerctl, and others that ran).
        let summary = try #require(
            result.stdout.split(separator: "\n").last.flatMap {
                try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            })
        let cpu = try #require(summary["cpuSeconds"] as? [String: Double], "\(summary)")
        #expect(Set(cpu.keys) == ["layerctl", "build", "packages"], "\(cpu)")
        #expect(cpu.values.allSatisfy { $0 > 0 }, "\(cpu)")
        #expect(cpu.values.reduce(0, +) <= childrenCPU + 0.01, "\(cpu), and this test's children took \(childrenCPU) s")
        let store = try Store(root: storeRoot)
        let base = store.tree(try #require(try store.ref("base")))
        let nvidia = store.tree(try #require(try store.ref("nvidia")))
        let gaming = store.tree(try #require(try store.ref("gaming")))

        // Packages and their files, with the dependency chain resolved.
        #expect(FileManager.default.fileExists(atPath: base + "/usr/bin/busybox"))
        #expect(FileManager.default.fileExists(atPath: base + "/usr/bin/perl"))
        #expect(FileManager.default.fileExists(atPath: base + "/var/lib/pacman/local/zlib-1:1.2.13-1/desc"))
        #expect(FileManager.default.fileExists(atPath: nvidia + "/usr/lib/nvidia/README"))
        // The scriptlet, files: and run: had their effects.
        #expect(try String(contentsOfFile: base + "/etc/greeter.installed", encoding: .utf8) == "greeter 1.0-1 installed\n")
        #expect(try String(contentsOfFile: base + "/etc/layer-base", encoding: .utf8) == "base built on base\n")
        #expect(try FileSystem.readLink(Array((base + "/etc/localtime").utf8)) == Array("/usr/share/zoneinfo/UTC".utf8))
        #expect(try String(contentsOfFile: nvidia + "/etc/modprobe.d/nvidia.conf", encoding: .utf8).contains("modeset=1"))
        #expect(try String(contentsOfFile: gaming + "/etc/hostname", encoding: .utf8) == "gaming\n")
        #expect(try String(contentsOfFile: gaming + "/etc/game.version", encoding: .utf8) == "game 1.0-1\n")
        #expect(try String(contentsOfFile: gaming + "/etc/greeting", encoding: .utf8) == "hello from gaming\n")
        // What busybox's init runs first when demo/vm.sh boots the image: without it, every boot
        // said "can't run '/etc/init.d/rcS'".
        let rcS = try Harness.run(["shell", "gaming", "--store", storeRoot, "--", "/etc/init.d/rcS"])
        #expect(rcS.status == 0 && rcS.stdout.hasPrefix("layerctl demo: "), "\(rcS.stdout) \(rcS.stderr)")
        // Removing nano left whiteouts over its file and its database entry.
        for path in ["/usr/bin/nano", "/var/lib/pacman/local/nano-7.2-1"] {
            var st = stat()
            #expect(lstat(gaming + path, &st) == 0)
            #expect(st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0, "\(path) is not a whiteout")
        }
        // Nothing of the package manager's working state is in any tree, and install dates are the epoch.
        for tree in [base, nvidia, gaming] {
            for stray in ["var/lib/pacman/sync", "var/lib/pacman/db.lck", "var/log/pacman.log", "var/cache/pacman/pkg",
                          "dev/null", "tmp/alpm"] {
                #expect(!FileManager.default.fileExists(atPath: tree + "/" + stray), "\(tree)/\(stray) exists")
            }
            let packages = (try? FileManager.default.contentsOfDirectory(atPath: tree + "/var/lib/pacman/local")) ?? []
            for package in packages where !package.hasPrefix("ALPM") && !package.hasPrefix("nano") {
                let desc = try String(contentsOfFile: tree + "/var/lib/pacman/local/\(package)/desc", encoding: .utf8)
                #expect(desc.contains("%INSTALLDATE%\n0\n"), "\(package) keeps its install date")
            }
            let pkgFiles = try FileManager.default.subpathsOfDirectory(atPath: tree).filter { $0.hasSuffix(".pkg.tar.zst") }
            #expect(pkgFiles.isEmpty)
        }
        #expect(try ExtendedAttributesProbe.overlayBookkeeping(in: gaming).isEmpty)
        try Harness.expectValidStore(storeRoot)
    }

    /// On a machine that runs a layerctl image, the default store is on the image's overlay, in
    /// memory: a build there is gone at the next boot, and a large one fills the memory first.
    @Test("on a running image, a store in memory builds with a note that it is gone at the next boot; elsewhere, or on a disk, without one")
    func storeInMemory() throws {
        let layers = try Harness.demoLayers()
        let memory = try Harness.temporaryDirectory("memory")
        try BootMachine.shell("mount -t tmpfs memory '\(memory)'")
        defer { _ = try? BootMachine.shell("umount '\(memory)'") }
        let run = try Harness.temporaryDirectory("run")
        try "LAYERCTL_IMAGE=/var/lib/layerctl/boot/gaming/0123456789ab.squashfs\n".write(toFile: run + "/boot.env", atomically: false, encoding: .utf8)
        let running = try Harness.run(["build", layers + "/base.yaml", "--store", memory + "/store", "--run-dir", run])
        #expect(running.status == 0, "\(running.stderr)")
        #expect(
            running.stderr.hasPrefix(
                "layerctl: this system runs a layerctl image, and the store \(memory)/store is on tmpfs, whose files are gone at the next boot: what is built there is too, and it holds this machine's memory meanwhile; --store (or LAYERCTL_STORE) on a disk keeps it\n"),
            "\(running.stderr)")
        // A store on a tmpfs by choice, on a machine that runs no image; one on a disk.
        let chosen = try Harness.run(["build", layers + "/base.yaml", "--store", memory + "/store"])
        #expect(chosen.status == 0 && !chosen.stderr.contains("next boot"), "\(chosen.stderr)")
        let onDisk = try Harness.run(["build", layers + "/base.yaml", "--store", try Harness.temporaryDirectory("store"), "--run-dir", run])
        #expect(onDisk.status == 0 && !onDisk.stderr.contains("next boot"), "\(onDisk.stderr)")
    }

    @Test("two builds into two empty stores make identical trees and keys")
    func reproducible() throws {
        let layers = try Harness.demoLayers()
        var digests: [[String]] = []
        for _ in 0..<2 {
            let storeRoot = try Harness.temporaryDirectory("store")
            let result = try Harness.run(["build", layers + "/gaming.yaml", "--store", storeRoot])
            #expect(result.status == 0, "\(result.stderr)")
            let store = try Store(root: storeRoot)
            digests.append(try ["base", "nvidia", "gaming"].map { name in
                let key = try #require(try store.ref(name))
                return key + " " + (try store.record(key).treeDigest)
            })
        }
        #expect(digests[0] == digests[1])
    }

    @Test("ls, inspect, shell and gc work on a built stack")
    func everydayCommands() throws {
        let layers = try Harness.demoLayers()
        let storeRoot = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/development.yaml", "--store", storeRoot]).status == 0)
        let list = try Harness.run(["ls", "--store", storeRoot])
        #expect(list.status == 0)
        for name in ["base", "nvidia", "development"] { #expect(list.stdout.contains(name)) }
        let inspect = try Harness.run(["inspect", "development", "--store", storeRoot])
        #expect(inspect.stdout.contains("+ demo-app 1.0-1"))
        #expect(inspect.stdout.contains("+ demo-data 1.0-1"))
        // A long name keeps its columns; a key two names share is shown by the name asked for.
        let long = "a-development-layer-with-a-long-name"
        try FileManager.default.copyItem(atPath: layers + "/development.yaml", toPath: layers + "/\(long).yaml")
        #expect(try Harness.run(["build", layers + "/\(long).yaml", "--store", storeRoot]).status == 0)
        let wide = try Harness.run(["ls", "--store", storeRoot]).stdout.split(separator: "\n")
        let key = try #require(try Store(root: storeRoot).ref("development"))
        #expect(wide.contains { $0.hasPrefix(long + "  ") && $0.contains(key.prefix(12)) }, "\(wide)")
        // Every row has its key under the KEY heading.
        let keyColumn = try #require(wide[0].range(of: "KEY")).lowerBound.utf16Offset(in: wide[0])
        for row in wide.dropFirst() {
            let cell = Array(row.utf8).dropFirst(keyColumn).prefix(13)
            #expect(cell.count == 13 && cell.prefix(12).allSatisfy { (48...57).contains($0) || (97...102).contains($0) } && cell.last == 32, "\(row)")
        }
        for (asked, shown) in [(long, "name:       \(long) (also development)"), ("development", "name:       development (also \(long))")] {
            let shared = try Harness.run(["inspect", asked, "--store", storeRoot])
            #expect(shared.stdout.contains(shown), "\(shared.stdout)")
        }
        let one = try Harness.run(["inspect", "nvidia", "--store", storeRoot])
        #expect(one.stdout.contains("installed:  1 package ("), "\(one.stdout)")

        let json = try Harness.run(["inspect", "base", "--store", storeRoot, "--json"])
        let record = try LayerRecordProbe.decode(json.stdout)
        #expect(record.parent == nil && record.added.count == 8 && record.fileCount > 2000 && record.buildSeconds > 0)

        // shell: sees the layer, and what it writes is gone afterwards.
        let shell = try Harness.run(["shell", "development", "--store", storeRoot, "--", "/bin/sh", "-c",
                                     "cat /etc/demo-app.out; echo scribble > /etc/hostname; mount | grep -c overlay"])
        #expect(shell.status == 0, "\(shell.stderr)")
        #expect(shell.stdout.contains("demo data 1.0"))
        let store = try Store(root: storeRoot)
        #expect(try String(contentsOfFile: store.tree(try store.ref("base")!) + "/etc/hostname", encoding: .utf8) == "demo\n")
        let failing = try Harness.run(["shell", "base", "--store", storeRoot, "--", "/bin/sh", "-c", "exit 7"])
        #expect(failing.status == 7)
        // A shell whose root cannot start the command says so in one line, and exits as a shell
        // does: 127 for a command that is not there, 126 for one that cannot be run.
        let missing = try Harness.run(["shell", "base", "--store", storeRoot, "--", "/no/such/command"])
        #expect(missing.status == 127, "\(missing.stderr)")
        #expect(missing.stderr == "layerctl: start /no/such/command in base failed: No such file or directory\n")
        let notExecutable = try Harness.run(["shell", "base", "--store", storeRoot, "--", "/etc/hostname"])
        #expect(notExecutable.status == 126, "\(notExecutable.stderr)")
        #expect(notExecutable.stderr == "layerctl: start /etc/hostname in base failed: Permission denied\n")
        // A command by name is found on the layer's PATH and given its arguments as they are, as
        // `docker exec` and `systemd-nspawn` give them: it was `/bin/sh -c` of the words joined.
        let words = try Harness.run(["shell", "base", "--store", storeRoot, "--", "sh", "-c", "printf '%s|' \"$@\"", "sh", "a b", "it's", "$HOME", ""])
        #expect(words.status == 0, "\(words.stderr)")
        #expect(words.stdout == "a b|it's|$HOME||", "\(words.stdout)")
        let unknown = try Harness.run(["shell", "base", "--store", storeRoot, "--", "no-such-command"])
        #expect(unknown.status == 127, "\(unknown.stderr)")
        #expect(
            unknown.stderr == "layerctl: find no-such-command on the PATH (/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin) "
                + "of base failed: No such file or directory\n")

        // rm removes names, all it is given or none; not a key.
        let before = try FileManager.default.contentsOfDirectory(atPath: store.layersDirectory).count
        let unknownName = try Harness.run(["rm", "development", "no-such-name", "--store", storeRoot])
        #expect(unknownName.status == 3 && unknownName.stderr == "layerctl: no layer named or keyed no-such-name in the store\n", "\(unknownName.stderr)")
        let byKey = try Harness.run(["rm", String(key.prefix(12)), "--store", storeRoot])
        #expect(
            byKey.status == 3 && byKey.stderr == "layerctl: \(key.prefix(12)) is a layer's key, not a name: `layerctl rm` removes names, "
                + "and `layerctl gc` then removes the layers no name reaches (`layerctl ls` lists the names)\n", "\(byKey.stderr)")
        #expect(try Harness.run(["rm", "--store", storeRoot]).status == 2)
        // A damaged ref (cut short) goes as any other.
        #expect(FileManager.default.createFile(atPath: store.refsDirectory + "/broken", contents: Data("4812dc".utf8)))
        let broken = try Harness.run(["rm", "broken", "--store", storeRoot])
        #expect(broken.status == 0 && broken.stdout.hasPrefix("removed broken (a damaged ref)\n"), "\(broken.stdout)\(broken.stderr)")
        #expect(try store.ref("development") == key)
        let removed = try Harness.run(["rm", "development", long, "development", "--store", storeRoot, "--json"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stdout == #"{"removed":[{"key":"\#(key)","name":"development"},{"key":"\#(key)","name":"\#(long)"}]}"# + "\n", "\(removed.stdout)")
        #expect(try store.ref("development") == nil && store.ref(long) == nil && store.contains(key))

        // gc keeps what refs reach and frees the rest: the layer, the packages only it installed
        // (with their signatures), and what a killed build left in the package cache: a package
        // linked in under its own name, not yet renamed (a `.part` stays, for the next download to
        // go on from).
        let installed = { (name: String) throws -> Set<String> in
            Set(try store.record(try #require(try store.ref(name))).added.map(\.filename))
        }
        let kept = try installed("base").union(installed("nvidia"))
        let developmentOnly = try Set(store.record(key).added.map(\.filename))
        #expect(developmentOnly.count >= 2 && developmentOnly.isDisjoint(with: kept), "\(developmentOnly)")
        let packages = try FileManager.default.contentsOfDirectory(atPath: store.packageCache).sorted()
        #expect(Set(packages) == kept.union(developmentOnly), "\(packages)")
        let leftover = store.packageCache + "/.incoming-99999-" + packages[0]
        let partial = store.packageCache + "/zlib-9.9-1-x86_64.pkg.tar.zst.part"
        #expect(link(store.packageCache + "/" + packages[0], leftover) == 0 && FileManager.default.createFile(atPath: partial, contents: Data("12".utf8)))
        let keptSignature = try #require(try installed("base").min()) + ".sig"
        let goneSignature = try #require(developmentOnly.min()) + ".sig"
        for signature in [keptSignature, goneSignature] {
            #expect(FileManager.default.createFile(atPath: store.packageCache + "/" + signature, contents: Data("sig".utf8)))
        }
        // A dry run says the same and removes nothing.
        let untouched = try TreeSnapshot(storeRoot)
        let dry = try Harness.run(["gc", "--store", storeRoot, "--json", "--dry-run"])
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(try TreeSnapshot(storeRoot).differences(from: untouched).isEmpty)
        let gc = try Harness.run(["gc", "--store", storeRoot, "--json"])
        #expect(dry.stdout == gc.stdout, "\(dry.stdout)\n\(gc.stdout)")
        #expect(gc.status == 0)
        #expect(gc.stdout.contains(#""cache\/pkg\/.incoming-99999-"#) || gc.stdout.contains("cache/pkg/.incoming-99999-"), "\(gc.stdout)")
        let collected = try #require(try JSONSerialization.jsonObject(with: Data(gc.stdout.utf8)) as? [String: Any])
        #expect(Set(collected["packages"] as? [String] ?? []) == developmentOnly.union([goneSignature]), "\(gc.stdout)")
        #expect((collected["packageBytes"] as? Int ?? 0) > 0, "\(gc.stdout)")
        #expect(
            Set(try FileManager.default.contentsOfDirectory(atPath: store.packageCache))
                == kept.union([keptSignature, "zlib-9.9-1-x86_64.pkg.tar.zst.part"]))
        try FileManager.default.removeItem(atPath: partial)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.layersDirectory).count == before - 1)
        try Harness.expectValidStore(storeRoot)

        // Said in words: nvidia's layer and its one package go once no name reaches them.
        let nvidiaKey = try #require(try store.ref("nvidia"))
        let rmNvidia = try Harness.run(["rm", "nvidia", "--store", storeRoot])
        #expect(rmNvidia.stdout == "removed nvidia (\(nvidiaKey.prefix(12)))\n`layerctl gc` removes the layers no name reaches now\n", "\(rmNvidia.stdout)")
        let wouldSay = try Harness.run(["gc", "--dry-run", "--store", storeRoot]).stdout.split(separator: "\n")
        #expect(wouldSay.count == 3 && wouldSay[0] == "would remove \(nvidiaKey)" && wouldSay[2].hasPrefix("would free "), "\(wouldSay)")
        let said = try Harness.run(["gc", "--store", storeRoot]).stdout.split(separator: "\n")
        #expect(said.count == 3 && said[0] == "removed \(nvidiaKey)", "\(said)")
        #expect(said.last?.hasPrefix("freed ") == true && said.last?.hasSuffix(" in 1 cached package no kept layer installed") == true, "\(said)")
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: store.packageCache)) == (try installed("base")).union([keptSignature]))
        try Harness.expectValidStore(storeRoot)

        // The sync databases: a folder for each repository declaration, kept while a layer built
        // with it is. A root layer on the later repository makes a second; once no name reaches
        // that layer, gc removes its folder and keeps base's.
        let baseKey = try #require(try store.ref("base"))
        let baseFolder = try #require(try store.record(baseKey).syncDatabases)
        try "from: scratch\narch: x86_64\nrepos:\n  - name: demo\n    servers: [\(Harness.demoOut)/repo-next/$repo]\n    siglevel: Optional TrustAll\npackages: [filesystem]\n"
            .write(toFile: layers + "/later.yaml", atomically: false, encoding: .utf8)
        let folders = { Set(try FileManager.default.contentsOfDirectory(atPath: store.syncCache)) }
        let later = try Harness.run(["build", layers + "/later.yaml", "--store", storeRoot])
        #expect(later.status == 0, "\(later.stderr)")
        let laterKey = try #require(try store.ref("later"))
        let laterFolder = try #require(try store.record(laterKey).syncDatabases)
        #expect(try laterFolder != baseFolder && folders() == [baseFolder, baseFolder + ".lock", laterFolder, laterFolder + ".lock"])
        _ = try Harness.run(["rm", "later", "--store", storeRoot])
        // A kept layer with packages, recorded before records named their folder, keeps every one.
        let baseRecord = store.layerDirectory(baseKey) + "/layer.json"
        var fields = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: baseRecord))) as? [String: Any])
        fields["syncDatabases"] = nil
        try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]).write(to: URL(fileURLWithPath: baseRecord))
        let keepsAll = try Harness.run(["gc", "--store", storeRoot, "--dry-run", "--json"])
        let wouldCollect = try #require(try JSONSerialization.jsonObject(with: Data(keepsAll.stdout.utf8)) as? [String: Any])
        #expect(wouldCollect["syncDatabases"] as? [String] == [] && wouldCollect["syncBytes"] as? Int == 0, "\(keepsAll.stdout)")
        fields["syncDatabases"] = baseFolder
        try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]).write(to: URL(fileURLWithPath: baseRecord))
        let trimmed = try Harness.run(["gc", "--store", storeRoot])
        #expect(trimmed.stdout.contains(" in 1 folder of sync databases no kept layer was built with\n"), "\(trimmed.stdout)")
        #expect(try folders() == [baseFolder, baseFolder + ".lock"])
        try Harness.expectValidStore(storeRoot)
    }

    @Test("run: commands and scriptlets get stdin, stdout and stderr and no other descriptor, however high, and none of the caller's environment")
    func descriptors() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        try "from: base\npackages: [env-probe]\nenv:\n  GREETING: hi\nrun:\n  - ls /proc/self/fd > /etc/fds\n".write(
            toFile: layers + "/fds.yaml", atomically: false, encoding: .utf8)
        // layerctl inherits 9 and 1500 without close-on-exec, as from a careless caller (bash: dash
        // takes no descriptor above 9), and a variable of the caller's.
        let build = try KernelMount.run(
            "/bin/bash",
            [
                "-c",
                "exec 9</dev/null 1500</dev/null; export CALLER_SECRET=leaked; exec '\(Harness.executable)' build '\(layers)/fds.yaml' --store '\(store)'",
            ])
        #expect(build.status == 0, "\(build.output)")
        let key = try String(contentsOfFile: store + "/refs/fds", encoding: .utf8).trimmingCharacters(in: .newlines)
        let listed = try String(contentsOfFile: store + "/layers/\(key)/tree/etc/fds", encoding: .utf8)
        // 3 is the directory ls itself reads.
        #expect(listed.split(separator: "\n") == ["0", "1", "2", "3"], "\(listed)")
        // A package scriptlet, which libalpm starts from the builder, inherits neither the caller's
        // descriptors nor its environment: only the fixed one and the layer file's env:.
        let tree = store + "/layers/\(key)/tree/etc/"
        let scriptletFds = try String(contentsOfFile: tree + "env-probe.fds", encoding: .utf8).split(separator: "\n")
        #expect(!scriptletFds.contains("9") && !scriptletFds.contains("1500"), "\(scriptletFds)")
        let environment = try String(contentsOfFile: tree + "env-probe.environment", encoding: .utf8)
        for expected in [
            "HOME='/root'", "LANG='C.UTF-8'", "GREETING='hi'", "LAYERCTL_LAYER='fds'",
            "PATH='/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin'",
        ] {
            #expect(environment.contains(expected), "\(expected) missing in:\n\(environment)")
        }
        for leaked in ["CALLER_SECRET", "LAYERCTL_NAMESPACED_WORK", "LAYERCTL_PARENT_PID", "SUDO_", "TERM='xterm"] {
            #expect(!environment.contains(leaked), "\(leaked) leaked into:\n\(environment)")
        }
    }

    /// `ln -sf /usr/share/zoneinfo/Europe/Berlin /etc/localtime`, the first step of an Arch install,
    /// and `systemctl enable`'s links, without a shell in the layer.
    @Test("files: link: makes a symlink with its owner in place of what a layer below left there (a file, a FIFO, a link to a host file), never following it; a folder there fails at its line; the link is part of the key")
    func links() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let entries = [
            ("/etc/localtime", "/usr/share/zoneinfo/Europe/Berlin"), ("/etc/plain", "plain-now-a-link"),
            ("/etc/fifo", "../fifo-now-a-link"), ("/etc/linked", "/etc/hostname"),
            ("/etc/systemd/system/multi-user.target.wants/game.service", "/usr/lib/systemd/system/game.service"),
        ]
        let layer = { (parent: String, entries: [(String, String)]) in
            "from: \(parent)\nfiles:\n" + entries.map { "  - path: \($0.0)\n    link: \($0.1)\n    owner: \"7:7\"\n" }.joined()
        }
        for (name, text) in [
            ("below", "from: base\nrun:\n  - mkfifo /etc/fifo && echo x > /etc/plain && ln -s /etc/shadow /etc/linked && mkdir /etc/folder\n"),
            ("links", layer("below", entries)), ("folder", layer("below", [("/etc/folder", "/nowhere")])),
            ("text", "from: below\nfiles:\n  - path: /etc/localtime\n    content: /usr/share/zoneinfo/Europe/Berlin\n"),
            ("same", layer("below", [("/etc/localtime", "/usr/share/zoneinfo/Europe/Berlin")])),
        ] {
            try text.write(toFile: "\(layers)/\(name).yaml", atomically: false, encoding: .utf8)
        }
        let shadow = try Data(contentsOf: URL(fileURLWithPath: "/etc/shadow"))
        for name in ["links", "text", "same"] {
            let result = try Harness.run(["build", "\(layers)/\(name).yaml", "--store", store])
            #expect(result.status == 0, "\(name): \(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: "/etc/shadow")) == shadow)
        let tree = try store + "/layers/" + #require(try Store(root: store).ref("links")) + "/tree"
        for (path, target) in entries {
            var st = stat()
            #expect(lstat(tree + path, &st) == 0 && st.st_mode & S_IFMT == S_IFLNK && st.st_uid == 7 && st.st_gid == 7, "\(path)")
            #expect(try FileSystem.readLink(Array((tree + path).utf8)) == Array(target.utf8), "\(path)")
        }
        // As the stack is seen, and as the image holds it.
        let seen = try Harness.run([
            "shell", "links", "--store", store, "--", "sh", "-c", "readlink /etc/localtime; readlink /etc/linked",
        ])
        #expect(seen.stdout == "/usr/share/zoneinfo/Europe/Berlin\n/etc/hostname\n", "\(seen.stdout) \(seen.stderr)")
        let image = try Harness.temporaryDirectory("image") + "/links.squashfs"
        #expect(try Harness.run(["export", "links", "-o", image, "--store", store]).status == 0)
        let listed = try KernelMount.run("/usr/bin/unsquashfs", ["-lln", image, "etc/localtime"])
        #expect(listed.output.contains("lrwxrwxrwx 7/7") && listed.output.contains("localtime -> /usr/share/zoneinfo/Europe/Berlin"), "\(listed.output)")
        // A folder is no file to replace.
        try "from: below\nfiles:\n  - path: /etc/folder\n    content: x\n".write(
            toFile: "\(layers)/file.yaml", atomically: false, encoding: .utf8)
        for (name, what) in [("folder", "a link"), ("file", "a file")] {
            let result = try Harness.run(["build", "\(layers)/\(name).yaml", "--store", store])
            let says = "\(name).yaml:3:5: writing /etc/folder failed: /etc/folder is a folder in the layer, which \(what) cannot replace"
            #expect(result.status == 6 && result.stderr.contains(says), "\(result.stderr)")
        }
        // A link and a file of its target's text are not one layer; the same link is.
        let keys = try ["text", "same"].map { try Store(root: store).ref($0) }
        #expect(keys[0] != keys[1])
        let again = try Harness.run(["build", "\(layers)/same.yaml", "--store", store])
        #expect(again.stdout.contains("(0 built, 3 cached)"), "\(again.stdout)")
        try Harness.expectValidStore(store)
    }

    @Test("an owner is looked up in at most 64 MiB of the layer's /etc/passwd and /etc/group: a larger one, which a layer below can hold for nothing, fails at the entry unread")
    func largeAccountFiles() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        for (name, text) in [
            // Sparse: the layer costs no disk. Its first lines stay those of the base's group file.
            ("accounts", "from: base\nrun:\n  - truncate -s 3G /etc/group\n"),
            ("owned", "from: accounts\nfiles:\n  - path: /etc/owned\n    content: x\n    owner: root:nobody\n"),
            ("numbers", "from: accounts\nfiles:\n  - path: /etc/owned\n    content: x\n    owner: \"0:65534\"\n"),
        ] {
            try text.write(toFile: "\(layers)/\(name).yaml", atomically: false, encoding: .utf8)
        }
        let refused = try Harness.run(["build", "\(layers)/owned.yaml", "--store", store])
        let lines = refused.labelled
        #expect(refused.status != 0 && lines.count == 1, "\(refused.stderr)")
        #expect(
            lines.first?.hasSuffix(
                "owned.yaml:3:5: writing /etc/owned failed: /etc/group is 3.0 GiB, more than the 64.0 MiB layerctl reads of such a file")
                == true, "\(refused.stderr)")
        #expect(try Store(root: store).ref("owned") == nil)
        // Numbers are not looked up.
        let numbers = try Harness.run(["build", "\(layers)/numbers.yaml", "--store", store])
        #expect(numbers.status == 0, "\(numbers.stderr)")
    }

    /// A folder of configuration (`/etc/skel`, a theme), as Docker's `COPY` and mkosi's
    /// `ExtraTrees` copy one, from a layer file that may be a stranger's.
    @Test("files: source: a folder copies its tree (folders 0755, files 0755 or 0644 by their executable bit, links as links, all of owner) into the path, keeping a folder there; a FIFO, a device, too many entries or bytes, a name that is not UTF-8, a path too long at its place are refused at the entry; an edit rebuilds the layer")
    func folderSource() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let skel = layers + "/skel"
        try BootMachine.shell("""
            mkdir -p '\(skel)/.config/app' '\(skel)/bin' '\(skel)/empty'
            echo 'alias ll="ls -l"' > '\(skel)/.bashrc' && chmod 600 '\(skel)/.bashrc'
            printf '#!/bin/sh\\necho hi\\n' > '\(skel)/bin/hello' && chmod 700 '\(skel)/bin/hello'
            echo x > '\(skel)/.config/app/conf'
            ln -s ../.bashrc '\(skel)/bin/rc' && ln -s /etc/shadow '\(skel)/shadow'
            """)
        let entry = { (source: String) in "from: base\nfiles:\n  - path: /etc/skel\n    source: \(source)\n    owner: \"5:5\"\n" }
        try entry("skel").write(toFile: layers + "/tree.yaml", atomically: false, encoding: .utf8)
        let built = try Harness.run(["build", layers + "/tree.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")
        let key = try #require(try Store(root: store).ref("tree"))
        let listed = try KernelMount.run("/usr/bin/find", [store + "/layers/\(key)/tree/etc/skel", "-printf", "%P %M %U:%G %l\n"])
        #expect(
            listed.output.split(separator: "\n").sorted() == [
                " drwxr-xr-x 5:5 ", ".bashrc -rw-r--r-- 5:5 ", ".config drwxr-xr-x 5:5 ", ".config/app drwxr-xr-x 5:5 ",
                ".config/app/conf -rw-r--r-- 5:5 ", "bin drwxr-xr-x 5:5 ", "bin/hello -rwxr-xr-x 5:5 ",
                "bin/rc lrwxrwxrwx 5:5 ../.bashrc", "empty drwxr-xr-x 5:5 ", "shadow lrwxrwxrwx 5:5 /etc/shadow",
            ], "\(listed.output)")
        let hello = try Harness.run(["shell", "tree", "--store", store, "--", "/etc/skel/bin/hello"])
        #expect(hello.stdout == "hi\n", "\(hello.stderr)")
        // A folder a layer below made stays as it was; the tree goes into it.
        try "from: base\nrun:\n  - mkdir -m 0700 /etc/skel && echo kept > /etc/skel/kept\n".write(
            toFile: layers + "/made.yaml", atomically: false, encoding: .utf8)
        try entry("skel").replacingOccurrences(of: "from: base", with: "from: made").write(
            toFile: layers + "/into.yaml", atomically: false, encoding: .utf8)
        #expect(try Harness.run(["build", layers + "/into.yaml", "--store", store]).status == 0)
        let into = try Harness.run(["shell", "into", "--store", store, "--", "sh", "-c", "stat -c %a /etc/skel; cat /etc/skel/kept /etc/skel/.config/app/conf"])
        #expect(into.stdout == "700\nkept\nx\n", "\(into.stdout) \(into.stderr)")
        // An edit of a file in the folder is a new key.
        try "y\n".write(toFile: skel + "/.config/app/conf", atomically: false, encoding: .utf8)
        let edited = try Harness.run(["build", layers + "/tree.yaml", "--store", store])
        #expect(edited.status == 0 && edited.stdout.contains("(1 built, 1 cached)"), "\(edited.stdout)")
        // What a folder source may not hold: one line at the entry, exit 3, nothing built.
        for (name, make, says) in [
            ("fifo", "mkfifo pipe", "holds a pipe at `pipe`; a folder source holds folders, files and links"),
            ("device", "mknod null c 1 3", "holds a character device at `null`"),
            ("many", "mkdir d && cd d && seq 10001 | xargs touch", "holds more than 10000 entries"),
            ("large", "truncate -s 65M big", "holds more than 64.0 MiB of files"),
            ("name", "mkdir d && touch \"d/$(printf 'bad\\377')\"", "holds a name that is not UTF-8 in `d`"),
            // 3,067 bytes below the folder, as a folder source may hold, but 3,077 at /etc/skel: it
            // was refused only by the scan of the built layer.
            ("deep", "p=$(printf '%0250d' 0); q=$p/$p/$p/$p/$p/$p/$p/$p/$p/$p/$p/$p; mkdir -p $q && touch $q/$(printf '%055d' 0)",
             "which at /etc/skel is a path of 3077 bytes, longer than a path in a layer may be (3072)"),
        ] {
            let folder = "\(layers)/\(name)"
            try BootMachine.shell("mkdir -p '\(folder)' && cd '\(folder)' && " + make)
            try entry(name).write(toFile: "\(layers)/\(name)-layer.yaml", atomically: false, encoding: .utf8)
            let result = try Harness.run(["build", "\(layers)/\(name)-layer.yaml", "--store", store])
            #expect(result.status == 3, "\(name): \(result.stderr)")
            let lines = result.labelled
            #expect(lines.count == 1 && lines[0].contains("\(name)-layer.yaml:3:5: `source` folder ") && lines[0].contains(says), "\(result.stderr)")
            #expect(try Store(root: store).ref(name + "-layer") == nil)
        }
        try Harness.expectValidStore(store)
    }

    @Test("two builds of the same stack at once both succeed and store each layer once")
    func concurrentBuilds() throws {
        let layers = try Harness.demoLayers()
        let storeRoot = try Harness.temporaryDirectory("store")
        let results = try [0, 1].map { _ in try Harness.start(["build", layers + "/gaming.yaml", "--store", storeRoot]) }
        for process in results {
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
        }
        let store = try Store(root: storeRoot)
        #expect(try store.keys().count == 3)
        try Harness.expectValidStore(storeRoot)
    }

    /// gc waited without a word for a build of an hour to end, and a build for gc.
    @Test("a command that waits for another's lock says what it waits for: gc for a build, a build for gc or for another build of its layer")
    func waitsSaySo() throws {
        let layers = try Harness.demoLayers()
        let storeRoot = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", layers + "/base.yaml", "--store", storeRoot]).status == 0)
        let key = try #require(try Store(root: storeRoot).ref("base"))
        /// layerctl with `arguments`, while this process holds the lock at `path` for a second.
        func whileHeld(_ path: String, _ mode: FileLock.Mode, _ arguments: [String]) throws -> Harness.Result {
            let lock = try FileLock(path: path, mode: mode)
            DispatchQueue.global().asyncAfter(deadline: .now() + 1) { lock.unlock() }
            let result = try Harness.run(arguments + ["--store", storeRoot])
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            return result
        }
        let gc = try whileHeld(storeRoot + "/lock", .shared, ["gc"])
        #expect(
            gc.stderr.hasPrefix("layerctl: waiting for the builds, exports and other commands that use the store to end (a lock on \(storeRoot)/lock)\n"),
            "\(gc.stderr)")
        let build = try whileHeld(storeRoot + "/lock", .exclusive, ["build", layers + "/base.yaml"])
        #expect(build.stderr.hasPrefix("layerctl: waiting for `layerctl gc` to finish with the store (a lock on \(storeRoot)/lock)\n"), "\(build.stderr)")
        let again = try whileHeld(storeRoot + "/locks/" + key, .exclusive, ["build", layers + "/base.yaml", "--no-cache"])
        #expect(again.stderr.contains("\nbase: waiting for another layerctl that builds it\nbase: building"), "\(again.stderr)")
        // Nobody waiting, nothing said.
        let quiet = try Harness.run(["gc", "--store", storeRoot])
        #expect(quiet.status == 0 && !quiet.stderr.contains("waiting"), "\(quiet.stderr)")
    }
}

enum LayerRecordProbe {
    static func decode(_ json: String) throws -> LayerRecord {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(LayerRecord.self, from: Data(json.utf8))
    }
}

enum ExtendedAttributesProbe {
    /// Paths under `root` that still carry overlayfs's copy-up bookkeeping.
    static func overlayBookkeeping(in root: String) throws -> [String] {
        var found: [String] = []
        for relative in try FileManager.default.subpathsOfDirectory(atPath: root) + [""] {
            let path = root + "/" + relative
            let size = llistxattr(path, nil, 0)
            guard size > 0 else { continue }
            var buffer = [CChar](repeating: 0, count: size)
            _ = llistxattr(path, &buffer, size)
            let names = buffer.split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            if names.contains(where: { $0.hasPrefix("trusted.overlay.") && $0 != "trusted.overlay.opaque" }) {
                found.append(relative)
            }
        }
        return found
    }
}
