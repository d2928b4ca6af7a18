import Crypto
import Foundation
import Glibc
import LayerRecipe
import LayerSupport

extension BootFlavour {
    /// What the image gets: path in the image, the boot/ file it comes from, mode.
    var installedFiles: [(path: String, source: String, mode: mode_t)] {
        let shared = ("/usr/lib/layerctl/layerctl.sh", "boot/layerctl.sh", mode_t(0o644))
        switch self {
        case .mkinitcpio:
            // `layerctl` for HOOKS with `base udev`; `sd-layerctl` and its systemd service (outside
            // systemd's folders: the booted system never sees it) for HOOKS with `systemd`.
            let systemd = "/usr/lib/layerctl/systemd-initrd/"
            return [
                shared,
                ("/usr/lib/initcpio/install/layerctl", "boot/mkinitcpio/install/layerctl", 0o644),
                ("/usr/lib/initcpio/hooks/layerctl", "boot/mkinitcpio/hooks/layerctl", 0o644),
                ("/usr/lib/initcpio/install/sd-layerctl", "boot/mkinitcpio/install/sd-layerctl", 0o644),
                (systemd + "layerctl-sysroot", "boot/systemd-initrd/layerctl-sysroot", 0o755),
                (systemd + "layerctl-sysroot.service", "boot/systemd-initrd/layerctl-sysroot.service", 0o644),
                (systemd + "sysroot.mount.conf", "boot/systemd-initrd/sysroot.mount.conf", 0o644),
            ]
        case .dracut:
            let module = "/usr/lib/dracut/modules.d/90layerctl/"
            return [
                shared,
                (module + "layerctl.sh", "boot/layerctl.sh", 0o644),
                (module + "module-setup.sh", "boot/dracut/90layerctl/module-setup.sh", 0o755),
                (module + "layerctl-cmdline.sh", "boot/dracut/90layerctl/layerctl-cmdline.sh", 0o755),
                (module + "layerctl-mount.sh", "boot/dracut/90layerctl/layerctl-mount.sh", 0o755),
            ]
        }
    }

    /// Where the boot step puts the hook among mkinitcpio's HOOKS, for the key: another place makes
    /// another tree from the same layer file.
    static let hookPlacement = "HOOKS: layerctl last, or sd-layerctl with systemd"

    /// sha256 over the installed files, for the layer key: a new hook means new layers, and so a new
    /// initramfs. Also over what the boot step goes by, `triggers`, `packageHooks` and
    /// `hookPlacement`: another of them makes another tree from the same layer file.
    var filesDigest: String {
        var hasher = SHA256()
        if self == .mkinitcpio { hasher.update(data: Data("\(Self.hookPlacement)\0".utf8)) }
        for file in installedFiles {
            hasher.update(data: Data("\(file.path)\0\(file.mode)\0".utf8))
            hasher.update(data: Data((BootHookFiles.contents[file.source] ?? "").utf8))
        }
        for path in triggers + ["masked"] + packageHooks { hasher.update(data: Data("\(path)\0".utf8)) }
        return Digest.hex(hasher.finalize())
    }

    /// What this layer must have changed (relative to the tree) for the initramfs to be made again:
    /// the kernel and its modules, the hook, the generator and its configuration, or a program the
    /// generator's own libalpm hook makes the initramfs again for (systemd, cryptsetup, lvm), since
    /// `packageHooks` masks that hook.
    var triggers: [String] {
        let common = [
            "usr/lib/modules", "usr/lib/layerctl", "usr/lib/firmware",
            "usr/lib/systemd/systemd", "usr/bin/cryptsetup", "usr/bin/lvm",
        ]
        switch self {
        case .mkinitcpio:
            return common + [
                "usr/lib/initcpio", "etc/mkinitcpio.conf", "etc/mkinitcpio.conf.d", "etc/mkinitcpio.d",
                "usr/bin/mkinitcpio",
            ]
        case .dracut:
            return common + ["usr/lib/dracut", "etc/dracut.conf", "etc/dracut.conf.d", "usr/bin/dracut"]
        }
    }
}

