import Foundation
import Glibc
import LayerSupport
import Testing

/// `stage`, `staged`, `boot` and `unstage` against a boot directory and a state folder on a
/// loop-mounted ext4 filesystem, so UUIDs and paths are real; then the staged entry boots in QEMU.
@Suite(
    "Staging images", .serialized,
    .enabled(if: BootMachine.missing == nil, Comment(rawValue: BootMachine.missing ?? "")))
struct StagingTests {
    let machine: BootMachine
    /// Each test's disk has a UUID of its own: a disk of another run (a test killed before its
    /// unmount, a second test run at the same time) must not share it, or `mkfs.btrfs -U` refuses
    /// ("non-unique UUID"), btrfs mounts the other device, and `UUID=` names two filesystems.
    let uuid = UUID().uuidString.lowercased()

    init() throws { machine = try BootMachine.shared.get() }

    struct Disk {
        var file: String
        var mount: String
        var grub: String
        var run: String
        var options: [String] {
            ["--state-dir", mount + "/state", "--boot-dir", mount + "/boot", "--grub-dir", grub, "--run-dir", run]
        }
    }

    func makeDisk() throws -> Disk {
        let folder = try Harness.temporaryDirectory("staging")
        let disk = Disk(
            file: folder + "/fs.ext4", mount: folder + "/mnt", grub: folder + "/grub.d", run: folder + "/run")
        try BootMachine.shell(
            """
            mkfs.ext4 -q -U \(uuid) -L layerctl-boot '\(disk.file)' 256M
            mkdir -p '\(disk.mount)' '\(disk.run)'
            mount -o loop '\(disk.file)' '\(disk.mount)'
            """)
        return disk
    }

    func unmount(_ disk: Disk) { _ = try? BootMachine.shell("umount '\(disk.mount)' 2>/dev/null || true") }

    func layerctl(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> Harness.Result {
        let result = try Harness.run(arguments)
        #expect(
            result.status == 0, "layerctl \(arguments.joined(separator: " ")): \(result.stderr)",
            sourceLocation: sourceLocation)
        return result
    }

