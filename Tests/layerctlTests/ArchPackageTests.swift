import Foundation
import LayerStore
import Testing

/// What real Arch packages carry besides files, from the package to the image.
///
/// libalpm hooks (`/usr/share/libalpm/hooks`, `/etc/pacman.d/hooks`), which they ship by the dozen
/// (systemd's sysusers and tmpfiles, mkinitcpio's, the icon and font caches'), run in a layer's
/// transaction as pacman runs them: a hook of a layer below fires on this layer's packages, each
/// is shown by name, and one that stops the transaction says which it was, and where. File
/// capabilities (ping's `cap_net_raw`) reach the booted system. A group (base-devel) is its members.
@Suite("What Arch packages carry", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct ArchPackageTests {
    /// A folder with `base.yaml` (a small root with the demo repository's two hook packages) and
    /// each of `layers`, by name.
    func layers(_ layers: [String: String]) throws -> String {
        let folder = try Harness.temporaryDirectory("hooks")
        let base = """
            from: scratch
            arch: x86_64
            repos:
              - name: demo
                servers: [\(Harness.demoOut)/repo/$repo]
                siglevel: Never
            packages: [filesystem, busybox, hook-recorder, hook-guard]

            """
        try base.write(toFile: folder + "/base.yaml", atomically: false, encoding: .utf8)
        for (name, text) in layers { try text.write(toFile: "\(folder)/\(name).yaml", atomically: false, encoding: .utf8) }
        return folder
    }

    func tree(_ store: String, _ layer: String) throws -> String {
        let key = try String(contentsOfFile: store + "/refs/" + layer, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return "\(store)/layers/\(key)/tree"
    }

    /// The store holds no half layer, nothing is mounted in it, and `layer` has no ref.
    func expectNothingLeft(_ store: String, of layer: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(!FileManager.default.fileExists(atPath: store + "/refs/" + layer), sourceLocation: sourceLocation)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty, sourceLocation: sourceLocation)
        #expect(try Harness.leakedMounts(under: store).isEmpty, sourceLocation: sourceLocation)
        try Harness.expectValidStore(store, sourceLocation: sourceLocation)
    }

    /// Builds layer `name` of `folder` into `store`, which fails with `status` and one labelled
    /// line, `layerctl: FOLDER/NAME.yaml` and then `says`, and leaves the store as it was.
    @discardableResult
    func expectRefused(
        _ name: String, in folder: String, store: String, options: [String] = [], status: Int32, says: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Harness.Result {
        let result = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store] + options)
        #expect(result.status == status, "\(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.labelled
        #expect(lines == ["layerctl: \(folder)/\(name).yaml\(says)"[...]], "\(result.stderr)", sourceLocation: sourceLocation)
        try expectNothingLeft(store, of: name, sourceLocation: sourceLocation)
        return result
    }

    @Test("a hook of a layer below fires on this layer's packages with their files, on install and on remove (whose scriptlets run once, in the layer), shown by name, unless masked by a link to /dev/null; a failing post-transaction hook is named and the build goes on, as pacman's does")
    func hooksRun() throws {
        let folder = try layers([
            "hooked": "from: base\npackages: [hooked]\n",
            // A removal beside an install: libalpm's download-only commit reads the removed one's files.
            "gone": "from: hooked\npackages: [demo-data]\nremove: [hooked]\n",
            // As Arch users turn a package's hook off: a link to /dev/null of its name in /etc.
            "masked": "from: base\nrun:\n  - mkdir -p /etc/pacman.d/hooks && ln -s /dev/null /etc/pacman.d/hooks/50-hook-recorder.hook\n",
            "masked-top": "from: masked\npackages: [hooked]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        let built = try Harness.run(["build", folder + "/hooked.yaml", "--store", store])
        #expect(built.status == 0, "\(built.stderr)")
        // The base installed both hooks but nothing they fire on: neither ran there.
        #expect(!built.stderr.contains("base: hook"), "\(built.stderr)")
        #expect(!FileManager.default.fileExists(atPath: try tree(store, "base") + "/var/lib/hook-recorder.log"))
        for line in [
            "hooked: hook 50-hook-recorder.hook: Recording the hooked files... (1/2)", "hooked | hook-recorder: recorded",
            "hooked: hook 60-hook-guard.hook: Complaining about hooked... (2/2)", "hooked | hook-guard: complaining",
            "hooked: error: hook 60-hook-guard.hook: command failed to execute correctly",
        ] {
            #expect(built.stderr.contains(line + "\n"), "missing \(line) in: \(built.stderr)")
        }
        let run = "run:\nusr/share/hooked/\nusr/share/hooked/hooked.conf\n"
        let hookedLog = try tree(store, "hooked") + "/var/lib/hook-recorder.log"
        #expect(try String(contentsOfFile: hookedLog, encoding: .utf8) == run)

        // --json: each hook is an event of its own, with its place among those the transaction fired.
        let removed = try Harness.run(["build", folder + "/gone.yaml", "--store", store, "--json"])
        #expect(removed.status == 0, "\(removed.stderr)")
        let hooks = removed.stdout.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.filter { $0["kind"] as? String == "hook" }
        #expect(hooks.count == 1, "\(removed.stdout)")
        // libalpm reads a removed package's files list even to download: the child has it.
        for kind in ["warning", "error"] { #expect(!removed.stdout.contains(#""kind":"\#(kind)""#), "\(removed.stdout)") }
        #expect(hooks.first?["message"] as? String == "hook 50-hook-recorder.hook: Recording the hooked files...")
        #expect(hooks.first?["current"] as? Int == 1 && hooks.first?["total"] as? Int == 1, "\(hooks)")
        #expect(try String(contentsOfFile: try tree(store, "gone") + "/var/lib/hook-recorder.log", encoding: .utf8) == run + run)
        // Its removal scriptlets ran, in the layer's root alone (the download-only child once ran
        // them too, in its empty root, and failed the build).
        #expect(removed.stdout.components(separatedBy: #""message":"hooked: pre_remove""#).count == 2, "\(removed.stdout)")
        #expect(try String(contentsOfFile: try tree(store, "gone") + "/var/lib/hooked.removed", encoding: .utf8) == "hooked: post_remove\n")

        let masked = try Harness.run(["build", folder + "/masked-top.yaml", "--store", store])
        #expect(masked.status == 0, "\(masked.stderr)")
        #expect(masked.stderr.contains("masked-top: hook 60-hook-guard.hook: Complaining about hooked... (1/1)\n"), "\(masked.stderr)")
        #expect(!masked.stderr.contains("Recording the hooked files"), "\(masked.stderr)")
        #expect(!FileManager.default.fileExists(atPath: try tree(store, "masked-top") + "/var/lib/hook-recorder.log"))

        // What hooks write is part of the layer as anything else is: the same tree from another store.
        let again = try Harness.temporaryDirectory("store")
        #expect(try Harness.run(["build", folder + "/gone.yaml", "--store", again]).status == 0)
        let first = try Store(root: store), second = try Store(root: again)
        let key = try #require(try first.ref("gone"))
        #expect(try second.ref("gone") == key)
        #expect(try first.record(key).treeDigest == second.record(key).treeDigest)
    }

    @Test("a package's file capability is in the layer's tree and in the image the kernel mounts, as libalpm restored it")
    func fileCapabilities() throws {
        let folder = try layers(["capped": "from: base\npackages: [capped]\n"])
        let store = try Harness.temporaryDirectory("store")
        let image = folder + "/capped.squashfs"
        let result = try Harness.run(["build", folder + "/capped.yaml", "--store", store, "-o", image])
        #expect(result.status == 0, "\(result.stderr)")
        // Without it libalpm only warns (a bounding set without CAP_SETFCAP), and ping would fail
        // on the booted machine. cap_net_raw=ep, as the package holds it: a version 2 capability.
        let capability: [UInt8] = [0x01, 0x00, 0x00, 0x02, 0x00, 0x20] + [UInt8](repeating: 0, count: 14)
        func read(_ path: String) -> [UInt8]? { TreeSnapshot.attributes(Array(path.utf8)).first { $0.name == "security.capability" }?.value }
        #expect(read(try tree(store, "capped") + "/usr/bin/capped") == capability)
        let mounted = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(mounted) }
        #expect(read(mounted + "/usr/bin/capped") == capability)
    }

    @Test("a package's file that a layer below wrote is a conflict at the package's line, as pacman's 'exists in filesystem', saying where to write it; one a package below owns names it; with no package database below, it says so at the package that needs it")
    func fileInTheWay() throws {
        let folder = try layers([
            "mine": "from: base\nfiles:\n  - path: /usr/share/hooked/hooked.conf\n    content: \"mine\\n\"\n",
            "clash": "from: mine\npackages: [demo-data, hooked]\n",
            "tools": "from: base\npackages: [tool-a]\n",
            "clobber": "from: tools\npackages: [clobber]\n",
            "slim": "from: base\nrun:\n  - rm -rf /var/lib/pacman/local\n",
            "above-slim": "from: slim\npackages: [demo-data, greeter]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        try expectRefused(
            "clash", in: folder, store: store, status: 5,
            says: ":2:23: commit transaction failed: conflicting files; hooked: /usr/share/hooked/hooked.conf exists in filesystem; "
                + "no package owns /usr/share/hooked/hooked.conf: a layer below made it (its files: or run:), and pacman "
                + "overwrites no such file; write it in the files: of the layer that installs the package, which come after "
                + "its packages")
        try expectRefused(
            "clobber", in: folder, store: store, status: 5,
            says: ":2:12: commit transaction failed: conflicting files; clobber: /usr/share/tools/tool-a exists in filesystem (owned by tool-a)")
        // Below, pacman's database is gone: greeter's dependency busybox is new to libalpm, and in
        // the way of itself. At greeter, which brought it in, saying why.
        let slim = try Harness.run(["build", "\(folder)/above-slim.yaml", "--store", store])
        #expect(slim.status == 5, "\(slim.stderr)")
        let lines = slim.labelled
        #expect(lines.count == 1, "\(slim.stderr)")
        #expect(
            lines.first?.hasPrefix("layerctl: \(folder)/above-slim.yaml:2:23: commit transaction failed: conflicting files; busybox: ")
                == true, "\(slim.stderr)")
        #expect(
            lines.first?.hasSuffix(
                "but no package database (/var/lib/pacman/local is empty or gone: a step removed it, or their image was "
                    + "made without pacman), so pacman takes every package for one to install, and will not write over "
                    + "their files; install packages in a layer below the one that removes pacman's database") == true,
            "\(slim.stderr)")
        try expectNothingLeft(store, of: "above-slim")
    }

    @Test("a pre-transaction hook with AbortOnFail stops the build at the package it refuses, naming the hook and the package that installed it")
    func abortOnFail() throws {
        let folder = try layers(["guarded": "from: base\npackages: [demo-data, guarded]\n"])
        let result = try expectRefused(
            "guarded", in: folder, store: try Harness.temporaryDirectory("store"), status: 5,
            says: ":2:23: pre-transaction hook 10-hook-guard.hook of package hook-guard failed: it has AbortOnFail, so the "
                + "transaction stopped before it changed anything; command failed to execute correctly")
        #expect(result.stderr.contains("guarded | hook-guard: refusing guarded\n"), "\(result.stderr)")
    }

    @Test("a hook file that a layer below wrote and that does not parse, or whose command never ends, fails this layer in one line at its packages")
    func strangeHooks() throws {
        func hook(_ name: String, _ lines: [String]) -> String {
            "  - path: /etc/pacman.d/hooks/\(name)\n    content: \"\(lines.joined(separator: "\\n"))\\n\"\n"
        }
        let trigger = ["[Trigger]", "Type = Path", "Operation = Install", "Target = *", ""]
        let folder = try layers([
            "broken": "from: base\nfiles:\n" + hook("20-broken.hook", trigger.dropLast() + ["Bogus = 1", "", "[Action]", "When = PreTransaction", "Exec = /bin/true"]),
            "broken-top": "from: broken\npackages: [hooked]\n",
            "slow": "from: base\nfiles:\n"
                + hook("30-sleep.hook", trigger + ["[Action]", "Description = Sleeping", "When = PostTransaction", "Exec = /bin/sleep 1000"]),
            "slow-top": "from: slow\npackages: [hooked]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        try expectRefused(
            "broken-top", in: folder, store: store, status: 5,
            says: ":2:12: commit transaction failed: failed to run transaction hooks; hook /etc/pacman.d/hooks/20-broken.hook "
                + "line 5: invalid option Bogus")
        try expectRefused(
            "slow-top", in: folder, store: store, options: ["--timeout", "2"], status: 6,
            says: ": layer slow-top did not finish within 2 s (at: hook 30-sleep.hook: Sleeping); it was stopped, with "
                + "everything it ran. Give it longer with --timeout")
    }

    /// Arch users ask for groups by name (base-devel, xorg, plasma); `pacman -S GROUP` installs every
    /// member. The demo's demo-tools group has two.
    @Test("a package group installs its members, as pacman -S does, and the layer's packages name them")
    func group() throws {
        let folder = try layers(["tools": "from: base\npackages: [demo-tools]\n"])
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/tools.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        let tree = try tree(store, "tools")
        for tool in ["tool-a", "tool-b"] {
            #expect(FileManager.default.contents(atPath: "\(tree)/usr/share/tools/\(tool)") == Data("\(tool)\n".utf8))
        }
        let inspect = try Harness.run(["inspect", "tools", "--store", store])
        #expect(inspect.stdout.contains("tool-a 1.0-1") && inspect.stdout.contains("tool-b 1.0-1"), "\(inspect.stdout)")
    }

    /// pacman takes a package from the first repository that holds it. A child that names the
    /// inherited `demo` alone, below `later`, takes confd from `later`; one that adds `later`
    /// alone gets it after `demo`, and demo's confd.
    @Test("a repository named alone below a new one: the package comes from the new one, as pacman.conf's order has it")
    func repositoryNamedAlone() throws {
        let later = "  - name: later\n    servers: [\(Harness.demoOut)/later/$repo]\n    siglevel: Never\n"
        let folder = try layers([
            "placed": "from: base\nrepos:\n" + later + "  - name: demo\npackages: [confd]\n",
            "after": "from: base\nrepos:\n" + later + "packages: [confd]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        for (name, version) in [("placed", "confd 1.1-1  (later"), ("after", "confd 1.0-1  (demo")] {
            let build = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store])
            #expect(build.status == 0, "\(build.stderr)")
            let inspect = try Harness.run(["inspect", name, "--store", store])
            #expect(inspect.stdout.contains("+ " + version), "\(name): \(inspect.stdout)")
        }
    }

    /// iptables-nft for iptables, pipewire-jack for jack2: a package that conflicts with one a layer
    /// below installed (and provides its name, for what needs it). pacman asks "Remove iptables?
    /// [y/N]", and `--noconfirm` says no; a layer file says yes before, with `remove:`.
    @Test("a package that conflicts with one a layer below installed fails at its line saying to remove that one; remove: and the package swap them in one transaction, keeping what needs the old name")
    func conflictBelow() throws {
        let folder = try layers([
            "old": "from: base\npackages: [oldtool-user, conflict-a]\n",
            "swap": "from: old\npackages: [newtool, conflict-b]\n",
            "swapped": "from: old\nremove: [oldtool, conflict-a]\npackages: [newtool, conflict-b]\n",
            "both": "from: base\npackages: [conflict-a, conflict-b]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        let old = try Harness.run(["build", folder + "/old.yaml", "--store", store])
        #expect(old.status == 0, "\(old.stderr)")
        let swap = try Harness.run(["build", folder + "/swap.yaml", "--store", store])
        let lines = swap.labelled
        #expect(swap.status == 5 && lines.count == 1, "\(swap.stderr)")
        for text in [
            "layerctl: \(folder)/swap.yaml:2:12: resolve newtool, conflict-b failed: conflicting dependencies; ",
            "newtool and oldtool are in conflict",
            // pacman asks about one at a time and stops at the first no; a build names them all.
            "newtool and oldtool are in conflict; conflict-b and conflict-a are in conflict; "
                + "oldtool and conflict-a are installed below this layer: `remove: [oldtool, conflict-a]` in this layer takes them out in the same transaction",
        ] {
            #expect(lines.first?.contains(text) == true, "\(swap.stderr)")
        }
        try expectNothingLeft(store, of: "swap")
        // Two packages asked for together: nothing to remove, and no such advice.
        let both = try Harness.run(["build", folder + "/both.yaml", "--store", store])
        #expect(both.status == 5 && both.stderr.contains("are in conflict") && !both.stderr.contains("remove:"), "\(both.stderr)")
        try expectNothingLeft(store, of: "both")

        let swapped = try Harness.run(["build", folder + "/swapped.yaml", "--store", store])
        #expect(swapped.status == 0, "\(swapped.stderr)")
        #expect(swapped.stderr.contains("swapped: remove oldtool 1.0-1") && swapped.stderr.contains("swapped: install newtool 2.0-1"))
        // The layer as it is seen, its removals over the layers below: conflict-a's file gone (its
        // folder, emptied and made again for conflict-b's, is opaque), and oldtool's package too.
        let seen = try Harness.run([
            "shell", "swapped", "--store", store, "--", "sh", "-c",
            "ls /usr/share/conflict /usr/share/oldtool /usr/share/newtool /var/lib/pacman/local 2>&1",
        ])
        let names = seen.stdout.split(separator: "\n").map(String.init)
        for name in ["b", "VERSION", "newtool-2.0-1", "oldtool-user-1.0-1", "conflict-b-1.0-1"] {
            #expect(names.contains(name), "\(name): \(seen.stdout)")
        }
        for name in ["a", "oldtool-1.0-1", "conflict-a-1.0-1"] { #expect(!names.contains(name), "\(name): \(seen.stdout)") }
        #expect(seen.stdout.contains("/usr/share/oldtool: No such file or directory"), "\(seen.stdout)")
    }

    /// pacman -Syu replaces a package that another `replaces` (answering its question yes, the
    /// default), which pacman -S never does.
    @Test("upgrade: true replaces a package below that another replaces, as pacman -Syu does, and keeps what needs its name")
    func upgradeReplaces() throws {
        let folder = try layers([
            "old": "from: base\npackages: [oldtool-user]\n",
            "upgraded": "from: old\nupgrade: true\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/upgraded.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(build.stderr.contains("upgraded: remove oldtool 1.0-1\nupgraded: install newtool 2.0-1\n"), "\(build.stderr)")
        let seen = try Harness.run(["shell", "upgraded", "--store", store, "--", "ls", "/var/lib/pacman/local"])
        let names = seen.stdout.split(separator: "\n")
        #expect(names.contains("newtool-2.0-1") && names.contains("oldtool-user-1.0-1") && !names.contains("oldtool-1.0-1"), "\(names)")
    }

    /// A package's `backup` files (sshd_config, pacman.conf) that a layer below changed: pacman
    /// keeps them, and puts the package's new one beside it as `.pacnew`, or a removed package's as
    /// `.pacsave`, with a warning the build passes on, so the image does not carry an old
    /// configuration without a word. One nobody changed is replaced, without one.
    @Test("a backup file a layer below changed stays, with the package's new one as .pacnew, or the removed one's as .pacsave, each with a warning; an unchanged one is replaced in silence")
    func keptConfiguration() throws {
        let later = "repos:\n  - name: later\n    servers: [\(Harness.demoOut)/later/$repo]\n    siglevel: Never\npackages: [later/confd]\n"
        let folder = try layers([
            "daemon": "from: base\npackages: [confd]\nfiles:\n  - path: /etc/confd.conf\n    content: \"listen = 0.0.0.0\\n\"\n",
            "upgraded": "from: daemon\n" + later,
            "dropped": "from: daemon\nremove: [confd]\n",
            "stock": "from: base\npackages: [confd]\n",
            "stock-upgraded": "from: stock\n" + later,
        ])
        let store = try Harness.temporaryDirectory("store")
        var warnings: [String: [Substring]] = [:]
        for name in ["upgraded", "dropped", "stock-upgraded"] {
            let build = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store])
            #expect(build.status == 0, "\(name): \(build.stderr)")
            warnings[name] = build.stderr.split(separator: "\n").filter { $0.contains("warning") && !$0.contains("partial upgrade") }
        }
        #expect(
            warnings["upgraded"] == [
                "upgraded: warning: /etc/confd.conf installed as /etc/confd.conf.pacnew, as pacman does: the layers below changed it, so it stays as they left it, and confd 1.1-1 brings its own beside it; compare the two (layerctl shell upgraded) and write the one to keep in this layer's files:"
            ], "\(warnings)")
        #expect(
            warnings["dropped"] == [
                "dropped: warning: /etc/confd.conf saved as /etc/confd.conf.pacsave, as pacman does: the layers below changed it, and removing confd keeps it under that name, in the image"
            ], "\(warnings)")
        #expect(warnings["stock-upgraded"] == [], "\(warnings)")
        // The merged tree, as the image has it: a layer's own tree holds what it changed.
        func files(_ layer: String) throws -> String {
            let shown = try Harness.run(["shell", layer, "--store", store, "--", "sh", "-c", "for f in /etc/confd*; do echo \"== $f\"; cat \"$f\"; done"])
            #expect(shown.status == 0, "\(shown.stderr)")
            return shown.stdout
        }
        let mine = "listen = 0.0.0.0\n"
        let defaults = "# confd 1.1-1 defaults\nlisten = 127.0.0.1\n"
        #expect(try files("upgraded") == "== /etc/confd.conf\n" + mine + "== /etc/confd.conf.pacnew\n" + defaults)
        #expect(try files("dropped") == "== /etc/confd.conf.pacsave\n" + mine)
        #expect(try files("stock-upgraded") == "== /etc/confd.conf\n" + defaults)
    }

    /// pacman names what loses an optional dependency that it removes (`:: confd optionally requires
    /// nano: to edit its configuration`), since the package stays but a feature of it goes.
    @Test("removing what a package below optionally depends on says so, once, in pacman's words")
    func optionalDependencyRemoved() throws {
        let folder = try layers([
            "daemon": "from: base\npackages: [nano, confd]\n",
            "lean": "from: daemon\nremove: [nano]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/lean.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(
            build.stderr.split(separator: "\n").filter { $0.contains("warning") } == [
                "lean: warning: confd optionally requires nano: to edit its configuration, which this layer removes"
            ], "\(build.stderr)")
    }

    /// A package the layers below have is skipped, as `pacman -S --needed` skips it, with
    /// libalpm's warning, said once: libalpm says it where the packages are fetched and again in
    /// the transaction.
    @Test("a package the layers below installed is skipped with one warning, and its files stay below")
    func installedBelow() throws {
        let folder = try layers(["again": "from: base\npackages: [busybox, greeter]\n"])
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/again.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(build.stderr.split(separator: "\n").filter { $0.contains("warning") } == ["again: warning: busybox-1.35.0-1 is up to date -- skipping"], "\(build.stderr)")
        #expect(build.stderr.contains("again: install greeter 1.0-1\n") && !build.stderr.contains("again: install busybox"), "\(build.stderr)")
        #expect(!FileManager.default.fileExists(atPath: try tree(store, "again") + "/usr/bin/busybox"))
    }

    /// Steam needs lib32-vulkan-driver, which a dozen packages provide; pacman lists them and asks,
    /// and takes the first (lib32-amdvlk) when not asked, as a build must: on an NVIDIA machine, the
    /// wrong one. The build says which it took, and a provider among the layer's packages is taken.
    @Test("a dependency that several packages provide takes the first with a warning naming them, a provider among the layer's packages without one; a virtual target warns too")
    func providers() throws {
        let folder = try layers([
            "first": "from: base\npackages: [driven]\n",
            "chosen": "from: base\npackages: [driven, driver-b]\n",
            "virtual": "from: base\npackages: [demo-driver]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        var warnings: [String: [Substring]] = [:]
        for name in ["first", "chosen", "virtual"] {
            let build = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store])
            #expect(build.status == 0, "\(name): \(build.stderr)")
            warnings[name] = build.stderr.split(separator: "\n").filter { $0.contains("warning") }
        }
        #expect(
            warnings["first"] == [
                "first: warning: driven needs demo-driver, which 2 packages provide (driver-a, driver-b): took driver-a, the first, as pacman does when not asked; name one in packages: to choose"
            ], "\(warnings)")
        #expect(warnings["chosen"] == [], "\(warnings)")
        // Said when the layer is built; built already, it is taken without a word.
        let again = try Harness.run(["build", "\(folder)/first.yaml", "--store", store])
        #expect(again.status == 0 && !again.stderr.contains("warning"), "\(again.stderr)")
        #expect(
            warnings["virtual"] == [
                "virtual: warning: `demo-driver` in packages: is no package, and 2 packages provide it (driver-a, driver-b): took driver-a, the first, as pacman does when not asked; name one in packages: to choose"
            ], "\(warnings)")
        func has(_ layer: String, _ driver: String) throws -> Bool {
            FileManager.default.fileExists(atPath: try tree(store, layer) + "/usr/share/drivers/" + driver)
        }
        #expect(try has("first", "driver-a") && !has("first", "driver-b"))
        #expect(try has("chosen", "driver-b") && !has("chosen", "driver-a"))
        #expect(try has("virtual", "driver-a"))
    }

    /// pacman.conf's `NoExtract`, which image builders use to leave documentation, manuals and
    /// locales out: the same patterns, in the layer file.
    @Test("noextract: matching files are not extracted, a ! pattern after one brings a file back, children inherit the patterns and add theirs after; keys of layers without it stay")
    func noExtract() throws {
        let folder = try layers([
            "slim": "from: base\nnoextract: [usr/share/game/*, /usr/share/greeter/*]\npackages: [game]\n",
            "kid": "from: slim\npackages: [greeter]\n",
            "exception": "from: slim\nnoextract: [\"!usr/share/greeter/greeting\"]\npackages: [greeter]\n",
            "plain": "from: base\npackages: [game]\n",
        ])
        let store = try Harness.temporaryDirectory("store")
        for name in ["kid", "exception", "plain"] {
            let build = try Harness.run(["build", "\(folder)/\(name).yaml", "--store", store])
            #expect(build.status == 0, "\(name): \(build.stderr)")
        }
        func has(_ layer: String, _ path: String) throws -> Bool { FileManager.default.fileExists(atPath: try tree(store, layer) + path) }
        #expect(try has("slim", "/usr/bin/game") && !has("slim", "/usr/share/game/level1.dat"))
        #expect(try has("plain", "/usr/share/game/level1.dat"))
        // Inherited: greeter's file is left out in kid, and put back by the exception's `!`.
        #expect(try has("kid", "/var/lib/pacman/local/greeter-1.0-1/files") && !has("kid", "/usr/share/greeter/greeting"))
        #expect(try FileManager.default.contents(atPath: tree(store, "exception") + "/usr/share/greeter/greeting") != nil)
        // The patterns are in the key: slim is not plain; the base below both is one layer.
        let keys = try ["base", "slim", "plain"].map {
            try String(contentsOfFile: store + "/refs/" + $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(Set(keys).count == 3)
        #expect(try Store(root: store).record(keys[1]).parent == keys[0] && Store(root: store).record(keys[2]).parent == keys[0])
    }

    @Test("fontconfig's hook leaves a cache of each font folder that the booted image finds valid, the same bytes from any build")
    func fontCache() throws {
        let folder = try Harness.temporaryDirectory("fonts")
        try Harness.demoRoot(["filesystem", "busybox", "glibc", "fontconfig"]).write(
            toFile: folder + "/base.yaml", atomically: false, encoding: .utf8)
        // As on Arch: the fonts come in a layer above fontconfig, whose hook runs `fc-cache -s` then.
        try "from: base\npackages: [ttf-dejavu]\n".write(toFile: folder + "/fonts.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let image = folder + "/fonts.squashfs"
        let built = try Harness.run(["build", folder + "/fonts.yaml", "--store", store, "-o", image])
        #expect(built.status == 0, "\(built.stderr)")
        #expect(built.stderr.contains("fonts: hook fontconfig.hook: Updating the font cache... (1/1)\n"), "\(built.stderr)")
        // One cache for each of /usr/share/fonts, its truetype and truetype/dejavu. fc-cache keeps a
        // cache only while its folder has the time it holds, and deletes it in the same run when not.
        let caches = try FileManager.default.contentsOfDirectory(atPath: try tree(store, "fonts") + "/var/cache/fontconfig")
        #expect(caches.filter { $0.hasSuffix("-le64.cache-8") }.count == 3, "\(caches)")
        // The booted image's fontconfig (no SOURCE_DATE_EPOCH there) reads them as they are. For a
        // folder without a valid cache it scans every font again, at every boot, and here, on the
        // read-only image, fails to write the cache (exit 3).
        let mounted = try KernelMount.squashfs(image)
        defer { KernelMount.unmount(mounted) }
        let check = try KernelMount.run("/usr/bin/env", ["-u", "SOURCE_DATE_EPOCH", "chroot", mounted, "/usr/bin/fc-cache", "-s", "-v"])
        #expect(check.status == 0, "\(check.output)")
        for dir in ["/usr/share/fonts", "/usr/share/fonts/truetype", "/usr/share/fonts/truetype/dejavu"] {
            #expect(check.output.contains("\(dir): skipping, existing cache is valid"), "\(check.output)")
        }

        // The caches hold folder times, not the time of the build: a build a second later in another
        // store makes the same tree.
        sleep(1)
        let again = try Harness.temporaryDirectory("store")
        let second = try Harness.run(["build", folder + "/fonts.yaml", "--store", again])
        #expect(second.status == 0, "\(second.stderr)")
        let first = try Store(root: store), other = try Store(root: again)
        let key = try #require(try first.ref("fonts"))
        #expect(try other.ref("fonts") == key)
        #expect(try first.record(key).treeDigest == other.record(key).treeDigest)
    }

    /// What a hook or a step reads of a package file's time (a cache records it, Python's bytecode
    /// does) is the time the file has in the layer: the layer's epoch, or the package's own time
    /// when that is older, as the file is extracted, not after the build.
    @Test("a hook and a run: step read a package file's time as the layer holds it: clamped to SOURCE_DATE_EPOCH as it is extracted, the package's own when older")
    func packageFileTimes() throws {
        let folder = try layers([
            "recorder": """
                from: base
                files:
                  - path: /etc/pacman.d/hooks/40-times.hook
                    content: "[Trigger]\\nType = Path\\nOperation = Install\\nTarget = usr/bin/demo-app\\n\\n[Action]\\nWhen = PostTransaction\\nExec = /etc/pacman.d/record-time\\n"
                  - path: /etc/pacman.d/record-time
                    mode: "0755"
                    content: "#!/bin/sh\\nstat -c %Y /usr/bin/demo-app > /var/lib/seen-by-hook\\n"

                """,
            "app": "from: recorder\npackages: [demo-app]\nrun:\n  - stat -c %Y /usr/bin/demo-app > /var/lib/seen-by-step\n",
        ])
        let listing = try KernelMount.run(
            "/usr/bin/bsdtar", ["-cf", "-", "--format", "mtree", "@\(Harness.demoOut)/repo/demo/demo-app-1.0-1-any.pkg.tar.zst"])
        let line = try #require(listing.output.split(separator: "\n").first { $0.hasPrefix("./usr/bin/demo-app ") })
        let packaged = try #require(line.split(separator: " ").first { $0.hasPrefix("time=") }.flatMap { Int($0.dropFirst(5).split(separator: ".")[0]) })
        for (epoch, expected) in [(1000, 1000), (4_000_000_000, packaged)] {
            let store = try Harness.temporaryDirectory("store")
            let built = try Harness.run(["build", folder + "/app.yaml", "--store", store], environment: ["SOURCE_DATE_EPOCH": "\(epoch)"])
            #expect(built.status == 0, "\(built.stderr)")
            let tree = try tree(store, "app")
            for seen in ["seen-by-hook", "seen-by-step"] {
                #expect(try String(contentsOfFile: tree + "/var/lib/" + seen, encoding: .utf8) == "\(expected)\n", "epoch \(epoch): \(seen)")
            }
            var st = stat()
            #expect(lstat(tree + "/usr/bin/demo-app", &st) == 0 && st.st_mtim.tv_sec == expected && st.st_mtim.tv_nsec == 0, "epoch \(epoch)")
        }
        #expect(packaged > 1000 && packaged < 4_000_000_000)
    }
}