extension BootFlavour {
    /// The libalpm hooks of the generator's package that make the initramfs after a transaction,
    /// which a layer with `boot:` does not run: its boot step makes the initramfs once, after the
    /// transaction, with layerctl's hook in place. Run first, Arch's mkinitcpio hook would make every
    /// image (the fallback too) without it, only for the boot step to make them again. Arch's dracut
    /// package ships no such hook; the Arch wiki's and the AUR's dracut-hook have this name.
    var packageHooks: [String] {
        switch self {
        case .mkinitcpio: return ["90-mkinitcpio-install.hook"]
        case .dracut: return ["90-dracut-install.hook"]
        }
    }
}

/// The builder's `boot` step, in the layer's confined root ("/" is the layer): install and enable the
/// hook, then make the initramfs again if this layer changed anything it is made from.
struct BootSupport {
    let flavour: BootFlavour
    let job: BuildJob
    let runner: CommandRunner

    func apply(log: (String) -> Void) throws {
        for file in flavour.installedFiles {
            try install(BootHookFiles.contents[file.source] ?? "", at: file.path, mode: file.mode)
        }
        switch flavour {
        case .mkinitcpio: try enableMkinitcpioHook()
        case .dracut:
            try install(
                "# Written by layerctl for `boot: dracut`: every initramfs gets layerctl's hook.\nadd_dracutmodules+=\" layerctl \"\n",
                at: "/etc/dracut.conf.d/90-layerctl.conf", mode: 0o644)
        }
        let kernels = try self.kernels()
        guard changedInputs() else {
            log("the kernel, the hook and the initramfs configuration are as below this layer: initramfs kept")
            return
        }
        guard !kernels.isEmpty else {
            log("no kernel in /usr/lib/modules yet: no initramfs to make")
            return
        }
        let generator = flavour == .mkinitcpio ? "/usr/bin/mkinitcpio" : "/usr/bin/dracut"
        guard FileSystem.exists(generator) else {
            throw BuildFailure(
                "`boot: \(flavour.rawValue)` needs \(generator) in the image; install the \(flavour.rawValue) package",
                at: job.bootLocation ?? job.layerName, code: .input)
        }
        for kernel in kernels {
            // The boot loader and `layerctl stage` look for the kernel in /boot, as Arch puts it.
            let modules = "/usr/lib/modules/\(kernel.version)/vmlinuz"
            if let image = FileManager.default.contents(atPath: modules),
                FileManager.default.contents(atPath: "/boot/vmlinuz-\(kernel.base)") != image
            {
                try FileSystem.makeDirectories("/boot")
                try FileSystem.writeAtomically(image, to: "/boot/vmlinuz-\(kernel.base)")
            }
            // Arch's kernel packages leave a preset (default and fallback images); without one, the
            // kernel gets the one image /boot/initramfs-BASE.img.
            let preset = FileSystem.exists("/etc/mkinitcpio.d/\(kernel.base).preset")
            let command =
                flavour == .dracut
                ? "dracut --force --kver \(kernel.version) /boot/initramfs-\(kernel.base).img"
                : preset
                    ? "mkinitcpio -p \(kernel.base)"
                    : "mkinitcpio -k \(kernel.version) -g /boot/initramfs-\(kernel.base).img"
            log(command)
            let status = try runner.run(command)
            if status != 0 {
                throw BuildFailure(
                    "`\(command)` exited with status \(status)", at: job.bootLocation ?? job.layerName)
            }
        }
    }

    /// Writes `content` at `path` in the root unless it is already there, so a layer whose
    /// parents have the hook does not copy it up again.
    private func install(_ content: String, at path: String, mode: mode_t) throws {
        var st = stat()
        if FileManager.default.contents(atPath: path) == Data(content.utf8), stat(path, &st) == 0,
            st.st_mode & 0o7777 == mode
        {
            return
        }
        try FileSystem.makeDirectories(FileSystem.split(path).directory)
        try FileSystem.writeAtomically(Data(content.utf8), to: path, mode: mode)
        chmod(path, mode)
    }