    func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// Boots the BLS entry of `name` on `disk` in QEMU (its kernel and initramfs copied out, then
    /// the disk unmounted), its options and `append` on the command line: the console, and the
    /// probe's lines.
    func bootEntry(_ name: String, on disk: Disk, append: String = "") throws -> (output: String, probe: [String]) {
        let entry = text(disk.mount + "/boot/loader/entries/layerctl-\(name).conf")
        let kernel = disk.mount + "/../vmlinuz"
        let initrd = disk.mount + "/../initramfs.img"
        // The disk the machine boots is a frozen copy.
        try BootMachine.shell(
            """
            cp '\(disk.mount)\(Self.field("linux", of: entry))' '\(kernel)' && cp '\(disk.mount)\(Self.field("initrd", of: entry))' '\(initrd)'
            """)
        let booted = try frozenCopy(disk)
        defer { unlink(booted) }
        unmount(disk)
        let output = try machine.boot(
            kernel: kernel, initrd: initrd, disks: [(booted, true)], append: Self.field("options", of: entry) + append)
        let probe = output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("PROBE") }
        return (output, probe)
    }

    /// A copy of `disk`'s file (`.boot` beside it) taken while the filesystem was frozen, its
    /// journal written out: an unmount does not do that while another namespace holds a copy of
    /// the mount (a build's libalpm children, on a host whose mounts are not shared, keep theirs
    /// until the build ends), and the read-only disk would then need a recovery it cannot make.
    func frozenCopy(_ disk: Disk) throws -> String {
        let booted = disk.file + ".boot"
        try BootMachine.shell(
            """
            fsfreeze -f '\(disk.mount)'
            if cp --sparse=always '\(disk.file)' '\(booted)'; then copied=0; else copied=$?; fi
            fsfreeze -u '\(disk.mount)'
            exit $copied
            """)
        return booted
    }

    /// The value of `key` in a BLS entry.
    static func field(_ key: String, of entry: String) -> String {
        entry.split(separator: "\n").first { $0.hasPrefix(key + " ") }.map {
            $0.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
        } ?? ""
    }

    func staged(_ disk: Disk) throws -> [[String: Any]] {
        let result = try layerctl(["staged", "--json"] + disk.options)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        return object?["staged"] as? [[String: Any]] ?? []
    }

    @Test(
        "stage writes the image, its kernel and initramfs, a BLS entry and a grub.d script; restaging keeps the previous"
    )
    func stageAndRestage() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + disk.options)
        let first = try staged(disk)
        #expect(first.count == 1)
        let image = try #require(first.first?["image"] as? [String: Any])
        let id = try #require(image["id"] as? String)
        #expect(id == String(machine.imageDigest.prefix(12)))
        let stagedAt = try #require(image["stagedAt"] as? String)
        #expect(
            FileManager.default.contentsEqual(
                atPath: disk.mount + "/state/probe/\(id).squashfs", andPath: machine.image))
        // The kernel and initramfs are those in the image's /boot.
        #expect(
            FileManager.default.contentsEqual(
                atPath: disk.mount + "/boot/layerctl/probe/\(id)/vmlinuz",
                andPath: BootMachine.kernelDirectory + "/vmlinuz"))
        #expect(
            FileManager.default.contentsEqual(
                atPath: disk.mount + "/boot/layerctl/probe/\(id)/initramfs.img", andPath: machine.dracutInitrd))
        let options =
            "layerctl.image=/state/probe/\(id).squashfs layerctl.device=UUID=\(uuid) layerctl.verify=sha256:\(machine.imageDigest)"
        #expect(
            text(disk.mount + "/boot/loader/entries/layerctl-probe.conf") == """
                # Written by `layerctl stage probe`; `layerctl unstage` removes it.
                title      layerctl: probe (\(id))
                version    \(stagedAt)
                sort-key   layerctl
                linux      /boot/layerctl/probe/\(id)/vmlinuz
                initrd     /boot/layerctl/probe/\(id)/initramfs.img
                options    \(options)

                """)
        // grub-mkconfig runs the script; its output is the menu entry.
        let menu = try BootMachine.shell("sh '\(disk.grub)/42_layerctl'")
        #expect(menu.contains("menuentry 'layerctl: probe (\(id))' --id 'layerctl-probe' {"), "\(menu)")
        #expect(menu.contains("search --no-floppy --fs-uuid --set=root \(uuid)"), "\(menu)")
        #expect(menu.contains("linux /boot/layerctl/probe/\(id)/vmlinuz \(options)"), "\(menu)")
        #expect(menu.contains("initrd /boot/layerctl/probe/\(id)/initramfs.img"), "\(menu)")

        // The layer, exported at the default zstd:15, is another image: it becomes current and the
        // first stays as the previous version.
        let staging = try layerctl(["stage", "probe", "--store", machine.store] + disk.options)
        // Its message names the way back as this staging saved it.
        #expect(staging.stdout.contains("  previous: \(id), kept as layerctl-probe-previous\n"), "\(staging.stdout)")
        let second = try staged(disk)
        #expect(second.count == 2)
        let current = try #require((second.first?["image"] as? [String: Any])?["id"] as? String)
        #expect(current != id)
        #expect(second.last?["previous"] as? Bool == true)
        #expect((second.last?["image"] as? [String: Any])?["id"] as? String == id)
        #expect(text(disk.mount + "/boot/loader/entries/layerctl-probe.conf").contains("title      layerctl: probe (\(current))"))
        #expect(text(disk.mount + "/boot/loader/entries/layerctl-probe-previous.conf").contains("title      layerctl: probe (previous, \(id))"))
        let menus = try BootMachine.shell("sh '\(disk.grub)/42_layerctl'")
        #expect(menus.contains("--id 'layerctl-probe'") && menus.contains("--id 'layerctl-probe-previous'"), "\(menus)")
        for version in [id, current] {
            #expect(FileManager.default.fileExists(atPath: disk.mount + "/state/probe/\(version).squashfs"))
        }
    }

    @Test("boot sets loader.conf's default and GRUB's saved_entry, or next_entry with --once, and says when GRUB's menu or systemd-boot's EFI variable would not follow it")
    func bootDefault() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        try BootMachine.shell(
            """
            mkdir -p '\(disk.mount)/boot/loader' '\(disk.mount)/boot/grub'
            printf 'timeout 3\\n# default old.conf\\ndefault\\tarch.conf\\neditor no\\n  default other.conf\\n' >'\(disk.mount)/boot/loader/loader.conf'
            : >'\(disk.mount)/boot/grub/grub.cfg'
            """)
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + disk.options)
        let result = try layerctl(["boot", "probe"] + disk.options)
        #expect(result.stdout.contains("systemd-boot boots layerctl-probe.conf by default"), "\(result.stdout)")
        // Every `default` line goes (systemd-boot keeps the last one, after a tab or spaces too), and
        // ours takes the first one's place.
        #expect(
            text(disk.mount + "/boot/loader/loader.conf")
                == "timeout 3\n# default old.conf\ndefault layerctl-probe.conf\neditor no\n")
        let environment = try #require(FileManager.default.contents(atPath: disk.mount + "/boot/grub/grubenv"))
        #expect(environment.count == 1024)
        #expect(
            String(decoding: environment, as: UTF8.self).hasPrefix(
                "# GRUB Environment Block\nsaved_entry=layerctl-probe\n#"))
        // A default chosen in systemd-boot's menu, or with bootctl set-default, is an EFI variable
        // that comes before loader.conf's.
        let variables = try Harness.temporaryDirectory("efivars")
        var variable = Data([7, 0, 0, 0])
        for unit in "arch.conf".utf16 + [0] { variable += [UInt8(unit & 0xff), UInt8(unit >> 8)] }
        try variable.write(to: URL(fileURLWithPath: variables + "/LoaderEntryDefault-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"))
        let overridden = try layerctl(["boot", "probe", "--loader", "systemd-boot", "--efivars-dir", variables] + disk.options)
        #expect(
            overridden.stdout
                == "systemd-boot: default layerctl-probe.conf in \(disk.mount)/boot/loader/loader.conf, but the EFI variable LoaderEntryDefault names `arch.conf` and comes first: run bootctl set-default layerctl-probe.conf\n",
            "\(overridden.stdout)")
        variable = Data([7, 0, 0, 0])
        for unit in "layerctl-probe.conf".utf16 + [0] { variable += [UInt8(unit & 0xff), UInt8(unit >> 8)] }
        try variable.write(to: URL(fileURLWithPath: variables + "/LoaderEntryDefault-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"))
        let agreed = try layerctl(["boot", "probe", "--loader", "systemd-boot", "--efivars-dir", variables] + disk.options)
        #expect(agreed.stdout.hasPrefix("systemd-boot boots layerctl-probe.conf by default"), "\(agreed.stdout)")
        // An empty grub.cfg neither follows saved_entry nor holds the entry: GRUB would boot its first.
        let grubMenu = disk.mount + "/boot/grub/grub.cfg"
        #expect(
            result.stdout.contains(
                "GRUB: saved_entry=layerctl-probe in \(disk.mount)/boot/grub/grubenv, but GRUB boots it by default only once its menu follows saved_entry and holds the entry: set GRUB_DEFAULT=saved in /etc/default/grub, then run grub-mkconfig -o \(grubMenu)\n"),
            "\(result.stdout)")
        // What grub-mkconfig writes with GRUB_DEFAULT=saved, then with GRUB_DEFAULT=0 (which follows
        // next_entry alone), each with the entries of 42_layerctl.
        let header = """
            if [ "${next_entry}" ] ; then
               set default="${next_entry}"
               set next_entry=
               save_env next_entry
               set boot_once=true
            else
               set default="%@"
            fi

            """
        try BootMachine.shell(
            "{ printf '%s' '\(header.replacingOccurrences(of: "%@", with: "${saved_entry}"))'; sh '\(disk.grub)/42_layerctl'; } >'\(grubMenu)'")
        let saved = try layerctl(["boot", "probe", "--loader", "grub"] + disk.options)
        #expect(saved.stdout == "GRUB boots layerctl-probe by default (saved_entry in \(disk.mount)/boot/grub/grubenv)\n", "\(saved.stdout)")
        try BootMachine.shell(
            "{ printf '%s' '\(header.replacingOccurrences(of: "%@", with: "0"))'; sh '\(disk.grub)/42_layerctl'; } >'\(grubMenu)'")
        let first = try layerctl(["boot", "probe", "--loader", "grub"] + disk.options)
        #expect(first.stdout.contains("but GRUB boots it by default only once its menu follows saved_entry: set GRUB_DEFAULT=saved"), "\(first.stdout)")
        let next = try layerctl(["boot", "probe", "--once", "--loader", "grub"] + disk.options)
        #expect(next.stdout == "GRUB boots layerctl-probe next time (next_entry in \(disk.mount)/boot/grub/grubenv)\n", "\(next.stdout)")
        let once = String(
            decoding: FileManager.default.contents(atPath: disk.mount + "/boot/grub/grubenv") ?? Data(), as: UTF8.self)
        #expect(
            once.hasPrefix("# GRUB Environment Block\nsaved_entry=layerctl-probe\nnext_entry=layerctl-probe\n#"),
            "\(once)")

        let unknown = try Harness.run(["boot", "nothing"] + disk.options)
        #expect(unknown.status == 3)
        #expect(unknown.stderr.contains("nothing is staged as 'nothing'"), "\(unknown.stderr)")
    }

    /// Left naming an entry that unstage removed, loader.conf would leave systemd-boot to boot its
    /// menu's first entry: another staged image, which sorts first.
    @Test("unstage puts systemd-boot's default back to what boot replaced, through restaging and another name's boot; or says it names none now")
    func unstageRestoresDefault() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let loader = disk.mount + "/boot/loader"
        try BootMachine.shell(
            """
            mkdir -p '\(loader)/entries'
            printf 'timeout 3\\ndefault arch.conf\\n' >'\(loader)/loader.conf'
            printf 'title Arch Linux\\nlinux /vmlinuz-linux\\n' >'\(loader)/entries/arch.conf'
            """)
        let options = disk.options + ["--efivars-dir", disk.run]
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + options)
        _ = try layerctl(["boot", "probe", "--loader", "systemd-boot"] + options)
        // A new version of the name keeps what its boot replaced.
        _ = try layerctl(["stage", "probe", "--store", machine.store] + options)
        _ = try layerctl(["stage", machine.image, "--name", "other"] + options)
        _ = try layerctl(["boot", "other", "--loader", "systemd-boot"] + options)
        #expect(text(loader + "/loader.conf") == "timeout 3\ndefault layerctl-other.conf\n")
        let other = try layerctl(["unstage", "other", "--all"] + options)
        #expect(text(loader + "/loader.conf") == "timeout 3\ndefault layerctl-probe.conf\n")
        #expect(
            other.stderr.contains("systemd-boot: \(loader)/loader.conf names layerctl-probe.conf as the default again, as before layerctl boot other"),
            "\(other.stderr)")
        // Its current version goes, the previous stays under the entry: the default stays too.
        _ = try layerctl(["unstage", "probe"] + options)
        #expect(text(loader + "/loader.conf") == "timeout 3\ndefault layerctl-probe.conf\n")
        let probe = try layerctl(["unstage", "probe"] + options)
        #expect(text(loader + "/loader.conf") == "timeout 3\ndefault arch.conf\n")
        #expect(probe.stderr.contains("names arch.conf as the default again, as before layerctl boot probe"), "\(probe.stderr)")
        // The default before is gone as well: no default, and what that means.
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + options)
        _ = try layerctl(["boot", "probe", "--loader", "systemd-boot"] + options)
        unlink(loader + "/entries/arch.conf")
        let gone = try layerctl(["unstage", "probe", "--all"] + options)
        #expect(text(loader + "/loader.conf") == "timeout 3\n")
        #expect(
            gone.stderr.contains(
                "systemd-boot: \(loader)/loader.conf named layerctl-probe.conf as the default, and arch.conf, the default before layerctl boot probe, is gone too; it names none now"),
            "\(gone.stderr)")
    }

    @Test("unstage refuses the running image without --force, brings the previous back, and --all removes everything")
    func unstage() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + disk.options)
        _ = try layerctl(["stage", "probe", "--store", machine.store] + disk.options)
        let versions = try staged(disk).compactMap { ($0["image"] as? [String: Any])?["sha256"] as? String }
        // `require`, not `expect`: the rest indexes both versions, and a crash would leave the disk mounted.
        try #require(versions.count == 2)
        // The hook's record of the running image says the current version runs.
        try "LAYERCTL_VERIFY=sha256:\(versions[0])\n".write(
            toFile: disk.run + "/boot.env", atomically: false, encoding: .utf8)
        #expect(try staged(disk).first?["running"] as? Bool == true)
        let refused = try Harness.run(["unstage", "probe"] + disk.options)
        #expect(refused.status == 3)
        #expect(refused.stderr.contains("is the image running now"), "\(refused.stderr)")
        #expect(try staged(disk).count == 2)

        _ = try layerctl(["unstage", "probe", "--force"] + disk.options)
        let left = try staged(disk)
        #expect(left.count == 1)
        #expect((left.first?["image"] as? [String: Any])?["sha256"] as? String == versions[1])
        #expect(
            !FileManager.default.fileExists(atPath: disk.mount + "/boot/loader/entries/layerctl-probe-previous.conf"))
        #expect(text(disk.mount + "/boot/loader/entries/layerctl-probe.conf").contains(versions[1]))
        #expect(!FileManager.default.fileExists(atPath: disk.mount + "/state/probe/\(versions[0].prefix(12)).squashfs"))

        _ = try layerctl(["unstage", "probe", "--all"] + disk.options)
        #expect(try staged(disk).isEmpty)
        let leftovers = try BootMachine.shell("cd '\(disk.mount)' && find state boot -type f")
        #expect(leftovers.isEmpty, "\(leftovers)")
        #expect(!FileManager.default.fileExists(atPath: disk.grub + "/42_layerctl"))
    }

    @Test("staging an image without a kernel or with a kernel link to what it does not hold, under a bad name or one that differs from a staged one only in case fails with one line and leaves what was staged as it was")
    func stageFailure() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + disk.options)
        let before = try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*")
        let failed = try Harness.run(["stage", "gaming", "--store", machine.store, "--name", "probe"] + disk.options)
        #expect(failed.status == 3)
        // Named as a layer, not by its 64-digit key alone.
        #expect(failed.stderr.hasPrefix("layerctl: layer gaming ("), "\(failed.stderr)")
        #expect(failed.stderr.contains(") has no kernel and initramfs in /boot"), "\(failed.stderr)")
        #expect(
            try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*") == before
        )
        // Under a name never staged, not even its folders stay: `staged` would list them.
        let fresh = try Harness.run(["stage", "gaming", "--store", machine.store, "--name", "fresh"] + disk.options)
        #expect(fresh.status == 3, "\(fresh.stderr)")
        #expect(
            try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*") == before
        )
        let badName = try Harness.run(["stage", machine.image, "--name", "../x"] + disk.options)
        #expect(badName.status == 3)
        #expect(badName.stderr.contains("cannot name a staged image"), "\(badName.stderr)")
        // The name makes file names with more around it: 240 letters failed at the entry, after the export.
        let long = try Harness.run(["stage", machine.image, "--name", String(repeating: "a", count: 101)] + disk.options)
        #expect(long.status == 3)
        #expect(long.stderr.contains("cannot name a staged image: use at most 100 letters, digits, '.', '_' and '-'"), "\(long.stderr)")
        // A FAT boot partition does not tell `Probe` from `probe`.
        let caseOnly = try Harness.run(["stage", machine.image, "--name", "Probe"] + disk.options)
        #expect(caseOnly.status == 3)
        #expect(
            caseOnly.stderr == "layerctl: 'Probe' differs from the staged name 'probe' only in case, and on a FAT boot partition their entries would be one file; give --name another name, or unstage probe\n",
            "\(caseOnly.stderr)")
        #expect(
            try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*") == before
        )
        // A stranger's image whose kernel is a link to what it does not hold (a host's file, as it
        // would be on the host): followed in the image alone, and named as the link made it.
        let linked = try Harness.temporaryDirectory("linked-kernel")
        try BootMachine.shell(
            "mkdir -p '\(linked)/root/boot' && ln -s ../etc/shadow '\(linked)/root/boot/vmlinuz-x' && echo x > '\(linked)/root/boot/initramfs-x.img'"
                + " && mksquashfs '\(linked)/root' '\(linked)/linked.squashfs' -quiet -no-progress >/dev/null")
        let dangling = try Harness.run(["stage", linked + "/linked.squashfs", "--name", "probe"] + disk.options)
        #expect(dangling.status == 3)
        #expect(
            dangling.stderr.hasPrefix("layerctl: find /boot/vmlinuz-x, a link to /etc/shadow, in ")
                && dangling.stderr.hasSuffix(" failed: No such file or directory\n"), "\(dangling.stderr)")
        #expect(
            try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*") == before
        )
    }

    /// A stranger's image may hold a kernel of any size (a sparse file takes a few bytes of the
    /// image): it was copied until the boot partition was full, and what else wrote there meanwhile
    /// failed; a first stage that failed so left an empty `layerctl` folder on the boot partition.
    @Test("an image whose kernel and initramfs do not fit the boot partition is refused before any of it is copied, and a first stage leaves no folder")
    func oversizedKernel() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = try Harness.temporaryDirectory("oversized-kernel")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try BootMachine.shell(
            "mkdir -p '\(folder)/root/boot' && truncate -s 2G '\(folder)/root/boot/vmlinuz-x' && echo x > '\(folder)/root/boot/initramfs-x.img'"
                + " && mkdir -p '\(folder)/root/usr/lib/systemd/boot/efi' && echo stub > '\(folder)/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub'"
                + " && mksquashfs '\(folder)/root' '\(folder)/big.squashfs' -quiet -no-progress >/dev/null")
        // The boot partition and the state folder, as a machine has them before its first stage.
        let before = try BootMachine.shell("cd '\(disk.mount)' && mkdir boot state && find . | sort")
        let free = try BootMachine.shell("df --output=avail -B1 '\(disk.mount)' | tail -1").trimmingCharacters(in: .whitespacesAndNewlines)
        // A unified kernel image is made beside the kernel's copy.
        for unified in [false, true] {
            let options = unified ? ["--uki"] : []
            let refused = try Harness.run(["stage", folder + "/big.squashfs", "--name", "big"] + options + disk.options)
            #expect(refused.status == 8, "\(refused.stderr)")
            let need = unified ? "4.0 GiB" : "2.0 GiB"
            #expect(
                refused.stderr.hasPrefix(
                    "layerctl: /boot/vmlinuz-x and /boot/initramfs-x.img of \(folder)/big.squashfs need \(need) on the boot partition, and the filesystem of \(disk.mount)/boot has ")
                    && refused.stderr.hasSuffix(" MiB free\n") && refused.stderr.split(separator: "\n").count == 1,
                "\(refused.stderr)")
            #expect(try BootMachine.shell("cd '\(disk.mount)' && find . | sort") == before)
        }
        // Nothing was written on the way: the free space is what it was (the image goes to the
        // state folder, on the same disk here, and went again).
        #expect(
            try BootMachine.shell("df --output=avail -B1 '\(disk.mount)' | tail -1").trimmingCharacters(in: .whitespacesAndNewlines) == free)
    }

    /// Layer files with the same content share a key, and the layer's record keeps the name it was
    /// first built under: `stage laptop` of a layer the same as `probe` staged it as probe, over
    /// probe's image, and `shell laptop` was a shell on the host named probe.
    @Test("stage and shell of a layer name that shares its key with another use the name given")
    func sharedKey() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let key = try String(contentsOfFile: machine.store + "/refs/probe", encoding: .utf8)
        try key.write(toFile: machine.store + "/refs/laptop", atomically: false, encoding: .utf8)
        defer { unlink(machine.store + "/refs/laptop") }
        _ = try layerctl(["stage", "laptop", "--store", machine.store] + disk.options)
        let names = try staged(disk).compactMap { ($0["image"] as? [String: Any])?["name"] as? String }
        #expect(names == ["laptop"], "\(names)")
        #expect(FileManager.default.fileExists(atPath: disk.mount + "/boot/loader/entries/layerctl-laptop.conf"))
        let shell = try layerctl(["shell", "laptop", "--store", machine.store, "--", "cat", "/proc/sys/kernel/hostname"])
        #expect(shell.stdout == "laptop\n", "\(shell.stdout)")
    }

    /// The image is copied to the state folder first; cut short by a full disk, it stayed there as
    /// `incoming.squashfs`, holding the space the user had to free.
    @Test("an image that does not fit the state disk: one line with the reason, nothing of it stays, and what was staged stays as it was")
    func fullDisk() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + disk.options)
        let before = try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*")
        // All but 1 MiB taken, the blocks ext4 keeps for root too: root's copy meets the end.
        try BootMachine.shell(
            "dd if=/dev/zero of='\(disk.mount)/filler' bs=1M status=none 2>/dev/null || true; truncate -s -1M '\(disk.mount)/filler'")
        // An image file is copied in; one a layer makes is written there by the export, which
        // removes what it wrote when it fails.
        let failed = try Harness.run(["stage", machine.image, "--name", "probe"] + disk.options)
        #expect(failed.status == 8, "\(failed.stderr)")
        let lines = failed.labelled
        #expect(lines.count == 1 && lines[0].hasSuffix("failed: No space left on device"), "\(failed.stderr)")
        let left = try FileManager.default.contentsOfDirectory(atPath: disk.mount + "/state/probe")
        #expect(!left.contains("incoming.squashfs"), "\(left)")
        let second = try Harness.run(["stage", "probe", "--store", machine.store, "--name", "probe"] + disk.options)
        #expect(second.status == 8, "\(second.stderr)")
        #expect(second.stderr.hasSuffix("failed: No space left on device\n"), "\(second.stderr)")
        unlink(disk.mount + "/filler")
        #expect(
            try BootMachine.shell("cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*") == before
        )
    }

    /// Images of a few bytes whose /boot holds a kernel and an initramfs saying `version`, as
    /// FOLDER/VERSION.squashfs; the ids staging gives them.
    static func smallImages(_ versions: [String], in folder: String) throws -> [String: String] {
        var ids: [String: String] = [:]
        for version in versions {
            try BootMachine.shell(
                """
                mkdir -p '\(folder)/\(version)/boot'
                echo 'kernel \(version)' > '\(folder)/\(version)/boot/vmlinuz-linux'
                echo 'initramfs \(version)' > '\(folder)/\(version)/boot/initramfs-linux.img'
                mksquashfs '\(folder)/\(version)' '\(folder)/\(version).squashfs' -quiet -no-progress
                """)
            ids[version] = String(try Digest.sha256(file: folder + "/\(version).squashfs").prefix(12))
        }
        return ids
    }

    /// `boot` made the default an entry whose kernel a user, or a tool that cleans the boot
    /// partition, had removed: the machine stopped at the boot loader's error.
    @Test("boot refuses a version whose kernel, initramfs or image is gone or cut short, staged says which, and staging it again mends it")
    func missingFiles() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = try Harness.temporaryDirectory("missing-files")
        let ids = try Self.smallImages(["a", "b"], in: folder)
        for version in ["a", "b"] { _ = try layerctl(["stage", folder + "/\(version).squashfs", "--name", "n"] + disk.options) }
        let (a, b) = (ids["a"]!, ids["b"]!)
        let kernel = disk.mount + "/boot/layerctl/n/\(b)/vmlinuz"
        let damages: [(String, String)] = [
            ("rm '\(kernel)'", kernel),
            ("truncate -s 0 '\(disk.mount)/boot/layerctl/n/\(b)/initramfs.img'", disk.mount + "/boot/layerctl/n/\(b)/initramfs.img"),
            ("truncate -s -1 '\(disk.mount)/state/n/\(b).squashfs'", disk.mount + "/state/n/\(b).squashfs"),
        ]
        for (damage, path) in damages {
            try BootMachine.shell(damage)
            let refused = try Harness.run(["boot", "n", "--loader", "systemd-boot"] + disk.options)
            #expect(refused.status == 7, "\(damage): \(refused.stderr)")
            #expect(
                refused.stderr == "layerctl: n \(b) cannot boot: \(path) is gone or cut short since it was staged; stage it again, or unstage it\n",
                "\(refused.stderr)")
            #expect(!FileManager.default.fileExists(atPath: disk.mount + "/boot/loader/loader.conf"))
            let listed = try staged(disk)
            #expect((listed.first?["missing"] as? [String]) == [path], "\(damage): \(listed)")
            #expect((listed.last?["missing"] as? [String]) == [])
            let text = try layerctl(["staged"] + disk.options).stdout
            #expect(text.contains("\t(cannot boot: \(FileSystem.split(path).name) gone or cut short)\n"), "\(text)")
            // The same image, staged again, puts its image file, kernel and initramfs back.
            _ = try layerctl(["stage", folder + "/b.squashfs", "--name", "n"] + disk.options)
            _ = try layerctl(["boot", "n", "--loader", "systemd-boot"] + disk.options)
            #expect(try staged(disk).allSatisfy { ($0["missing"] as? [String]) == [] })
            unlink(disk.mount + "/boot/loader/loader.conf")
        }
        #expect(try staged(disk).compactMap { ($0["image"] as? [String: Any])?["id"] as? String } == [b, a])
    }

    /// The kernel splits its command line at spaces: a state folder with a space in its path was
    /// staged, and the entry's `layerctl.image=/my` found no image at boot.
    /// On a machine that runs a layerctl image, / is an overlay on a tmpfs: stage wrote the next
    /// version's image into memory, and failed only after making it, at the filesystem's UUID. The
    /// filesystem the image came from is mounted read-only on /run/layerctl/device. A state or boot
    /// folder that forgets is refused before anything is made, with the commands that stage onto
    /// that filesystem, which then work.
    @Test("on a running image, a state or boot folder in memory is refused before the image is made, saying how to stage onto the filesystem the image came from, which then works")
    func stageFromRunningImage() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = try Harness.temporaryDirectory("running")
        let ids = try Self.smallImages(["a", "b"], in: folder)
        // The system that staged a, and the boot of it: the disk read-only on RUN/device, the hook's
        // boot.env, and a tmpfs for what forgets.
        _ = try layerctl(["stage", folder + "/a.squashfs", "--name", "n"] + disk.options)
        let (device, memory) = (disk.run + "/device", folder + "/memory")
        // The hook mounts a block device read-only; a loop device that is itself read-only (`mount
        // -o ro,loop`) could not be made writable again.
        let loop = try BootMachine.shell(
            """
            umount '\(disk.mount)'
            mkdir -p '\(device)' '\(memory)'
            loop=$(losetup -f --show '\(disk.file)')
            mount -o ro "$loop" '\(device)'
            mount -t tmpfs memory '\(memory)'
            printf 'LAYERCTL_IMAGE=/state/n/\(ids["a"]!).squashfs\nLAYERCTL_DEVICE=UUID=\(uuid)\nLAYERCTL_TORAM=0\n' >'\(disk.run)/boot.env'
            echo "$loop"
            """
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? BootMachine.shell("umount '\(device)' '\(memory)'; losetup -d '\(loop)'") }
        func stage(state: String, boot: String) throws -> Harness.Result {
            try Harness.run([
                "stage", folder + "/b.squashfs", "--name", "n", "--state-dir", state, "--boot-dir", boot, "--no-grub", "--run-dir", disk.run,
            ])
        }
        let inMemory = try stage(state: memory + "/state", boot: device + "/boot")
        #expect(inMemory.status == 3)
        #expect(
            inMemory.stderr
                == "layerctl: \(memory)/state/n is on tmpfs (mounted on \(memory)), whose files are gone at the next boot: what layerctl changed there would be too; this system runs a layerctl image, and the filesystem it came from is mounted read-only on \(device): `mount -o remount,rw \(device)`, then give --state-dir \(device)/state\n",
            "\(inMemory.stderr)")
        // Nothing of the image was made there.
        #expect(try BootMachine.shell("find '\(memory)' -type f") == "")
        // Copied to memory at boot, the image lets its filesystem go.
        try BootMachine.shell("sed -i s/TORAM=0/TORAM=1/ '\(disk.run)/boot.env'")
        #expect(
            try stage(state: memory + "/state", boot: device + "/boot").stderr.hasSuffix(
                "; this system runs a layerctl image copied to memory (layerctl.toram=1), and the filesystem it came from is not mounted: `mount UUID=\(uuid) /mnt`, then give --state-dir /mnt/state\n"))
        try BootMachine.shell("sed -i s/TORAM=1/TORAM=0/ '\(disk.run)/boot.env'")
        try BootMachine.shell("mount -o remount,rw '\(device)'")
        let bootInMemory = try stage(state: device + "/state", boot: memory + "/boot")
        #expect(
            bootInMemory.status == 3
                && bootInMemory.stderr
                    == "layerctl: \(memory)/boot is on tmpfs (mounted on \(memory)), whose files are gone at the next boot: what layerctl changed there would be too; this system runs a layerctl image: mount its boot partition (the ESP) on \(memory)/boot first, as the system that staged the image has it, or give --boot-dir the folder where it is mounted\n",
            "\(bootInMemory.stderr)")
        // An ESP apart from the boot folder (XBOOTLDR's) is held to the same, with its own words.
        let espInMemory = try Harness.run([
            "boot", "n", "--state-dir", device + "/state", "--boot-dir", device + "/boot", "--esp-dir", memory + "/efi",
            "--no-grub", "--run-dir", disk.run,
        ])
        #expect(
            espInMemory.status == 3
                && espInMemory.stderr
                    == "layerctl: \(memory)/efi is on tmpfs (mounted on \(memory)), whose files are gone at the next boot: what layerctl changed there would be too; this system runs a layerctl image: mount its EFI system partition on \(memory)/efi first, as the system that staged the image has it, or give --esp-dir the folder where it is mounted\n",
            "\(espInMemory.stderr)")
        // Nor do boot and unstage change a boot folder that forgets: the boot partition's entries
        // would stay, naming what unstage removed.
        for command in [["boot", "n"], ["unstage", "n"]] {
            let refused = try Harness.run(command + ["--state-dir", device + "/state", "--boot-dir", memory + "/boot", "--no-grub", "--run-dir", disk.run])
            #expect(refused.status == 3 && refused.stderr.hasPrefix("layerctl: \(memory)/boot is on tmpfs"), "\(command): \(refused.stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: device + "/state/n/\(ids["a"]!).squashfs"))
        // As the first line says: b goes beside a, on the filesystem the boot loader finds by its UUID.
        let staged = try stage(state: device + "/state", boot: device + "/boot")
        #expect(staged.status == 0, "\(staged.stderr)")
        let entry = text(device + "/boot/loader/entries/layerctl-n.conf")
        #expect(entry.contains("options    layerctl.image=/state/n/\(ids["b"]!).squashfs layerctl.device=UUID=\(uuid) "), "\(entry)")
        #expect(FileManager.default.fileExists(atPath: device + "/state/n/\(ids["a"]!).squashfs"))
    }

    @Test("a state or boot folder whose path the kernel command line or GRUB's menu cannot carry is refused before anything is written")
    func uncarriedPaths() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = try Harness.temporaryDirectory("uncarried")
        _ = try Self.smallImages(["a"], in: folder)
        for (state, boot, option, bad) in [
            ("my state", "boot", "--state-dir", " "), ("state", "b'oot", "--boot-dir", "'"), ("st$x", "boot", "--state-dir", "$"),
        ] {
            try FileManager.default.createDirectory(atPath: disk.mount + "/" + boot, withIntermediateDirectories: true)
            let before = try BootMachine.shell("cd '\(disk.mount)' && find . | sort")
            let result = try Harness.run([
                "stage", folder + "/a.squashfs", "--name", "n", "--state-dir", disk.mount + "/" + state, "--boot-dir", disk.mount + "/" + boot,
                "--no-grub",
            ])
            #expect(result.status == 3, "\(result.stderr)")
            let shown = option == "--state-dir" ? "\(state)/n" : "\(boot)/layerctl/n"
            #expect(
                result.stderr == "layerctl: the folder \(disk.mount)/\(shown) is `/\(shown)` on its filesystem: the kernel command line and GRUB's menu carry a path of letters, digits and / . _ - + = : @ , ~ % only, not `\(bad)`; give \(option) a folder without it\n",
                "\(result.stderr)")
            // The state folder itself stays (the lock is on it); nothing of the name does.
            let after = try BootMachine.shell("cd '\(disk.mount)' && find . | sort")
            #expect(after == before || after.split(separator: "\n").filter { !before.contains($0) } == ["./\(state)"], "\(after)")
        }
    }

    /// GRUB's script lists every staged name, and it was written after this name's state and
    /// entries: a damaged state of another name failed the stage there, and the stage then removed
    /// the new image, kernel and initramfs that the saved state and the entry named.
    @Test("a damaged state of another name stops stage and unstage before they change anything; a GRUB script that cannot be written removes nothing the saved state names, nor an unstage whose boot folder is read-only")
    func failureAfterSave() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = try Harness.temporaryDirectory("failure-after-save")
        let ids = try Self.smallImages(["x", "a", "b"], in: folder)
        func stage(_ version: String, as name: String, _ options: [String] = []) throws -> Harness.Result {
            try Harness.run(["stage", folder + "/\(version).squashfs", "--name", name] + disk.options + options)
        }
        #expect(try stage("x", as: "x").status == 0)
        #expect(try stage("b", as: "b").status == 0)
        let state = disk.mount + "/state/b/staged.json"
        let good = try Data(contentsOf: URL(fileURLWithPath: state))
        try Data("{\"broken".utf8).write(to: URL(fileURLWithPath: state))
        let tree = "cd '\(disk.mount)' && find state boot | sort && cat boot/loader/entries/*"
        let before = try BootMachine.shell(tree)
        for command in [{ try stage("a", as: "x") }, { try Harness.run(["unstage", "x"] + disk.options) }] {
            let result = try command()
            #expect(result.status == 7, "\(result.stderr)")
            #expect(result.stderr == "layerctl: \(state) is damaged (DecodingError.dataCorrupted: Data was corrupted. Debug description: The given data was not valid JSON.); remove the folder to forget what it staged\n", "\(result.stderr)")
            #expect(try BootMachine.shell(tree) == before)
        }
        try good.write(to: URL(fileURLWithPath: state))
        // GRUB's folder on a read-only filesystem: the stage fails at its script, after the state.
        let grub = try Harness.temporaryDirectory("read-only-grub")
        try BootMachine.shell("mount -t tmpfs -o ro tmpfs '\(grub)'")
        defer { _ = try? BootMachine.shell("umount '\(grub)'") }
        let late = try stage("a", as: "x", ["--grub-dir", grub])
        #expect(late.status == 8 && late.stderr.contains("Read-only file system"), "\(late.stderr)")
        let listed = try staged(disk).filter { ($0["image"] as? [String: Any])?["name"] as? String == "x" }
        #expect(listed.compactMap { ($0["image"] as? [String: Any])?["id"] as? String } == [ids["a"]!, ids["x"]!])
        #expect(listed.allSatisfy { ($0["missing"] as? [String]) == [] }, "\(listed)")
        // An unstage that cannot change the boot folder (read-only) changes nothing: it removed the
        // image first, and the state still named it.
        try BootMachine.shell("mount --bind '\(disk.mount)/boot' '\(disk.mount)/boot' && mount -o remount,bind,ro '\(disk.mount)/boot'")
        defer { _ = try? BootMachine.shell("umount '\(disk.mount)/boot'") }
        let readOnly = try BootMachine.shell(tree)
        for all in [false, true] {
            let refused = try Harness.run(["unstage", "x"] + (all ? ["--all"] : []) + disk.options)
            #expect(refused.status == 8 && refused.stderr.contains("Read-only file system"), "\(refused.stderr)")
            #expect(try BootMachine.shell(tree) == readOnly)
        }
    }

    /// Two stages of one name at once each read what was staged, then wrote their own view of it:
    /// the one that wrote last kept its image and the one staged before both, and the other's image,
    /// kernel and initramfs stayed on the disks, named by nothing. An unstage at the same time left
    /// an entry whose kernel it had removed. strace holds the first command after it read what was
    /// staged, while it puts the kernel in place.
    @Test("a stage or an unstage waits for a stage under way, and each finds what the one before it left")
    func concurrentStaging() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        let folder = try Harness.temporaryDirectory("concurrent-staging")
        let ids = try Self.smallImages(["x", "a", "b"], in: folder)
        func stage(_ version: String) -> [String] {
            ["stage", folder + "/\(version).squashfs", "--name", "n"] + disk.options
        }
        /// layerctl with `arguments` runs while a stage of `version` is held, and waits for it.
        func whileStaging(_ version: String, _ arguments: [String]) throws {
            let held = try HeldCall.start(
                "rename", naming: disk.mount + "/boot/layerctl/n/\(ids[version]!)/vmlinuz.new", seconds: 4, [Harness.executable] + stage(version),
                trace: folder + "/trace-\(version)", output: folder + "/output-\(version)")
            let stage = try #require(held, "the stage of \(version) never put its kernel in place")
            let other = try Harness.run(arguments)
            #expect(other.status == 0, "\(other.stderr)")
            #expect(other.stderr.contains("another layerctl is staging, unstaging or changing the default boot; waiting"))
            #expect(stage.wait() == 0, "\(text(folder + "/output-\(version)"))")
        }
        /// What is staged as n, and every file staging keeps for it, are `versions` (current first).
        func expectStaged(_ versions: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let listed = try staged(disk).compactMap { ($0["image"] as? [String: Any])?["id"] as? String }
            let wanted = versions.map { ids[$0]! }
            #expect(listed == wanted, sourceLocation: sourceLocation)
            let files = try BootMachine.shell("cd '\(disk.mount)' && find state boot -type f | sort")
            let kept =
                wanted.flatMap { ["boot/layerctl/n/\($0)/initramfs.img", "boot/layerctl/n/\($0)/vmlinuz", "state/n/\($0).squashfs"] }
                + ["boot/loader/entries/layerctl-n.conf", "state/n/staged.json"]
                + (versions.count > 1 ? ["boot/loader/entries/layerctl-n-previous.conf"] : [])
            #expect(files == kept.sorted().map { $0 + "\n" }.joined(), sourceLocation: sourceLocation)
            #expect(text(disk.mount + "/boot/loader/entries/layerctl-n.conf").contains("title      layerctl: n (\(wanted[0]))"))
            if versions.count > 1 {
                #expect(text(disk.mount + "/boot/loader/entries/layerctl-n-previous.conf").contains("title      layerctl: n (previous, \(wanted[1]))"))
            }
        }
        _ = try layerctl(stage("x"))
        // a, then b: x, staged first, goes.
        try whileStaging("a", stage("b"))
        try expectStaged(["b", "a"])
        // x again, then the unstage of the current version, x: b is current again.
        try whileStaging("x", ["unstage", "n"] + disk.options)
        try expectStaged(["b"])
    }

    /// Where udev makes no /dev/disk links (this host, a container), the UUID comes from blkid,
    /// whose cache kept the UUID a loop device's filesystem had before: the entry named a disk the
    /// machine does not have, and the boot waited for it in vain.
    @Test("a loop device that held another filesystem before: the entry names the UUID of the one it holds now")
    func reusedLoopDevice() throws {
        var disk = try makeDisk()
        defer { unmount(disk) }
        // blkid's cache learns the first filesystem's UUID on its loop device, which the unmount
        // lets go; the same loop device then holds another filesystem.
        let device = try BootMachine.shell("findmnt -n -o SOURCE '\(disk.mount)'").trimmingCharacters(in: .whitespacesAndNewlines)
        // The device holds this disk (read from it: the cache itself may hold an older loop device's
        // UUID already, as it did after other tests here), and blkid's cache is asked of it.
        #expect(try BootMachine.shell("blkid -p -o value -s UUID '\(device)'") == uuid + "\n")
        _ = try BootMachine.shell("blkid '\(device)' >/dev/null || true")
        let fresh = UUID().uuidString.lowercased()
        disk.file += ".now"
        try BootMachine.shell(
            """
            umount '\(disk.mount)'
            mkfs.ext4 -q -U \(fresh) '\(disk.file)' 256M
            losetup '\(device)' '\(disk.file)'
            mount '\(device)' '\(disk.mount)'
            """)
        defer { _ = try? BootMachine.shell("umount '\(disk.mount)'; losetup -d '\(device)'") }
        _ = try layerctl(["stage", machine.image, "--name", "probe"] + disk.options)
        let entry = text(disk.mount + "/boot/loader/entries/layerctl-probe.conf")
        #expect(entry.contains(" layerctl.device=UUID=\(fresh) "), "\(entry)")
    }

    /// Foundation traps on the folder of a one-character name; layerctl crashed on these.
    @Test("folders given as one-character relative paths are made and used, as any others")
    func oneCharacterFolders() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        try BootMachine.shell(
            "cd '\(disk.mount)' && '\(Harness.executable)' stage '\(machine.image)' --name p --state-dir t --boot-dir b --grub-dir g --run-dir r"
        )
        let id = String(machine.imageDigest.prefix(12))
        let made = try BootMachine.shell("cd '\(disk.mount)' && find t b g -type f | sort")
        #expect(
            made == """
                b/layerctl/p/\(id)/initramfs.img
                b/layerctl/p/\(id)/vmlinuz
                b/loader/entries/layerctl-p.conf
                g/42_layerctl
                t/p/\(id).squashfs
                t/p/staged.json

                """)
    }

    @Test("the staged entry boots: its kernel, initramfs and command line find the image by UUID on the disk")
    func stagedEntryBoots() throws {
        let disk = try makeDisk()
        defer { unmount(disk) }
        _ = try layerctl(
            ["stage", machine.image, "--name", "probe", "--append", "init=/usr/bin/layerctl-probe"] + disk.options)
        let (output, probe) = try bootEntry("probe", on: disk)
        #expect(probe.contains("PROBE mount / overlay layerctl"), "\(output.suffix(4000))")
        #expect(probe.contains("PROBE mount /run/layerctl/device ext4 /dev/vda"), "\(probe)")
        #expect(probe.contains("PROBE env LAYERCTL_VERIFY=sha256:\(machine.imageDigest)"), "\(probe)")
        #expect(probe.last == "PROBE done", "\(probe)")
    }
}

