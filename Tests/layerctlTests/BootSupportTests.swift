import Foundation
import Testing

/// `boot:` in layer files: layerctl installs and enables the initramfs hook, and makes the initramfs
/// again only when a layer changed the kernel, the hook or the generator's configuration. The demo
/// repository's stand-in `mkinitcpio` records each run, and its stand-in `linux` is upgraded in
/// repo-next.
@Suite("Boot support in layers", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct BootSupportTests {
    func write(_ folder: String, _ files: [String: String]) throws {
        for (name, text) in files { try text.write(toFile: folder + "/" + name, atomically: false, encoding: .utf8) }
    }

    func tree(_ store: String, _ name: String) throws -> String {
        let key = try String(contentsOfFile: store + "/refs/" + name, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        return store + "/layers/" + key + "/tree"
    }

    func text(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int
    }

    static let layers = [
        "base.yaml": """
        from: scratch
        arch: x86_64
        repos:
          - name: demo
            servers: [REPO]
            siglevel: Optional TrustAll
        packages: [filesystem, busybox, mkinitcpio]
        boot: mkinitcpio

        """,
        "kernel.yaml": "from: base\npackages: [linux]\n",
        "plain.yaml": "from: kernel\npackages: [greeter]\n",
        "conf.yaml": """
        from: plain
        files:
          - path: /etc/mkinitcpio.conf
            content: "MODULES=(virtio_blk)\\nHOOKS=(base udev keyboard keymap block encrypt filesystems)\\n"

        """,
    ]

    @Test(
        "the hook is installed and enabled once, and the initramfs is made when the kernel or the configuration changes, only then"
    )
    func mkinitcpio() throws {
        let folder = try Harness.temporaryDirectory("boot-layers")
        try write(folder, Self.layers)
        try Harness.setRepository(in: folder, to: "repo")
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/conf.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")

        // base: the hook files as in boot/, enabled last; no kernel yet, so no initramfs.
        let base = try tree(store, "base")
        for (installed, source, permissions) in [
            ("usr/lib/initcpio/hooks/layerctl", "boot/mkinitcpio/hooks/layerctl", 0o644),
            ("usr/lib/initcpio/install/layerctl", "boot/mkinitcpio/install/layerctl", 0o644),
            ("usr/lib/layerctl/layerctl.sh", "boot/layerctl.sh", 0o644),
            // For HOOKS with `systemd`: the install hook, and the service it puts into the initramfs.
            ("usr/lib/initcpio/install/sd-layerctl", "boot/mkinitcpio/install/sd-layerctl", 0o644),
            ("usr/lib/layerctl/systemd-initrd/layerctl-sysroot", "boot/systemd-initrd/layerctl-sysroot", 0o755),
            (
                "usr/lib/layerctl/systemd-initrd/layerctl-sysroot.service",
                "boot/systemd-initrd/layerctl-sysroot.service", 0o644
            ),
            ("usr/lib/layerctl/systemd-initrd/sysroot.mount.conf", "boot/systemd-initrd/sysroot.mount.conf", 0o644),
        ] {
            #expect(text(base + "/" + installed) == text(Harness.packageRoot + "/" + source), "\(installed)")
            #expect(mode(base + "/" + installed) == permissions, "\(installed)")
        }
        #expect(
            text(base + "/etc/mkinitcpio.conf")?.contains("HOOKS=(base udev modconf block filesystems fsck layerctl)")
                == true)
        #expect(text(base + "/var/lib/mkinitcpio-runs.log") == nil)

        // kernel: the kernel changed, so the initramfs is made, with the hook in place.
        let kernel = try tree(store, "kernel")
        let first = "kernel=6.1.0-demo HOOKS=(base udev modconf block filesystems fsck layerctl) layerctl-hook=yes\n"
        #expect(text(kernel + "/var/lib/mkinitcpio-runs.log") == first)
        #expect(text(kernel + "/boot/initramfs-linux.img") == first)
        #expect(text(kernel + "/boot/vmlinuz-linux") == "stand-in kernel 6.1.0-demo\n")
        #expect(!FileManager.default.fileExists(atPath: kernel + "/usr/lib/initcpio"), "the hook was copied up again")

        // plain: nothing the initramfs is made from changed.
        let plain = try tree(store, "plain")
        #expect(!FileManager.default.fileExists(atPath: plain + "/var/log"))
        #expect(!FileManager.default.fileExists(atPath: plain + "/boot"))

        // conf: a new mkinitcpio.conf gets layerctl added, after `encrypt`, which opens the LUKS root
        // that holds the image, and a new initramfs.
        let conf = try tree(store, "conf")
        let second = "kernel=6.1.0-demo HOOKS=(base udev keyboard keymap block encrypt filesystems layerctl) layerctl-hook=yes\n"
        #expect(
            text(conf + "/etc/mkinitcpio.conf")
                == "MODULES=(virtio_blk)\nHOOKS=(base udev keyboard keymap block encrypt filesystems layerctl)\n")
        #expect(text(conf + "/var/lib/mkinitcpio-runs.log") == first + second)
        #expect(text(conf + "/boot/initramfs-linux.img") == second)

        // The repository upgrades the kernel: base is reused, the kernel layer made again with 6.2.
        try Harness.setRepository(in: folder, to: "repo-next")
        let upgrade = try Harness.run(["build", folder + "/conf.yaml", "--store", store, "--json"])
        #expect(upgrade.status == 0, "\(upgrade.stderr)")
        #expect(upgrade.cached == ["base"])
        let upgraded = try tree(store, "kernel")
        #expect(text(upgraded + "/boot/initramfs-linux.img")?.hasPrefix("kernel=6.2.0-demo ") == true)
        #expect(!FileManager.default.fileExists(atPath: try tree(store, "plain") + "/boot"))
    }

    /// Arch's mkinitcpio ships a libalpm hook that makes every initramfs after a transaction that
    /// installs a kernel; the stand-in's does the same. Without `boot:` it runs, as under pacman.
    /// With `boot:` the boot step makes the initramfs once, with layerctl's hook, instead of after
    /// that hook made it once without. Masking the hook must not lose what it is run for: a layer
    /// that changes cryptsetup (which an initramfs may carry) gets a new initramfs.
    @Test("the generator's own libalpm hook runs without boot:; with boot: the initramfs is made once, with layerctl's hook")
    func generatorHook() throws {
        let folder = try Harness.temporaryDirectory("boot-layers")
        try write(
            folder,
            [
                "base.yaml": Self.layers["base.yaml"]!.replacingOccurrences(
                    of: "[filesystem, busybox, mkinitcpio]", with: "[filesystem, busybox, mkinitcpio, linux]"),
                "crypt.yaml": """
                from: base
                files:
                  - path: /usr/bin/cryptsetup
                    content: "#!/bin/sh\\n"
                    mode: "0755"

                """,
            ])
        try Harness.setRepository(in: folder, to: "repo")
        // The same root without `boot:`.
        let booted = try String(contentsOfFile: folder + "/base.yaml", encoding: .utf8)
        try write(folder, ["plain.yaml": booted.replacingOccurrences(of: "boot: mkinitcpio\n", with: "")])
        let store = try Harness.temporaryDirectory("store")

        let plain = try Harness.run(["build", folder + "/plain.yaml", "--store", store])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(plain.stderr.contains("hook 90-mkinitcpio-install.hook: Updating linux initcpios..."), "\(plain.stderr)")
        let plainTree = try tree(store, "plain")
        let unhooked = "kernel=6.1.0-demo HOOKS=(base udev modconf block filesystems fsck) layerctl-hook=no\n"
        #expect(text(plainTree + "/var/lib/mkinitcpio-runs.log") == unhooked)
        #expect(text(plainTree + "/boot/vmlinuz-linux") == "stand-in kernel 6.1.0-demo\n")

        let build = try Harness.run(["build", folder + "/crypt.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(!build.stderr.contains("90-mkinitcpio-install.hook"), "\(build.stderr)")
        let hooked = "kernel=6.1.0-demo HOOKS=(base udev modconf block filesystems fsck layerctl) layerctl-hook=yes\n"
        let root = try tree(store, "base")
        #expect(text(root + "/var/lib/mkinitcpio-runs.log") == hooked)
        #expect(text(root + "/boot/initramfs-linux.img") == hooked)
        #expect(text(root + "/boot/vmlinuz-linux") == "stand-in kernel 6.1.0-demo\n")
        #expect(!FileManager.default.fileExists(atPath: root + "/run/layerctl"))
        #expect(text(try tree(store, "crypt") + "/var/lib/mkinitcpio-runs.log") == hooked + hooked)
    }

    /// Arch's dracut ships no libalpm hook, but the wiki's and the AUR's are named
    /// 90-dracut-install.hook, and `boot: dracut` masks that name too. Here the root writes such a
    /// hook and a stand-in dracut, and both record their runs.
    @Test("boot: dracut masks the usual 90-dracut-install.hook: the kernel layer's initramfs is made once")
    func dracutHook() throws {
        let folder = try Harness.temporaryDirectory("boot-layers")
        let record = #"echo \"$0 $*\" >>/var/lib/dracut-runs.log"#
        try write(
            folder,
            [
                "base.yaml": Self.layers["base.yaml"]!.replacingOccurrences(of: "boot: mkinitcpio", with: """
                    boot: dracut
                    files:
                      - path: /usr/bin/dracut
                        content: "#!/bin/sh\\n\(record)\\n"
                        mode: "0755"
                      - path: /usr/share/libalpm/hooks/90-dracut-install.hook
                        content: "[Trigger]\\nType = Path\\nOperation = Install\\nTarget = usr/lib/modules/*/vmlinuz\\n\\n[Action]\\nWhen = PostTransaction\\nExec = /usr/bin/dracut hook\\n"
                    """),
                "kernel.yaml": "from: base\npackages: [linux]\n",
            ])
        try Harness.setRepository(in: folder, to: "repo")
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/kernel.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        #expect(
            text(try tree(store, "kernel") + "/var/lib/dracut-runs.log")
                == "/usr/bin/dracut --force --kver 6.1.0-demo /boot/initramfs-linux.img\n")
    }

    @Test("boot: dracut installs the module and its configuration")
    func dracut() throws {
        let folder = try Harness.temporaryDirectory("boot-layers")
        try write(
            folder,
            ["base.yaml": Self.layers["base.yaml"]!.replacingOccurrences(of: "boot: mkinitcpio", with: "boot: dracut")])
        try Harness.setRepository(in: folder, to: "repo")
        let store = try Harness.temporaryDirectory("store")
        let build = try Harness.run(["build", folder + "/base.yaml", "--store", store])
        #expect(build.status == 0, "\(build.stderr)")
        let base = try tree(store, "base")
        let module = base + "/usr/lib/dracut/modules.d/90layerctl/"
        for (name, source, permissions) in [
            ("module-setup.sh", "boot/dracut/90layerctl/module-setup.sh", 0o755),
            ("layerctl-cmdline.sh", "boot/dracut/90layerctl/layerctl-cmdline.sh", 0o755),
            ("layerctl-mount.sh", "boot/dracut/90layerctl/layerctl-mount.sh", 0o755),
            ("layerctl.sh", "boot/layerctl.sh", 0o644),
        ] {
            #expect(text(module + name) == text(Harness.packageRoot + "/" + source), "\(name)")
            #expect(mode(module + name) == permissions, "\(name)")
        }
        #expect(
            text(base + "/etc/dracut.conf.d/90-layerctl.conf")?.contains("add_dracutmodules+=\" layerctl \"") == true)
    }

    @Test("a wrong boot: value fails with the layer file's line")
    func wrongValue() throws {
        let folder = try Harness.temporaryDirectory("boot-layers")
        try write(
            folder,
            ["base.yaml": Self.layers["base.yaml"]!.replacingOccurrences(of: "boot: mkinitcpio", with: "boot: grub")])
        try Harness.setRepository(in: folder, to: "repo")
        let store = try Harness.temporaryDirectory("store")
        let wrong = try Harness.run(["build", folder + "/base.yaml", "--store", store])
        #expect(wrong.status == 3)
        #expect(
            wrong.stderr.contains(
                "base.yaml:8:7: `boot` names the image's initramfs generator: mkinitcpio or dracut, not `grub`"),
            "\(wrong.stderr)")
    }

    /// HOOKS with `systemd` (mkinitcpio's systemd initramfs, as its example configuration shows
    /// it), whose init runs no runtime hooks, get `sd-layerctl`. A hook of the wrong kind, or `systemd` without `base` (the
    /// service's shell), fails with the line of `boot:`.
    @Test("HOOKS that use systemd get sd-layerctl; the wrong hook for the init, or no base, fails with the layer file's line")
    func systemdHooks() throws {
        let folder = try Harness.temporaryDirectory("boot-layers")
        func layer(_ hooks: String) -> String {
            "from: base\nfiles:\n  - path: /etc/mkinitcpio.conf\n    content: \"HOOKS=(\(hooks))\\n\"\n"
        }
        try write(
            folder,
            [
                "base.yaml": Self.layers["base.yaml"]!,
                "systemd.yaml": layer("base systemd autodetect microcode modconf kms keyboard sd-vconsole block sd-encrypt filesystems fsck"),
                "busybox-hook.yaml": layer("base systemd block filesystems layerctl"),
                "systemd-hook.yaml": layer("base udev block filesystems sd-layerctl"),
                "no-base.yaml": layer("systemd block filesystems"),
            ])
        try Harness.setRepository(in: folder, to: "repo")
        let store = try Harness.temporaryDirectory("store")
        let systemd = try Harness.run(["build", folder + "/systemd.yaml", "--store", store])
        #expect(systemd.status == 0, "\(systemd.stderr)")
        #expect(
            text(try tree(store, "systemd") + "/etc/mkinitcpio.conf")
                == "HOOKS=(base systemd autodetect microcode modconf kms keyboard sd-vconsole block sd-encrypt filesystems fsck sd-layerctl)\n"
        )
        for (name, message) in [
            ("busybox-hook", "HOOKS use `systemd`, whose init runs no runtime hooks, so `layerctl` there would not boot the image: use `sd-layerctl`"),
            ("systemd-hook", "HOOKS have `sd-layerctl` but not `systemd`, whose init it needs: use `layerctl`"),
            ("no-base", "HOOKS use `systemd` without `base`, whose shell runs layerctl's sd-layerctl hook: put `base` first"),
        ] {
            let failed = try Harness.run(["build", folder + "/\(name).yaml", "--store", store])
            #expect(failed.status == 3, "\(name)")
            #expect(failed.stderr.contains("base.yaml:8:7: mkinitcpio.conf's " + message), "\(name): \(failed.stderr)")
        }
    }
}