    /// Puts `layerctl` last into mkinitcpio.conf's HOOKS: its runtime hook waits there for the
    /// device that holds the image, so the hooks that make that device appear run first (`encrypt`
    /// asks for the passphrase of a LUKS root and opens it; placed after `udev`, as it was, the
    /// hook waited out its timeout before `encrypt` ever asked). mkinitcpio mounts the root only
    /// after every runtime hook, so nothing needs it earlier. HOOKS with `systemd` (mkinitcpio's
    /// systemd initramfs) run no runtime hooks: they get `sd-layerctl`, whose service systemd
    /// orders after `sd-encrypt`'s, and which needs `base` for its shell.
    private func enableMkinitcpioHook() throws {
        let path = "/etc/mkinitcpio.conf"
        let location = job.bootLocation ?? job.layerName
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw BuildFailure(
                "`boot: mkinitcpio` needs /etc/mkinitcpio.conf in the image; install mkinitcpio or write one in `files:`",
                at: location, code: .input)
        }
        var lines = text.components(separatedBy: "\n")
        guard
            let index = lines.lastIndex(where: {
                $0.trimmingCharacters(in: .whitespaces).hasPrefix("HOOKS=(") && $0.contains(")")
            })
        else {
            throw BuildFailure(
                "/etc/mkinitcpio.conf has no HOOKS=(…) line to add layerctl to",
                at: location, code: .input)
        }
        let line = lines[index]
        guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")"), open < close else {
            throw BuildFailure(
                "/etc/mkinitcpio.conf's HOOKS line is not HOOKS=(…)",
                at: location, code: .input)
        }
        var hooks = line[line.index(after: open)..<close].split(whereSeparator: \.isWhitespace).map(String.init)
        let systemd = hooks.contains("systemd")
        let hook = systemd ? "sd-layerctl" : "layerctl"
        if hooks.contains(systemd ? "layerctl" : "sd-layerctl") {
            throw BuildFailure(
                systemd
                    ? "mkinitcpio.conf's HOOKS use `systemd`, whose init runs no runtime hooks, so `layerctl` there would not boot the image: use `sd-layerctl`"
                    : "mkinitcpio.conf's HOOKS have `sd-layerctl` but not `systemd`, whose init it needs: use `layerctl`",
                at: location, code: .input)
        }
        if systemd {
            guard hooks.contains("base") else {
                throw BuildFailure(
                    "mkinitcpio.conf's HOOKS use `systemd` without `base`, whose shell runs layerctl's sd-layerctl hook: put `base` first",
                    at: location, code: .input)
            }
        } else {
            guard hooks.contains("udev") || hooks.contains("base") else {
                throw BuildFailure(
                    "mkinitcpio.conf's HOOKS have neither `base` nor `udev`, which layerctl's hook needs before it",
                    at: location, code: .input)
            }
        }
        if hooks.contains(hook) { return }
        hooks.append(hook)
        lines[index] = "HOOKS=(\(hooks.joined(separator: " ")))"
        try FileSystem.writeAtomically(Data(lines.joined(separator: "\n").utf8), to: path)
    }

    /// The kernels in /usr/lib/modules, each with its package base (Arch's `pkgbase` file), which
    /// names its files in /boot.
    private func kernels() throws -> [(version: String, base: String)] {
        let directory = "/usr/lib/modules"
        guard FileSystem.isDirectory(directory) else { return [] }
        return try FileSystem.listDirectory(directory).sorted().compactMap { version in
            guard FileSystem.exists(directory + "/\(version)/vmlinuz") else { return nil }
            let base =
                (try? String(contentsOfFile: directory + "/\(version)/pkgbase", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            return (version, base.isEmpty ? "linux" : base)
        }
    }

    /// Whether this layer's tree (the overlay's upper directory, which the build shows read-only at
    /// `BuilderChild.upperDirectory`) touched anything the initramfs is made from. A directory in
    /// the upper directory means something below it changed.
    private func changedInputs() -> Bool {
        let upper = BuilderChild.upperDirectory
        return flavour.triggers.contains { FileSystem.exists(upper + "/" + $0) }
            || ((try? FileSystem.listDirectory(upper + "/boot")) ?? []).contains {
                $0.hasPrefix("vmlinuz")
            }
    }
}