extension StagingTests {
    @Test("boot REF pulls the image into a new store, stages it and makes it the default; its entry boots")
    func bootReference() throws {
        guard RegistryServer.available else {
            print("StagingTests.bootReference skipped: docker-registry is not installed (scripts/install-deps.sh)")
            return
        }
        let registry = try RegistryServer()
        defer { registry.stop() }
        let reference = "\(registry.host)/fleet/probe:v1"
        _ = try layerctl(["push", "probe", reference, "--store", machine.store])
        let disk = try makeDisk()
        // A failed expectation before the boot must not leave the disk mounted.
        defer { unmount(disk) }
        try BootMachine.shell("mkdir -p '\(disk.mount)/boot/loader' && printf 'default arch.conf\\n' >'\(disk.mount)/boot/loader/loader.conf'")
        let store = try Harness.temporaryDirectory("boot-reference-store")
        let result = try layerctl(["boot", reference, "--store", store, "--loader", "systemd-boot"] + disk.options)
        #expect(result.stdout.contains("staged probe"), "\(result.stdout)")
        #expect(result.stdout.contains("systemd-boot boots layerctl-probe.conf by default"), "\(result.stdout)")
        #expect(text(disk.mount + "/boot/loader/loader.conf") == "default layerctl-probe.conf\n")
        // The image on the disk is the one the store that built it writes.
        let staged = try #require(try staged(disk).first?["image"] as? [String: Any])
        let image = try #require(staged["image"] as? String)
        let built = try Harness.temporaryDirectory("boot-reference") + "/built.squashfs"
        _ = try layerctl(["export", "probe", "--store", machine.store, "-o", built])
        #expect(FileManager.default.contentsEqual(atPath: image, andPath: built), "\(image)")

        let (output, probe) = try bootEntry("probe", on: disk, append: " init=/usr/bin/layerctl-probe")
        #expect(probe.contains("PROBE mount / overlay layerctl"), "\(output.suffix(4000))")
        #expect(probe.last == "PROBE done", "\(probe)")
    }
}
