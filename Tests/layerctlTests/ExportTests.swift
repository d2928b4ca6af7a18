import Foundation
import Glibc
import LayerStore
import Testing

/// `layerctl export` and `build -o`: the same bytes every time, an image that appears whole or not
/// at all, the block cache, the tar and dir formats, and clear errors.
@Suite("Exporting images", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct ExportTests {
    /// Builds the demo gaming stack into a new store and returns the store.
    func demoStore(_ name: String = "store", layers: String? = nil) throws -> String {
        let folder = try layers ?? Harness.demoLayers()
        let store = try Harness.temporaryDirectory(name)
        let build = try Harness.run(["build", folder + "/gaming.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        return store
    }

    func export(
        _ layer: String, store: String, to output: String, _ extra: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Harness.Result {
        let result = try Harness.run(["export", layer, "--store", store, "-o", output] + extra)
        #expect(result.status == 0, "\(result.stderr)", sourceLocation: sourceLocation)
        return result
    }

    func bytes(_ path: String) -> Data { FileManager.default.contents(atPath: path) ?? Data() }

    /// Runs layerctl with `arguments` and sends it SIGKILL after `microseconds`, while it still runs.
    func killed(_ arguments: [String], after microseconds: UInt32, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        let process = try Harness.start(arguments)
        usleep(microseconds)
        #expect(process.isRunning, "the export finished before it could be killed", sourceLocation: sourceLocation)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    @Test("The same stack gives the same bytes at 1 and 2 workers, on every run, in any store, under any umask")
    func reproducible() throws {
        let first = try demoStore("store-one")
        let second = try demoStore("store-two")
        let out = try Harness.temporaryDirectory("images")
        _ = try export("gaming", store: first, to: out + "/one-job", ["--jobs", "1", "--no-block-cache"])
        _ = try export("gaming", store: first, to: out + "/two-jobs", ["--jobs", "2", "--no-block-cache"])
        _ = try export("gaming", store: first, to: out + "/cached", ["--jobs", "2"])
        _ = try export("gaming", store: first, to: out + "/from-cache", ["--jobs", "2"])
        let masked = try KernelMount.run(
            "/bin/sh",
            [
                "-c",
                "umask 077 && exec '\(Harness.executable)' export gaming --store '\(second)' -o '\(out)/other-store'",
            ])
        #expect(masked.status == 0, "\(masked.output)")
        let reference = bytes(out + "/one-job")
        #expect(reference.count > 1_000_000)
        for name in ["two-jobs", "cached", "from-cache", "other-store"] {
            #expect(bytes(out + "/" + name) == reference, "\(name) differs from the export with one worker")
        }
        var st = stat()
        #expect(
            stat(out + "/other-store", &st) == 0 && st.st_mode & 0o777 == 0o644, "the umask changed the image's mode")
        _ = try export("gaming", store: first, to: out + "/one.tar", ["--format", "tar"])
        _ = try export("gaming", store: second, to: out + "/two.tar", ["--format", "tar"])
        #expect(bytes(out + "/one.tar") == bytes(out + "/two.tar"))
    }

    @Test("build -o writes the image of the stack it built, the same as export")
    func buildWritesTheImage() throws {
        let layers = try Harness.demoLayers()
        let store = try Harness.temporaryDirectory("store")
        let out = try Harness.temporaryDirectory("images")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store, "-o", out + "/built.squashfs"])
        #expect(build.status == 0, "\(build.stderr)")
        _ = try export("gaming", store: store, to: out + "/exported.squashfs", ["--no-block-cache"])
        // Builds record their opaque directories, so the merge needs no privilege to find them.
        let records = try Store(root: store)
        for name in ["base", "nvidia", "gaming"] {
            #expect(try records.record(try #require(try records.ref(name))).opaqueDirectories != nil, "\(name)")
        }
        #expect(bytes(out + "/built.squashfs") == bytes(out + "/exported.squashfs"))
        let mounted = try KernelMount.squashfs(out + "/built.squashfs")
        defer { KernelMount.unmount(mounted) }
        #expect(try String(contentsOfFile: mounted + "/etc/greeting", encoding: .utf8) == "hello from gaming\n")
        #expect(!FileManager.default.fileExists(atPath: mounted + "/usr/bin/nano"))

        // The oracle on real built layers: the image is the kernel's overlay of the three trees.
        let lowerdir = try ["gaming", "nvidia", "base"].map { records.tree(try #require(try records.ref($0))) }
            .joined(separator: ":")
        let overlay = try KernelMount.overlay(lowerdir: lowerdir)
        defer { KernelMount.unmount(overlay) }
        let differences = try TreeSnapshot(overlay).differences(from: try TreeSnapshot(mounted))
        #expect(differences.isEmpty, "overlay (-) and image (+) differ:\n\(differences.joined(separator: "\n"))")

        // A build that fails leaves the last good image in place.
        let good = bytes(out + "/built.squashfs")
        try Harness.edit(layers + "/gaming.yaml") { $0 + "  - exit 7\n" }
        let failed = try Harness.run([
            "build", layers + "/gaming.yaml", "--store", store, "-o", out + "/built.squashfs",
        ])
        #expect(failed.status == 6, "\(failed.stderr)")  // a build step failed
        #expect(bytes(out + "/built.squashfs") == good)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: out).sorted() == [
                "built.squashfs", "exported.squashfs",
            ])
    }

    @Test("A built layer with hard links in any order and removed packages exports in every format")
    func builtHardLinks() throws {
        let layers = try Harness.demoLayers()
        // The link's first name depth-first (/x/a/f) is not its first breadth-first (/x/z); removing
        // perl leaves many whiteouts, which overlayfs makes hard links of one another.
        try """
        from: base
        remove: [perl, nano]
        run:
          - mkdir -p /x/a && echo hi > /x/a/f && ln /x/a/f /x/z
        """.write(toFile: layers + "/links.yaml", atomically: false, encoding: .utf8)
        let store = try Harness.temporaryDirectory("store")
        let out = try Harness.temporaryDirectory("images")
        let build = try Harness.run(["build", layers + "/links.yaml", "--store", store, "-o", out + "/links.squashfs"])
        #expect(build.status == 0, "\(build.stderr)")
        _ = try export("links", store: store, to: out + "/links.tar", ["--format", "tar"])
        _ = try export("links", store: store, to: out + "/tree", ["--format", "dir"])
        let records = try Store(root: store)
        let lowerdir = try ["links", "base"].map { records.tree(try #require(try records.ref($0))) }
        var whiteoutLinks = 0
        for path in ["/usr/bin/perl", "/usr/bin/nano"] {
            var st = stat()
            #expect(lstat(lowerdir[0] + path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR, "\(path)")
            whiteoutLinks = max(whiteoutLinks, Int(st.st_nlink))
        }
        #expect(whiteoutLinks >= 3, "the whiteouts of removed files share an inode")
        let overlay = try KernelMount.overlay(lowerdir: lowerdir.joined(separator: ":"))
        defer { KernelMount.unmount(overlay) }
        let mounted = try KernelMount.squashfs(out + "/links.squashfs")
        defer { KernelMount.unmount(mounted) }
        let expected = try TreeSnapshot(overlay)
        #expect(expected.entries["/x/z"]?.contains("links=/x/a/f") == true, "\(expected.entries["/x/z"] ?? "")")
        for (what, tree) in [("image", mounted), ("dir", out + "/tree")] {
            let actual = try TreeSnapshot(tree)
            let differences = expected.differences(from: actual)
            #expect(differences.isEmpty, "overlay (-) and \(what) (+):\n\(differences.joined(separator: "\n"))")
            #expect(actual.linkCountMismatches.isEmpty, "\(what): \(actual.linkCountMismatches)")
        }
        let listing = try KernelMount.run("/bin/tar", ["-tvf", out + "/links.tar", "x/z", "x/a/f"])
        #expect(listing.output.contains("x/z link to x/a/f"), "\(listing.output)")
    }

    @Test("A file name that is not UTF-8 survives the build, the image, and gc")
    func nonUTF8Names() throws {
        let layers = try Harness.demoLayers()
        let original = try String(contentsOfFile: layers + "/gaming.yaml", encoding: .utf8)
        try Harness.edit(layers + "/gaming.yaml") { $0 + "  - touch \"/etc/latin1-$(printf '\\351')\"\n" }
        let store = try Harness.temporaryDirectory("store")
        let out = try Harness.temporaryDirectory("images")
        let build = try Harness.run(["build", layers + "/gaming.yaml", "--store", store, "-o", out + "/image"])
        #expect(build.status == 0, "\(build.stderr)")
        let oddKey = try #require(try Store(root: store).ref("gaming"))
        let mounted = try KernelMount.squashfs(out + "/image")
        let names = try TreeSnapshot(mounted).entries.keys
        KernelMount.unmount(mounted)
        #expect(names.contains("/etc/latin1-\\xe9"), "\(names.filter { $0.hasPrefix("/etc/latin") })")

        // Built again without it, the old gaming layer is garbage, and gc removes its odd name too.
        try original.write(toFile: layers + "/gaming.yaml", atomically: false, encoding: .utf8)
        #expect(try Harness.run(["build", layers + "/gaming.yaml", "--store", store]).status == 0)
        let gc = try Harness.run(["gc", "--store", store])
        #expect(gc.status == 0, "\(gc.stderr)")
        #expect(!FileManager.default.fileExists(atPath: store + "/layers/" + oddKey))
    }

    @Test("Each built layer has a manifest; a damaged one is an error naming it, a missing one is made again")
    func manifests() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        let keys = try Store(root: store).chain(try #require(try Store(root: store).ref("gaming")))
        for key in keys {
            #expect(FileManager.default.fileExists(atPath: store + "/layers/" + key + "/manifest"), "\(key)")
        }
        _ = try export("gaming", store: store, to: out + "/first", ["--no-block-cache"])

        let manifest = store + "/layers/" + keys[1] + "/manifest"
        let original = bytes(manifest)
        try original.prefix(original.count / 2).write(to: URL(fileURLWithPath: manifest))
        let damaged = try Harness.run(["export", "gaming", "--store", store, "-o", out + "/damaged"])
        #expect(damaged.status == 7)  // damaged
        #expect(damaged.stderr.contains(manifest) && damaged.stderr.contains("damaged"), "\(damaged.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out + "/damaged"))

        // A layer stored before manifests were kept: its first export walks the tree and keeps one.
        try FileManager.default.removeItem(atPath: manifest)
        _ = try export("gaming", store: store, to: out + "/again", ["--no-block-cache"])
        #expect(bytes(manifest) == original)
        #expect(bytes(out + "/again") == bytes(out + "/first"))
    }

    @Test("Peak memory does not grow with the size of the file data")
    func boundedMemory() throws {
        // The peak RSS of exporting a stack of one file of `megabytes` of random data, in KiB.
        func peak(_ megabytes: Int) throws -> Int {
            let stack = try CraftedStack("memory-\(megabytes)")
            try stack.layer("data") { t in
                try t.file("random")
                let made = try KernelMount.run(
                    "/bin/sh", ["-c", "head -c \(megabytes)M /dev/urandom > '\(t.root)/random'"])
                #expect(made.status == 0, "\(made.output)")
            }
            let out = try Harness.temporaryDirectory("memory")
            let run = try KernelMount.run(
                "/usr/bin/time",
                [
                    "-f", "%M", "-o", out + "/rss", Harness.executable, "export", "data", "--store", stack.store, "-o",
                    out + "/image", "--compression", "lz4", "--jobs", "2",
                ])
            #expect(run.status == 0, "\(run.output)")
            let text = try String(contentsOfFile: out + "/rss", encoding: .utf8)
            return try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        // From a few hundred MiB on, the peak is the same (60 MB here, about 14 MB of it the window of
        // units in flight); below that, the heaps are still growing to it.
        let small = try peak(256)
        let large = try peak(1024)
        #expect(large < small + 16 * 1024, "peak RSS: \(small) KiB for 256 MiB of data, \(large) KiB for 1 GiB")
    }

    @Test("kill -9 during an export leaves no file at the output path, and an older image there stays")
    func killedExport() throws {
        let store = try demoStore()
        let out = try Harness.temporaryDirectory("images")
        for existing in [false, true] {
            let target = out + (existing ? "/existing.squashfs" : "/new.squashfs")
            if existing { _ = try export("gaming", store: store, to: target, ["--compression", "lz4"]) }
            let before = bytes(target)
            try killed(
                [
                    "export", "gaming", "--store", store, "-o", target, "--compression", "xz:9", "--jobs", "1",
                    "--no-block-cache",
                ], after: 1_500_000)
            #expect(
                bytes(target) == before, existing ? "the older image changed" : "a file appeared at the output path")
            let names = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
            #expect(names == (existing ? ["existing.squashfs"] : []), "left behind: \(names)")
        }
    }

    /// libsquashfs reports any failure of the file it writes as an "input/output error", which
    /// sent a user whose disk was only full to look for a failing one.
    @Test("An image that does not fit its disk: one line with the system's reason, whether compressed or copied from the cache, in every format; an older image stays")
    func fullDisk() throws {
        let store = try demoStore()
        let folder = try Harness.temporaryDirectory("full-disk") + "/disk"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let mounted = try KernelMount.run("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", folder])
        try #require(mounted.status == 0, "\(mounted.output)")
        defer { _ = try? KernelMount.run("/bin/umount", [folder]) }
        let target = folder + "/gaming.squashfs"
        try "an older image\n".write(toFile: target, atomically: false, encoding: .utf8)
        for (extra, failed) in [
            (["--no-block-cache"], "write \(target) failed: No space left on device"),
            // The first export filled the cache (which is on the store's disk): the blocks are copied.
            ([], "copy cached blocks into \(target) failed: No space left on device"),
        ] {
            if extra.isEmpty { _ = try export("gaming", store: store, to: Harness.temporaryDirectory("images") + "/fill.squashfs") }
            let result = try Harness.run(["export", "gaming", "--store", store, "-o", target] + extra)
            #expect(result.status == 8, "\(extra): \(result.stderr)")
            let lines = result.labelled
            #expect(lines == ["layerctl: \(failed)"], "\(extra): \(result.stderr)")
            #expect(try String(contentsOfFile: target, encoding: .utf8) == "an older image\n")
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["gaming.squashfs"])
        }
        // libarchive's own words were "Write error".
        for format in ["tar", "dir", "oci"] {
            let result = try Harness.run(["export", "gaming", "--store", store, "-o", folder + "/gaming." + format, "--format", format])
            #expect(result.status == 8, "\(format): \(result.stderr)")
            let lines = result.labelled
            #expect(lines.count == 1 && lines[0].hasSuffix(" failed: No space left on device"), "\(format): \(result.stderr)")
            // Said of the output as the user named it, not of the hidden folder it was made in.
            #expect(result.stderr.contains(folder + "/gaming." + format) && !result.stderr.contains(".layerctl-"), "\(result.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["gaming.squashfs"], "\(format)")
        }
    }

    /// `build -o` into a folder that is not there failed only once the build was done; `-o out/`
    /// for a dir or oci export failed as "create out/ failed: No such file or directory".
    @Test("-o in a folder that is not there is a usage error before any build; out/ names the folder a dir or oci export makes")
    func outputFolders() throws {
        let stack = try CraftedStack("output-folders")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let folder = try Harness.temporaryDirectory("output-folders")
        try "a file\n".write(toFile: folder + "/file", atomically: false, encoding: .utf8)
        for (output, format, says) in [
            ("/nonexistent/image.squashfs", "squashfs", "cannot write /nonexistent/image.squashfs: there is no folder /nonexistent"),
            (folder + "/missing/out", "dir", "cannot write \(folder)/missing/out: there is no folder \(folder)/missing"),
            (folder + "/file/image.tar", "tar", "cannot write \(folder)/file/image.tar: \(folder)/file is no folder"),
            (folder + "/image.squashfs/", "squashfs", "a squashfs image is a file, and a name that ends in / is a folder's"),
        ] {
            let result = try Harness.run(["export", "only", "--store", stack.store, "-o", output, "--format", format])
            #expect(result.status == 2, "\(output): \(result.stderr)")
            #expect(result.stderr.contains("Error: " + says) || result.stderr.contains(says), "\(output): \(result.stderr)")
        }
        let layer = folder + "/base.yaml"
        try "from: scratch\narch: x86_64\npackages: [busybox]\n".write(toFile: layer, atomically: false, encoding: .utf8)
        let build = try Harness.run(["build", layer, "--store", stack.store, "-o", "/nonexistent/base.squashfs"])
        #expect(build.status == 2 && build.stderr.contains("there is no folder /nonexistent"), "\(build.stderr)")
        #expect(!FileManager.default.fileExists(atPath: stack.store + "/refs/base"))

        for format in ["dir", "oci"] {
            let result = try Harness.run(["export", "only", "--store", stack.store, "-o", folder + "/\(format)-out//", "--format", format])
            #expect(result.status == 0, "\(format): \(result.stderr)")
            var isFolder: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: folder + "/\(format)-out", isDirectory: &isFolder) && isFolder.boolValue, "\(format)")
            if format == "oci" { #expect(result.stdout.contains("an OCI image layout of 1 layer, "), "\(result.stdout)") }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["base.yaml", "dir-out", "file", "oci-out"])
        // A name that shares its layer's key with another tags the layout with itself, not with the
        // name the layer was first made under.
        let key = try String(contentsOfFile: stack.store + "/refs/only", encoding: .utf8)
        try key.write(toFile: stack.store + "/refs/same", atomically: false, encoding: .utf8)
        let same = try Harness.run(["export", "same", "--store", stack.store, "-o", folder + "/same", "--format", "oci"])
        #expect(same.status == 0, "\(same.stderr)")
        let index = try String(contentsOfFile: folder + "/same/index.json", encoding: .utf8)
        #expect(index.contains(#""org.opencontainers.image.ref.name":"same""#), "\(index)")
    }

    /// `vm LAYER` exports the stack into /var/tmp/layerctl-vm-…; killed before its end (before
    /// QEMU starts, or with QEMU), that image stayed, the size of the whole system.
    @Test("vm removes the scratch folders of vm processes that are gone, and no one else's")
    func abandonedVMFolders() throws {
        let gone = try Harness.pidOfExited()
        let abandoned = "/var/tmp/layerctl-vm-\(gone)-test01"
        let running = "/var/tmp/layerctl-vm-1-test01"
        let others = "/var/tmp/layerctl-vm-\(gone)-test02"
        for folder in [abandoned, running, others] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
            try "image\n".write(toFile: folder + "/image.squashfs", atomically: false, encoding: .utf8)
        }
        defer { for folder in [abandoned, running, others] { try? FileManager.default.removeItem(atPath: folder) } }
        #expect(chown(others, 65534, 65534) == 0)
        let stack = try CraftedStack("abandoned-vm")
        try stack.layer("plain") { t in try t.file("file", "content\n") }
        let vm = try Harness.run(["vm", "plain", "--store", stack.store, "--print-command"])
        #expect(vm.status == 3, "\(vm.stderr)")
        #expect(!FileManager.default.fileExists(atPath: abandoned))
        #expect(FileManager.default.fileExists(atPath: running + "/image.squashfs"))
        #expect(FileManager.default.fileExists(atPath: others + "/image.squashfs"))
    }

    /// `stage` and `vm` of a layer exported the whole stack, minutes for a real system, before they
    /// looked for a kernel in it and found none (a base without the `linux` package). The merged
    /// manifests tell first; a /boot that is a symlink is left to the image's reader.
    @Test("vm and stage of a stack without a kernel and initramfs fail at once, before any export; a /boot through a symlink is followed")
    func noKernelBeforeExport() throws {
        let stack = try CraftedStack("no-kernel")
        try stack.layer("plain") { t in
            try t.directory("etc")
            try t.file("etc/os-release", "NAME=plain\n")
        }
        try stack.layer("kernel-only") { t in
            try t.directory("boot")
            try t.file("boot/vmlinuz-linux", "kernel\n")
        }
        try stack.layer("fallback") { t in
            try t.directory("boot")
            try t.file("boot/initramfs-linux-fallback.img", "initramfs\n")
        }
        let linked = try CraftedStack("linked-boot")
        try linked.layer("linked") { t in
            for folder in ["usr", "usr/lib", "usr/lib/kernel"] { try t.directory(folder) }
            try t.file("usr/lib/kernel/vmlinuz-linux", "kernel\n")
            try t.file("usr/lib/kernel/initramfs-linux.img", "initramfs\n")
            try t.symlink("boot", to: "usr/lib/kernel")
        }
        let state = try Harness.temporaryDirectory("no-kernel-state")
        for layer in ["plain", "kernel-only"] {
            let vm = try Harness.run(["vm", layer, "--store", stack.store, "--print-command"])
            #expect(vm.status == 3, "\(vm.stderr)")
            #expect(
                vm.stderr == "layerctl: \(layer) has no kernel and initramfs in /boot (vmlinuz-NAME with initramfs-NAME.img); "
                    + "give --kernel and --initrd\n")
            let stage = try Harness.run(
                ["stage", layer, "--store", stack.store, "--state-dir", state, "--boot-dir", state, "--no-grub"])
            #expect(stage.status == 3, "\(stage.stderr)")
            #expect(stage.stderr.hasPrefix("layerctl: layer \(layer) ("), "\(stage.stderr)")
            #expect(stage.stderr.hasSuffix(") has no kernel and initramfs in /boot (vmlinuz-NAME with initramfs-NAME.img), so no boot loader could start it\n"), "\(stage.stderr)")
            // Nothing was compressed: an export fills the block cache.
            #expect(!FileManager.default.fileExists(atPath: stack.store + "/cache/blocks"), "\(layer)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: state).isEmpty)
        let fallback = try Harness.run(["vm", "fallback", "--store", stack.store, "--print-command"])
        #expect(fallback.status == 0, "\(fallback.stderr)")
        #expect(FileManager.default.fileExists(atPath: stack.store + "/cache/blocks"))
        let followed = try Harness.run(["vm", "linked", "--store", linked.store, "--print-command"])
        #expect(followed.status == 0, "\(followed.stderr)")
    }

    /// An output is put in place by a rename, which replaces a symlink itself, or a device's node:
    /// `sbom -o /dev/stdout` left a regular file where the host's /dev/stdout was, and
    /// `export -o /dev/sdb` a 16 MiB file in /dev in place of the disk's node, saying "wrote".
    @Test("-o through a symlink writes the file it names; -o a device, a pipe or a socket is refused before any work, and left as it was")
    func specialOutputs() throws {
        let stack = try CraftedStack("outputs")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let folder = try Harness.temporaryDirectory("outputs")
        #expect(mknod(folder + "/disk", S_IFBLK | 0o600, Device.make(7, 250)) == 0)
        #expect(mkfifo(folder + "/fifo", 0o600) == 0)
        #expect(symlink(folder + "/disk", folder + "/disk-link") == 0)
        func looks() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: folder).sorted().map { name in
                var st = stat()
                lstat(folder + "/" + name, &st)
                return "\(name) \(st.st_mode) \(st.st_rdev) \(st.st_size)"
            }
        }
        let before = try looks()
        for (output, shown, kind) in [
            ("disk", "disk", "a block device"), ("fifo", "fifo", "a pipe"), ("disk-link", "disk-link", "a block device"),
        ] {
            for format in ["squashfs", "tar", "dir", "oci"] {
                let result = try Harness.run(["export", "only", "--store", stack.store, "-o", folder + "/" + output, "--format", format])
                #expect(result.status == 2, "\(output) \(format): \(result.stderr)")
                #expect(result.stderr.contains("\(folder)/\(shown) is \(kind): "), "\(output) \(format): \(result.stderr)")
            }
        }
        #expect(try looks() == before)

        // Through a symlink: the file it names is written, and the link stays a link.
        try "old\n".write(toFile: folder + "/image.squashfs", atomically: false, encoding: .utf8)
        #expect(symlink("image.squashfs", folder + "/latest.squashfs") == 0)
        #expect(try Harness.run(["export", "only", "--store", stack.store, "-o", folder + "/latest.squashfs"]).status == 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: folder + "/latest.squashfs") == "image.squashfs")
        #expect(bytes(folder + "/image.squashfs").prefix(4) == Data("hsqs".utf8))

        // sbom writes a document into what it is given: a character device, here /dev/null by a
        // link, as /dev/stdout is one.
        #expect(symlink("/dev/null", folder + "/null-link") == 0)
        let sbom = try Harness.run(["sbom", "only", "--store", stack.store, "-o", folder + "/null-link"])
        #expect(sbom.status == 0, "\(sbom.stderr)")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: folder + "/null-link") == "/dev/null")
        var null = stat()
        #expect(stat("/dev/null", &null) == 0 && null.st_mode & S_IFMT == S_IFCHR)
    }

    /// `sudo layerctl build gaming.yaml -o ~/gaming.squashfs` wrote an image the user could not
    /// replace without root.
    @Test("an image, an OCI layout or an SBOM written into a user's folder is the user's; into root's, root's")
    func imageOwner() throws {
        let stack = try CraftedStack("owner")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let folder = try Harness.temporaryDirectory("owned")
        #expect(chown(folder, 65534, 65534) == 0)
        for format in ["squashfs", "tar"] {
            let result = try Harness.run(["export", "only", "--store", stack.store, "-o", folder + "/image." + format, "--format", format])
            #expect(result.status == 0, "\(result.stderr)")
            var st = stat()
            #expect(stat(folder + "/image." + format, &st) == 0 && st.st_uid == 65534 && st.st_gid == 65534 && st.st_mode & 0o777 == 0o644, "\(format)")
        }
        // So is an SBOM.
        let sbom = try Harness.run(["sbom", "only", "--store", stack.store, "-o", folder + "/sbom.json"])
        var document = stat()
        #expect(sbom.status == 0 && stat(folder + "/sbom.json", &document) == 0 && document.st_uid == 65534, "\(sbom.stderr)")
        // An OCI layout is the user's too, every file and folder of it.
        #expect(try Harness.run(["export", "only", "--store", stack.store, "-o", folder + "/layout", "--format", "oci"]).status == 0)
        let entries = try FileManager.default.subpathsOfDirectory(atPath: folder + "/layout").map { folder + "/layout/" + $0 } + [folder + "/layout"]
        #expect(entries.count > 4)
        for entry in entries {
            var st = stat()
            #expect(lstat(entry, &st) == 0 && st.st_uid == 65534 && st.st_gid == 65534, "\(entry)")
        }
        let rootFolder = try Harness.temporaryDirectory("root-owned")
        #expect(try Harness.run(["export", "only", "--store", stack.store, "-o", rootFolder + "/image.squashfs"]).status == 0)
        #expect(try Harness.run(["export", "only", "--store", stack.store, "-o", rootFolder + "/layout", "--format", "oci"]).status == 0)
        for path in [rootFolder + "/image.squashfs", rootFolder + "/layout", rootFolder + "/layout/index.json"] {
            var st = stat()
            #expect(stat(path, &st) == 0 && st.st_uid == 0 && st.st_gid == 0, "\(path)")
        }
    }

    @Test("Bad arguments and outputs each give one clear error")
    func badInput() throws {
        let stack = try CraftedStack("errors")
        try stack.layer("only") { t in try t.file("file", "content\n") }
        let out = try Harness.temporaryDirectory("images")
        let cases: [([String], Int32, String)] = [
            (["export", "nosuch", "-o", out + "/x"], 3, "nosuch"),
            (["export", "only", "-o", out + "/missing/dir/image"], 2, "there is no folder " + out + "/missing/dir"),
            (["export", "only"], 2, "-o"),
            (["export", "only", "-o", out + "/x", "--compression", "brotli"], 2, "unknown compressor 'brotli'"),
            (["export", "only", "-o", out + "/x", "--compression", "zstd:99"], 2, "out of range"),
            (["export", "only", "-o", out + "/x", "--block-size", "3K"], 2, "power of two"),
            (["export", "only", "-o", out + "/x", "--format", "zip"], 2, "unknown format 'zip'"),
            (["export", "only", "-o", out], 3, "Is a directory"),
        ]
        for (arguments, status, message) in cases {
            let result = try Harness.run(arguments + ["--store", stack.store])
            #expect(result.status == status, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count <= 3, "\(arguments): \(result.stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).isEmpty)
    }
}
